"""Tiny views for request-level tests: read, write, log in and log out."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from django_redis_sessions import alogout_other_sessions, logout_other_sessions
from django_redis_sessions.admin import UserSessionsAdminMixin


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("visits", 0)))


def write(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


def log_in(request: HttpRequest) -> HttpResponse:
    """Log in the user whose primary key is ``?id=``.

    Without ``?id=`` it is where ``LOGIN_URL`` sends an anonymous visitor.
    """
    if "id" not in request.GET:
        return HttpResponse("Anonymous: log in with ?id=USER_ID.")
    login(request, get_user_model().objects.get(pk=request.GET["id"]))
    return HttpResponse("in")


def log_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("out")


def log_out_others(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(logout_other_sessions(request)))


class PasswordChangeView(auth_views.PasswordChangeView):
    """The README's password change that ends every other session."""

    success_url = "/read/"

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)  # keeps this device logged in
        logout_other_sessions(self.request)
        return response


def whoami(request: HttpRequest) -> HttpResponse:
    """The primary key of the logged-in user, or "anonymous"."""
    return HttpResponse(str(request.user.pk or "anonymous"))


class SessionsUserAdmin(UserSessionsAdminMixin, UserAdmin):  # type: ignore[type-arg]
    """The README's admin: the user's sessions on the user's change page."""


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, SessionsUserAdmin)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("logout-others/", log_out_others),
    path("password/", PasswordChangeView.as_view()),
    path("account/sessions/", include("django_redis_sessions.urls")),
    path("read/", read),
    path("write/", write),
    path("login/", log_in),
    path("logout/", log_out),
    path("whoami/", whoami, name="whoami"),
]


async def async_write(request: HttpRequest) -> HttpResponse:
    visits = await request.session.aget("visits", 0) + 1
    await request.session.aset("visits", visits)
    return HttpResponse(str(visits))


urlpatterns += [path("async-write/", async_write)]


async def async_log_in(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import alogin  # Django 5.0 and later

    user = await get_user_model().objects.aget(pk=request.GET["id"])
    await alogin(request, user)
    return HttpResponse("in")


async def async_log_out(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import alogout  # Django 5.0 and later

    await alogout(request)
    return HttpResponse("out")


async def async_log_out_others(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(await alogout_other_sessions(request)))


async def async_whoami(request: HttpRequest) -> HttpResponse:
    user = await request.auser()  # Django 5.0 and later
    return HttpResponse(str(user.pk or "anonymous"))


urlpatterns += [
    path("async-logout-others/", async_log_out_others),
    path("async-login/", async_log_in),
    path("async-logout/", async_log_out),
    path("async-whoami/", async_whoami),
]


def note(request: HttpRequest) -> HttpResponse:
    """Keep ``?text=`` in the session (what a leak scan looks for)."""
    request.session["note"] = request.GET["text"]
    return HttpResponse(request.session["note"])


async def async_note(request: HttpRequest) -> HttpResponse:
    await request.session.aset("note", request.GET["text"])
    return HttpResponse(await request.session.aget("note"))


urlpatterns += [path("note/", note), path("async-note/", async_note)]
