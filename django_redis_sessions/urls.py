"""``path("account/sessions/", include("django_redis_sessions.urls"))``.

Including these URLs also checks the page's setup: Django's URL checks call
each pattern's ``check()``, so ``manage.py check`` reports what the page needs
(``checks.check_page_setup()``) in a project that includes it, and only there,
even where ``django_redis_sessions`` is missing from ``INSTALLED_APPS`` and
its own checks are not registered.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.urls import URLPattern, path

from django_redis_sessions.views import (
    EndOtherSessionsView,
    EndSessionView,
    SessionListView,
)

app_name = "django_redis_sessions"


class _PagePattern(URLPattern):
    """The page's own pattern, whose check also checks the page's setup."""

    def check(self) -> list[checks.CheckMessage]:
        from django_redis_sessions.checks import check_page_setup

        return [*super().check(), *check_page_setup()]


def _page(route: str, view: Any, name: str) -> URLPattern:
    pattern = path(route, view, name=name)
    return _PagePattern(pattern.pattern, pattern.callback, pattern.default_args, name)


urlpatterns = [
    _page("", SessionListView.as_view(), "sessions"),
    path("end/", EndSessionView.as_view(), name="end"),
    path("end-others/", EndOtherSessionsView.as_view(), name="end_others"),
]
