"""System checks for the setup the "Your sessions" page needs (W101...)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import include, path

from django_redis_sessions.checks import check_metadata_middleware

SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
METADATA = "django_redis_sessions.middleware.SessionMetadataMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
CSRF = "django.middleware.csrf.CsrfViewMiddleware"


def login(request: HttpRequest) -> HttpResponse:
    return HttpResponse("log in")


class WithThePage:
    """A URLconf that includes the page, and a login view."""

    urlpatterns = [
        path("accounts/login/", login, name="login"),
        path("account/sessions/", include("django_redis_sessions.urls")),
    ]


class WithoutThePage:
    urlpatterns = [path("accounts/login/", login, name="login")]


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [str(message.id) for message in messages]


def url_check_ids() -> list[str]:
    found = checks.run_checks(tags=[checks.Tags.urls])
    return [i for i in ids(found) if i.startswith("django_redis_sessions.")]


# --- The metadata middleware ---------------------------------------------------


@pytest.mark.parametrize(
    ("middleware", "expected"),
    [
        ([SESSION, METADATA, CSRF, AUTH], []),
        ([SESSION, CSRF, METADATA, AUTH], []),
        ([SESSION, CSRF, AUTH], ["django_redis_sessions.W101"]),
        ([METADATA, SESSION, AUTH], ["django_redis_sessions.W102"]),
        ([SESSION, AUTH, METADATA], ["django_redis_sessions.W103"]),
    ],
)
def test_metadata_without_its_middleware_in_place_is_a_warning(
    settings: Any, middleware: list[str], expected: list[str]
) -> None:
    settings.SESSION_REDIS = {"USER_INDEX_METADATA": ("ip", "user_agent")}
    settings.MIDDLEWARE = middleware

    found = check_metadata_middleware(None)

    assert ids(found) == expected
    for warning in found:
        assert isinstance(warning, checks.Warning)
        assert warning.hint is not None
        assert "right after" in warning.hint


def test_the_hint_says_where_the_middleware_goes(settings: Any) -> None:
    settings.SESSION_REDIS = {"USER_INDEX_METADATA": ("ip",)}
    settings.MIDDLEWARE = [SESSION, AUTH]

    [warning] = check_metadata_middleware(None)

    assert warning.msg == (
        "SESSION_REDIS['USER_INDEX_METADATA'] asks for ('ip',), but "
        f"{METADATA!r} is not in MIDDLEWARE, so nothing is collected."
    )
    assert warning.hint == (
        f"Add {METADATA!r} to MIDDLEWARE right after {SESSION!r}, or set "
        "USER_INDEX_METADATA to ()."
    )


@pytest.mark.parametrize("metadata", [None, (), []])
def test_without_metadata_the_middleware_is_not_required(
    settings: Any, metadata: Any
) -> None:
    settings.SESSION_REDIS = (
        {} if metadata is None else {"USER_INDEX_METADATA": metadata}
    )
    settings.MIDDLEWARE = [SESSION, AUTH]

    assert check_metadata_middleware(None) == []


def test_the_middleware_check_is_registered(settings: Any) -> None:
    settings.SESSION_REDIS = {"USER_INDEX_METADATA": ("ip",)}
    settings.MIDDLEWARE = [SESSION, AUTH]

    assert "django_redis_sessions.W101" in ids(checks.run_checks())


# --- The page's URLs -----------------------------------------------------------


@override_settings(ROOT_URLCONF=WithThePage, LOGIN_URL="login")
def test_a_project_set_up_as_the_readme_says_gets_no_warning() -> None:
    assert url_check_ids() == []


def test_the_test_project_passes_every_check_of_the_package() -> None:
    found = ids(checks.run_checks())
    assert [i for i in found if i.startswith("django_redis_sessions.")] == []


@override_settings(
    ROOT_URLCONF=WithThePage,
    LOGIN_URL="login",
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.humanize",
        "django.contrib.messages",
    ],
)
def test_the_page_included_without_the_app_is_a_warning() -> None:
    # The app's own checks are not registered in such a project: the
    # warning comes from Django's URL checks, which call the page's pattern.
    [warning] = [
        message
        for message in checks.run_checks(tags=[checks.Tags.urls])
        if str(message.id).startswith("django_redis_sessions.")
    ]

    assert warning.id == "django_redis_sessions.W104"
    assert warning.hint == "Add 'django_redis_sessions' to INSTALLED_APPS."


@pytest.mark.parametrize(
    ("login_url", "expected"),
    [
        ("login", []),  # a URL name
        ("/accounts/login/", []),
        ("/accounts/login/?source=sessions", []),
        ("https://sso.example.com/login", []),  # another site's: not checked
        ("/login/", ["django_redis_sessions.W105"]),
        ("log-in", ["django_redis_sessions.W105"]),
        ("", ["django_redis_sessions.W105"]),
    ],
)
def test_a_login_url_that_leads_nowhere_is_a_warning(
    settings: Any, login_url: str, expected: list[str]
) -> None:
    settings.ROOT_URLCONF = WithThePage
    settings.LOGIN_URL = login_url

    assert url_check_ids() == expected


def test_a_login_url_under_force_script_name_is_resolved_without_it(
    settings: Any,
) -> None:
    settings.ROOT_URLCONF = WithThePage
    settings.FORCE_SCRIPT_NAME = "/app"
    settings.LOGIN_URL = "/app/accounts/login/"

    assert url_check_ids() == []


def test_translated_times_need_humanize(settings: Any) -> None:
    settings.ROOT_URLCONF = WithThePage
    settings.LOGIN_URL = "login"
    settings.INSTALLED_APPS = [
        app for app in settings.INSTALLED_APPS if app != "django.contrib.humanize"
    ]

    assert url_check_ids() == ["django_redis_sessions.W106"]
    settings.USE_I18N = False
    assert url_check_ids() == []


def test_without_the_page_nothing_about_it_is_checked(settings: Any) -> None:
    settings.ROOT_URLCONF = WithoutThePage
    settings.LOGIN_URL = "/nowhere/"
    settings.INSTALLED_APPS = [
        app
        for app in settings.INSTALLED_APPS
        if app not in ("django.contrib.humanize", "django_redis_sessions")
    ]

    assert url_check_ids() == []
