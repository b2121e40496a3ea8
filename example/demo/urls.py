"""The demo's pages: a counter, login/logout, every live session, and yours."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from example.demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="demo/login.html", initial={"username": "demo"}
        ),
        name="login",
    ),
    # Django 5 accepts only POST here: a link (or a prefetch) cannot log you out.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/end/", views.end_session, name="end_session"),
    # The package's "Your sessions" page, in the demo's layout (see
    # templates/django_redis_sessions/base.html).
    path("account/sessions/", include("django_redis_sessions.urls")),
]
