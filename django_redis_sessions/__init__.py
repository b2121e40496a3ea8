"""A Redis session engine for Django with atomic saves and final logouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["alogout_other_sessions", "get_store", "logout_other_sessions"]

if TYPE_CHECKING:
    from django.http import HttpRequest

    from django_redis_sessions.store import RedisSessionStore


def get_store() -> RedisSessionStore:
    """The session store configured by ``SESSION_REDIS``, for code outside requests."""
    # Imported here so that importing the package (as INSTALLED_APPS does)
    # neither reads settings nor imports redis-py.
    from django_redis_sessions.store import get_store as configured_store

    return configured_store()


def logout_other_sessions(request: HttpRequest) -> int:
    """End every session of ``request.user`` but this request's; how many ended.

    What a "log out other devices" button and a password-change view call.
    An anonymous request ends nothing.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return 0
    return get_store().logout_user(user.pk, keep=request.session.session_key)


async def alogout_other_sessions(request: HttpRequest) -> int:
    """See logout_other_sessions()."""
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return 0
    return await get_store().alogout_user(user.pk, keep=request.session.session_key)
