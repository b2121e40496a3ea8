"""``RedisLayer``: sessions as bytes in Redis, the only code that sends commands.

It speaks session keys, payload bytes and ``Outcome``s. It alone knows the
names a session lives under (``keys.py``), the Lua scripts (``scripts.py``)
and the difference between one server and a Redis Cluster. The session
backend, the public store and the management command use it.

Every single-session method is one round trip and atomic, and may be sent
twice (redis-py's retry after a lost reply) without reviving a session or
writing one twice. TTLs are in seconds; one that is not positive ends the
session instead of writing it, because Redis rejects it. Each method has an
``a``-prefixed twin below it that sends the same thing through the running
event loop's asyncio client.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, NamedTuple

import redis.asyncio.cluster
import redis.cluster
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import ResponseError

from django_redis_sessions import metrics, scripts
from django_redis_sessions.client import clients
from django_redis_sessions.conf import SETTING_NAME, conf
from django_redis_sessions.keys import (
    TOMBSTONE_SUFFIX,
    check_key,
    data_key,
    glob_escape,
    hashed_id,
    is_hashed_id,
    is_valid_key,
    scan_pattern,
    session_key_from,
    session_names,
    tombstone_key,
)
from django_redis_sessions.payloads import log_corrupt
from django_redis_sessions.scripts import Outcome

#: How many recent SCAN batches are remembered to drop duplicates. SCAN
#: repeats a key only when the keyspace shrinks mid-iteration, and the repeated
#: keys come from the buckets visited just before, so a window of recent
#: batches catches them while memory stays flat however many sessions exist.
DEDUPE_BATCHES = 10


class Measured(NamedTuple):
    """One SCAN batch of ``RedisLayer.measure()``: its sessions and figures."""

    #: "host:port" of the Cluster primary the batch comes from; "" on one server.
    node: str
    #: Bucket numbers (see ``scripts.MEASURE``) of each session's size...
    sizes: list[bytes]
    #: ...and of its TTL in seconds, b"-1" for a name without one.
    ttls: list[bytes]
    tombstones: int
    #: The largest payload of the batch, in bytes.
    largest: int
    #: The longest TTL of the batch, in milliseconds.
    longest: int
    #: ``MEMORY USAGE`` of the batch's first sessions while the sample lasts;
    #: None once the server refused it (an old server, a proxy, an ACL).
    memory: list[int] | None = None


class Inspected(NamedTuple):
    """What Redis holds for one session, read without changing anything."""

    id: str
    payload: bytes | None
    #: Seconds the session has left, None if there is none.
    ttl: float | None
    #: Seconds the tombstone has left, None if there is none.
    tombstone_ttl: float | None
    #: A name that holds something other than a string (no session).
    foreign: bool


def ttl_milliseconds(seconds: float) -> int:
    """Whole milliseconds, rounded up; 0 for anything not positive.

    Redis rejects a fractional or non-positive expiry (``ERR invalid expire
    time``); a non-positive TTL means the session is over and is destroyed.
    """
    return max(0, math.ceil(seconds * 1000))


def retry_token() -> str:
    """A value unique to one destroy or cycle, stored as the tombstone.

    redis-py resends a command whose reply was lost; a script that finds its
    own token knows it already ran and reports what that first run did.
    """
    return secrets.token_hex(8)


def is_cluster(client: Any) -> bool:
    return isinstance(
        client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)
    )


def _written(reply: Any) -> Outcome:
    """The outcome of ``SET ... XX`` or ``PEXPIRE``: nothing if no session."""
    return Outcome.WRITTEN if reply else Outcome.MISSING


def _seconds(pttl: int) -> float | None:
    # PTTL answers -2 for a missing name and -1 for one without a TTL, which
    # this store never writes.
    return pttl / 1000 if pttl >= 0 else None


def _reject_not_a_string(error: ResponseError) -> None:
    """Log a GET of a list, hash or other non-string value; re-raise the rest."""
    if not str(error).startswith("WRONGTYPE"):
        raise error
    log_corrupt("a name under the session prefix holds a value that is not a string")


class RedisLayer:
    """Sessions under one prefix, as bytes; see the module docstring."""

    def __init__(
        self,
        *,
        prefix: str | None = None,
        scan_count: int | None = None,
        tombstone_seconds: int | None = None,
        hash_ids: bool | str | None = None,
        client: Callable[[], Any] = clients.get,
        async_client: Callable[[], Any] = clients.for_running_loop,
    ) -> None:
        self.prefix = conf.PREFIX if prefix is None else prefix
        mode = conf.HASH_IDS if hash_ids is None else hash_ids
        self._hashing = mode is not False
        # "migrate": sessions written under their plain key before ids were
        # hashed are still read, and moved to their id on first load.
        self._migrating = mode == "migrate"
        self.scan_count = conf.SCAN_COUNT if scan_count is None else scan_count
        seconds = (
            conf.TOMBSTONE_SECONDS if tombstone_seconds is None else tombstone_seconds
        )
        self._tombstone_ms = ttl_milliseconds(seconds)
        self._client = client
        self._async_client = async_client

    def session_id(self, key: str) -> str:
        """The id the session of ``key`` (a session key or an id) is stored under."""
        if not self._hashing or is_hashed_id(key):
            return key
        return hashed_id(key)

    def data_name(self, key: str) -> str:
        """The Redis name of the session of ``key`` (a session key or an id)."""
        return data_key(self.prefix, self.session_id(key))

    def tombstone_name(self, key: str) -> str:
        """The Redis name of the tombstone of ``key`` (a session key or an id)."""
        return tombstone_key(self.prefix, self.session_id(key))

    def id_of_name(self, name: bytes) -> str:
        """The id of the session under a data name found by SCAN.

        A plain name still awaiting ``rehash`` is shown by its id too: its key
        is a cookie, which admin code must never see.
        """
        found = session_key_from(self.prefix, name)
        return self.session_id(found)

    def _names(self, key: str) -> tuple[str, str]:
        """The data name and the tombstone name of ``key``."""
        stored = self.session_id(key)
        return data_key(self.prefix, stored), tombstone_key(self.prefix, stored)

    def _plain_names(self, key: str) -> tuple[str, str] | None:
        """In "migrate" mode, the names of the plain form ``key`` may still have."""
        if not self._migrating or is_hashed_id(key):
            return None
        return data_key(self.prefix, key), tombstone_key(self.prefix, key)

    def _forms(self, key: str) -> list[tuple[str, str]]:
        """The (data, tombstone) names of every form the session may have."""
        plain = self._plain_names(key)
        return [self._names(key)] if plain is None else [self._names(key), plain]

    # --- Reading ------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        """The stored bytes of the session, or None (also for a key no session has).

        In "migrate" mode a session still under its plain key is moved to its
        id: one script on one server, one more round trip on Cluster.
        """
        if not is_valid_key(key):
            return None
        client = self._client()
        try:
            plain = self._plain_names(key)
            if plain is None:
                payload: bytes | None = client.execute_command(
                    "GET", self.data_name(key)
                )
                return payload
            if not is_cluster(client):
                names = self._names(key) + plain
                args = (self._tombstone_ms,)
                return scripts.run(client, scripts.READ_OR_MOVE, names, args)  # type: ignore[no-any-return]
            payload = client.execute_command("GET", self.data_name(key))
            if payload is not None:
                return payload
            taken = scripts.run(client, scripts.TAKE, plain, (self._tombstone_ms,))
        except ResponseError as error:
            _reject_not_a_string(error)
            return None
        if not taken:
            return None
        payload, ttl_ms = taken
        # The second half of a move on Cluster. The plain form is gone already,
        # so a failure here logs the user out; the other order could leave the
        # session under both names.
        created = self._create(key, payload, int(ttl_ms) / 1000)
        return payload if created is Outcome.WRITTEN else None

    async def _aread(self, key: str) -> bytes | None:
        """See read()."""
        if not is_valid_key(key):
            return None
        client = self._async_client()
        try:
            plain = self._plain_names(key)
            if plain is None:
                payload: bytes | None = await client.execute_command(
                    "GET", self.data_name(key)
                )
                return payload
            if not is_cluster(client):
                names = self._names(key) + plain
                args = (self._tombstone_ms,)
                return await scripts.arun(client, scripts.READ_OR_MOVE, names, args)  # type: ignore[no-any-return]
            payload = await client.execute_command("GET", self.data_name(key))
            if payload is not None:
                return payload
            taken = await scripts.arun(
                client, scripts.TAKE, plain, (self._tombstone_ms,)
            )
        except ResponseError as error:
            _reject_not_a_string(error)
            return None
        if not taken:
            return None
        payload, ttl_ms = taken
        created = await self._acreate(key, payload, int(ttl_ms) / 1000)
        return payload if created is Outcome.WRITTEN else None

    # The public names record metrics (``metrics.py``) when the OpenTelemetry
    # API is installed, and are these very functions when it is not. Calls
    # from inside the layer use the private ones: one operation, one count.
    read = metrics.recorded("read", _read)
    aread = metrics.recorded("read", _aread)

    def exists(self, key: str) -> bool:
        """Whether a live session holds ``key`` (a tombstone is not one)."""
        if not is_valid_key(key):
            return False
        # TYPE, not EXISTS: a list or hash under the name is not a session.
        client = self._client()
        for name, _ in self._forms(key):
            if client.execute_command("TYPE", name) in (b"string", "string"):
                return True
        return False

    async def aexists(self, key: str) -> bool:
        """See exists()."""
        if not is_valid_key(key):
            return False
        client = self._async_client()
        for name, _ in self._forms(key):
            if await client.execute_command("TYPE", name) in (b"string", "string"):
                return True
        return False

    def ttl(self, key: str) -> float | None:
        """Seconds the session under ``key`` has left; None if there is none."""
        if not is_valid_key(key):
            return None
        client = self._client()
        for name, _ in self._forms(key):
            seconds = _seconds(client.execute_command("PTTL", name))
            if seconds is not None:
                return seconds
        return None

    async def attl(self, key: str) -> float | None:
        """See ttl()."""
        if not is_valid_key(key):
            return None
        client = self._async_client()
        for name, _ in self._forms(key):
            seconds = _seconds(await client.execute_command("PTTL", name))
            if seconds is not None:
                return seconds
        return None

    # --- Writing ------------------------------------------------------------

    def _create(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """Write only if neither a live session nor a tombstone holds ``key``.

        A TTL that is not positive writes nothing (EXPIRED): there is nothing
        to end. The same payload written twice reports WRITTEN twice.
        """
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            return Outcome.EXPIRED
        reply = scripts.run(
            self._client(), scripts.CREATE, self._names(key), (payload, ttl_ms)
        )
        return Outcome(reply)

    async def _acreate(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """See create()."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            return Outcome.EXPIRED
        reply = await scripts.arun(
            self._async_client(), scripts.CREATE, self._names(key), (payload, ttl_ms)
        )
        return Outcome(reply)

    create = metrics.recorded("create", _create, payload_at=1)
    acreate = metrics.recorded("create", _acreate, payload_at=1)

    def _set(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """Write unless a tombstone blocks ``key`` (TOMBSTONED)."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            self._destroy(key)
            return Outcome.EXPIRED
        reply = scripts.run(
            self._client(),
            scripts.SET_UNLESS_TOMBSTONED,
            self._names(key),
            (payload, ttl_ms),
        )
        return Outcome(reply)

    async def _aset(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """See set()."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            await self._adestroy(key)
            return Outcome.EXPIRED
        reply = await scripts.arun(
            self._async_client(),
            scripts.SET_UNLESS_TOMBSTONED,
            self._names(key),
            (payload, ttl_ms),
        )
        return Outcome(reply)

    set = metrics.recorded("set", _set, payload_at=1)
    aset = metrics.recorded("set", _aset, payload_at=1)

    def _update(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """Write only over a live session (else MISSING); never creates.

        ``SET XX`` alone is atomic: a destroyed session has no data name (its
        tombstone and its data never coexist), so there is nothing to update.
        """
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            self._destroy(key)
            return Outcome.EXPIRED
        name = self.data_name(key)
        return _written(
            self._client().execute_command("SET", name, payload, "PX", ttl_ms, "XX")
        )

    async def _aupdate(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """See update()."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            await self._adestroy(key)
            return Outcome.EXPIRED
        name = self.data_name(key)
        return _written(
            await self._async_client().execute_command(
                "SET", name, payload, "PX", ttl_ms, "XX"
            )
        )

    update = metrics.recorded("update", _update, payload_at=1)
    aupdate = metrics.recorded("update", _aupdate, payload_at=1)

    def _touch(self, key: str, ttl: float) -> Outcome:
        """Reset the TTL of a live session (else MISSING).

        ``PEXPIRE`` never creates a name, and a tombstone is another name: a
        touch after a destroy changes nothing.
        """
        if not is_valid_key(key):
            return Outcome.MISSING
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            self._destroy(key)
            return Outcome.EXPIRED
        name = self.data_name(key)
        return _written(self._client().execute_command("PEXPIRE", name, ttl_ms))

    async def _atouch(self, key: str, ttl: float) -> Outcome:
        """See touch()."""
        if not is_valid_key(key):
            return Outcome.MISSING
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            await self._adestroy(key)
            return Outcome.EXPIRED
        name = self.data_name(key)
        reply = await self._async_client().execute_command("PEXPIRE", name, ttl_ms)
        return _written(reply)

    touch = metrics.recorded("touch", _touch)
    atouch = metrics.recorded("touch", _atouch)

    def _destroy(self, key: str) -> bool:
        """Delete the session and leave a tombstone; True if it was live.

        In "migrate" mode both forms end; on Cluster, where they live on
        different slots, one round trip each.
        """
        if not is_valid_key(key):
            return False
        client = self._client()
        args = (self._tombstone_ms, retry_token())
        removed = 0
        for names in self._destroy_batches(client, key):
            removed += scripts.run(client, scripts.DESTROY, names, args)
        return bool(removed)

    async def _adestroy(self, key: str) -> bool:
        """See destroy()."""
        if not is_valid_key(key):
            return False
        client = self._async_client()
        args = (self._tombstone_ms, retry_token())
        removed = 0
        for names in self._destroy_batches(client, key):
            removed += await scripts.arun(client, scripts.DESTROY, names, args)
        return bool(removed)

    destroy = metrics.recorded("destroy", _destroy)
    adestroy = metrics.recorded("destroy", _adestroy)

    def _destroy_batches(self, client: Any, key: str) -> list[tuple[str, ...]]:
        """The KEYS of each DESTROY: every form at once, or one per slot."""
        forms = self._forms(key)
        if is_cluster(client):
            return list(forms)
        return [tuple(name for names in forms for name in names)]

    def _cycle(
        self, old_key: str | None, new_key: str, payload: bytes, ttl: float
    ) -> Outcome:
        """Move a session to ``new_key`` and destroy ``old_key``: the login path.

        One atomic script on a single Redis. Outcomes: WRITTEN; MISSING when
        ``old_key`` no longer holds a live session (a logout, a ``clear`` or
        another cycle ended it: its data must not live on under a new key, so
        nothing is written); EXISTS or TOMBSTONED when ``new_key`` is unusable
        (nothing changed); EXPIRED when the TTL is not positive (the old
        session is destroyed, nothing is written). With no ``old_key`` it is
        a create.
        """
        if old_key is None:
            return self._create(new_key, payload, ttl)
        plan = self._cycle_plan(old_key, new_key, ttl)
        if plan is Outcome.EXPIRED:
            self._destroy(old_key)
        if plan is not None:
            return plan
        client = self._client()
        if not is_cluster(client):
            keys, args = self._cycle_script_args(old_key, new_key, payload, ttl)
            return Outcome(scripts.run(client, scripts.CYCLE, keys, args))
        # On Redis Cluster the two sessions live on different slots, which one
        # script may not touch. The old one ends first and the new one is
        # created only if the old was live: a failure in between logs the user
        # out, where the other order could leave two live sessions.
        if not self._destroy(old_key):
            return Outcome.MISSING
        return self._create(new_key, payload, ttl)

    async def _acycle(
        self, old_key: str | None, new_key: str, payload: bytes, ttl: float
    ) -> Outcome:
        """See cycle()."""
        if old_key is None:
            return await self._acreate(new_key, payload, ttl)
        plan = self._cycle_plan(old_key, new_key, ttl)
        if plan is Outcome.EXPIRED:
            await self._adestroy(old_key)
        if plan is not None:
            return plan
        client = self._async_client()
        if not is_cluster(client):
            keys, args = self._cycle_script_args(old_key, new_key, payload, ttl)
            return Outcome(await scripts.arun(client, scripts.CYCLE, keys, args))
        if not await self._adestroy(old_key):
            return Outcome.MISSING
        return await self._acreate(new_key, payload, ttl)

    cycle = metrics.recorded("cycle", _cycle, payload_at=2)
    acycle = metrics.recorded("cycle", _acycle, payload_at=2)

    @staticmethod
    def _cycle_plan(old_key: str, new_key: str, ttl: float) -> Outcome | None:
        """The outcome of a cycle decided without Redis, if there is one."""
        check_key(new_key)
        if not ttl_milliseconds(ttl):
            return Outcome.EXPIRED
        if not is_valid_key(old_key):
            return Outcome.MISSING
        return None

    def _cycle_script_args(
        self, old_key: str, new_key: str, payload: bytes, ttl: float
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        old_names = tuple(name for names in self._forms(old_key) for name in names)
        keys = self._names(new_key) + old_names
        args = (payload, ttl_milliseconds(ttl), self._tombstone_ms, retry_token())
        return keys, args

    # --- Every session under the prefix, a SCAN batch at a time ---------------

    def scan(
        self, *, remember: int = DEDUPE_BATCHES, sessions_only: bool = True
    ) -> Iterator[list[bytes]]:
        """Batches of data names under the prefix, each name once.

        ``sessions_only`` keeps the names that can hold a session (string
        values, UTF-8 names); without it every name of the pattern comes back,
        which is what ``clear`` deletes. ``remember`` is the dedupe window in
        batches (0: none, for callers that need no exact count).
        """
        client = self._client()
        recent = RecentKeys(remember)
        pattern = scan_pattern(self.prefix)
        kind = "string" if sessions_only else None
        for node in scan_nodes(client):
            cursor = 0
            while True:
                cursor, names = node.scan(
                    cursor, match=pattern, count=self.scan_count, _type=kind
                )
                if batch := recent.fresh(names):
                    yield session_names(batch) if sessions_only else batch
                if not int(cursor):
                    break

    async def ascan(
        self, *, remember: int = DEDUPE_BATCHES, sessions_only: bool = True
    ) -> AsyncIterator[list[bytes]]:
        """See scan()."""
        client = self._async_client()
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            await client.initialize()  # it learns its nodes lazily
        recent = RecentKeys(remember)
        pattern = scan_pattern(self.prefix)
        kind = "string" if sessions_only else None
        for node in scan_nodes(client):
            cursor = 0
            while True:
                cursor, names = await _ascan_page(
                    node, cursor, pattern, self.scan_count, kind
                )
                if batch := recent.fresh(names):
                    yield session_names(batch) if sessions_only else batch
                if not int(cursor):
                    break

    def measure(self, *, sample: int = 0) -> Iterator[Measured]:
        """Every session under the prefix with its size and TTL, a batch at a time.

        One script per SCAN batch (``scripts.MEASURE``) on each primary: the
        tombstones come in the same scan, which costs less than a second one
        (SCAN walks the whole keyspace, whatever it matches). Names SCAN
        repeats are dropped as in ``scan``. The first ``sample`` sessions
        are also sized with ``MEMORY USAGE``, one pipeline per batch.
        """
        recent = RecentKeys(DEDUPE_BATCHES)
        pattern = glob_escape(self.prefix) + "{*"
        left = sample  # sessions still to size; 0 also once the server refused
        client = self._client()
        cluster = is_cluster(client)
        for node in scan_nodes(client):
            name = node_name(node) if cluster else ""
            cursor: Any = 0
            while True:
                reply = scripts.run(
                    node, scripts.MEASURE, (), (cursor, pattern, self.scan_count)
                )
                cursor, names, sizes, ttls, largest, longest, tombstones = reply
                batch = Measured(
                    name,
                    sizes.split(b",") if sizes else [],
                    ttls.split(b",") if ttls else [],
                    int(tombstones),
                    int(largest),
                    int(longest),
                )
                fresh = session_names(recent.fresh(names))
                if len(fresh) != len(names):
                    batch = _without_repeats(batch, names, fresh)
                if left > 0:
                    asked = [name for name in fresh if name.endswith(b"}")][:left]
                    memory = memory_usage(node, asked)
                    left = 0 if memory is None else left - len(asked)
                    batch = batch._replace(memory=memory)
                if batch.sizes or batch.tombstones:
                    yield batch
                if not int(cursor):
                    break

    def inspect(self, key: str) -> Inspected:
        """The session of ``key`` (a session key or an id) as Redis holds it.

        Read only: unlike ``read``, a session still under its plain key in
        "migrate" mode is not moved. One round trip per form.
        """
        client = self._client()
        found = Inspected(self.session_id(key), None, None, None, False)
        for data, tombstone in self._forms(key):
            pipeline = client.pipeline(transaction=False)
            pipeline.execute_command("TYPE", data)
            pipeline.execute_command("PTTL", data)
            pipeline.execute_command("PTTL", tombstone)
            pipeline.execute_command("GET", data)
            kind, ttl, tombstone_ttl, payload = pipeline.execute(raise_on_error=False)
            if kind in (b"none", "none") and _seconds(tombstone_ttl) is None:
                continue
            is_string = kind in (b"string", "string")
            return found._replace(
                payload=payload if is_string else None,
                ttl=_seconds(ttl) if is_string else None,
                tombstone_ttl=_seconds(tombstone_ttl),
                foreign=kind not in (b"string", "string", b"none", "none"),
            )
        return found

    def plain_names(self, names: list[bytes]) -> list[bytes]:
        """The data names in ``names`` that are not under an id: what rehash moves."""
        return [
            name
            for name in names
            if not is_hashed_id(session_key_from(self.prefix, name))
        ]

    def move_to_ids(self, names: list[bytes]) -> int:
        """Move the sessions under these plain data names to their ids.

        One pipeline of scripts on one server; on Cluster, where the two names
        of a session live on different slots, a take and a create each. The
        plain form always ends; returns how many now live under their id.
        """
        client = self._client()
        keys = [session_key_from(self.prefix, name) for name in names]
        args = (self._tombstone_ms,)
        if is_cluster(client):
            moved = 0
            for key in keys:
                plain = (data_key(self.prefix, key), tombstone_key(self.prefix, key))
                taken = scripts.run(client, scripts.TAKE, plain, args)
                if taken:
                    payload, ttl_ms = taken
                    created = self._create(key, payload, int(ttl_ms) / 1000)
                    moved += created is Outcome.WRITTEN
            return moved
        scripts.load(client, scripts.MOVE)
        pipeline = client.pipeline(transaction=False)
        for key in keys:
            plain = (data_key(self.prefix, key), tombstone_key(self.prefix, key))
            names_of = plain + self._names(key)
            pipeline.evalsha(scripts.sha(scripts.MOVE), 4, *names_of, *args)
        return sum(int(reply) for reply in pipeline.execute())

    def values(self, names: list[bytes]) -> list[bytes | None]:
        """The payloads under ``names``, aligned with them (None: gone)."""
        client = self._client()
        if is_cluster(client):
            return list(client.mget_nonatomic(names))
        return list(client.mget(names))

    async def avalues(self, names: list[bytes]) -> list[bytes | None]:
        """See values()."""
        client = self._async_client()
        if is_cluster(client):
            return list(await client.mget_nonatomic(names))
        return list(await client.mget(names))

    def unlink(self, names: list[bytes]) -> int:
        """Delete ``names``; how many existed."""
        return int(self._client().unlink(*names))

    async def aunlink(self, names: list[bytes]) -> int:
        """See unlink()."""
        return int(await self._async_client().unlink(*names))


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


#: How a tombstone's name ends; a data name ends in "}" alone.
TOMBSTONE_END = ("}" + TOMBSTONE_SUFFIX).encode()


def _without_repeats(
    batch: Measured, names: list[bytes], fresh: list[bytes]
) -> Measured:
    """``batch`` without the figures of names SCAN repeated or that are not UTF-8.

    Rare (SCAN repeats names only while the keyspace is being rehashed), so
    done name by name; the largest figures keep whatever was dropped.
    """
    keep = set(fresh)
    kept = []
    data = [name for name in names if name.endswith(b"}")]
    for index, name in enumerate(data):
        if name in keep:
            keep.discard(name)  # a name twice in one batch counts once
            kept.append(index)
    return batch._replace(
        sizes=[batch.sizes[index] for index in kept],
        ttls=[batch.ttls[index] for index in kept],
        tombstones=sum(1 for name in fresh if name.endswith(TOMBSTONE_END)),
    )


def memory_usage(node: Any, names: list[bytes]) -> list[int] | None:
    """``MEMORY USAGE`` of each name in one pipeline; None if the server refuses it."""
    pipeline = node.pipeline(transaction=False)
    for name in names:
        pipeline.execute_command("MEMORY USAGE", name)
    try:
        replies = pipeline.execute()
    except ResponseError:
        return None
    # A name that expired since the scan answers nil.
    return [int(reply) for reply in replies if reply is not None]


def node_name(node: Any) -> str:
    """ "host:port" of the client of one Cluster primary."""
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def scan_nodes(client: Any) -> list[Any]:
    """What to SCAN: the client itself, or each primary of a Redis Cluster."""
    if isinstance(client, redis.cluster.RedisCluster):
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(node) for node in primaries]
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return list(client.get_primaries())
    return [client]


async def _ascan_page(
    node: Any, cursor: int, pattern: str, count: int, kind: str | None
) -> tuple[int, list[bytes]]:
    if isinstance(node, redis.asyncio.cluster.ClusterNode):
        args: tuple[Any, ...] = ("SCAN", cursor, "MATCH", pattern, "COUNT", count)
        if kind is not None:
            args += ("TYPE", kind)
        reply = await node.execute_command(*args)
    else:
        reply = await node.scan(cursor, match=pattern, count=count, _type=kind)
    next_cursor, names = reply
    return int(next_cursor), list(names)


_layer: RedisLayer | None = None


def get_layer() -> RedisLayer:
    """The layer configured by ``SESSION_REDIS``, shared by the process."""
    global _layer
    if _layer is None:
        _layer = RedisLayer()
    return _layer


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        global _layer
        _layer = None
