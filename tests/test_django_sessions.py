"""Django's own session tests, unmodified, against this engine.

``tests/sessions_tests`` of the installed Django's sdist (``django_tests()``)
is imported as it is, and its classes are subclassed the way Django runs them
against its own cache backend (``CacheSessionTests``): ``SessionTestsMixin``
with ``backend = SessionStore``, on the test server and on Cluster, and the
middleware tests with ``SESSION_ENGINE`` naming this engine. The contract is
then checked by Django's own assertions, for the Django version installed.

Their package defines a model, so it is an installed app while it is
imported and while its tests run, and at no other time. A test of theirs is
left out only when it is about another backend, with the reason; nothing of
theirs is changed.
"""

from __future__ import annotations

import sys
import unittest
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from django_redis_sessions.backends.redis import SessionStore
from tests.utils import django_tests

sys.path.append(str(django_tests("sessions_tests")))

with_django_tests = override_settings(
    INSTALLED_APPS=[*settings.INSTALLED_APPS, "sessions_tests"]
)

with with_django_tests:
    from sessions_tests import tests as django_sessions  # type: ignore[import-not-found]

#: Django tests about another backend, each with why it is left out.
LEFT_OUT = {
    "test_session_update_error_redirect": (
        "it replaces the request's session with Django's database backend"
    ),
    "test_empty_session_saved": (
        "it reads the saved session back through the database backend's model "
        "(its counterpart here: test_an_emptied_session_is_saved_and_keeps_its_cookie)"
    ),
}


def marked(cls: type[Any]) -> type[Any]:
    """``cls`` with its tests in ``LEFT_OUT`` skipped, each saying why.

    ``unittest.skip()`` wraps the method: the class it came from is untouched.
    """
    for name, reason in LEFT_OUT.items():
        if hasattr(cls, name):
            skip = unittest.skip(f"About another backend: {reason}.")
            setattr(cls, name, skip(getattr(cls, name)))
    return cls


@marked
@with_django_tests
class RedisSessionTests(django_sessions.SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    backend = SessionStore


@marked
@with_django_tests
@pytest.mark.usefixtures("cluster")
class RedisClusterSessionTests(django_sessions.SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    backend = SessionStore


@marked
@with_django_tests
@override_settings(SESSION_ENGINE="django_redis_sessions.backends.redis")
class RedisSessionMiddlewareTests(django_sessions.SessionMiddlewareTests):  # type: ignore[misc]
    pass


def test_an_emptied_session_is_saved_and_keeps_its_cookie() -> None:
    """Django's ``test_empty_session_saved``, read back through this engine."""

    def set_session(request: HttpRequest) -> HttpResponse:
        request.session["foo"] = "bar"
        return HttpResponse("Session test")

    request = RequestFactory().get("/")
    middleware = SessionMiddleware(set_session)
    middleware(request)
    key = request.session.session_key
    assert SessionStore(key).load() == {"foo": "bar"}

    del request.session["foo"]
    response = middleware.process_response(request, HttpResponse("Session test"))
    assert SessionStore(key).load() == {}
    assert SessionStore(key).exists(key) is True
    assert request.session.session_key == key
    assert f"Set-Cookie: sessionid={key}" in str(response.cookies)
    assert response.headers["Vary"] == "Cookie"
