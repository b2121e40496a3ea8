"""Tiny views for request-level tests: read, write, log in and log out."""

from __future__ import annotations

from django.contrib.auth import get_user_model, login, logout
from django.http import HttpRequest, HttpResponse
from django.urls import path


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("visits", 0)))


def write(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


def log_in(request: HttpRequest) -> HttpResponse:
    """Log in the user whose primary key is ``?id=``."""
    login(request, get_user_model().objects.get(pk=request.GET["id"]))
    return HttpResponse("in")


def log_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("out")


def whoami(request: HttpRequest) -> HttpResponse:
    """The primary key of the logged-in user, or "anonymous"."""
    return HttpResponse(str(request.user.pk or "anonymous"))


urlpatterns = [
    path("read/", read),
    path("write/", write),
    path("login/", log_in),
    path("logout/", log_out),
    path("whoami/", whoami),
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


async def async_whoami(request: HttpRequest) -> HttpResponse:
    user = await request.auser()  # Django 5.0 and later
    return HttpResponse(str(user.pk or "anonymous"))


urlpatterns += [
    path("async-login/", async_log_in),
    path("async-logout/", async_log_out),
    path("async-whoami/", async_whoami),
]
