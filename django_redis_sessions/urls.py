"""``path("account/sessions/", include("django_redis_sessions.urls"))``."""

from __future__ import annotations

from django.urls import path

from django_redis_sessions.views import (
    EndOtherSessionsView,
    EndSessionView,
    SessionListView,
)

app_name = "django_redis_sessions"

urlpatterns = [
    path("", SessionListView.as_view(), name="sessions"),
    path("end/", EndSessionView.as_view(), name="end"),
    path("end-others/", EndOtherSessionsView.as_view(), name="end_others"),
]
