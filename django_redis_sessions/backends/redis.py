"""``SESSION_ENGINE = "django_redis_sessions.backends.redis"``.

Serialization and expiry live here, Redis in ``redis_layer.py``. Round trips:
load 1, create 1, save 1 (a TTL refresh when the session did not change),
delete 1, cycle_key 1 (two on Redis Cluster). While ``MIGRATE_FROM`` is set
(``migration.py``), a load that misses also asks that engine, and delete and
cycle_key also delete the key there.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.utils.module_loading import import_string

from django_redis_sessions import migration, signals
from django_redis_sessions.conf import conf
from django_redis_sessions.keys import is_cookie_key
from django_redis_sessions.merge import merged
from django_redis_sessions.payloads import EXPIRY_KEY, Payloads, get_payloads
from django_redis_sessions.redis_layer import RedisLayer, get_layer, ttl_milliseconds
from django_redis_sessions.scripts import Conflict, Outcome
from django_redis_sessions.user_index import (
    INDEX_MARK,
    SLACK_MS,
    USER_ID_KEY,
    IndexWrite,
    now_ms,
)

#: Where a key change of a session ended meanwhile is reported, beside
#: Django's own ``django.security.*`` loggers.
security_logger = logging.getLogger("django.security.SessionInterrupted")

#: Saves of one request that may meet a newer version and merge into it
#: before the request gives up (``UpdateError``): each retry follows another
#: request's save that landed within one round trip.
MERGE_ATTEMPTS = 10

#: A new key is 32 random characters; colliding even once is unheard of, so
#: running out of attempts means something refuses every write.
CREATE_ATTEMPTS = 10


class SessionStore(SessionBase):
    """A Django session whose saves are atomic and whose logouts are final.

    ``save()`` only updates a session that still exists: a session destroyed
    by a logout in another request raises ``UpdateError`` (which the middleware
    reports as ``SessionInterrupted``) instead of coming back to life.
    ``cycle_key()`` changes the key at once, as Django's own backends do; of
    a session another request ended meanwhile it carries nothing over: the
    session continues empty, as after ``flush()``.
    """

    def __init__(self, session_key: str | None = None) -> None:
        # What SessionBase.__init__ sets (a test holds every attribute it sets
        # to be set here too), but the serializer is looked up once per
        # SESSION_SERIALIZER, not with an import_string() per session, which
        # was a sixth of a load's own Python.
        self._session_key = session_key
        self.accessed = False
        self.modified = False
        self.serializer = _serializer(settings.SESSION_SERIALIZER)
        # (key, serialized data) as last read from or written to Redis, in
        # plain (before encryption): an unmodified save of the same bytes
        # under the same key only refreshes the TTL.
        self._stored: tuple[str, bytes] | None = None
        # (key, the bytes Redis holds) of that same read or write: the
        # version a save writes over (encrypted, it differs from the plain).
        self._version: tuple[str, bytes] | None = None
        # The user whose index holds this session, and the expiry (ms) its
        # entry records: read from the data, so knowing costs no round trip.
        self._indexed: tuple[str, int] | None = None
        # The keys assigned since the last read or write: they win a merge
        # even when assigned the value they had (see merge.py).
        self._assigned: set[str] = set()
        #: What ``SessionMetadataMiddleware`` collected for a new index entry.
        self.client_metadata: dict[str, str] = {}
        #: Set by ``SessionMetadataMiddleware``: called when a load misses
        #: because another request ended the session (a tombstone holds its
        #: key). Only a load that misses asks; a live session costs nothing.
        self.on_ended_elsewhere: Callable[[], None] | None = None
        # A cookie that is no key of this engine: while MIGRATE_FROM names
        # signed_cookies, it may be a session to adopt (see _get_session()).
        self._foreign_cookie = session_key if self.session_key is None else None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._assigned.add(key)

    # django-stubs types SessionBase as a MutableMapping, whose update() also
    # takes keyword arguments; Django's takes one mapping or iterable of pairs.
    def update(self, dict_: Any) -> None:  # type: ignore[override]
        items = dict(dict_)  # a mapping or pairs, as dict.update() takes
        super().update(items)
        self._assigned.update(items)

    @property
    def _layer(self) -> RedisLayer:
        return get_layer()

    @property
    def _payloads(self) -> Payloads:
        return get_payloads()

    def _validate_session_key(self, key: str | None) -> bool:
        # Only a key SessionBase could have generated is looked up: never an
        # id ("#..." is outside the alphabet), so a leaked id is no cookie.
        return is_cookie_key(key)

    def _get_new_session_key(self) -> str:
        # No EXISTS round trip: the create script refuses a taken key itself.
        return random_key()

    def _accept_loaded(self, key: str | None, payload: bytes | None) -> dict[str, Any]:
        """The data read under ``key``; forget the key if there is none."""
        loaded = None if key is None else self._payloads.load(payload, key)
        self._indexed = None
        if key is None or payload is None or loaded is None:
            # Never keep a key the client chose: the next save creates a
            # fresh random one (no session fixation).
            self._session_key = None
            self._stored = self._version = None
            return {}
        data = loaded.data
        # A value stored before encryption was on is written again (now
        # encrypted) by the next save, even an unmodified one.
        self._stored = None if loaded.unencrypted else (key, loaded.plain)
        self._version = (key, payload)
        self._assigned.clear()
        until = data.pop(INDEX_MARK, None)
        if isinstance(until, int) and data.get(USER_ID_KEY) is not None:
            self._indexed = (str(data[USER_ID_KEY]), until)
        return data

    def _prepared(
        self, data: dict[str, Any], ttl: float, *, moving: bool = False
    ) -> tuple[bytes, IndexWrite | None]:
        """The serialized data, and the index entry to write with it, if any.

        The data is not encrypted yet: that needs the key it is written under
        (``Payloads.seal()``), and an unmodified session is compared in plain.

        An entry is written when the session gets a user or a new id, or when
        its expiry moved more than the slack past the entry's: most saves of a
        logged-in session write none, and cost what they cost without an index.
        """
        user = data.get(USER_ID_KEY)
        if user is None or not self._layer.user_index:
            return self._payloads.serialize(data), None
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
        return self._payloads.serialize({**data, INDEX_MARK: until}), index

    def _entry_metadata(self) -> dict[str, str]:
        wanted = self._layer.index_metadata
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
        elif not self._layer.user_index or data.get(USER_ID_KEY) is None:
            self._indexed = None
        if previous is None or not self._layer.user_index:
            return None
        if self._indexed is not None and self._indexed[0] == previous[0]:
            return None
        return previous[0]

    def _accept_saved(
        self,
        outcome: Outcome,
        key: str,
        payload: bytes,
        sealed: bytes | None,
        *,
        must_create: bool,
    ) -> None:
        """Settle a save; ``sealed`` is what it stored, None for a touch."""
        if outcome is Outcome.EXPIRED:
            self._stored = self._version = None
        elif outcome is not Outcome.WRITTEN:
            raise CreateError if must_create else UpdateError
        else:
            self._stored = (key, payload)
            if sealed is not None:
                self._version = (key, sealed)
            self._assigned.clear()

    def _accept_adopted(self, data: dict[str, Any] | None) -> dict[str, Any]:
        """The data of a signed cookie adopted from MIGRATE_FROM, if any."""
        if data is None:
            return self._accept_loaded(None, None)
        # The cookie is no key to store: the save at the end of the request
        # creates a session with a fresh random key and sends its cookie.
        self._session_key = None
        self._stored = self._version = None
        self.modified = True
        return data

    def _only_needs_touch(self, key: str, payload: bytes) -> bool:
        # An explicit write is never dropped, even of the value that was
        # loaded: another request may have changed it since (last write wins).
        return not self.modified and self._stored == (key, payload)

    def _forget_stored(self, key: str) -> None:
        if self._stored is not None and self._stored[0] == key:
            self._stored = None
        if self._version is not None and self._version[0] == key:
            self._version = None

    def _accept_cycled(
        self,
        outcome: Outcome,
        key: str,
        payload: bytes,
        sealed: bytes,
        index: IndexWrite | None,
    ) -> bool:
        """Settle a key change after its script; False if ``key`` was unusable.

        A session ended meanwhile (a logout in another tab, ``logout_user``, a
        clear, another ``cycle_key``) moved nowhere: its data must not live on
        under a live key, and ``login()`` or a password change must still
        complete, so the session continues empty, as after ``flush()``, and
        its next save creates it under a fresh key.
        """
        if outcome in (Outcome.EXISTS, Outcome.TOMBSTONED):
            return False
        self._indexed = None
        if outcome is Outcome.WRITTEN:
            self._stored, self._version = (key, payload), (key, sealed)
            if index is not None:
                self._indexed = (index.user_id, index.expires_ms)
            return True
        self._stored = self._version = None
        if outcome is Outcome.MISSING:
            security_logger.warning(
                "The session was ended by another request before its key could "
                "change; it continues empty, with nothing carried over."
            )
            self._session_cache: dict[str, Any] = {}
        # EXPIRED: the old session ended, and nothing was written.
        return True

    def _adopting(self, no_load: bool) -> str | None:
        """The signed cookie to adopt on this first access, if there is one.

        SessionBase loads nothing for a session without a key, and such a
        cookie is the one session that has none yet. Once the session was
        touched (a flush, a clear), there is nothing left to adopt.
        """
        cookie, self._foreign_cookie = self._foreign_cookie, None
        if cookie is None or no_load or hasattr(self, "_session_cache"):
            return None
        return cookie

    def _get_session(self, no_load: bool = False) -> dict[str, Any]:
        if (cookie := self._adopting(no_load)) is not None:
            data = migration.adopt_cookie(self._layer, cookie)
            self._session_cache = self._accept_adopted(data)
        return super()._get_session(no_load)  # type: ignore[misc,no-any-return]

    # SessionBase's property names its own method, not this override.
    _session = property(_get_session)

    def get_expiry_age(self, **kwargs: Any) -> int:
        # SessionBase reads the clock first, even for a session without an
        # expiry of its own, which gets the cookie age: every save asks, and
        # the clock and the datetime were most of the answer's cost.
        if "expiry" not in kwargs and not self.get(EXPIRY_KEY):
            return self.get_session_cookie_age()
        return super().get_expiry_age(**kwargs)

    def load(self) -> dict[str, Any]:
        key = self.session_key
        if key is None:
            return self._accept_loaded(None, None)
        payload = self._layer.read(key)
        if payload is None:
            # Only a miss pays for the window: a hit stays one GET.
            payload = migration.read_through(self._layer, key, self._payloads)
            notice = self.on_ended_elsewhere
            if payload is None and notice is not None and self._layer.tombstoned(key):
                notice()
        return self._accept_loaded(key, payload)

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
        data = self._get_session(no_load=must_create)
        ttl = self.get_expiry_age()
        payload, index = self._prepared(data, ttl)
        sealed: bytes | None = None
        if must_create:
            sealed = self._payloads.seal(payload, key)
            operation, outcome = "create", self._layer.create(key, sealed, ttl, index)
        elif index is None and self._only_needs_touch(key, payload):
            if self._layer.disable_touch:
                return None
            operation, outcome = "touch", self._layer.touch(key, ttl)
        else:
            operation = "update"
            outcome, data, payload, sealed, index = self._update(
                key, data, payload, ttl, index
            )
        if signals.listening():
            events = signals.after_write(
                operation, outcome, key, refused_if_missing=True
            )
            signals.send(type(self), events, self._layer.session_id)
        self._accept_saved(outcome, key, payload, sealed, must_create=must_create)
        if outcome is Outcome.WRITTEN and (user := self._record_index(index, data)):
            self._layer.unindex(user, key)
        return None

    def _update(
        self,
        key: str,
        data: dict[str, Any],
        payload: bytes,
        ttl: float,
        index: IndexWrite | None,
    ) -> tuple[Outcome, dict[str, Any], bytes, bytes, IndexWrite | None]:
        """Save over the version this request loaded, merging a newer one.

        One round trip when nobody else saved since the load; after another
        request's save, its data comes back in the same reply, this request's
        own changes are re-applied onto it (``merge.merged``) and the save is
        sent again, at most ``MERGE_ATTEMPTS`` times (then CONFLICT, which
        ``save()`` raises as ``UpdateError``). Returns the outcome and what
        was last sent: the data, its payload, plain and sealed, and its index
        entry.
        """
        for _ in range(MERGE_ATTEMPTS):
            sealed = self._payloads.seal(payload, key)
            # A session never read here (None) is written last-write-wins.
            expected = self._loaded_version(key)
            result = self._layer.update(key, sealed, ttl, index, expected=expected)
            if not isinstance(result, Conflict):
                return result, data, payload, sealed, index
            assert expected is not None
            data = self._merged(key, expected, data, result.current)
            payload, index = self._prepared(data, ttl)
        return Outcome.CONFLICT, data, payload, sealed, index

    def _loaded_version(self, key: str) -> bytes | None:
        """The bytes Redis held under ``key`` when this session last read or
        wrote them: the version its save writes over."""
        if self._version is None or self._version[0] != key:
            return None
        return self._version[1]

    def _merged(
        self, key: str, loaded: bytes, mine: dict[str, Any], current: bytes
    ) -> dict[str, Any]:
        """This request's changes since ``loaded`` applied onto ``current``.

        ``current`` becomes the version the next save expects, and the
        session's data (with the index entry it records) from now on.
        """
        before = self._payloads.loads(loaded, key) or {}
        before.pop(INDEX_MARK, None)
        # A value that no longer opens or decodes (corrupt, foreign, expired)
        # has nothing to merge into; what this request holds is written over
        # it.
        found = self._payloads.load(current, key)
        now = {} if found is None else found.data
        until = now.pop(INDEX_MARK, None)
        self._stored = None if found is None else (key, found.plain)
        self._version = (key, current)
        self._indexed = None
        if isinstance(until, int) and now.get(USER_ID_KEY) is not None:
            self._indexed = (str(now[USER_ID_KEY]), until)
        data = merged(before, mine, now, self._assigned)
        self._session_cache = data
        return data

    def _cycle(self) -> None:
        """Move the loaded session to a new key: one script (see cycle_key())."""
        data = self._get_session()
        ttl = self.get_expiry_age()
        # Serialized first: data that cannot be stored fails here, as with
        # Django's own backends, and the session stays where it was.
        payload, index = self._prepared(data, ttl, moving=True)
        old_key = self.session_key
        if old_key is not None:
            migration.forget(old_key)
        for _ in range(CREATE_ATTEMPTS):
            key = self._get_new_session_key()
            sealed = self._payloads.seal(payload, key)
            outcome = self._layer.cycle(old_key, key, sealed, ttl, index)
            if signals.listening():
                events = signals.after_write(
                    "cycle", outcome, key, old_key=old_key, refused_if_missing=True
                )
                signals.send(type(self), events, self._layer.session_id)
            if self._accept_cycled(outcome, key, payload, sealed, index):
                self._session_key = key if outcome is Outcome.WRITTEN else None
                self.modified = True
                return
        raise RuntimeError(_create_failed_message())

    def delete(self, session_key: str | None = None) -> None:
        user = self._forget_index() if session_key is None else None
        session_key = self.session_key if session_key is None else session_key
        if session_key is not None:
            migration.forget(session_key)
            ended = self._layer.destroy(session_key, user)
            self._forget_stored(session_key)
            if ended and signals.listening():
                events = signals.ended(session_key, "logout")
                signals.send(type(self), events, self._layer.session_id)

    def _forget_index(self) -> str | None:
        """The user whose index holds this session (if known), forgotten."""
        user = None if self._indexed is None else self._indexed[0]
        self._indexed = None
        return user

    def cycle_key(self) -> None:
        """Give the session a new key before returning, as Django's backends do.

        One script writes the data under the new key and ends the old session
        (on Redis Cluster, where the two live on different slots: the old one
        ends, reporting whether it was live, then the new one is created), so
        a request still holding the old key can never write it back, and
        ``exists(old_key)`` is False at once. A session ended elsewhere
        meanwhile continues empty (see ``_accept_cycled``); nothing raises.
        """
        self._cycle()

    @classmethod
    def clear_expired(cls) -> None:
        """Redis expires sessions itself."""

    # SessionBase calls these from its own asyncio helpers, which exist from
    # Django 5.1; on 4.2 and 5.0 nothing could call them.
    if django.VERSION >= (5, 1):

        async def _aget_new_session_key(self) -> str:
            return self._get_new_session_key()

        async def _aget_session(self, no_load: bool = False) -> dict[str, Any]:
            """See _get_session()."""
            if (cookie := self._adopting(no_load)) is not None:
                data = await migration.aadopt_cookie(self._layer, cookie)
                self._session_cache = self._accept_adopted(data)
            return await super()._aget_session(no_load)  # type: ignore[misc,no-any-return]

        async def aget_expiry_age(self, **kwargs: Any) -> int:
            """See get_expiry_age()."""
            if "expiry" not in kwargs and not await self.aget(EXPIRY_KEY):
                return self.get_session_cookie_age()
            return await super().aget_expiry_age(**kwargs)

        async def aload(self) -> dict[str, Any]:
            """See load()."""
            key = self.session_key
            if key is None:
                return self._accept_loaded(None, None)
            payload = await self._layer.aread(key)
            if payload is None:
                payload = await migration.aread_through(
                    self._layer, key, self._payloads
                )
                notice = self.on_ended_elsewhere
                layer = self._layer
                if payload is None and notice and await layer.atombstoned(key):
                    notice()
            return self._accept_loaded(key, payload)

        async def aset(self, key: str, value: Any) -> None:
            """See __setitem__()."""
            await super().aset(key, value)
            self._assigned.add(key)

        async def aupdate(self, dict_: Any) -> None:
            """See update()."""
            items = dict(dict_)
            await super().aupdate(items)
            self._assigned.update(items)

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
            data = await self._aget_session(no_load=must_create)
            ttl = await self.aget_expiry_age()
            payload, index = self._prepared(data, ttl)
            layer = self._layer
            sealed: bytes | None = None
            if must_create:
                operation = "create"
                sealed = self._payloads.seal(payload, key)
                outcome = await layer.acreate(key, sealed, ttl, index)
            elif index is None and self._only_needs_touch(key, payload):
                if self._layer.disable_touch:
                    return None
                operation, outcome = "touch", await layer.atouch(key, ttl)
            else:
                operation = "update"
                outcome, data, payload, sealed, index = await self._aupdate(
                    key, data, payload, ttl, index
                )
            if signals.listening():
                events = signals.after_write(
                    operation, outcome, key, refused_if_missing=True
                )
                await signals.asend(type(self), events, layer.session_id)
            self._accept_saved(outcome, key, payload, sealed, must_create=must_create)
            if outcome is Outcome.WRITTEN and (user := self._record_index(index, data)):
                await self._layer.aunindex(user, key)
            return None

        async def _aupdate(
            self,
            key: str,
            data: dict[str, Any],
            payload: bytes,
            ttl: float,
            index: IndexWrite | None,
        ) -> tuple[Outcome, dict[str, Any], bytes, bytes, IndexWrite | None]:
            """See _update()."""
            layer = self._layer
            for _ in range(MERGE_ATTEMPTS):
                sealed = self._payloads.seal(payload, key)
                expected = self._loaded_version(key)
                result = await layer.aupdate(key, sealed, ttl, index, expected=expected)
                if not isinstance(result, Conflict):
                    return result, data, payload, sealed, index
                assert expected is not None
                data = self._merged(key, expected, data, result.current)
                payload, index = self._prepared(data, ttl)
            return Outcome.CONFLICT, data, payload, sealed, index

        async def _acycle(self) -> None:
            """See _cycle()."""
            data = await self._aget_session()
            ttl = await self.aget_expiry_age()
            payload, index = self._prepared(data, ttl, moving=True)
            old_key = self.session_key
            if old_key is not None:
                await migration.aforget(old_key)
            for _ in range(CREATE_ATTEMPTS):
                key = await self._aget_new_session_key()
                sealed = self._payloads.seal(payload, key)
                outcome = await self._layer.acycle(old_key, key, sealed, ttl, index)
                if signals.listening():
                    events = signals.after_write(
                        "cycle", outcome, key, old_key=old_key, refused_if_missing=True
                    )
                    await signals.asend(type(self), events, self._layer.session_id)
                if self._accept_cycled(outcome, key, payload, sealed, index):
                    self._session_key = key if outcome is Outcome.WRITTEN else None
                    self.modified = True
                    return
            raise RuntimeError(_create_failed_message())

        async def adelete(self, session_key: str | None = None) -> None:
            """See delete()."""
            user = self._forget_index() if session_key is None else None
            session_key = self.session_key if session_key is None else session_key
            if session_key is not None:
                await migration.aforget(session_key)
                ended = await self._layer.adestroy(session_key, user)
                self._forget_stored(session_key)
                if ended and signals.listening():
                    events = signals.ended(session_key, "logout")
                    await signals.asend(type(self), events, self._layer.session_id)

        async def acycle_key(self) -> None:
            """See cycle_key()."""
            await self._acycle()


#: Random bytes below this map evenly onto the 36 characters of the alphabet.
_EVEN = 256 - 256 % len(VALID_KEY_CHARS)


@functools.cache
def _serializer(path: str) -> type[Any]:
    """The class ``SESSION_SERIALIZER`` names (a setting: few distinct values)."""
    serializer: type[Any] = import_string(path)
    return serializer


def random_key(length: int = 32) -> str:
    """A key like ``get_random_string(length, VALID_KEY_CHARS)``, ten times cheaper.

    The same alphabet from the same source (``os.urandom`` via ``secrets``),
    uniform by rejection: one system call for the whole key where Django's
    makes one per character, which was most of a create's own cost.
    """
    found = ""
    while len(found) < length:
        found += "".join(
            VALID_KEY_CHARS[byte % 36]
            for byte in secrets.token_bytes(48)
            if byte < _EVEN
        )
    return found[:length]


def _create_failed_message() -> str:
    return (
        f"Unable to create a new session key after {CREATE_ATTEMPTS} attempts: "
        "every random key was refused. Check that nothing else writes under "
        f"SESSION_REDIS['PREFIX'] {conf.PREFIX!r}."
    )
