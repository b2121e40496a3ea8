"""``SessionMetadataMiddleware``: what the "Your sessions" page needs per request.

Add it right after Django's ``SessionMiddleware`` (before
``AuthenticationMiddleware``). It does two things, with no I/O of its own:

- With ``USER_INDEX_METADATA = ("ip", "user_agent")``, it hands the request's
  client IP and browser to the session, which stores them in the user's index
  only when the session gets a new entry (a login); nothing is written on
  other requests, and nothing else is stored about users.
- It asks the session to say when its cookie names a session that another
  device or an admin ended moments ago (a tombstone holds the key, see
  ``TOMBSTONE_SECONDS``), and then tells the user why they are logged out
  through ``django.contrib.messages``. Only a load that misses asks Redis this
  one more question; a live session costs nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib import messages
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string
from django.utils.translation import gettext

from django_redis_sessions.conf import conf

#: What one metadata value may hold, at most: the rest is cut.
MAX_LENGTH = 500


def remote_addr(request: HttpRequest) -> str:
    """The client's IP as the server saw it: ``REMOTE_ADDR``.

    Behind a proxy that is the proxy's address; set ``CLIENT_IP`` to a
    callable that reads the header your proxy sets instead.
    """
    return str(request.META.get("REMOTE_ADDR", ""))


def client_metadata(request: HttpRequest) -> dict[str, str]:
    """The metadata ``USER_INDEX_METADATA`` asks for, from ``request``."""
    wanted = conf.USER_INDEX_METADATA
    found: dict[str, str] = {}
    if "ip" in wanted:
        read_ip: Callable[[HttpRequest], str] = (
            remote_addr if conf.CLIENT_IP is None else import_string(conf.CLIENT_IP)
        )
        # "|" separates the fields of an index entry; no address has one.
        found["ip"] = str(read_ip(request) or "").replace("|", "")[:MAX_LENGTH]
    if "user_agent" in wanted:
        found["user_agent"] = str(request.META.get("HTTP_USER_AGENT", ""))[:MAX_LENGTH]
    return found


class SessionMetadataMiddleware:
    """Hands the client's IP and browser to the session, and reports ended sessions."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        self._hand_over(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self._hand_over(request)
        response: Awaitable[HttpResponseBase] = self.get_response(request)
        return await response

    @staticmethod
    def _hand_over(request: HttpRequest) -> None:
        session = getattr(request, "session", None)
        if session is not None and hasattr(session, "client_metadata"):
            session.client_metadata = client_metadata(request)
        if session is not None and hasattr(session, "on_ended_elsewhere"):
            session.on_ended_elsewhere = _ended_elsewhere_notice(request)


def _ended_elsewhere_notice(request: HttpRequest) -> Callable[[], None]:
    def notice() -> None:
        # Translated when the session loads, in the request's language.
        text = gettext(
            "You were logged out: your session was ended from another device "
            "or by an administrator."
        )
        messages.add_message(request, messages.WARNING, text, fail_silently=True)

    return notice
