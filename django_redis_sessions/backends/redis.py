"""``SESSION_ENGINE = "django_redis_sessions.backends.redis"``.

Serialization and expiry live here, Redis in ``redis_layer.py``. Round trips:
load 1, create 1, save 1 (a TTL refresh when the session did not change),
delete 1, cycle_key 1.
"""

from __future__ import annotations

from typing import Any

import django
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.utils.crypto import get_random_string

from django_redis_sessions import signals
from django_redis_sessions.conf import conf
from django_redis_sessions.payloads import Payloads, get_payloads
from django_redis_sessions.redis_layer import RedisLayer, get_layer
from django_redis_sessions.scripts import Outcome

#: A new key is 32 random characters; colliding even once is unheard of, so
#: running out of attempts means something refuses every write.
CREATE_ATTEMPTS = 10

#: The cookies looked up at all: what SessionBase generates (32 characters of
#: its alphabet), with room for keys of other engines moved here.
KEY_ALPHABET = frozenset(VALID_KEY_CHARS)
MIN_KEY_LENGTH = 8
MAX_KEY_LENGTH = 64


class SessionStore(SessionBase):
    """A Django session whose saves are atomic and whose logouts are final.

    ``save()`` only updates a session that still exists: a session destroyed
    by a logout in another request raises ``UpdateError`` (which the middleware
    reports as ``SessionInterrupted``) instead of coming back to life.
    ``cycle_key()`` of a session another request ended meanwhile carries
    nothing over: the session starts afresh, empty and without a key.
    """

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        # (key, payload) as last read from or written to Redis: an unmodified
        # save of the same bytes under the same key only refreshes the TTL.
        self._stored: tuple[str, bytes] | None = None

    @property
    def _layer(self) -> RedisLayer:
        return get_layer()

    @property
    def _payloads(self) -> Payloads:
        return get_payloads()

    def _validate_session_key(self, key: str | None) -> bool:
        # Only a key SessionBase could have generated is looked up: never an
        # id ("#..." is outside the alphabet), so a leaked id is no cookie.
        return (
            isinstance(key, str)
            and MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH
            and set(key) <= KEY_ALPHABET
        )

    def _get_new_session_key(self) -> str:
        # No EXISTS round trip: the create script refuses a taken key itself.
        return get_random_string(32, VALID_KEY_CHARS)

    def _accept_loaded(self, key: str | None, payload: bytes | None) -> dict[str, Any]:
        """The data read under ``key``; forget the key if there is none."""
        data = self._payloads.loads(payload)
        if key is None or payload is None or data is None:
            # Never keep a key the client chose: the next save creates a
            # fresh random one (no session fixation).
            self._session_key = None
            self._stored = None
            return {}
        self._stored = (key, payload)
        return data

    def _accept_saved(
        self, outcome: Outcome, key: str, payload: bytes, *, must_create: bool
    ) -> None:
        if outcome is Outcome.EXPIRED:
            self._stored = None
        elif outcome is not Outcome.WRITTEN:
            raise CreateError if must_create else UpdateError
        else:
            self._stored = (key, payload)

    def _only_needs_touch(self, key: str, payload: bytes) -> bool:
        # An explicit write is never dropped, even of the value that was
        # loaded: another request may have changed it since (last write wins).
        return not self.modified and self._stored == (key, payload)

    def _forget_stored(self, key: str) -> None:
        if self._stored is not None and self._stored[0] == key:
            self._stored = None

    def _accept_cycled(
        self, outcome: Outcome, data: dict[str, Any], key: str, payload: bytes
    ) -> bool:
        """Take the new key after a cycle; False if ``key`` was unusable."""
        if outcome is Outcome.MISSING:
            # Another request ended the session (a logout, a clear, another
            # cycle_key) after this one loaded it. Its data must not live on:
            # start afresh, so what this request writes next (a login) lands
            # in a new session holding nothing of the old one.
            self._session_key = None
            self._stored = None
            data = {}
        elif outcome is Outcome.EXPIRED:
            self._session_key = None
            self._stored = None
        elif outcome is Outcome.WRITTEN:
            self._session_key = key
            self._stored = (key, payload)
        else:
            return False
        self._session_cache = data
        self.modified = True
        return True

    @staticmethod
    def _cycle_events(
        outcome: Outcome, new_key: str, old_key: str | None
    ) -> list[signals.Event]:
        return signals.after_write(
            "cycle", outcome, new_key, old_key=old_key, refused_if_missing=True
        )

    def load(self) -> dict[str, Any]:
        key = self.session_key
        return self._accept_loaded(key, None if key is None else self._layer.read(key))

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key) and self._layer.exists(session_key)  # type: ignore[arg-type]

    def create(self) -> None:
        for _ in range(CREATE_ATTEMPTS):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError(_create_failed_message())

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        key = self.session_key
        data = self._get_session(no_load=must_create)  # type: ignore[attr-defined]
        payload = self._payloads.dumps(data)
        ttl = self.get_expiry_age()
        if must_create:
            operation, outcome = "create", self._layer.create(key, payload, ttl)
        elif self._only_needs_touch(key, payload):
            if conf.DISABLE_TOUCH:
                return None
            operation, outcome = "touch", self._layer.touch(key, ttl)
        else:
            operation, outcome = "update", self._layer.update(key, payload, ttl)
        if signals.listening():
            events = signals.after_write(
                operation, outcome, key, refused_if_missing=True
            )
            signals.send(type(self), events, self._layer.session_id)
        self._accept_saved(outcome, key, payload, must_create=must_create)
        return None

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        ended = self._layer.destroy(session_key)
        self._forget_stored(session_key)
        if ended and signals.listening():
            events = signals.ended(session_key, "logout")
            signals.send(type(self), events, self._layer.session_id)

    def cycle_key(self) -> None:
        data = self._session  # type: ignore[attr-defined]
        old_key = self.session_key
        payload = self._payloads.dumps(data)
        ttl = self.get_expiry_age()
        for _ in range(CREATE_ATTEMPTS):
            new_key = self._get_new_session_key()
            outcome = self._layer.cycle(old_key, new_key, payload, ttl)
            if signals.listening():
                events = self._cycle_events(outcome, new_key, old_key)
                signals.send(type(self), events, self._layer.session_id)
            if self._accept_cycled(outcome, data, new_key, payload):
                return
        raise RuntimeError(_create_failed_message())

    @classmethod
    def clear_expired(cls) -> None:
        """Redis expires sessions itself."""

    # SessionBase calls these from its own asyncio helpers, which exist from
    # Django 5.1; on 4.2 and 5.0 nothing could call them.
    if django.VERSION >= (5, 1):

        async def _aget_new_session_key(self) -> str:
            return self._get_new_session_key()

        async def aload(self) -> dict[str, Any]:
            """See load()."""
            key = self.session_key
            payload = None if key is None else await self._layer.aread(key)
            return self._accept_loaded(key, payload)

        async def aexists(self, session_key: str | None) -> bool:
            """See exists()."""
            return bool(session_key) and await self._layer.aexists(session_key)  # type: ignore[arg-type]

        async def acreate(self) -> None:
            """See create()."""
            for _ in range(CREATE_ATTEMPTS):
                self._session_key = await self._aget_new_session_key()
                try:
                    await self.asave(must_create=True)
                except CreateError:
                    continue
                self.modified = True
                return
            raise RuntimeError(_create_failed_message())

        async def asave(self, must_create: bool = False) -> None:
            """See save()."""
            if self.session_key is None:
                return await self.acreate()
            key = self.session_key
            data = await self._aget_session(no_load=must_create)  # type: ignore[attr-defined]
            payload = self._payloads.dumps(data)
            ttl = await self.aget_expiry_age()
            layer = self._layer
            if must_create:
                operation, outcome = "create", await layer.acreate(key, payload, ttl)
            elif self._only_needs_touch(key, payload):
                if conf.DISABLE_TOUCH:
                    return None
                operation, outcome = "touch", await layer.atouch(key, ttl)
            else:
                operation, outcome = "update", await layer.aupdate(key, payload, ttl)
            if signals.listening():
                events = signals.after_write(
                    operation, outcome, key, refused_if_missing=True
                )
                await signals.asend(type(self), events, layer.session_id)
            self._accept_saved(outcome, key, payload, must_create=must_create)
            return None

        async def adelete(self, session_key: str | None = None) -> None:
            """See delete()."""
            if session_key is None:
                if self.session_key is None:
                    return
                session_key = self.session_key
            ended = await self._layer.adestroy(session_key)
            self._forget_stored(session_key)
            if ended and signals.listening():
                events = signals.ended(session_key, "logout")
                await signals.asend(type(self), events, self._layer.session_id)

        async def acycle_key(self) -> None:
            """See cycle_key()."""
            data = await self._aget_session()  # type: ignore[attr-defined]
            old_key = self.session_key
            payload = self._payloads.dumps(data)
            ttl = await self.aget_expiry_age()
            for _ in range(CREATE_ATTEMPTS):
                new_key = await self._aget_new_session_key()
                outcome = await self._layer.acycle(old_key, new_key, payload, ttl)
                if signals.listening():
                    events = self._cycle_events(outcome, new_key, old_key)
                    await signals.asend(type(self), events, self._layer.session_id)
                if self._accept_cycled(outcome, data, new_key, payload):
                    return
            raise RuntimeError(_create_failed_message())


def _create_failed_message() -> str:
    return (
        f"Unable to create a new session key after {CREATE_ATTEMPTS} attempts: "
        "every random key was refused. Check that nothing else writes under "
        f"SESSION_REDIS['PREFIX'] {conf.PREFIX!r}."
    )
