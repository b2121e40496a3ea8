"""A Redis session engine for Django with atomic saves and final logouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["get_store"]

if TYPE_CHECKING:
    from django_redis_sessions.store import RedisSessionStore


def get_store() -> RedisSessionStore:
    """The session store configured by ``SESSION_REDIS``, for code outside requests."""
    # Imported here so that importing the package (as INSTALLED_APPS does)
    # neither reads settings nor imports redis-py.
    from django_redis_sessions.store import get_store as configured_store

    return configured_store()
