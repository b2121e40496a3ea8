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

import base64
import hashlib
import math
import secrets
import sys
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple, overload

import redis.asyncio.cluster
import redis.cluster
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import ResponseError

from django_redis_sessions import metrics, scripts, signals
from django_redis_sessions.bulk import (
    DEDUPE_BATCHES,
    RecentKeys,
    acleared_on,
    amerged,
    anode_batches,
    aunlink_on,
    cleared_on,
    merged,
    node_batches,
    scan_nodes,
    unlink_on,
)
from django_redis_sessions.client import clients
from django_redis_sessions.conf import SETTING_NAME, conf
from django_redis_sessions.keys import (
    TOMBSTONE_SUFFIX,
    are_hashed_ids,
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
    user_index_key,
    user_index_pattern,
)
from django_redis_sessions.payloads import log_corrupt
from django_redis_sessions.scripts import Conflict, Outcome
from django_redis_sessions.user_index import (
    SLACK_MS,
    IndexWrite,
    created_ms,
    now_ms,
    seen_ms,
)

#: The TTL bucket ``scripts.MEASURE`` gives a name without a TTL.
NO_TTL = 0xFFFF


class Measured(NamedTuple):
    """One SCAN batch of ``RedisLayer.measure()``: its sessions and figures."""

    #: "host:port" of the Cluster primary the batch comes from; "" on one server.
    node: str
    #: Bucket numbers (see ``scripts.MEASURE``) of each session's size...
    sizes: Sequence[int]
    #: ...and of its TTL in seconds, ``NO_TTL`` for a name without one.
    ttls: Sequence[int]
    tombstones: int
    #: The largest payload of the batch, in bytes.
    largest: int
    #: The longest TTL of the batch, in milliseconds.
    longest: int
    #: ``MEMORY USAGE`` of the batch's first sessions while the sample lasts;
    #: None once the server refused it (an old server, a proxy, an ACL).
    memory: list[int] | None = None
    #: b"1" per session stored encrypted, b"0" per other, in the order of
    #: ``sizes``; empty unless ``measure()`` was asked to tell them apart.
    encrypted: bytes = b""


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


#: Leads the tombstone a key change leaves on the old key: that session
#: moved to a new key, it was not ended (see ``tombstoned()``).
MOVED_MARK = b"m"


def retry_token(*, moved: bool = False) -> str:
    """A value unique to one destroy or cycle, stored as the tombstone.

    redis-py resends a command whose reply was lost; a script that finds its
    own token knows it already ran and reports what that first run did. A
    key change's token starts with ``MOVED_MARK``, which no hex digit is.
    """
    token = secrets.token_hex(8)
    return MOVED_MARK.decode() + token if moved else token


def is_cluster(client: Any) -> bool:
    return isinstance(
        client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)
    )


def _written(reply: Any) -> Outcome:
    """The outcome of ``SET ... XX`` or ``PEXPIRE``: nothing if no session."""
    return Outcome.WRITTEN if reply else Outcome.MISSING


def _digest(payload: bytes) -> str:
    """The version a versioned update expects: what ``redis.sha1hex`` gives."""
    return hashlib.sha1(payload).hexdigest()


def _versioned(reply: Any) -> Outcome | Conflict:
    """The outcome of ``scripts.UPDATE_VERSIONED``."""
    if int(reply[0]) == Outcome.CONFLICT:
        return Conflict(reply[1])
    return Outcome(int(reply[0]))


def _indexed(reply: Any) -> tuple[Outcome, bool]:
    """A write's outcome, and whether its index write found the user over the cap.

    The indexed scripts answer ``{outcome, over}``; the others a number.
    """
    if isinstance(reply, list):
        return Outcome(int(reply[0])), bool(int(reply[1]))
    return Outcome(reply), False


def _indexed_versioned(reply: Any) -> tuple[Outcome | Conflict, bool]:
    """``_indexed()``, or a ``Conflict`` (``scripts.UPDATE_INDEXED_VERSIONED``)."""
    if int(reply[0]) == Outcome.CONFLICT:
        return Conflict(reply[1]), False
    return _indexed(reply)


def _ended_meanwhile(created: Outcome) -> Outcome:
    """A Cluster key change's create, once the old session ended: a refused
    new id means the session was ended meanwhile (MISSING), not that the
    caller should try another key, which could only find the old one gone."""
    if created in (Outcome.TOMBSTONED, Outcome.EXISTS):
        return Outcome.MISSING
    return created


def _ids(reply: Any) -> list[str]:
    """Session ids in a script's reply, decoded."""
    return [item.decode() if isinstance(item, bytes) else str(item) for item in reply]


def _decoded_hash(reply: dict[Any, Any]) -> dict[str, str]:
    return {
        (name.decode() if isinstance(name, bytes) else name): (
            value.decode(errors="replace") if isinstance(value, bytes) else value
        )
        for name, value in reply.items()
    }


def _created(existed: Any, reply: Any) -> tuple[Outcome, bool]:
    """The outcome of one pipelined ``EXISTS`` + ``CREATE`` pair, and the cap flag."""
    # Redis before 7 wraps an error raised inside a script in its own text.
    if isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply):
        return Outcome.EXISTS, False
    for error in (existed, reply):
        if isinstance(error, Exception):
            raise error
    outcome, over = _indexed(reply)
    if outcome is Outcome.WRITTEN and existed:
        return Outcome.EXISTS, over
    return outcome, over


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
        on_evicted: Callable[[list[str]], None] | None = None,
        aon_evicted: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        #: Called with the ids of the live sessions MAX_SESSIONS_PER_USER
        #: ended, after they ended (``aon_evicted`` on the asyncio path); by
        #: default ``session_ended`` goes out for each, reason "evicted".
        self.on_evicted = on_evicted or partial(
            signals.send_ended_ids, RedisLayer, reason="evicted"
        )
        self.aon_evicted = aon_evicted or partial(
            signals.asend_ended_ids, RedisLayer, reason="evicted"
        )
        self.prefix = conf.PREFIX if prefix is None else prefix
        mode = conf.HASH_IDS if hash_ids is None else hash_ids
        self._hashing = mode is not False and mode != "prepare"
        # "migrate": sessions written under their plain key before ids were
        # hashed are still read, and moved to their id on first load.
        self._migrating = mode == "migrate"
        # "prepare": the plain layout, but every ending also ends the hashed
        # form, which processes already on "migrate" may have moved the
        # session to during the rollout.
        self._preparing = mode == "prepare"
        self.scan_count = conf.SCAN_COUNT if scan_count is None else scan_count
        seconds = (
            conf.TOMBSTONE_SECONDS if tombstone_seconds is None else tombstone_seconds
        )
        self._tombstone_ms = ttl_milliseconds(seconds)
        # Read once per configuration (the layer is rebuilt when it changes):
        # every save asks, and a settings lookup costs a microsecond each.
        self.user_index = conf.USER_INDEX
        self.index_metadata = conf.USER_INDEX_METADATA
        self.disable_touch = conf.DISABLE_TOUCH
        self._cap = conf.MAX_SESSIONS_PER_USER or 0
        self._client = client
        self._async_client = async_client

    @property
    def tombstone_seconds(self) -> float:
        """How long a destroyed session's tombstone refuses writes."""
        return self._tombstone_ms / 1000

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

    def ids_of_names(self, names: list[bytes]) -> list[str]:
        """``id_of_name()`` of each UTF-8 name of a batch, decoded at once.

        ``all()`` asks for every session, and decoding the names one by one
        was a tenth of its time.
        """
        texts = b"\x00".join(names).decode().split("\x00") if names else []
        if len(texts) != len(names):  # a name holds a NUL itself
            return [self.id_of_name(name) for name in names]
        start = len(self.prefix) + 1
        keys = [text[start:-1] for text in texts]
        if not self._hashing or are_hashed_ids(keys):
            return keys
        return [key if is_hashed_id(key) else hashed_id(key) for key in keys]

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

    def _ended_forms(self, key: str) -> list[tuple[str, str]]:
        """The (data, tombstone) names a destroy or a cycle ends.

        Every form the session may have, and in "prepare" mode its hashed
        form as well: during a rollout to "migrate" a process on the new
        setting may have moved the session there, and a logout on a process
        still on the plain layout must end it too, or the cookie would keep
        working on every process that reads ids.
        """
        if not self._preparing or is_hashed_id(key):
            return self._forms(key)
        hashed = hashed_id(key)
        return [
            self._names(key),
            (data_key(self.prefix, hashed), tombstone_key(self.prefix, hashed)),
        ]

    # --- Reading ------------------------------------------------------------

    def read(self, key: str) -> bytes | None:
        """The stored bytes of the session, or None (also for a key no session has).

        In "migrate" mode a session still under its plain key is moved to its
        id: one script on one server, one more round trip on Cluster. In
        "prepare" mode a key without a plain form ends its id form, if it
        has one (``scripts.READ_OR_END``): one script on one server, one more
        round trip on Cluster for a miss.
        """
        if not is_valid_key(key):
            return None
        client = self._client()
        try:
            if self._preparing and not is_hashed_id(key):
                return self._read_or_end(client, key)
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
        created = self.create(key, payload, int(ttl_ms) / 1000)
        return payload if created is Outcome.WRITTEN else None

    async def aread(self, key: str) -> bytes | None:
        """See read()."""
        if not is_valid_key(key):
            return None
        client = self._async_client()
        try:
            if self._preparing and not is_hashed_id(key):
                return await self._aread_or_end(client, key)
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
        created = await self.acreate(key, payload, int(ttl_ms) / 1000)
        return payload if created is Outcome.WRITTEN else None

    def _read_or_end(self, client: Any, key: str) -> bytes | None:
        """``read()`` in "prepare" mode; see ``scripts.READ_OR_END``."""
        [plain, moved] = self._ended_forms(key)
        args = (self._tombstone_ms,)
        if not is_cluster(client):
            return scripts.run(client, scripts.READ_OR_END, plain + moved, args)  # type: ignore[no-any-return]
        payload: bytes | None = client.execute_command("GET", plain[0])
        if payload is None:
            scripts.run(client, scripts.END_MOVED, moved, args)
        return payload

    async def _aread_or_end(self, client: Any, key: str) -> bytes | None:
        """See _read_or_end()."""
        [plain, moved] = self._ended_forms(key)
        args = (self._tombstone_ms,)
        if not is_cluster(client):
            return await scripts.arun(client, scripts.READ_OR_END, plain + moved, args)  # type: ignore[no-any-return]
        payload: bytes | None = await client.execute_command("GET", plain[0])
        if payload is None:
            await scripts.arun(client, scripts.END_MOVED, moved, args)
        return payload

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

    def create(
        self, key: str, payload: bytes, ttl: float, index: IndexWrite | None = None
    ) -> Outcome:
        """Write only if neither a live session nor a tombstone holds ``key``.

        A TTL that is not positive writes nothing (EXPIRED): there is nothing
        to end. The same payload written twice reports WRITTEN twice. With
        ``index``, the session is entered in its user's index too.
        """
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            return Outcome.EXPIRED
        client = self._client()
        over = False
        if index is not None and is_cluster(client):
            over = bool(scripts.run(client, *self._index_call(key, index)))
        script, keys, args = self._create_call(key, payload, ttl_ms, index, client)
        outcome, more = _indexed(scripts.run(client, script, keys, args))
        self._after_write(outcome, over or more, key, index)
        return outcome

    async def acreate(
        self, key: str, payload: bytes, ttl: float, index: IndexWrite | None = None
    ) -> Outcome:
        """See create()."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            return Outcome.EXPIRED
        client = self._async_client()
        over = False
        if index is not None and is_cluster(client):
            call = self._index_call(key, index)
            over = bool(await scripts.arun(client, *call))
        script, keys, args = self._create_call(key, payload, ttl_ms, index, client)
        outcome, more = _indexed(await scripts.arun(client, script, keys, args))
        await self._aafter_write(outcome, over or more, key, index)
        return outcome

    def _create_call(
        self,
        key: str,
        payload: bytes,
        ttl_ms: int,
        index: IndexWrite | None,
        client: Any,
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        if index is None or is_cluster(client):
            # On Cluster the index entry was written first, on its own slot.
            return scripts.CREATE, self._names(key), (payload, ttl_ms)
        keys = (*self._names(key), *self.index_names(index.user_id))
        return (
            scripts.CREATE_INDEXED,
            keys,
            (payload, ttl_ms, *self._index_args(key, index)),
        )

    def create_many(
        self, items: Sequence[tuple[str, bytes, float, IndexWrite | None]]
    ) -> list[Outcome]:
        """``create()`` of many ``(key, payload, ttl, index)``, pipelined.

        For an import. One outcome per item, in order. One round trip on one
        server (two on
        Cluster, where the index entries go first, by slot); redis-py's
        cluster pipeline routes each ``EVALSHA`` by its keys. Unlike
        ``create()``, a key already holding this very payload answers EXISTS:
        the import run again creates nothing and says so. A name holding a
        value that is not a string answers EXISTS too; it is never
        overwritten. Only the import command calls this, which is sync, hence
        no asyncio twin.
        """
        client = self._client()
        cluster = is_cluster(client)
        outcomes: list[Outcome | None] = []
        pipeline = client.pipeline(transaction=False)
        entries = client.pipeline(transaction=False)
        for key, payload, ttl, index in items:
            check_key(key)
            ttl_ms = ttl_milliseconds(ttl)
            if not ttl_ms:
                outcomes.append(Outcome.EXPIRED)
                continue
            if index is not None and cluster:
                script, keys, args = self._index_call(key, index)
                entries.execute_command(
                    "EVALSHA", scripts.sha(script), len(keys), *keys, *args
                )
                index = None
            script, keys, args = self._create_call(key, payload, ttl_ms, index, client)
            # EXISTS first, on the same connection: CREATE itself reports
            # WRITTEN for an identical payload, to recognize its own retry.
            # execute_command, because a cluster pipeline refuses .evalsha().
            pipeline.execute_command("EXISTS", keys[0])
            pipeline.execute_command(
                "EVALSHA", scripts.sha(script), len(keys), *keys, *args
            )
            outcomes.append(None)
        if not len(pipeline):
            return [outcome or Outcome.EXPIRED for outcome in outcomes]
        for script in (scripts.CREATE, scripts.CREATE_INDEXED, scripts.INDEX_WRITE):
            scripts.load(client, script)
        over: dict[str, str] = {}  # users beyond the cap -> an id just written
        if len(entries):
            # Before the sessions: a failure leaves stale entries, never a
            # live session missing from its user's index.
            flags = iter(entries.execute())
            for key, _, ttl, index in items:
                if index is not None and ttl_milliseconds(ttl) and next(flags):
                    over[index.user_id] = self.session_id(key)
        replies = iter(pipeline.execute(raise_on_error=False))
        results = []
        for (key, _, _, index), outcome in zip(items, outcomes, strict=True):
            if outcome is None:
                outcome, beyond = _created(next(replies), next(replies))
                if beyond and index is not None:
                    over[index.user_id] = self.session_id(key)
            results.append(outcome)
        for user_id, kept in over.items():
            self._evict(user_id, kept)
        return results

    def leave_tombstone(self, key: str, ttl: float) -> bool:
        """Leave a tombstone for ``key`` unless one is there; True if this call did.

        Marks a session of another engine as moved here, so it is taken once.
        """
        name = self.tombstone_name(key)
        ttl_ms = max(1, ttl_milliseconds(ttl))
        return bool(
            self._client().execute_command("SET", name, b"1", "PX", ttl_ms, "NX")
        )

    async def aleave_tombstone(self, key: str, ttl: float) -> bool:
        """See leave_tombstone()."""
        name = self.tombstone_name(key)
        ttl_ms = max(1, ttl_milliseconds(ttl))
        reply = await self._async_client().execute_command(
            "SET", name, b"1", "PX", ttl_ms, "NX"
        )
        return bool(reply)

    def tombstoned(self, key: str) -> bool:
        """Whether ``key``'s session was ended moments ago, not moved.

        One ``GET`` of the tombstone, asked only after a load missed (the
        "Your sessions" page tells a device signed out from elsewhere why).
        A key change's tombstone (``MOVED_MARK``) does not count: a request
        still in flight with the old cookie during a login was not logged
        out.
        """
        if not is_valid_key(key):
            return False
        return _ended(self._client().execute_command("GET", self.tombstone_name(key)))

    async def atombstoned(self, key: str) -> bool:
        """See tombstoned()."""
        if not is_valid_key(key):
            return False
        name = self.tombstone_name(key)
        return _ended(await self._async_client().execute_command("GET", name))

    def set(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """Write unless a tombstone blocks ``key`` (TOMBSTONED)."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            self.destroy(key)
            return Outcome.EXPIRED
        reply = scripts.run(
            self._client(),
            scripts.SET_UNLESS_TOMBSTONED,
            self._names(key),
            (payload, ttl_ms),
        )
        return Outcome(reply)

    async def aset(self, key: str, payload: bytes, ttl: float) -> Outcome:
        """See set()."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            await self.adestroy(key)
            return Outcome.EXPIRED
        reply = await scripts.arun(
            self._async_client(),
            scripts.SET_UNLESS_TOMBSTONED,
            self._names(key),
            (payload, ttl_ms),
        )
        return Outcome(reply)

    @overload
    def update(
        self,
        key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
        *,
        expected: None = None,
    ) -> Outcome: ...

    @overload
    def update(
        self,
        key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
        *,
        expected: bytes | None,
    ) -> Outcome | Conflict: ...

    def update(
        self,
        key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
        *,
        expected: bytes | None = None,
    ) -> Outcome | Conflict:
        """Write only over a live session (else MISSING); never creates.

        ``SET XX`` alone is atomic: a destroyed session has no data name (its
        tombstone and its data never coexist), so there is nothing to update.
        With ``expected`` (the payload the caller loaded), the write happens
        only over that version, else nothing is written and a ``Conflict``
        carries what is stored now (``scripts.UPDATE_VERSIONED``), in the same
        round trip. With ``index``, the session's entry in its user's index
        is written too.
        """
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            self.destroy(key)
            return Outcome.EXPIRED
        client = self._client()
        name = self.data_name(key)
        over = False
        if index is None or is_cluster(client):
            if index is not None:
                over = bool(scripts.run(client, *self._index_call(key, index)))
            if expected is None:
                reply = client.execute_command("SET", name, payload, "PX", ttl_ms, "XX")
                outcome: Outcome | Conflict = _written(reply)
            else:
                args = (payload, ttl_ms, _digest(expected))
                reply = scripts.run(client, scripts.UPDATE_VERSIONED, (name,), args)
                outcome = _versioned(reply)
        else:
            script, keys, args = self._update_call(
                key, payload, ttl_ms, index, expected
            )
            outcome, over = _indexed_versioned(scripts.run(client, script, keys, args))
        self._after_write(outcome, over, key, index)
        return outcome

    @overload
    async def aupdate(
        self,
        key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
        *,
        expected: None = None,
    ) -> Outcome: ...

    @overload
    async def aupdate(
        self,
        key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
        *,
        expected: bytes | None,
    ) -> Outcome | Conflict: ...

    async def aupdate(
        self,
        key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
        *,
        expected: bytes | None = None,
    ) -> Outcome | Conflict:
        """See update()."""
        check_key(key)
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            await self.adestroy(key)
            return Outcome.EXPIRED
        client = self._async_client()
        name = self.data_name(key)
        over = False
        if index is None or is_cluster(client):
            if index is not None:
                call = self._index_call(key, index)
                over = bool(await scripts.arun(client, *call))
            if expected is None:
                reply = await client.execute_command(
                    "SET", name, payload, "PX", ttl_ms, "XX"
                )
                outcome: Outcome | Conflict = _written(reply)
            else:
                args = (payload, ttl_ms, _digest(expected))
                reply = await scripts.arun(
                    client, scripts.UPDATE_VERSIONED, (name,), args
                )
                outcome = _versioned(reply)
        else:
            script, keys, args = self._update_call(
                key, payload, ttl_ms, index, expected
            )
            reply = await scripts.arun(client, script, keys, args)
            outcome, over = _indexed_versioned(reply)
        await self._aafter_write(outcome, over, key, index)
        return outcome

    def _update_call(
        self,
        key: str,
        payload: bytes,
        ttl_ms: int,
        index: IndexWrite,
        expected: bytes | None,
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        """The update of a session and its index entry in one script (one
        server), versioned when the caller knows what it loaded."""
        keys = (self.data_name(key), *self.index_names(index.user_id))
        index_args = self._index_args(key, index)
        if expected is None:
            return scripts.UPDATE_INDEXED, keys, (payload, ttl_ms, *index_args)
        args = (payload, ttl_ms, _digest(expected), *index_args)
        return scripts.UPDATE_INDEXED_VERSIONED, keys, args

    def touch(self, key: str, ttl: float) -> Outcome:
        """Reset the TTL of a live session (else MISSING).

        ``PEXPIRE`` never creates a name, and a tombstone is another name: a
        touch after a destroy changes nothing.
        """
        if not is_valid_key(key):
            return Outcome.MISSING
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            self.destroy(key)
            return Outcome.EXPIRED
        name = self.data_name(key)
        return _written(self._client().execute_command("PEXPIRE", name, ttl_ms))

    async def atouch(self, key: str, ttl: float) -> Outcome:
        """See touch()."""
        if not is_valid_key(key):
            return Outcome.MISSING
        ttl_ms = ttl_milliseconds(ttl)
        if not ttl_ms:
            await self.adestroy(key)
            return Outcome.EXPIRED
        name = self.data_name(key)
        reply = await self._async_client().execute_command("PEXPIRE", name, ttl_ms)
        return _written(reply)

    def destroy(
        self, key: str, user_id: str | None = None, *, moved: bool = False
    ) -> bool:
        """Delete the session and leave a tombstone; True if it was live.

        In "migrate" and "prepare" mode both forms end; on Cluster, where
        they live on different slots, one round trip each. In "migrate" mode
        an id's tombstone is then kept without expiry (one more round trip,
        see ``_ended_for_good``). With ``user_id``, the session's entry leaves
        that user's index too (in the same script on one server).
        """
        if not is_valid_key(key):
            return False
        client = self._client()
        removed = 0
        for script, keys, args in self._destroy_calls(client, key, user_id, moved):
            removed += scripts.run(client, script, keys, args)
        if user_id is not None and is_cluster(client):
            # Unlisted only once ended: a failure in between leaves a stale
            # entry, never a live session missing from the index.
            scripts.run(client, *self._forget_call(user_id, key))
        if (marker := self._ended_for_good(key)) is not None:
            client.execute_command("PERSIST", marker)
        return bool(removed)

    async def adestroy(
        self, key: str, user_id: str | None = None, *, moved: bool = False
    ) -> bool:
        """See destroy()."""
        if not is_valid_key(key):
            return False
        client = self._async_client()
        removed = 0
        for script, keys, args in self._destroy_calls(client, key, user_id, moved):
            removed += await scripts.arun(client, script, keys, args)
        if user_id is not None and is_cluster(client):
            await scripts.arun(client, *self._forget_call(user_id, key))
        if (marker := self._ended_for_good(key)) is not None:
            await client.execute_command("PERSIST", marker)
        return bool(removed)

    def _destroy_calls(
        self, client: Any, key: str, user_id: str | None, moved: bool
    ) -> list[tuple[str, tuple[str, ...], tuple[Any, ...]]]:
        """Each DESTROY to run: every form at once, or one per slot on Cluster."""
        args = (self._tombstone_ms, retry_token(moved=moved))
        forms = self._ended_forms(key)
        if is_cluster(client):
            return [(scripts.DESTROY, names, args) for names in forms]
        keys = tuple(name for names in forms for name in names)
        if user_id is None:
            return [(scripts.DESTROY, keys, args)]
        indexed_keys = (*keys, *self.index_names(user_id))
        return [(scripts.DESTROY_INDEXED, indexed_keys, (*args, *self._fields(key)))]

    def _ended_for_good(self, key: str) -> str | None:
        """The tombstone that must outlive a plain form nobody can name.

        In "migrate" mode a session ended by its id (admin code, a user's
        logout everywhere, the cap) may still live under its plain key,
        which cannot be derived from the id. Every move from a plain key
        refuses an id that has a tombstone (``READ_OR_MOVE``, ``MOVE``, the
        create after ``TAKE``), so that tombstone is kept without expiry: a
        cookie loaded after any delay finds its plain form and ends it.
        ``settle_markers()`` (run by ``rehash``, once no plain form is left)
        gives such tombstones their usual lifetime back.
        """
        if self._migrating and is_hashed_id(key):
            return tombstone_key(self.prefix, key)
        return None

    def settle_markers(self) -> int:
        """Give every tombstone kept without expiry its usual lifetime back.

        For ``rehash`` once every plain form has moved: the tombstones kept
        by ``destroy`` in "migrate" mode (see ``_ended_for_good``) have
        nothing left to refuse. One script per SCAN batch on each primary;
        returns how many were settled.
        """
        pattern = glob_escape(self.prefix) + "{#*}" + TOMBSTONE_SUFFIX
        settled = 0
        for node in scan_nodes(self._client()):
            cursor: Any = 0
            while True:
                args = (cursor, pattern, self.scan_count, self._tombstone_ms)
                cursor, count = scripts.run(node, scripts.SETTLE_BATCH, (), args)
                settled += int(count)
                if not int(cursor):
                    break
        return settled

    def cycle(
        self,
        old_key: str | None,
        new_key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
    ) -> Outcome:
        """Move a session to ``new_key`` and destroy ``old_key``: the login path.

        One atomic script on a single Redis. Outcomes: WRITTEN; MISSING when
        ``old_key`` no longer holds a live session (a logout, a ``clear`` or
        another cycle ended it: its data must not live on under a new key, so
        nothing is written); EXISTS or TOMBSTONED when ``new_key`` is unusable
        (nothing changed); EXPIRED when the TTL is not positive (the old
        session is destroyed, nothing is written). With no ``old_key`` it is
        a create. With ``index``, the user's index entry moves to the new id.
        """
        if old_key is None:
            return self.create(new_key, payload, ttl, index)
        plan = self._cycle_plan(old_key, new_key, ttl)
        if plan is Outcome.EXPIRED:
            self.destroy(old_key, None if index is None else index.user_id)
        if plan is not None:
            return plan
        client = self._client()
        if not is_cluster(client):
            script, keys, args = self._cycle_call(old_key, new_key, payload, ttl, index)
            outcome, over = _indexed(scripts.run(client, script, keys, args))
            self._after_write(outcome, over, new_key, index)
            return outcome
        # On Redis Cluster the two sessions live on different slots, which one
        # script may not touch. The new id's entry is written first, so a
        # listing that runs while the key changes finds the new session as
        # soon as it exists (the old entry stays until its session is known
        # dead). Then the old session ends, and the new one is created only
        # if the old was live: a failure in between logs the user out, where
        # the other order could leave two live sessions. A new id refused
        # then was ended by a logout that ran in between (it found the new
        # entry): the session is over, as if the old one had been ended.
        over = False
        if index is not None:
            call = self._index_call(new_key, index, moved_from=old_key)
            over = bool(scripts.run(client, *call))
        if not self.destroy(old_key, moved=True):
            return Outcome.MISSING
        outcome = _ended_meanwhile(self.create(new_key, payload, ttl))
        self._after_write(outcome, over, new_key, index)
        return outcome

    async def acycle(
        self,
        old_key: str | None,
        new_key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None = None,
    ) -> Outcome:
        """See cycle()."""
        if old_key is None:
            return await self.acreate(new_key, payload, ttl, index)
        plan = self._cycle_plan(old_key, new_key, ttl)
        if plan is Outcome.EXPIRED:
            await self.adestroy(old_key, None if index is None else index.user_id)
        if plan is not None:
            return plan
        client = self._async_client()
        if not is_cluster(client):
            script, keys, args = self._cycle_call(old_key, new_key, payload, ttl, index)
            outcome, over = _indexed(await scripts.arun(client, script, keys, args))
            await self._aafter_write(outcome, over, new_key, index)
            return outcome
        over = False
        if index is not None:
            call = self._index_call(new_key, index, moved_from=old_key)
            over = bool(await scripts.arun(client, *call))
        if not await self.adestroy(old_key, moved=True):
            return Outcome.MISSING
        outcome = _ended_meanwhile(await self.acreate(new_key, payload, ttl))
        await self._aafter_write(outcome, over, new_key, index)
        return outcome

    @staticmethod
    def _cycle_plan(old_key: str, new_key: str, ttl: float) -> Outcome | None:
        """The outcome of a cycle decided without Redis, if there is one."""
        check_key(new_key)
        if not ttl_milliseconds(ttl):
            return Outcome.EXPIRED
        if not is_valid_key(old_key):
            return Outcome.MISSING
        return None

    def _cycle_call(
        self,
        old_key: str,
        new_key: str,
        payload: bytes,
        ttl: float,
        index: IndexWrite | None,
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        old_names = tuple(
            name for names in self._ended_forms(old_key) for name in names
        )
        keys = self._names(new_key) + old_names
        token = retry_token(moved=True)
        args = (payload, ttl_milliseconds(ttl), self._tombstone_ms, token)
        if index is None:
            return scripts.CYCLE, keys, args
        # The old session ends in the same script: its entries go with it.
        moved = self._index_args(new_key, index, inherit=self._fields(old_key))
        keys = (*keys, *self.index_names(index.user_id))
        return scripts.CYCLE_INDEXED, keys, (*args, *moved)

    # --- The per-user index ---------------------------------------------------

    def index_names(self, user_id: str) -> tuple[str, str]:
        """The Redis names of ``user_id``'s index: its hash and its expiry set.

        Both on the user's slot; neither ends in ``}``, so the session
        pattern never sees them.
        """
        name = user_index_key(self.prefix, user_id)
        return name, name.removesuffix(":sessions") + ":expiry"

    def _index_name(self, user_id: str) -> str:
        return user_index_key(self.prefix, user_id)

    def _fields(self, key: str) -> list[str]:
        """The index fields the session of ``key`` may be listed under.

        Its id and, in "migrate" mode, its plain key: the field of an entry
        written while ids were not hashed (a key sent in this mode anyway, as
        the plain names are). Never a key in True mode: Redis must not see it.
        """
        session_id = self.session_id(key)
        if self._migrating and session_id != key:
            return [session_id, key]
        return [session_id]

    def _index_args(
        self,
        key: str,
        index: IndexWrite,
        *,
        inherit: list[str] | None = None,
        unlist: bool = True,
    ) -> list[Any]:
        """``index_write``'s arguments (``scripts.py``) for ``key``'s entry.

        ``inherit``: the fields the entry takes its creation time and
        metadata from (default: the session's own other fields); with
        ``unlist`` they leave the index, which only a write that ends their
        session (or that is their session) may do.
        """
        session_id = self.session_id(key)
        fields = self._fields(key)[1:] if inherit is None else inherit
        return [
            *index.script_args(session_id, now_ms(), self._cap),
            "1" if unlist else "0",
            *fields,
        ]

    def _index_call(
        self, key: str, index: IndexWrite, moved_from: str | None = None
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        """INDEX_WRITE of ``key``'s entry, alone on the user's slot.

        With ``moved_from`` (a key change on Cluster) the entry inherits the
        old session's, which stays: that session is not ended yet.
        """
        if moved_from is None:
            args = self._index_args(key, index)
        else:
            args = self._index_args(
                key, index, inherit=self._fields(moved_from), unlist=False
            )
        return scripts.INDEX_WRITE, self.index_names(index.user_id), tuple(args)

    def _forget_call(
        self, user_id: str, key: str
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        """INDEX_FORGET of the entries of ``key``'s session."""
        names = self.index_names(user_id)
        return scripts.INDEX_FORGET, names, tuple(self._fields(key))

    def _after_write(
        self,
        outcome: Outcome | Conflict,
        over: bool,
        key: str,
        index: IndexWrite | None,
    ) -> None:
        if over and index is not None and outcome is Outcome.WRITTEN:
            self._evict(index.user_id, self.session_id(key))

    async def _aafter_write(
        self,
        outcome: Outcome | Conflict,
        over: bool,
        key: str,
        index: IndexWrite | None,
    ) -> None:
        if over and index is not None and outcome is Outcome.WRITTEN:
            await self._aevict(index.user_id, self.session_id(key))

    def _evict(self, user_id: str, kept: str) -> list[str]:
        """End the user's oldest live sessions beyond MAX_SESSIONS_PER_USER.

        ``kept`` is the session just written, which always stays. Only live
        sessions count (``user_entries`` checks each one) and each ends as a
        logout does, then leaves the index; returns (and reports to
        ``on_evicted``) the ids of those that were still live when ended.
        """
        excess = _beyond_cap(self.user_entries(user_id), kept, self._cap)
        ended = [
            session_id for session_id in excess if self.destroy(session_id, user_id)
        ]
        if ended and self.on_evicted is not None:
            self.on_evicted(ended)
        return ended

    async def _aevict(self, user_id: str, kept: str) -> list[str]:
        """See _evict()."""
        listed = await self.auser_entries(user_id)
        ended = [
            session_id
            for session_id in _beyond_cap(listed, kept, self._cap)
            if await self.adestroy(session_id, user_id)
        ]
        if ended and self.aon_evicted is not None:
            await self.aon_evicted(ended)
        return ended

    def index(self, key: str, index: IndexWrite) -> None:
        """Write ``key``'s entry in its user's index, alone (before a write)."""
        over = scripts.run(self._client(), *self._index_call(key, index))
        if over:
            self._evict(index.user_id, self.session_id(key))

    async def aindex(self, key: str, index: IndexWrite) -> None:
        """See index()."""
        over = await scripts.arun(self._async_client(), *self._index_call(key, index))
        if over:
            await self._aevict(index.user_id, self.session_id(key))

    def index_entry(self, user_id: str, key: str) -> str | None:
        """The entry of ``key``'s session in ``user_id``'s index, if it has one."""
        entry = self._client().hget(self._index_name(user_id), self.session_id(key))
        return None if entry is None else _decoded_hash({b"": entry})[""]

    def unindex(self, user_id: str, key: str) -> None:
        """Drop ``key``'s session from ``user_id``'s index (no longer the user's)."""
        scripts.run(self._client(), *self._forget_call(user_id, key))

    async def aunindex(self, user_id: str, key: str) -> None:
        """See unindex()."""
        await scripts.arun(self._async_client(), *self._forget_call(user_id, key))

    def index_fields(self, user_id: str) -> list[str]:
        """Every field of the user's index, live or not (one round trip).

        A field written before its session may name one that does not exist
        yet (Redis Cluster), which ``logout_user`` must end too. A field is
        an id, or, for a session indexed before ids were hashed, its key:
        ``destroy()`` of that key also ends a session still stored under it.
        """
        return _ids(self._client().hkeys(self._index_name(user_id)))

    async def aindex_fields(self, user_id: str) -> list[str]:
        """See index_fields()."""
        return _ids(await self._async_client().hkeys(self._index_name(user_id)))

    def user_entries(
        self, user_id: str, *, pending: bool = False
    ) -> list[tuple[str, str, int | None]]:
        """The user's live sessions: (id, entry, real expiry in ms or None).

        Two round trips: the index, then every session's ``PTTL`` in one
        pipeline. Each session once, by its id, never by its key. Entries of
        sessions found gone are pruned here (a third round trip, only when
        there are some), but only those older than the slack: a younger one
        may belong to a session being written (on Cluster its entry comes
        first). Entries under a plain key (written with ``HASH_IDS`` False)
        move to their id first; in "migrate" mode their session too, if it
        still lives under its plain name, so that it is found, and ended, by
        its id.

        With ``pending``, also the entries of sessions not there (yet) but
        younger than the slack, with None as their expiry: on Cluster a
        session being created or moved to a new key (``cycle``) has its entry
        before it exists, and a logout that means to end every session of
        the user ends those too (a destroy leaves a tombstone, which refuses
        the create still in flight).
        """
        client = self._client()
        names = self.index_names(user_id)
        entries = _decoded_hash(client.hgetall(names[0]))
        if plain := self._plain_fields(entries):
            if self._migrating:
                for key in plain:
                    self.read(key)  # moves it to its id, if it is still plain
            scripts.run(client, scripts.INDEX_REKEY, names, self._rekey_args(plain))
            entries = self._rekeyed(entries, plain)
        if not entries:
            return []
        pipeline = client.pipeline(transaction=False)
        for session_id in entries:
            pipeline.pttl(self.data_name(session_id))
        live, dead = _sorted_out(entries, pipeline.execute(), now_ms(), pending)
        if dead:
            scripts.run(client, scripts.INDEX_PRUNE, names, dead)
        return live

    async def auser_entries(
        self, user_id: str, *, pending: bool = False
    ) -> list[tuple[str, str, int | None]]:
        """See user_entries()."""
        client = self._async_client()
        names = self.index_names(user_id)
        entries = _decoded_hash(await client.hgetall(names[0]))
        if plain := self._plain_fields(entries):
            if self._migrating:
                for key in plain:
                    await self.aread(key)
            args = self._rekey_args(plain)
            await scripts.arun(client, scripts.INDEX_REKEY, names, args)
            entries = self._rekeyed(entries, plain)
        if not entries:
            return []
        pipeline = client.pipeline(transaction=False)
        for session_id in entries:
            pipeline.pttl(self.data_name(session_id))
        ttls = await pipeline.execute()
        live, dead = _sorted_out(entries, ttls, now_ms(), pending)
        if dead:
            await scripts.arun(client, scripts.INDEX_PRUNE, names, dead)
        return live

    def _plain_fields(self, entries: dict[str, str]) -> list[str]:
        """The fields that are session keys, not ids, where ids are hashed."""
        if not self._hashing:
            return []
        return [field for field in entries if not is_hashed_id(field)]

    def _rekey_args(self, plain: list[str]) -> list[str]:
        return [value for key in plain for value in (key, self.session_id(key))]

    def _rekeyed(self, entries: dict[str, str], plain: list[str]) -> dict[str, str]:
        """``entries`` as ``scripts.INDEX_REKEY`` leaves them: by id only."""
        moved = set(plain)
        found = {field: entry for field, entry in entries.items() if field not in moved}
        for key in plain:
            found.setdefault(self.session_id(key), entries[key])
        return found

    def rekey_index_batches(self) -> Iterator[int]:
        """Move every index field that is a session key to its id (``rehash``).

        Yields how many fields each index batch rewrote. Walks every user's
        index under the prefix (SCAN, then HSCAN of each), so an index
        written with ``HASH_IDS`` False keeps no cookie afterwards.
        """
        client = self._client()
        pattern = glob_escape(self.prefix) + "{u:*}:sessions"
        for node in scan_nodes(client):
            for name in node.scan_iter(
                match=pattern, count=self.scan_count, _type="hash"
            ):
                index = name.decode()
                names = (index, index.removesuffix(":sessions") + ":expiry")
                fields = [
                    field.decode(errors="replace") for field in client.hkeys(index)
                ]
                if plain := [field for field in fields if not is_hashed_id(field)]:
                    args = self._rekey_args(plain)
                    yield int(scripts.run(client, scripts.INDEX_REKEY, names, args))

    # --- Every session under the prefix, a SCAN batch at a time ---------------

    def scan(
        self, *, remember: int = DEDUPE_BATCHES, sessions_only: bool = True
    ) -> Iterator[list[bytes]]:
        """Batches of data names under the prefix, each name once.

        ``sessions_only`` keeps the names that can hold a session (string
        values, UTF-8 names); without it every name of the pattern comes back.
        ``remember`` is the dedupe window in batches (0: none, for callers that
        need no exact count). On Cluster every primary is scanned at once.
        """
        kind = "string" if sessions_only else None
        pattern = scan_pattern(self.prefix)
        sources = [
            partial(node_batches, node, pattern, self.scan_count, kind, remember)
            for node in scan_nodes(self._client())
        ]
        for batch in merged(sources):
            yield session_names(batch) if sessions_only else batch

    async def ascan(
        self, *, remember: int = DEDUPE_BATCHES, sessions_only: bool = True
    ) -> AsyncIterator[list[bytes]]:
        """See scan()."""
        kind = "string" if sessions_only else None
        pattern = scan_pattern(self.prefix)
        sources = [
            partial(anode_batches, node, pattern, self.scan_count, kind, remember)
            for node in await _ascan_nodes(self._async_client())
        ]
        async for batch in amerged(sources):
            yield session_names(batch) if sessions_only else batch

    def clear_batches(self, *, remember: int = 0) -> Iterator[tuple[int, list[bytes]]]:
        """Delete every session under the prefix, batch by batch.

        A session is a string under the session pattern, what ``scan()``
        finds: a value of another type there is no session and is left, as
        ``count()`` and ``all()`` skip it. Tombstones are not touched, nor
        are the users' indexes: a login running meanwhile may just have
        entered its new session in its index, behind the SCAN's cursor, so
        deleting an index could unlist a live session (the index invariant).
        An index whose sessions are gone lists stale entries, which its
        user's next write or read prunes, and expires after the last.

        Yields how many each batch deleted, and its names (``UNLINK`` counts
        only names that existed, so SCAN's repeats need no filtering for the
        total; ``remember`` drops them from the names). On Cluster every
        primary is cleared at once, each batch by a script on its own node
        (``bulk.cleared_on``); there the names come back only with
        ``remember``.
        """
        pattern = scan_pattern(self.prefix)
        client = self._client()
        if is_cluster(client):
            yield from merged(
                [
                    partial(cleared_on, node, pattern, self.scan_count, remember)
                    for node in scan_nodes(client)
                ]
            )
            return
        # TYPE string: SCAN matches the pattern only against strings, so the
        # users' indexes, as many names as the sessions, cost the server
        # nothing beyond being walked past.
        batches = node_batches(client, pattern, self.scan_count, "string", remember)
        for names in batches:
            yield unlink_on(client, names), names

    async def aclear_batches(
        self, *, remember: int = 0
    ) -> AsyncIterator[tuple[int, list[bytes]]]:
        """See clear_batches()."""
        pattern = scan_pattern(self.prefix)
        client = self._async_client()
        if is_cluster(client):
            sources = [
                partial(acleared_on, node, pattern, self.scan_count, remember)
                for node in await _ascan_nodes(client)
            ]
            async for deleted in amerged(sources):
                yield deleted
            return
        batches = anode_batches(client, pattern, self.scan_count, "string", remember)
        async for names in batches:
            yield await aunlink_on(client, names), names

    def measure(
        self, *, sample: int = 0, count_encrypted: bool = False
    ) -> Iterator[Measured]:
        """Every session under the prefix with its size and TTL, a batch at a time.

        One script per SCAN batch (``scripts.MEASURE``) on each primary: the
        tombstones come in the same scan, which costs less than a second one
        (SCAN walks the whole keyspace, whatever it matches). Names SCAN
        repeats are dropped as in ``scan``. The first ``sample`` sessions
        are also sized with ``MEMORY USAGE``, one pipeline per batch.
        ``count_encrypted`` also tells the sessions stored encrypted (one
        ``GETRANGE`` of a byte per session, on the server).
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
                args = (cursor, pattern, self.scan_count)
                counted = int(count_encrypted)
                reply = scripts.run(node, scripts.MEASURE, (), (*args, 1, counted))
                names = reply[1].split(b"\n") if reply[1] else []
                if len(names) != int(reply[7]):
                    # A name holds the separator: the same batch as a list.
                    reply = scripts.run(node, scripts.MEASURE, (), (*args, 0, counted))
                    names = reply[1]
                cursor, _, sizes, ttls, largest, longest, tombstones, _, sealed = reply
                batch = Measured(
                    name,
                    _buckets(sizes),
                    _buckets(ttls),
                    int(tombstones),
                    int(largest),
                    int(longest),
                    encrypted=bytes(sealed),
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

    def indexed_user(self, session_id: str) -> str | None:
        """The user whose index lists ``session_id``, found by walking the
        indexes (``show`` of an encrypted session, whose data names no user).

        One SCAN pass over the index names and one ``HEXISTS`` per index,
        pipelined per batch; on Cluster on every primary. Stops at the first.
        """
        pattern = user_index_pattern(self.prefix)
        start = len(self.prefix) + len("{u:")
        for node in scan_nodes(self._client()):
            for names in node_batches(node, pattern, self.scan_count, None, 0):
                pipeline = node.pipeline(transaction=False)
                for name in names:
                    pipeline.hexists(name, session_id)
                for name, listed in zip(names, pipeline.execute(), strict=True):
                    if listed:
                        encoded = name[start : -len("}:sessions")]
                        padding = b"=" * (-len(encoded) % 4)
                        return base64.urlsafe_b64decode(encoded + padding).decode()
        return None

    def count_indexed_users(self) -> int:
        """How many users have an index under the prefix: one SCAN pass.

        Names SCAN repeats are dropped as in ``scan``; on Cluster every
        primary is scanned at once.
        """
        pattern = user_index_pattern(self.prefix)
        sources = [
            partial(node_batches, node, pattern, self.scan_count, None, DEDUPE_BATCHES)
            for node in scan_nodes(self._client())
        ]
        return sum(len(batch) for batch in merged(sources))

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

    def move_to_ids(
        self,
        names: list[bytes],
        reseal: Callable[[bytes, str], bytes] | None = None,
    ) -> int:
        """Move the sessions under these plain data names to their ids.

        One pipeline of scripts on one server; on Cluster, where the two names
        of a session live on different slots, a take and a create each. The
        plain form always ends; returns how many now live under their id.
        ``reseal(payload, key)`` gives what to store under the id (encryption
        needs the key, which only a plain name still holds); with it, a take
        and a create each on one server too.
        """
        client = self._client()
        keys = [session_key_from(self.prefix, name) for name in names]
        args = (self._tombstone_ms,)
        if is_cluster(client) or reseal is not None:
            moved = 0
            for key in keys:
                plain = (data_key(self.prefix, key), tombstone_key(self.prefix, key))
                taken = scripts.run(client, scripts.TAKE, plain, args)
                if taken:
                    payload, ttl_ms = taken
                    if reseal is not None:
                        payload = reseal(payload, key)
                    created = self.create(key, payload, int(ttl_ms) / 1000)
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


def _sorted_out(
    entries: dict[str, str], ttls: list[Any], now: int, pending: bool = False
) -> tuple[list[tuple[str, str, int | None]], list[str]]:
    """The live sessions of a listing, and the dead entries it may prune.

    A dead entry is pruned only once it is older than the slack: a younger one
    may belong to a session being written right now (its entry comes first on
    Cluster), and is listed with ``pending``. The pruning gets each entry as
    read, as ``(field, entry)``.
    """
    live: list[tuple[str, str, int | None]] = []
    dead: list[str] = []
    for (session_id, entry), reply in zip(entries.items(), ttls, strict=True):
        ttl = int(reply)
        if ttl >= 0:
            live.append((session_id, entry, now + ttl))
        elif ttl == -1:  # a name without a TTL, which this store never writes
            live.append((session_id, entry, None))
        elif seen_ms(entry) + SLACK_MS < now:
            dead += [session_id, entry]
        elif pending:
            live.append((session_id, entry, None))
    return live, dead


def _beyond_cap(
    live: list[tuple[str, str, int | None]], kept: str, cap: int
) -> list[str]:
    """The live sessions a cap of ``cap`` ends when ``kept`` was just written.

    ``kept`` stays, and so do the newest others up to the cap (by when each
    session was created, as its entry records it); the older ones go.
    """
    others = [(created_ms(entry), session_id) for session_id, entry, _ in live]
    others = sorted((item for item in others if item[1] != kept), reverse=True)
    return [session_id for _, session_id in others[max(0, cap - 1) :]]


#: How a tombstone's name ends; a data name ends in "}" alone.
TOMBSTONE_END = ("}" + TOMBSTONE_SUFFIX).encode()


def _buckets(data: bytes) -> array[int]:
    """The bucket numbers ``scripts.MEASURE`` sent, two bytes each, little-endian."""
    buckets = array("H", data)
    if sys.byteorder == "big":  # pragma: no cover
        buckets.byteswap()
    return buckets


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
        encrypted=bytes(batch.encrypted[index] for index in kept)
        if batch.encrypted
        else b"",
        tombstones=sum(1 for name in fresh if name.endswith(TOMBSTONE_END)),
    )


def _ended(tombstone: bytes | None) -> bool:
    return tombstone is not None and not tombstone.startswith(MOVED_MARK)


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


async def _ascan_nodes(client: Any) -> list[Any]:
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()  # it learns its nodes lazily
        # A no-op once it has, which may have been before a failover: see
        # scan_nodes().
        await client.nodes_manager.initialize()
    return scan_nodes(client)


# The single-session operations record metrics (``metrics.py``) when the
# OpenTelemetry API is installed; without it they stay these very functions.
for _operation, _payload_at in (
    ("read", None),
    ("create", 1),
    ("set", 1),
    ("update", 1),
    ("touch", None),
    ("destroy", None),
    ("cycle", 2),
):
    for _name in (_operation, "a" + _operation):
        _method = getattr(RedisLayer, _name)
        setattr(
            RedisLayer,
            _name,
            metrics.recorded(_operation, _method, payload_at=_payload_at),
        )


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
