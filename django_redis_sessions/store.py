"""The public store: sessions as dicts, for code outside requests.

``get_store()`` returns the store configured by ``SESSION_REDIS``. Its
methods are the documented API and nothing else; each has an ``a``-prefixed
asyncio twin. The bytes, names and scripts live in ``redis_layer.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from django_redis_sessions import migration, signals
from django_redis_sessions.bulk import DEDUPE_BATCHES
from django_redis_sessions.client import clients
from django_redis_sessions.conf import SETTING_NAME, conf
from django_redis_sessions.encryption import require_key
from django_redis_sessions.keys import session_names
from django_redis_sessions.payloads import Payloads, SessionData, expiry_seconds
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import Conflict, Outcome
from django_redis_sessions.user_index import (
    INDEX_MARK,
    SLACK_MS,
    IndexWrite,
    UserSession,
    entry_for,
    marked,
    parse_entry,
)

#: Reads of the index ``logout_user()`` makes at most. Each pass after the
#: first only finds sessions that a key change or a login wrote while the one
#: before ran, and ends them before they can write again, so two passes are
#: the rule; a session logging in during the last pass stays listed.
LOGOUT_PASSES = 10

#: Reads a ``touch()`` that rewrites an index entry makes at most: each
#: retry follows a write of the session by someone else in between.
TOUCH_ATTEMPTS = 10


class RedisSessionStore:
    """Sessions in Redis as dicts; every write is atomic and tombstone-guarded.

    ``ttl`` is in seconds; when omitted it comes from the data's
    ``_session_expiry``, else ``TTL_SECONDS``. A TTL that is not positive
    destroys the session instead of writing it (``create`` writes nothing).
    The keyword arguments override the settings, e.g. ``prefix=`` for a store
    of another prefix.
    """

    def __init__(
        self,
        *,
        prefix: str | None = None,
        scan_count: int | None = None,
        ttl_seconds: int | None = None,
        tombstone_seconds: int | None = None,
        hash_ids: bool | str | None = None,
        serializer: Any = None,
        client: Callable[[], Any] = clients.get,
        async_client: Callable[[], Any] = clients.for_running_loop,
    ) -> None:
        self._layer = RedisLayer(
            prefix=prefix,
            scan_count=scan_count,
            tombstone_seconds=tombstone_seconds,
            hash_ids=hash_ids,
            client=client,
            async_client=async_client,
        )
        self._payloads = Payloads(serializer)
        self._ttl_seconds = conf.TTL_SECONDS if ttl_seconds is None else ttl_seconds

    def _ttl(self, data: SessionData, ttl: float | None) -> float:
        if ttl is not None:
            return ttl
        seconds = expiry_seconds(data, cookie_age=conf.SESSION_COOKIE_AGE)
        if seconds is not None:
            return seconds
        if not self._ttl_seconds:
            raise ValueError(
                "The session data carries no '_session_expiry', no ttl was "
                "given, and SESSION_REDIS['TTL_SECONDS'] is 0, so the session "
                "would never expire; pass ttl= or set an expiry."
            )
        return float(self._ttl_seconds)

    def session_id(self, key: str) -> str:
        """The id the store keeps the session of ``key`` under.

        ``"#" + base64url(SHA-256(key))`` with ``HASH_IDS`` on, else the key.
        Admin code speaks in ids: every single-session method below takes a
        session key or an id, and ``all()`` yields ids.
        """
        return self._layer.session_id(key)

    # --- Single sessions: one round trip each --------------------------------

    def _prepared(
        self, key: str, data: SessionData, ttl: float
    ) -> tuple[bytes, float, IndexWrite | None]:
        """The payload, the TTL, and the index entry when the data has a user."""
        index = entry_for(data, ttl)
        return self._payloads.dumps(marked(data, index), key), ttl, index

    def _readable(self, key: str) -> str:
        # Before the round trip: an id cannot open an encrypted session.
        if self._payloads.encryption is not None:
            require_key(key)
        return key

    def get(self, key: str) -> SessionData | None:
        """The live session under ``key``; None if missing, destroyed or corrupt.

        With ``ENCRYPTION`` on, ``key`` must be the session key: an id raises
        ``SessionKeyRequired`` (as do ``set``, ``create`` and ``update``).
        """
        payload = self._layer.read(self._readable(key))
        return _public(self._payloads.loads(payload, key))

    async def aget(self, key: str) -> SessionData | None:
        """See get()."""
        payload = await self._layer.aread(self._readable(key))
        return _public(self._payloads.loads(payload, key))

    def set(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """Write ``data`` under ``key`` unless a tombstone blocks it (then False).

        Data with a user is entered in the user's index first (one more round
        trip), so the index never misses it.
        """
        payload, seconds, index = self._prepared(key, data, self._ttl(data, ttl))
        if index is not None:
            self._layer.index(key, index)
        outcome = self._layer.set(key, payload, seconds)
        if signals.listening():
            self._send("set", outcome, key)
        return outcome is Outcome.WRITTEN

    async def aset(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """See set()."""
        payload, seconds, index = self._prepared(key, data, self._ttl(data, ttl))
        if index is not None:
            await self._layer.aindex(key, index)
        outcome = await self._layer.aset(key, payload, seconds)
        if signals.listening():
            await self._asend("set", outcome, key)
        return outcome is Outcome.WRITTEN

    def create(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """Write only if neither a live session nor a tombstone holds ``key``.

        Creating the same data twice reports True both times: that is how a
        retry after a lost reply is recognized. With ``ENCRYPTION`` on, the
        same data never seals to the same bytes, so only that retry (the
        same command sent again) reports True; another call reports False.
        """
        payload, seconds, index = self._prepared(key, data, self._ttl(data, ttl))
        outcome = self._layer.create(key, payload, seconds, index)
        if signals.listening():
            self._send("create", outcome, key)
        return outcome is Outcome.WRITTEN

    async def acreate(
        self, key: str, data: SessionData, ttl: float | None = None
    ) -> bool:
        """See create()."""
        payload, seconds, index = self._prepared(key, data, self._ttl(data, ttl))
        outcome = await self._layer.acreate(key, payload, seconds, index)
        if signals.listening():
            await self._asend("create", outcome, key)
        return outcome is Outcome.WRITTEN

    def update(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """Write only if a live session holds ``key``; never creates, never revives."""
        payload, seconds, index = self._prepared(key, data, self._ttl(data, ttl))
        outcome = self._layer.update(key, payload, seconds, index)
        if signals.listening():
            self._send("update", outcome, key)
        return outcome is Outcome.WRITTEN

    async def aupdate(
        self, key: str, data: SessionData, ttl: float | None = None
    ) -> bool:
        """See update()."""
        payload, seconds, index = self._prepared(key, data, self._ttl(data, ttl))
        outcome = await self._layer.aupdate(key, payload, seconds, index)
        if signals.listening():
            await self._asend("update", outcome, key)
        return outcome is Outcome.WRITTEN

    def touch(self, key: str, ttl: float | None = None) -> bool:
        """Reset the TTL of a live session to ``ttl`` (default ``TTL_SECONDS``).

        Never creates a key and never extends a tombstone; False if no live
        session holds ``key``. One ``PEXPIRE`` when ``USER_INDEX`` is off.
        With it on, the session is read first (one more round trip): a
        session whose new expiry passes the one its user's index entry
        records by more than the slack is rewritten with its entry, as a
        save would, so the index never loses it. With ``ENCRYPTION`` on,
        ``key`` must then be the session key.
        """
        seconds = self._ttl({}, ttl)
        if self._layer.user_index:
            outcome = self._touch_indexed(key, seconds)
        else:
            outcome = self._layer.touch(key, seconds)
        if signals.listening():
            self._send("touch", outcome, key)
        return outcome is Outcome.WRITTEN

    async def atouch(self, key: str, ttl: float | None = None) -> bool:
        """See touch()."""
        seconds = self._ttl({}, ttl)
        if self._layer.user_index:
            outcome = await self._atouch_indexed(key, seconds)
        else:
            outcome = await self._layer.atouch(key, seconds)
        if signals.listening():
            await self._asend("touch", outcome, key)
        return outcome is Outcome.WRITTEN

    def _touch_indexed(self, key: str, ttl: float) -> Outcome:
        if ttl <= 0:  # ends the session
            return self._layer.touch(key, ttl)
        for _ in range(TOUCH_ATTEMPTS):
            payload = self._layer.read(self._readable(key))
            if payload is None:
                return Outcome.MISSING
            rewrite = self._index_rewrite(key, payload, ttl)
            if rewrite is None:
                return self._layer.touch(key, ttl)
            data, index = rewrite
            written = self._layer.update(key, data, ttl, index, expected=payload)
            if not isinstance(written, Conflict):
                return written
        return Outcome.CONFLICT

    async def _atouch_indexed(self, key: str, ttl: float) -> Outcome:
        if ttl <= 0:  # ends the session
            return await self._layer.atouch(key, ttl)
        for _ in range(TOUCH_ATTEMPTS):
            payload = await self._layer.aread(self._readable(key))
            if payload is None:
                return Outcome.MISSING
            rewrite = self._index_rewrite(key, payload, ttl)
            if rewrite is None:
                return await self._layer.atouch(key, ttl)
            data, index = rewrite
            layer = self._layer
            written = await layer.aupdate(key, data, ttl, index, expected=payload)
            if not isinstance(written, Conflict):
                return written
        return Outcome.CONFLICT

    def _index_rewrite(
        self, key: str, payload: bytes, ttl: float
    ) -> tuple[bytes, IndexWrite] | None:
        """The payload and entry that keep the index ahead of a touch to
        ``ttl``; None when a ``PEXPIRE`` keeps it (a session without a user,
        corrupt, or whose entry stays within the slack)."""
        data = self._payloads.loads(payload, key)
        index = None if data is None else entry_for(data, ttl)
        if data is None or index is None:
            return None
        recorded = data.pop(INDEX_MARK, None)
        if isinstance(recorded, int) and index.expires_ms <= recorded + SLACK_MS:
            return None
        return self._payloads.dumps(marked(data, index), key), index

    def destroy(self, key: str) -> bool:
        """Delete the session and leave a tombstone; True if a live one was removed.

        While ``MIGRATE_FROM`` is set, a session key (not an id) is deleted
        from that engine too.
        """
        migration.forget(key)
        ended = self._layer.destroy(key)
        if ended and signals.listening():
            signals.send(type(self), signals.ended(key, "destroy"), self.session_id)
        return ended

    async def adestroy(self, key: str) -> bool:
        """See destroy()."""
        await migration.aforget(key)
        ended = await self._layer.adestroy(key)
        if ended and signals.listening():
            events = signals.ended(key, "destroy")
            await signals.asend(type(self), events, self.session_id)
        return ended

    def exists(self, key: str) -> bool:
        """Whether a live session holds ``key`` (a tombstone is not a session)."""
        return self._layer.exists(key)

    async def aexists(self, key: str) -> bool:
        """See exists()."""
        return await self._layer.aexists(key)

    def ttl(self, key: str) -> float | None:
        """Seconds until Redis drops the session; None if no session holds ``key``."""
        return self._layer.ttl(key)

    async def attl(self, key: str) -> float | None:
        """See ttl()."""
        return await self._layer.attl(key)

    # --- The sessions of a user ---------------------------------------------

    def user_sessions(self, user_id: object) -> list[UserSession]:
        """The user's live sessions, newest first (two round trips).

        Read from the user's index (``USER_INDEX``); each session's expiry is
        read from Redis, and entries of sessions gone meanwhile are pruned.
        """
        entries = self._layer.user_entries(str(user_id))
        return _newest_first(entries)

    async def auser_sessions(self, user_id: object) -> list[UserSession]:
        """See user_sessions()."""
        entries = await self._layer.auser_entries(str(user_id))
        return _newest_first(entries)

    def logout_user(self, user_id: object, *, keep: str | None = None) -> int:
        """End every session of the user but ``keep`` (a key or an id).

        Invariant: every session of the user that was live when this was
        called ends, including one a ``cycle_key()`` moves to a new id while
        this runs; a session created meanwhile ends or stays listed. The index
        lists a session's new id before its old one ends (atomically on one
        server), so a pass that ends what the index held reads the index
        again, and ends what it did not hold before, until a read shows
        nothing new. Every entry ends, live or not: ending an id whose session
        is not written yet leaves the tombstone that refuses its creation.

        Each ends like a logout, with a tombstone, so a request of an ended
        session still in flight can never write it back, and each sends
        ``session_ended`` with reason ``"logout_user"``. Returns how many
        live sessions ended. Round trips: one read of the index per pass,
        one per session ended.
        """
        user = str(user_id)
        handled = set() if keep is None else {self._layer.session_id(keep)}
        ended = []
        for _ in range(LOGOUT_PASSES):
            fresh = _fresh(self._layer, self._layer.index_fields(user), handled)
            if not fresh:
                break
            for field, session_id in fresh:
                if self._layer.destroy(field, user):
                    ended.append(session_id)
        if ended and signals.session_ended.receivers:
            signals.send_ended_ids(type(self), ended, "logout_user")
        return len(ended)

    async def alogout_user(self, user_id: object, *, keep: str | None = None) -> int:
        """See logout_user()."""
        user = str(user_id)
        handled = set() if keep is None else {self._layer.session_id(keep)}
        ended = []
        for _ in range(LOGOUT_PASSES):
            fresh = _fresh(self._layer, await self._layer.aindex_fields(user), handled)
            if not fresh:
                break
            for field, session_id in fresh:
                if await self._layer.adestroy(field, user):
                    ended.append(session_id)
        if ended and signals.session_ended.receivers:
            await signals.asend_ended_ids(type(self), ended, "logout_user")
        return len(ended)

    # --- Every session under the prefix, a SCAN batch at a time ---------------

    def all(self) -> Iterator[tuple[str, SessionData]]:
        """Every live session as ``(id, data)``, streamed batch by batch.

        With ``ENCRYPTION`` on, the data of an encrypted session is ``{}``:
        only its session key opens it. Its id is exact, so counting, listing
        and destroying by id keep working; in "migrate" mode a session still
        stored unencrypted yields its data.
        """
        for names in self._layer.scan():
            yield from self._sessions(names, self._layer.values(names))

    async def aall(self) -> AsyncIterator[tuple[str, SessionData]]:
        """See all()."""
        async for names in self._layer.ascan():
            for item in self._sessions(names, await self._layer.avalues(names)):
                yield item

    def count(self) -> int:
        """Live sessions under the prefix; tombstones excluded, no value read."""
        return sum(len(names) for names in self._layer.scan())

    async def acount(self) -> int:
        """See count()."""
        return sum([len(names) async for names in self._layer.ascan()])

    def clear(self) -> int:
        """Delete every session under the prefix; how many were deleted.

        Tombstones are not touched (not re-armed, not removed), nor are the
        users' indexes: their entries go stale and are pruned by the index
        itself (see ``RedisLayer.clear_batches``). If it fails half-way,
        running it again finishes the job.
        """
        return sum(cleared(self._layer, type(self)))

    async def aclear(self) -> int:
        """See clear()."""
        return sum([deleted async for deleted in acleared(self._layer, type(self))])

    def _send(self, operation: str, outcome: Outcome, key: str) -> None:
        events = signals.after_write(operation, outcome, key)
        signals.send(type(self), events, self.session_id)

    async def _asend(self, operation: str, outcome: Outcome, key: str) -> None:
        events = signals.after_write(operation, outcome, key)
        await signals.asend(type(self), events, self.session_id)

    def _sessions(
        self, names: list[bytes], values: list[bytes | None]
    ) -> Iterator[tuple[str, SessionData]]:
        # Names can expire or be destroyed between SCAN and GET: their value
        # is None, and zip keeps every other name paired with its own value.
        loads = self._payloads.loads_without_key
        ids = self._layer.ids_of_names(names)
        for session_id, payload in zip(ids, values, strict=True):
            data = _public(loads(payload))
            if data is not None:
                yield session_id, data


def cleared(layer: RedisLayer, sender: type) -> Iterator[int]:
    """What ``clear()`` deletes, batch by batch: how many names each deleted.

    Shared with the management command, which shows progress. With a
    receiver of ``session_ended``, one signal per session the batch held (by
    the ids of its names, as SCAN found them just before the UNLINK).
    """
    listened = bool(signals.session_ended.receivers)
    for deleted, names in layer.clear_batches(
        remember=DEDUPE_BATCHES if listened else 0
    ):
        if listened:
            ids = layer.ids_of_names(session_names(names))
            signals.send_ended_ids(sender, ids, "clear")
        yield deleted


async def acleared(layer: RedisLayer, sender: type) -> AsyncIterator[int]:
    """See cleared()."""
    listened = bool(signals.session_ended.receivers)
    remember = DEDUPE_BATCHES if listened else 0
    async for deleted, names in layer.aclear_batches(remember=remember):
        if listened:
            ids = layer.ids_of_names(session_names(names))
            await signals.asend_ended_ids(sender, ids, "clear")
        yield deleted


def _fresh(
    layer: RedisLayer, fields: list[str], handled: set[str]
) -> list[tuple[str, str]]:
    """``(field, id)`` of the index fields not handled yet, now handled."""
    fresh = []
    for field in fields:
        session_id = layer.session_id(field)
        if session_id not in handled:
            handled.add(session_id)
            fresh.append((field, session_id))
    return fresh


def _newest_first(entries: list[tuple[str, str, int | None]]) -> list[UserSession]:
    sessions = [parse_entry(*entry) for entry in entries]
    found = [session for session in sessions if session is not None]
    return sorted(found, key=lambda session: session.created_at, reverse=True)


def _public(data: SessionData | None) -> SessionData | None:
    """The session's data without the engine's own bookkeeping."""
    if data is not None:
        data.pop(INDEX_MARK, None)
    return data


_store: RedisSessionStore | None = None


def get_store() -> RedisSessionStore:
    """The store configured by ``SESSION_REDIS``, shared by the process."""
    global _store
    if _store is None:
        _store = RedisSessionStore()
    return _store


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in {SETTING_NAME, "SESSION_SERIALIZER", "SESSION_COOKIE_AGE"}:
        global _store
        _store = None
