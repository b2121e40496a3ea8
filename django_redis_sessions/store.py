"""The session store: atomic single-key operations guarded by tombstones.

Layout (one Redis Cluster slot per session, the session key is the hash tag)::

    <PREFIX>{<session key>}              the serialized session
    <PREFIX>{<session key>}:tombstone    "1" for TOMBSTONE_SECONDS after a destroy

A data key always ends in ``}`` and a tombstone never does, so ``SCAN MATCH
<PREFIX>{*}`` finds sessions and skips tombstones without reading a value.

The module has two halves. The I/O-free core (key names, TTL arithmetic,
decoding, and ``Op``: one planned Redis call plus the function decoding its
reply) is shared by the sync and the asyncio methods of ``RedisSessionStore``,
which only send what the core planned. Every single-session method is one
round trip and atomic; running any of them twice (a client retry after a lost
reply) never revives a destroyed session.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import redis.asyncio.cluster
import redis.cluster
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string

from django_redis_sessions import scripts
from django_redis_sessions.client import get_async_client, get_client
from django_redis_sessions.conf import SETTING_NAME, conf
from django_redis_sessions.scripts import Outcome

T = TypeVar("T")
SessionData = dict[str, Any]

TOMBSTONE_SUFFIX = ":tombstone"
EXPIRY_KEY = "_session_expiry"
#: How many recent SCAN batches are remembered to drop duplicates. SCAN
#: repeats a key only when the keyspace shrinks mid-iteration, and the repeated
#: keys come from the buckets visited just before, so a window of recent
#: batches catches them while memory stays flat however many sessions exist.
DEDUPE_BATCHES = 10

security_logger = logging.getLogger("django.security.SuspiciousSession")


# --- The I/O-free core -------------------------------------------------------


def is_valid_key(key: object) -> bool:
    """Whether ``key`` can name a session: a non-empty, UTF-8 encodable string.

    A key starting with ``}`` would leave the hash tag empty, so Redis Cluster
    would hash the data and the tombstone to different slots.
    """
    if not isinstance(key, str) or not key or key.startswith("}"):
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def data_key(prefix: str, key: str) -> str:
    return f"{prefix}{{{key}}}"


def tombstone_key(prefix: str, key: str) -> str:
    return f"{prefix}{{{key}}}{TOMBSTONE_SUFFIX}"


def session_key_from(prefix: str, redis_key: bytes) -> str:
    """The session key inside a data key found by SCAN."""
    return redis_key.decode()[len(prefix) + 1 : -1]


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def scan_pattern(prefix: str) -> str:
    return glob_escape(prefix) + "{*}"


def ttl_milliseconds(seconds: float) -> int:
    """Whole milliseconds, rounded up; 0 for anything not positive.

    Redis rejects a fractional or non-positive expiry (``ERR invalid expire
    time``); a non-positive TTL means the session is over and is destroyed.
    """
    return max(0, math.ceil(seconds * 1000))


def expiry_seconds(
    data: SessionData, *, cookie_age: int, now: datetime | None = None
) -> float | None:
    """Seconds left according to the data's ``_session_expiry``, like Django.

    None when the data carries no expiry; ``0`` (expire at browser close)
    keeps the session for ``SESSION_COOKIE_AGE`` on the server.
    """
    expiry = data.get(EXPIRY_KEY)
    if expiry is None:
        return None
    if not expiry:
        return float(cookie_age)
    if isinstance(expiry, str):
        expires_at = datetime.fromisoformat(expiry)
        if now is None:
            now = timezone.now()
        # Django writes a naive expiry when USE_TZ is off: local wall time.
        if timezone.is_naive(expires_at) and timezone.is_aware(now):
            now = timezone.make_naive(now)
        elif timezone.is_aware(expires_at) and timezone.is_naive(now):
            now = timezone.make_aware(now)
        return (expires_at - now).total_seconds()
    return float(expiry)


def is_expired(data: SessionData, now: datetime | None = None) -> bool:
    """Whether an absolute ``_session_expiry`` has passed.

    Redis's TTL should have removed such a key already; if it did not (a TTL
    set by another writer, clock drift), the session is still over.
    """
    if not isinstance(data.get(EXPIRY_KEY), str):
        return False
    try:
        seconds = expiry_seconds(data, cookie_age=0, now=now)
    except ValueError:
        return True
    return seconds is not None and seconds <= 0


def decode_session(serializer: Any, payload: bytes) -> SessionData | None:
    """The session in ``payload``, or None if it is corrupt, foreign or over."""
    try:
        data = serializer.loads(payload)
    except Exception:
        data = None
    if not isinstance(data, dict):
        # Django's own backends log tampered data here; a payload this store
        # did not write is as suspicious.
        security_logger.warning(
            "Session data corrupted: a stored session could not be decoded "
            "and was treated as empty."
        )
        return None
    if is_expired(data):
        return None
    return data


def decode_outcome(reply: Any) -> Outcome:
    return Outcome(int(reply))


def _written_or_missing(reply: Any) -> Outcome:
    return Outcome.WRITTEN if reply else Outcome.MISSING


def _expired(reply: Any) -> Outcome:
    return Outcome.EXPIRED


class RecentKeys:
    """Drops keys SCAN already returned in recent non-empty batches.

    It remembers at least the last ``batches`` batches and at most twice as
    many: two generations of keys, the older dropped whole when the newer is
    full, so forgetting costs nothing. With ``batches=0`` every page passes
    through untouched.
    """

    def __init__(self, batches: int) -> None:
        self._limit = batches
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._current_batches = 0

    def fresh(self, keys: Iterable[bytes]) -> list[bytes]:
        page = keys if isinstance(keys, list) else list(keys)
        if not self._limit:
            return page
        current, previous = self._current, self._previous
        # The common case, no repeat at all, stays in C: two lookups and one
        # insertion per key. This is the whole cost of deduplicating.
        if current.isdisjoint(page) and previous.isdisjoint(page):
            before = len(current)
            current.update(page)
            if len(current) - before == len(page):
                fresh = page
            else:
                fresh = list(dict.fromkeys(page))
        else:
            candidates = dict.fromkeys(page)
            fresh = [k for k in candidates if k not in current and k not in previous]
            current.update(fresh)
        if fresh:
            # An empty page visited no key, so it must not push out of the
            # window the batches whose keys SCAN may still repeat.
            self._current_batches += 1
            if self._current_batches >= self._limit:
                self._previous, self._current = current, set()
                self._current_batches = 0
        return fresh


@dataclass(frozen=True)
class Op(Generic[T]):
    """One Redis call and how to read its reply.

    ``args`` is a command (``script`` None) or the arguments of a script run
    with ``keys``; ``args`` None means nothing needs sending (an invalid key)
    and the result is ``decode(None)``.
    """

    args: tuple[Any, ...] | None
    decode: Callable[[Any], T]
    script: str | None = None
    keys: tuple[str, ...] = ()


def _false(reply: Any) -> bool:
    return False


def _none(reply: Any) -> None:
    return None


def _bool(reply: Any) -> bool:
    return bool(reply)


def _identity(reply: Any) -> Any:
    return reply


# --- The store ---------------------------------------------------------------


class RedisSessionStore:
    """Sessions in Redis, for the session backend and for code outside requests.

    Every method has an ``a``-prefixed asyncio twin. Methods taking ``data``
    serialize it with the configured serializer; the ``*_payload`` methods take
    bytes the caller serialized (the session backend does, to notice an
    unchanged session). ``ttl`` is in seconds; when omitted, it comes from the
    data's ``_session_expiry``, else ``TTL_SECONDS``. A TTL that is not
    positive destroys the session instead of writing it.
    """

    def __init__(
        self,
        *,
        prefix: str | None = None,
        scan_count: int | None = None,
        ttl_seconds: int | None = None,
        tombstone_seconds: int | None = None,
        serializer: Any = None,
        client: Callable[[], Any] = get_client,
        async_client: Callable[[], Any] = get_async_client,
    ) -> None:
        self.prefix = conf.PREFIX if prefix is None else prefix
        self.scan_count = conf.SCAN_COUNT if scan_count is None else scan_count
        self.ttl_seconds = conf.TTL_SECONDS if ttl_seconds is None else ttl_seconds
        self.tombstone_seconds = (
            conf.TOMBSTONE_SECONDS if tombstone_seconds is None else tombstone_seconds
        )
        if serializer is None:
            serializer = import_string(conf.SERIALIZER)()
        self.serializer = serializer
        self._client = client
        self._async_client = async_client

    # Planning: the only place that knows commands, keys and arguments.

    def _keys(self, key: str) -> tuple[str, str]:
        return data_key(self.prefix, key), tombstone_key(self.prefix, key)

    def _ttl(self, data: SessionData, ttl: float | None) -> float:
        if ttl is not None:
            return ttl
        seconds = expiry_seconds(data, cookie_age=conf.SESSION_COOKIE_AGE)
        if seconds is not None:
            return seconds
        if not self.ttl_seconds:
            raise ValueError(
                "The session data carries no '_session_expiry', no ttl was "
                "given, and SESSION_REDIS['TTL_SECONDS'] is 0, so the session "
                "would never expire; pass ttl= or set an expiry."
            )
        return float(self.ttl_seconds)

    def _get_op(self, key: str) -> Op[bytes | None]:
        if not is_valid_key(key):
            return Op(None, _none)
        return Op(("GET", data_key(self.prefix, key)), _identity)

    def _exists_op(self, key: str) -> Op[bool]:
        if not is_valid_key(key):
            return Op(None, _false)
        return Op(("EXISTS", data_key(self.prefix, key)), _bool)

    def _destroy_op(self, key: str) -> Op[bool]:
        if not is_valid_key(key):
            return Op(None, _false)
        tombstone_ms = ttl_milliseconds(self.tombstone_seconds)
        return Op((tombstone_ms,), _bool, scripts.DESTROY, self._keys(key))

    def _unless_expired(
        self, key: str, ttl: float, write: Callable[[int], Op[Outcome]]
    ) -> Op[Outcome]:
        """``write(ttl_ms)``, or, when the TTL is not positive, a destroy.

        The one place that turns an expired write into the end of a session:
        Redis would reject a non-positive TTL (``ERR invalid expire time``).
        """
        ttl_ms = ttl_milliseconds(ttl)
        if ttl_ms:
            return write(ttl_ms)
        destroy = self._destroy_op(key)
        return Op(destroy.args, _expired, destroy.script, destroy.keys)

    def _write_op(
        self, script: str, key: str, payload: bytes, ttl: float
    ) -> Op[Outcome]:
        _check_key(key)
        keys = self._keys(key)
        return self._unless_expired(
            key, ttl, lambda ttl_ms: Op((payload, ttl_ms), decode_outcome, script, keys)
        )

    def _update_op(self, key: str, payload: bytes, ttl: float) -> Op[Outcome]:
        # SET XX alone is atomic: a destroyed session has no data key (its
        # tombstone and its data never coexist), so there is nothing to update.
        _check_key(key)
        data = data_key(self.prefix, key)
        return self._unless_expired(
            key,
            ttl,
            lambda ttl_ms: Op(
                ("SET", data, payload, "PX", ttl_ms, "XX"), _written_or_missing
            ),
        )

    def _touch_op(self, key: str, ttl: float) -> Op[Outcome]:
        # PEXPIRE never creates a key, and a tombstone is another key: a touch
        # after a destroy changes nothing.
        if not is_valid_key(key):
            return Op(None, _written_or_missing)
        data = data_key(self.prefix, key)
        return self._unless_expired(
            key, ttl, lambda ttl_ms: Op(("PEXPIRE", data, ttl_ms), _written_or_missing)
        )

    def _cycle_op(
        self, old_key: str, new_key: str, payload: bytes, ttl: float
    ) -> Op[Outcome]:
        # Only for a positive TTL: cycle() ends the old session itself otherwise.
        _check_key(new_key)
        args = (
            payload,
            ttl_milliseconds(ttl),
            ttl_milliseconds(self.tombstone_seconds),
        )
        keys = self._keys(new_key) + self._keys(old_key)
        return Op(args, decode_outcome, scripts.CYCLE, keys)

    def _data_op(
        self, script: str, key: str, data: SessionData, ttl: float | None
    ) -> Op[Outcome]:
        payload = self.serializer.dumps(data)
        return self._write_op(script, key, payload, self._ttl(data, ttl))

    def _cycles_in_one_script(self, client: Any, old_key: str | None) -> bool:
        # On Redis Cluster the old and the new session live on different
        # slots, which one script may not touch.
        return old_key is not None and is_valid_key(old_key) and not is_cluster(client)

    def decode(self, payload: bytes) -> SessionData | None:
        """The session in ``payload``; None (and a security log line) if corrupt."""
        return decode_session(self.serializer, payload)

    def _decoded(self, payload: bytes | None) -> SessionData | None:
        return None if payload is None else self.decode(payload)

    # Sending: one round trip each.

    def _execute(self, op: Op[T]) -> T:
        if op.args is None:
            return op.decode(None)
        client = self._client()
        if op.script is None:
            return op.decode(client.execute_command(*op.args))
        script = scripts.registered(client, op.script)
        return op.decode(script(keys=op.keys, args=op.args, client=client))

    async def _aexecute(self, op: Op[T]) -> T:
        if op.args is None:
            return op.decode(None)
        client = self._async_client()
        if op.script is None:
            return op.decode(await client.execute_command(*op.args))
        script = scripts.registered(client, op.script)
        return op.decode(await script(keys=op.keys, args=op.args, client=client))

    # The public API: single sessions.

    def get(self, key: str) -> SessionData | None:
        """The live session under ``key``; None if missing, destroyed or corrupt."""
        return self._decoded(self.get_payload(key))

    async def aget(self, key: str) -> SessionData | None:
        return self._decoded(await self.aget_payload(key))

    def get_payload(self, key: str) -> bytes | None:
        """The stored bytes of the session under ``key``, undecoded."""
        return self._execute(self._get_op(key))

    async def aget_payload(self, key: str) -> bytes | None:
        return await self._aexecute(self._get_op(key))

    def set(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """Write ``data`` under ``key`` unless a tombstone blocks it (then False)."""
        op = self._data_op(scripts.SET_UNLESS_TOMBSTONED, key, data, ttl)
        return self._execute(op) is Outcome.WRITTEN

    async def aset(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        op = self._data_op(scripts.SET_UNLESS_TOMBSTONED, key, data, ttl)
        return await self._aexecute(op) is Outcome.WRITTEN

    def create(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """Write only if neither a live session nor a tombstone holds ``key``."""
        op = self._data_op(scripts.CREATE, key, data, ttl)
        return self._execute(op) is Outcome.WRITTEN

    async def acreate(
        self, key: str, data: SessionData, ttl: float | None = None
    ) -> bool:
        op = self._data_op(scripts.CREATE, key, data, ttl)
        return await self._aexecute(op) is Outcome.WRITTEN

    def create_payload(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """``create`` for bytes the caller serialized."""
        return self._execute(self._write_op(scripts.CREATE, key, payload, ttl))

    async def acreate_payload(self, key: str, payload: bytes, ttl: float) -> Outcome:
        return await self._aexecute(self._write_op(scripts.CREATE, key, payload, ttl))

    def update(self, key: str, data: SessionData, ttl: float | None = None) -> bool:
        """Write only if a live session holds ``key``; never creates, never revives."""
        payload = self.serializer.dumps(data)
        op = self._update_op(key, payload, self._ttl(data, ttl))
        return self._execute(op) is Outcome.WRITTEN

    async def aupdate(
        self, key: str, data: SessionData, ttl: float | None = None
    ) -> bool:
        payload = self.serializer.dumps(data)
        op = self._update_op(key, payload, self._ttl(data, ttl))
        return await self._aexecute(op) is Outcome.WRITTEN

    def update_payload(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """``update`` for bytes the caller serialized."""
        return self._execute(self._update_op(key, payload, ttl))

    async def aupdate_payload(self, key: str, payload: bytes, ttl: float) -> Outcome:
        return await self._aexecute(self._update_op(key, payload, ttl))

    def touch(self, key: str, ttl: float | None = None) -> bool:
        """Reset the TTL of a live session (default ``TTL_SECONDS``).

        Never creates a key and never extends a tombstone. False if no live
        session holds ``key``.
        """
        return self.touch_payload(key, self._ttl({}, ttl)) is Outcome.WRITTEN

    async def atouch(self, key: str, ttl: float | None = None) -> bool:
        return await self.atouch_payload(key, self._ttl({}, ttl)) is Outcome.WRITTEN

    def touch_payload(self, key: str, ttl: float) -> Outcome:
        """``touch`` with an explicit TTL, reporting the outcome."""
        return self._execute(self._touch_op(key, ttl))

    async def atouch_payload(self, key: str, ttl: float) -> Outcome:
        return await self._aexecute(self._touch_op(key, ttl))

    def destroy(self, key: str) -> bool:
        """Delete the session and leave a tombstone; True if a live one was removed."""
        return self._execute(self._destroy_op(key))

    async def adestroy(self, key: str) -> bool:
        return await self._aexecute(self._destroy_op(key))

    def exists(self, key: str) -> bool:
        """Whether a live session holds ``key`` (a tombstone is not a session)."""
        return self._execute(self._exists_op(key))

    async def aexists(self, key: str) -> bool:
        return await self._aexecute(self._exists_op(key))

    def cycle(
        self, old_key: str | None, new_key: str, payload: bytes, ttl: float
    ) -> Outcome:
        """Move a session to ``new_key`` and destroy ``old_key``: the login path.

        One atomic script on a single Redis; on Redis Cluster, where the two
        keys live on different slots, a create followed by a destroy. Returns
        EXISTS or TOMBSTONED (nothing changed) when ``new_key`` is unusable.
        """
        if old_key is not None and not ttl_milliseconds(ttl):
            self.destroy(old_key)
            return Outcome.EXPIRED
        if self._cycles_in_one_script(self._client(), old_key):
            assert old_key is not None
            return self._execute(self._cycle_op(old_key, new_key, payload, ttl))
        outcome = self.create_payload(new_key, payload, ttl)
        if outcome is Outcome.WRITTEN and old_key is not None:
            self.destroy(old_key)
        return outcome

    async def acycle(
        self, old_key: str | None, new_key: str, payload: bytes, ttl: float
    ) -> Outcome:
        if old_key is not None and not ttl_milliseconds(ttl):
            await self.adestroy(old_key)
            return Outcome.EXPIRED
        if self._cycles_in_one_script(self._async_client(), old_key):
            assert old_key is not None
            return await self._aexecute(self._cycle_op(old_key, new_key, payload, ttl))
        outcome = await self.acreate_payload(new_key, payload, ttl)
        if outcome is Outcome.WRITTEN and old_key is not None:
            await self.adestroy(old_key)
        return outcome

    # The public API: every session under the prefix, a SCAN batch at a time.

    def all(self) -> Iterator[tuple[str, SessionData]]:
        """Every live session as ``(key, data)``, streamed batch by batch."""
        for batch in self._scan():
            yield from self._sessions(batch, self._values(batch))

    async def aall(self) -> AsyncIterator[tuple[str, SessionData]]:
        async for batch in self._ascan():
            for item in self._sessions(batch, await self._avalues(batch)):
                yield item

    def count(self) -> int:
        """Live sessions under the prefix; tombstones excluded, no value read."""
        return sum(len(batch) for batch in self._scan())

    async def acount(self) -> int:
        return sum([len(batch) async for batch in self._ascan()])

    def clear(self) -> int:
        """Delete every live session under the prefix; how many were deleted."""
        return sum(self.clear_in_batches())

    async def aclear(self) -> int:
        return sum([deleted async for deleted in self.aclear_in_batches()])

    def clear_in_batches(self) -> Iterator[int]:
        """``clear`` one SCAN batch at a time, yielding each batch's deletions.

        ``UNLINK`` reports only keys that existed, so the total is exact even
        when SCAN repeats a key. Tombstones are not touched (not re-armed, not
        removed). If it fails half-way, running it again finishes the job.
        """
        # UNLINK counts only keys that existed, so SCAN's repeats need no
        # filtering here: the total is exact and memory stays at one batch.
        for batch in self._scan(remember=0):
            yield self._unlink(batch)

    async def aclear_in_batches(self) -> AsyncIterator[int]:
        async for batch in self._ascan(remember=0):
            yield await self._aunlink(batch)

    def _sessions(
        self, keys: list[bytes], values: list[bytes | None]
    ) -> Iterator[tuple[str, SessionData]]:
        # Keys can expire or be destroyed between SCAN and GET: their value is
        # None, and zip keeps every other key paired with its own value.
        for redis_key, payload in zip(keys, values, strict=True):
            data = self._decoded(payload)
            if data is not None:
                yield session_key_from(self.prefix, redis_key), data

    def _scan(self, remember: int = DEDUPE_BATCHES) -> Iterator[list[bytes]]:
        client = self._client()
        recent = RecentKeys(remember)
        pattern = scan_pattern(self.prefix)
        for node in scan_nodes(client):
            cursor = 0
            while True:
                cursor, keys = node.scan(cursor, match=pattern, count=self.scan_count)
                if batch := recent.fresh(keys):
                    yield batch
                if not int(cursor):
                    break

    async def _ascan(
        self, remember: int = DEDUPE_BATCHES
    ) -> AsyncIterator[list[bytes]]:
        client = self._async_client()
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            await client.initialize()  # it learns its nodes lazily
            # A no-op once it has, which may have been before a failover: see
            # scan_nodes().
            await client.nodes_manager.initialize()
        recent = RecentKeys(remember)
        pattern = scan_pattern(self.prefix)
        for node in scan_nodes(client):
            cursor = 0
            while True:
                cursor, keys = await _ascan_page(node, cursor, pattern, self.scan_count)
                if batch := recent.fresh(keys):
                    yield batch
                if not int(cursor):
                    break

    def _values(self, keys: list[bytes]) -> list[bytes | None]:
        client = self._client()
        if is_cluster(client):
            return list(client.mget_nonatomic(keys))
        return list(client.mget(keys))

    async def _avalues(self, keys: list[bytes]) -> list[bytes | None]:
        client = self._async_client()
        if is_cluster(client):
            return list(await client.mget_nonatomic(keys))
        return list(await client.mget(keys))

    def _unlink(self, keys: list[bytes]) -> int:
        return int(self._client().unlink(*keys))

    async def _aunlink(self, keys: list[bytes]) -> int:
        return int(await self._async_client().unlink(*keys))


def is_cluster(client: Any) -> bool:
    return isinstance(
        client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)
    )


def scan_nodes(client: Any) -> list[Any]:
    """What to SCAN: the client itself, or each primary of a Redis Cluster.

    An asyncio cluster client must have refreshed its topology before.
    """
    if isinstance(client, redis.cluster.RedisCluster):
        # A cluster client learns of a failover only when a command it routes
        # by key fails or is MOVED. SCAN goes to each primary directly, past
        # that routing: after a primary died and its replica took over, a
        # stale list still names the dead node, and count() would fail until
        # some keyed request happened to refresh it; after a graceful
        # failover it names the demoted one, now a replica. So one CLUSTER
        # SLOTS per bulk operation.
        client.nodes_manager.initialize()
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(node) for node in primaries]
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return list(client.get_primaries())
    return [client]


async def _ascan_page(
    node: Any, cursor: int, pattern: str, count: int
) -> tuple[int, list[bytes]]:
    if isinstance(node, redis.asyncio.cluster.ClusterNode):
        reply = await node.execute_command(
            "SCAN", cursor, "MATCH", pattern, "COUNT", count
        )
    else:
        reply = await node.scan(cursor, match=pattern, count=count)
    next_cursor, keys = reply
    return int(next_cursor), list(keys)


def _check_key(key: str) -> None:
    if not is_valid_key(key):
        raise ValueError(
            f"{key!r} cannot name a session: a session key is a non-empty, "
            "UTF-8 encodable string that does not start with '}'."
        )


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
