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

from django_redis_sessions.conf import conf
from django_redis_sessions.payloads import Payloads, get_payloads
from django_redis_sessions.redis_layer import (
    RedisLayer,
    get_layer,
    now_ms,
    ttl_milliseconds,
)
from django_redis_sessions.scripts import Outcome
from django_redis_sessions.user_index import (
    INDEX_MARK,
    SLACK_MS,
    USER_ID_KEY,
    IndexWrite,
)

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
        # The user whose index holds this session, and the expiry (ms) its
        # entry records: read from the data, so knowing costs no round trip.
        self._indexed: tuple[str, int] | None = None
        #: What ``SessionMetadataMiddleware`` collected for a new index entry.
        self.client_metadata: dict[str, str] = {}

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
        self._indexed = None
        if key is None or payload is None or data is None:
            # Never keep a key the client chose: the next save creates a
            # fresh random one (no session fixation).
            self._session_key = None
            self._stored = None
            return {}
        self._stored = (key, payload)
        until = data.pop(INDEX_MARK, None)
        if isinstance(until, int) and data.get(USER_ID_KEY) is not None:
            self._indexed = (str(data[USER_ID_KEY]), until)
        return data

    def _prepared(
        self, data: dict[str, Any], ttl: float, *, moving: bool = False
    ) -> tuple[bytes, IndexWrite | None]:
        """The payload to store, and the index entry to write with it, if any.

        An entry is written when the session gets a user or a new id, or when
        its expiry moved more than the slack past the entry's: most saves of a
        logged-in session write none, and cost what they cost without an index.
        """
        user = data.get(USER_ID_KEY)
        if not conf.USER_INDEX or user is None:
            return self._payloads.dumps(data), None
        user = str(user)
        expires_ms = now_ms() + ttl_milliseconds(ttl)
        index = None
        if (
            moving
            or self._indexed is None
            or self._indexed[0] != user
            or expires_ms > self._indexed[1] + SLACK_MS
        ):
            metadata = {}
            if self._indexed is None or self._indexed[0] != user:
                metadata = self._entry_metadata()
            index = IndexWrite(user, expires_ms, **metadata)
            until = expires_ms
        else:
            until = self._indexed[1]
        return self._payloads.dumps({**data, INDEX_MARK: until}), index

    def _entry_metadata(self) -> dict[str, str]:
        wanted = conf.USER_INDEX_METADATA
        return {
            name: value[:500]
            for name, value in self.client_metadata.items()
            if name in wanted and value
        }

    def _record_index(
        self, index: IndexWrite | None, data: dict[str, Any]
    ) -> str | None:
        """Note what a successful write did to the index.

        Returns the user whose index must now drop this session: the session
        lost its user, or got another one, without a flush (rare).
        """
        previous = self._indexed
        if index is not None:
            self._indexed = (index.user_id, index.expires_ms)
        elif not conf.USER_INDEX or data.get(USER_ID_KEY) is None:
            self._indexed = None
        if previous is None or not conf.USER_INDEX:
            return None
        if self._indexed is not None and self._indexed[0] == previous[0]:
            return None
        return previous[0]

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
        self,
        outcome: Outcome,
        data: dict[str, Any],
        key: str,
        payload: bytes,
        index: IndexWrite | None,
    ) -> bool:
        """Take the new key after a cycle; False if ``key`` was unusable."""
        if outcome is Outcome.MISSING:
            # Another request ended the session (a logout, a clear, another
            # cycle_key) after this one loaded it. Its data must not live on:
            # start afresh, so what this request writes next (a login) lands
            # in a new session holding nothing of the old one.
            self._session_key = None
            self._stored = None
            self._indexed = None
            data = {}
        elif outcome is Outcome.EXPIRED:
            self._session_key = None
            self._stored = None
            self._indexed = None
        elif outcome is Outcome.WRITTEN:
            self._session_key = key
            self._stored = (key, payload)
            self._indexed = None if index is None else (index.user_id, index.expires_ms)
        else:
            return False
        self._session_cache = data
        self.modified = True
        return True

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
        ttl = self.get_expiry_age()
        payload, index = self._prepared(data, ttl)
        if must_create:
            outcome = self._layer.create(key, payload, ttl, index)
        elif index is None and self._only_needs_touch(key, payload):
            if conf.DISABLE_TOUCH:
                return None
            outcome = self._layer.touch(key, ttl)
        else:
            outcome = self._layer.update(key, payload, ttl, index)
        self._accept_saved(outcome, key, payload, must_create=must_create)
        if outcome is Outcome.WRITTEN and (user := self._record_index(index, data)):
            self._layer.unindex(user, key)
        return None

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self._layer.destroy(session_key, self._indexed_user(session_key))
        self._forget_stored(session_key)

    def _indexed_user(self, session_key: str) -> str | None:
        """Whose index holds ``session_key``, if it is this session's and known."""
        if self._indexed is None or session_key != self.session_key:
            return None
        user = self._indexed[0]
        self._indexed = None
        return user

    def cycle_key(self) -> None:
        data = self._session  # type: ignore[attr-defined]
        old_key = self.session_key
        ttl = self.get_expiry_age()
        payload, index = self._prepared(data, ttl, moving=True)
        for _ in range(CREATE_ATTEMPTS):
            new_key = self._get_new_session_key()
            outcome = self._layer.cycle(old_key, new_key, payload, ttl, index)
            if self._accept_cycled(outcome, data, new_key, payload, index):
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
            ttl = await self.aget_expiry_age()
            payload, index = self._prepared(data, ttl)
            if must_create:
                outcome = await self._layer.acreate(key, payload, ttl, index)
            elif index is None and self._only_needs_touch(key, payload):
                if conf.DISABLE_TOUCH:
                    return None
                outcome = await self._layer.atouch(key, ttl)
            else:
                outcome = await self._layer.aupdate(key, payload, ttl, index)
            self._accept_saved(outcome, key, payload, must_create=must_create)
            if outcome is Outcome.WRITTEN and (user := self._record_index(index, data)):
                await self._layer.aunindex(user, key)
            return None

        async def adelete(self, session_key: str | None = None) -> None:
            """See delete()."""
            if session_key is None:
                if self.session_key is None:
                    return
                session_key = self.session_key
            await self._layer.adestroy(session_key, self._indexed_user(session_key))
            self._forget_stored(session_key)

        async def acycle_key(self) -> None:
            """See cycle_key()."""
            data = await self._aget_session()  # type: ignore[attr-defined]
            old_key = self.session_key
            ttl = await self.aget_expiry_age()
            payload, index = self._prepared(data, ttl, moving=True)
            for _ in range(CREATE_ATTEMPTS):
                new_key = await self._aget_new_session_key()
                outcome = await self._layer.acycle(
                    old_key, new_key, payload, ttl, index
                )
                if self._accept_cycled(outcome, data, new_key, payload, index):
                    return
            raise RuntimeError(_create_failed_message())


def _create_failed_message() -> str:
    return (
        f"Unable to create a new session key after {CREATE_ATTEMPTS} attempts: "
        "every random key was refused. Check that nothing else writes under "
        f"SESSION_REDIS['PREFIX'] {conf.PREFIX!r}."
    )
