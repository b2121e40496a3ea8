"""Two tiny views for request-level tests: one reads the session, one writes it."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("visits", 0)))


def write(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


urlpatterns = [path("read/", read), path("write/", write)]


async def async_write(request: HttpRequest) -> HttpResponse:
    visits = await request.session.aget("visits", 0) + 1
    await request.session.aset("visits", visits)
    return HttpResponse(str(visits))


urlpatterns += [path("async-write/", async_write)]
