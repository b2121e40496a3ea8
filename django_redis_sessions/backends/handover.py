"""``SESSION_ENGINE = "django_redis_sessions.backends.handover"``.

The first step of a rolling switch to this engine. It *is* the engine named
by ``SESSION_REDIS["MIGRATE_FROM"]`` (its ``SessionStore`` is a subclass of
that engine's), except that every session it ends is also ended in Redis:
a logout, ``flush()``, ``delete(key)`` or ``cycle_key()`` deletes the key in
the old engine first and then destroys it in Redis, with a tombstone.

Why: while old and new processes run side by side, a new process moves a
session to Redis on its owner's next request. A logout that then lands on an
old process finds nothing in its own engine, and without this step it would
end nothing: the cookie would stay logged in on every new process. Processes
running this engine end the moved copy, so a logout on any process is final
on every process. The key the request arrived with counts too: once a new
process moved the session, the old engine's load finds nothing and forgets
the key before ``logout()`` asks to end it.

For ``signed_cookies`` the browser holds either a signed cookie (never
adopted yet: it is tombstoned under its hash for as long as the engine would
accept it, so no new process adopts it afterwards) or the key of the Redis
session it was adopted into, which is destroyed.
"""

from __future__ import annotations

import functools
from typing import Any

import django
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ImproperlyConfigured

from django_redis_sessions import migration, signals
from django_redis_sessions.conf import conf
from django_redis_sessions.keys import hashed_id, is_cookie_key
from django_redis_sessions.redis_layer import get_layer


def __getattr__(name: str) -> Any:
    # Django reads ``SessionStore`` when it needs it (the middleware, once
    # per settings): the class depends on the MIGRATE_FROM setting.
    if name == "SessionStore":
        engine = conf.MIGRATE_FROM
        if engine is None:
            raise ImproperlyConfigured(
                "SESSION_ENGINE 'django_redis_sessions.backends.handover' needs "
                "SESSION_REDIS['MIGRATE_FROM']: the engine it stands in for, e.g. "
                "'django.contrib.sessions.backends.db'."
            )
        return store_class(engine)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def store_class(engine: str) -> type[SessionBase]:
    """``engine``'s SessionStore, whose endings also end the key in Redis."""
    source = migration.source_for(engine)
    base: Any = source.store_class

    class SessionStore(base):  # type: ignore[misc]
        __doc__ = f"{base.__module__}.SessionStore, ending in Redis what it ends."

        def __init__(self, session_key: str | None = None) -> None:
            super().__init__(session_key)
            # The cookie the request arrived with, even once the load forgot
            # it: a new process may have moved its session to Redis.
            self._arrived_with = session_key

        def _to_end(self, session_key: str | None) -> list[str]:
            if session_key is None:
                keys = [self.session_key, self._arrived_with]
            else:
                keys = [session_key]
            if self._arrived_with in keys:
                self._arrived_with = None
            return list(dict.fromkeys(key for key in keys if key))

        def _left_behind(self) -> str | None:
            """After a key change: the cookie the request came with, if not ended.

            Its session was not found (a new process moved it): the browser
            gets the new key, and the old one must not keep working elsewhere.
            """
            key, self._arrived_with = self._arrived_with, None
            return key

        def delete(self, session_key: str | None = None) -> None:
            keys = self._to_end(session_key)
            # The old engine first: if Redis then fails, the logout fails
            # visibly, where the other order could leave a copy that a new
            # process moves back once the tombstone lapsed.
            super().delete(session_key)
            for key in keys:
                _end(key, source)

        def cycle_key(self) -> None:
            super().cycle_key()
            if (key := self._left_behind()) is not None:
                _end(key, source)

        if django.VERSION >= (5, 1):  # SessionBase has asyncio methods from 5.1

            async def adelete(self, session_key: str | None = None) -> None:
                """See delete()."""
                keys = self._to_end(session_key)
                await super().adelete(session_key)
                for key in keys:
                    await _aend(key, source)

            async def acycle_key(self) -> None:
                """See cycle_key()."""
                await super().acycle_key()
                if (key := self._left_behind()) is not None:
                    await _aend(key, source)

    SessionStore.__module__ = __name__
    SessionStore.__qualname__ = "SessionStore"
    return SessionStore


def _end(key: str, source: migration.Source) -> None:
    """End ``key`` in Redis as a logout of this engine would."""
    layer = get_layer()
    if is_cookie_key(key):
        if layer.destroy(key) and signals.listening():
            signals.send(_sender(), signals.ended(key, "logout"), layer.session_id)
    elif isinstance(source, migration.SignedCookieSource):
        layer.leave_tombstone(hashed_id(key), source.max_age())


async def _aend(key: str, source: migration.Source) -> None:
    """See _end()."""
    layer = get_layer()
    if is_cookie_key(key):
        if await layer.adestroy(key) and signals.listening():
            events = signals.ended(key, "logout")
            await signals.asend(_sender(), events, layer.session_id)
    elif isinstance(source, migration.SignedCookieSource):
        await layer.aleave_tombstone(hashed_id(key), source.max_age())


def _sender() -> type[SessionBase]:
    from django_redis_sessions.backends.redis import SessionStore

    return SessionStore
