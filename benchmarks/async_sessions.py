"""Native asyncio sessions against Django's cache sessions run through sync_to_async.

What is measured
----------------
Three session engines, on the same Redis server, in one ``asyncio.run``:

* subject: ``django_redis_sessions.backends.redis.SessionStore``, whose
  ``aload``/``asave``/``acreate``/``adelete``/``acycle_key`` talk to Redis
  through ``redis.asyncio`` (Django >= 5.1);
* peer "django-redis": ``django.contrib.sessions.backends.cache.SessionStore``
  over ``django_redis.cache.RedisCache``; a cache has no native asyncio, so
  every cache call of the session goes through ``sync_to_async`` (one shared
  thread, as under an ASGI server);
* peer "Django RedisCache": the same session backend over Django's own
  ``django.core.cache.backends.redis.RedisCache`` (also ``sync_to_async``);
  ``--no-builtin`` leaves it out.

Operations, each a fresh ``SessionStore`` as in a request, ``--concurrency``
tasks (default 50) under ``asyncio.gather``, ``--ops`` operations in total
(default 5,000; the login/logout flow runs a quarter of that):

* load: ``aload()`` of an existing session;
* create: ``aset()`` on a new session then ``asave()`` (``acreate``);
* save: ``asave()`` of a loaded, changed session (the loads are not timed);
* flow: a login and a logout as ``django.contrib.auth`` does them: create an
  anonymous session, ``acycle_key()``, ``aset()`` the three auth keys,
  ``asave()``, then ``aflush()``.

How to read it
--------------
The machine is assumed to be shared and noisy, so the headline is a ratio. In
each of ``--rounds`` rounds (default 5) every engine runs every operation once,
in an order rotated from round to round; the subject's ops/s is divided by each
peer's ops/s of the same round, and the median of those ratios is printed with
its range (target: at least 2x). The ops/s columns are medians, for scale only.

"round trips" are the commands each engine sent per operation, counted by a
``redis.Connection`` / ``redis.asyncio.Connection`` subclass (passed as
``connection_class``) that records every ``send_command``. They are checked
one operation at a time (the subject's asyncio path must send exactly what its
sync path sends: create 1, load 1, save 1, cycle_key 1, delete 1) and averaged
over the timed runs.

Every client is closed at the end; the script fails if a ResourceWarning was
emitted or if the process still holds a socket it did not hold at the start
(Linux: ``/proc/self/fd``). Only keys under a random ``drs-bench-<hex>:`` namespace are
written, and all of them are deleted at the end (never FLUSHDB/FLUSHALL).

Run from the repository root::

    python benchmarks/async_sessions.py
    python benchmarks/async_sessions.py --ops 1000 --rounds 3
    python benchmarks/async_sessions.py --redis-url redis://host:6379/5
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/async_sessions.py`` without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import gc
import os
import statistics
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import django
import redis
from django.conf import settings

from benchmarks import common

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

SESSION_DATA: dict[str, Any] = {
    "_auth_user_id": "48213",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "3f1c" * 16,
    "cart": [1017, 2203, 87],
    "theme": "dark",
}
EXPECTED_SUBJECT_TRIPS = {"create": 1, "load": 1, "save": 1, "cycle_key": 1}
EXPECTED_SUBJECT_TRIPS |= {"delete": 1, "flow": 4}
TARGET_RATIO = 2.0


# --- Engines ------------------------------------------------------------------

StoreClass = Callable[..., "SessionBase"]


@dataclass(frozen=True)
class Engine:
    label: str
    store: StoreClass


def engines(*, builtin: bool) -> list[Engine]:
    from django.contrib.sessions.backends.cache import SessionStore as CacheStore
    from django.core.cache import caches

    from django_redis_sessions.backends.redis import SessionStore

    class BuiltinCacheStore(CacheStore):
        """The cache session backend on the ``builtin`` cache alias."""

        def __init__(self, session_key: str | None = None) -> None:
            super().__init__(session_key)
            self._cache = caches["builtin"]

    found = [
        Engine("subject", SessionStore),
        Engine("django-redis", CacheStore),
    ]
    if builtin:
        found.append(Engine("Django RedisCache", BuiltinCacheStore))
    return found


# --- Operations ---------------------------------------------------------------


async def op_load(store: SessionBase) -> None:
    if not await store.aload():
        raise AssertionError("load: the session is missing")


async def op_create(store: SessionBase) -> None:
    await store.aset("cart", SESSION_DATA["cart"])
    await store.asave()


async def op_save(store: SessionBase) -> None:
    await store.asave()


async def op_flow(store: SessionBase) -> None:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    await store.aset("cart", SESSION_DATA["cart"])
    await store.asave()  # the anonymous visitor's session
    await store.acycle_key()  # login
    await store.aset(SESSION_KEY, SESSION_DATA["_auth_user_id"])
    await store.aset(BACKEND_SESSION_KEY, SESSION_DATA["_auth_user_backend"])
    await store.aset(HASH_SESSION_KEY, SESSION_DATA["_auth_user_hash"])
    await store.asave()  # the login response
    await store.aflush()  # logout


@dataclass(frozen=True)
class Operation:
    name: str
    run: Callable[[SessionBase], Awaitable[None]]
    #: Builds the stores to run on (not timed).
    prepare: Callable[[Engine, list[str], int, int], Awaitable[list[SessionBase]]]
    share: int = 1  # runs ``ops // share`` times


async def fresh_stores(
    engine: Engine, pool: list[str], count: int, concurrency: int
) -> list[SessionBase]:
    return [engine.store() for _ in range(count)]


async def existing_stores(
    engine: Engine, pool: list[str], count: int, concurrency: int
) -> list[SessionBase]:
    return [engine.store(pool[index % len(pool)]) for index in range(count)]


async def changed_stores(
    engine: Engine, pool: list[str], count: int, concurrency: int
) -> list[SessionBase]:
    stores = await existing_stores(engine, pool, count, concurrency)

    async def load_and_change(store: SessionBase) -> None:
        await store.aget("cart")
        store["visits"] = id(store)

    await run_concurrently(stores, load_and_change, concurrency)
    return stores


OPERATIONS = [
    Operation("load", op_load, existing_stores),
    Operation("create", op_create, fresh_stores),
    Operation("save", op_save, changed_stores),
    Operation("flow", op_flow, fresh_stores, share=4),
]


async def run_concurrently(
    stores: Sequence[SessionBase],
    run: Callable[[SessionBase], Awaitable[None]],
    concurrency: int,
) -> float:
    """Run ``run`` on every store with ``concurrency`` tasks; wall seconds."""

    async def worker(first: int) -> None:
        for index in range(first, len(stores), concurrency):
            await run(stores[index])

    start = time.perf_counter()
    await asyncio.gather(*(worker(first) for first in range(concurrency)))
    return time.perf_counter() - start


# --- Round trips, one operation at a time -------------------------------------


def trips(commands: Sequence[str]) -> str:
    return f"{len(commands)} {','.join(commands)}" if commands else "0"


async def async_trips(engine: Engine) -> dict[str, list[str]]:
    """The commands each operation sends, on the asyncio path."""
    log = common.LOG
    found: dict[str, list[str]] = {}
    store = engine.store()
    await store.aset("cart", SESSION_DATA["cart"])
    log.take()
    await store.asave()
    found["create"] = log.take()
    loaded = engine.store(store.session_key)
    await loaded.aload()
    found["load"] = log.take()
    await loaded.aget("cart")  # loads (and caches) the data
    loaded["visits"] = 2
    log.take()
    await loaded.asave()
    found["save"] = log.take()
    await loaded.acycle_key()
    found["cycle_key"] = log.take()
    await loaded.adelete()
    found["delete"] = log.take()
    await op_flow(engine.store())
    found["flow"] = log.take()
    return found


def sync_trips(engine: Engine) -> dict[str, list[str]]:
    """The same on the sync path (``flow`` as auth's login and logout do it)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    log = common.LOG
    found: dict[str, list[str]] = {}
    store = engine.store()
    store["cart"] = SESSION_DATA["cart"]
    log.take()
    store.save()
    found["create"] = log.take()
    loaded = engine.store(store.session_key)
    loaded.load()
    found["load"] = log.take()
    loaded.get("cart")
    loaded["visits"] = 2
    log.take()
    loaded.save()
    found["save"] = log.take()
    loaded.cycle_key()
    found["cycle_key"] = log.take()
    loaded.delete()
    found["delete"] = log.take()
    flow = engine.store()
    flow["cart"] = SESSION_DATA["cart"]
    flow.save()
    flow.cycle_key()
    flow[SESSION_KEY] = SESSION_DATA["_auth_user_id"]
    flow[BACKEND_SESSION_KEY] = SESSION_DATA["_auth_user_backend"]
    flow[HASH_SESSION_KEY] = SESSION_DATA["_auth_user_hash"]
    flow.save()
    flow.flush()
    found["flow"] = log.take()
    return found


# --- Timed rounds -------------------------------------------------------------


@dataclass
class Results:
    #: (operation, engine) -> ops/s per round
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: (operation, engine) -> commands per operation in the timed runs
    trips: dict[tuple[str, str], float] = field(default_factory=dict)
    #: engine -> operation -> commands, one operation at a time
    async_commands: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sync_commands: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def ratios(self, operation: str, subject: str, peer: str) -> list[float]:
        return [
            mine / theirs
            for mine, theirs in zip(
                self.rates[operation, subject], self.rates[operation, peer], strict=True
            )
        ]


async def create_pool(engine: Engine, size: int, concurrency: int) -> list[str]:
    stores = [engine.store() for _ in range(size)]

    async def create(store: SessionBase) -> None:
        await store.aupdate(SESSION_DATA)
        await store.asave()

    await run_concurrently(stores, create, concurrency)
    return [str(store.session_key) for store in stores]


async def one_round(
    all_engines: list[Engine],
    pools: dict[str, list[str]],
    ops: int,
    concurrency: int,
    round_index: int,
    results: Results | None,
) -> None:
    """Every operation on every engine, engines in a rotated order."""
    for operation in OPERATIONS:
        for engine in common.rotated(all_engines, round_index):
            count = max(1, ops // operation.share)
            stores = await operation.prepare(
                engine, pools[engine.label], count, concurrency
            )
            common.LOG.sent.clear()
            seconds = await run_concurrently(stores, operation.run, concurrency)
            if results is not None:
                key = (operation.name, engine.label)
                results.rates.setdefault(key, []).append(count / seconds)
                results.trips[key] = len(common.LOG.sent) / count


async def bench(
    all_engines: list[Engine],
    *,
    ops: int,
    concurrency: int,
    rounds: int,
    results: Results,
) -> None:
    from django_redis_sessions.client import close_clients

    try:
        for engine in all_engines:
            # The first pass connects and loads the scripts; the second counts.
            await async_trips(engine)
            results.async_commands[engine.label] = await async_trips(engine)
        pool_size = max(4 * concurrency, 200)
        pools = {
            engine.label: await create_pool(engine, pool_size, concurrency)
            for engine in all_engines
        }
        common.progress("warm-up")
        await one_round(all_engines, pools, 2 * concurrency, concurrency, 0, None)
        for round_index in range(rounds):
            common.progress(f"round {round_index + 1}/{rounds}")
            await one_round(all_engines, pools, ops, concurrency, round_index, results)
    finally:
        close_caches()
        # Forget the loop's clients; asyncio.run's shutdown closes them.
        close_clients()


# --- Output -------------------------------------------------------------------


OPERATION_LABELS = {
    "load": "load (aload)",
    "create": "create (asave new)",
    "save": "save (asave changed)",
    "flow": "login+logout flow",
}


def report(results: Results, all_engines: list[Engine], *, rounds: int) -> bool:
    """Print the tables; False if a round-trip check or the target failed."""
    subject, *peers = [engine.label for engine in all_engines]
    labels = [subject, *peers]
    rows = [
        [
            OPERATION_LABELS[operation.name],
            *(
                f"{statistics.median(results.rates[operation.name, label]):,.0f}"
                for label in labels
            ),
        ]
        for operation in OPERATIONS
    ]
    print(f"\n== Throughput, ops/s (median of {rounds} interleaved rounds) ==\n")
    print(common.table(["operation", *labels], rows))

    rows = []
    target_met = True
    for operation in OPERATIONS:
        cells = [OPERATION_LABELS[operation.name]]
        for peer in peers:
            ratios = results.ratios(operation.name, subject, peer)
            median = statistics.median(ratios)
            target_met &= median >= TARGET_RATIO
            cells += common.ratio_cells(ratios)
        rows.append(cells)
    headers = ["operation"]
    for peer in peers:
        headers += [f"x vs {peer}", "range"]
    print(
        f"\n== Ratio {subject} ops/s / peer ops/s, per round, median "
        f"(target >= {TARGET_RATIO:.0f}x) ==\n"
    )
    print(common.table(headers, rows))
    print(
        f"\nTarget: {subject} at least {TARGET_RATIO:.0f}x every peer on every "
        f"operation: {'met' if target_met else 'NOT met'}."
    )

    trip_ok = True
    headers = ["operation", f"{subject} async", f"{subject} sync", "expected"]
    headers += [f"{peer} (async)" for peer in peers]
    rows = []
    for name, expected in EXPECTED_SUBJECT_TRIPS.items():
        mine = results.async_commands[subject][name]
        sync = results.sync_commands[name]
        ok = mine == sync and len(mine) == expected
        trip_ok &= ok
        cells = [name, trips(mine), trips(sync), f"{expected} {'ok' if ok else 'NO'}"]
        cells += [trips(results.async_commands[peer][name]) for peer in peers]
        rows.append(cells)
    print("\n== Round trips, one operation at a time (commands sent) ==\n")
    print(common.table(headers, rows))

    headers = ["operation", *(f"{label} RT/op" for label in [subject, *peers])]
    rows = [
        [
            OPERATION_LABELS[operation.name],
            *(
                f"{results.trips[operation.name, label]:.2f}"
                for label in [subject, *peers]
            ),
        ]
        for operation in OPERATIONS
    ]
    print("\n== Round trips per operation in the timed, concurrent runs ==\n")
    print(common.table(headers, rows))
    for operation in OPERATIONS:
        expected = EXPECTED_SUBJECT_TRIPS[operation.name]
        if abs(results.trips[operation.name, subject] - expected) > 1e-9:
            trip_ok = False
    print(
        f"\n{subject}: asyncio round trips equal the sync path's and the "
        f"expected counts: {'yes' if trip_ok else 'NO'}."
    )
    return trip_ok


# --- Setup and teardown -------------------------------------------------------


def configure(url: str, namespace: str) -> None:
    settings.configure(
        SECRET_KEY="django-redis-sessions-benchmark",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions"],
        SESSION_REDIS={
            "URL": url,
            "PREFIX": f"{namespace}s:",
            "OPTIONS": {"connection_class": common.LOG.async_connection_class},
        },
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": f"{namespace}dr",
                "OPTIONS": {
                    "CONNECTION_POOL_KWARGS": {
                        "connection_class": common.LOG.connection_class
                    },
                },
            },
            "builtin": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": f"{namespace}dj",
                "OPTIONS": {"connection_class": common.LOG.connection_class},
            },
        },
    )
    django.setup()


def measure_sync_trips(url: str, namespace: str, subject: Engine) -> dict[str, Any]:
    """The subject's sync path, with a sync counting connection class."""
    from django.test.utils import override_settings

    config = {
        "URL": url,
        "PREFIX": f"{namespace}s:",
        "OPTIONS": {"connection_class": common.LOG.connection_class},
    }
    # Changing SESSION_REDIS closes the sync client and drops the cached store.
    with override_settings(SESSION_REDIS=config):
        sync_trips(subject)  # connects and loads the scripts
        return sync_trips(subject)


def close_caches() -> None:
    """Disconnect the peers' connection pools.

    Called inside ``asyncio.run``: ``django.core.cache.caches`` is local to the
    context, so only there does it return the instances the peers used.
    django-redis keeps its pools in a process-wide dict that ``close()`` does
    not empty, and Django's ``RedisCache.close()`` does nothing, so both are
    disconnected by hand.
    """
    from django.core.cache import caches

    django_redis: Any = caches["default"]
    for pool in django_redis.client.connection_factory._pools.values():
        pool.disconnect()
    builtin: Any = caches["builtin"]
    for pool in builtin._cache._pools.values():
        pool.disconnect()


def open_sockets() -> int | None:
    """Sockets this process holds open (Linux); None where it cannot tell.

    A ResourceWarning only appears when an unclosed connection is garbage
    collected; a client that something still references (a cache, a registry)
    never warns, but its sockets stay open, so they are counted too.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    count = 0
    for name in names:
        # The fd listdir used is gone by now: OSError, skipped.
        with suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
    return count


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--ops", type=int, default=5000, help="operations per measurement (5000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="concurrent tasks (50)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="default 5")
    parser.add_argument(
        "--no-builtin",
        action="store_true",
        help="leave out the Django RedisCache peer",
    )
    common.add_redis_url_argument(parser)
    args = parser.parse_args(argv)
    if args.ops < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--ops, --concurrency and --rounds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if django.VERSION < (5, 1):
        print(
            "async_sessions.py needs Django 5.1 or later (the native async "
            f"session API); this is Django {django.get_version()}.",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    namespace = f"drs-bench-{uuid.uuid4().hex[:12]}:"
    results = Results()
    ok = True
    sockets_before = open_sockets()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with common.server_url(args.redis_url) as (url, origin):
            configure(url, namespace)
            all_engines = engines(builtin=not args.no_builtin)
            admin = redis.Redis.from_url(url)
            try:
                server = common.server_version(admin)
                print(
                    f"async_sessions.py: {args.ops:,} ops per measurement "
                    f"(flow {args.ops // 4:,}), {args.concurrency} concurrent "
                    f"tasks, {args.rounds} rounds; server {server} ({origin}); "
                    f"Django {django.get_version()}; redis-py {redis.__version__}; "
                    f"Python {sys.version.split()[0]}"
                )
                results.sync_commands = measure_sync_trips(
                    url, namespace, all_engines[0]
                )
                asyncio.run(
                    bench(
                        all_engines,
                        ops=args.ops,
                        concurrency=args.concurrency,
                        rounds=args.rounds,
                        results=results,
                    )
                )
            finally:
                common.delete_namespace(admin, namespace)
                pattern = common.namespace_pattern(namespace)
                left = sum(1 for _ in admin.scan_iter(match=pattern))
                admin.close()
        gc.collect()
    sockets_after = open_sockets()
    results.seconds = time.perf_counter() - started
    ok &= report(results, all_engines, rounds=args.rounds)
    if left:
        print(f"\nCLEANUP FAILED: {left} keys left under {namespace}")
        ok = False
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    print(f"\nResourceWarnings: {len(leaks)}.")
    for leak in leaks:
        print(f"  {leak.message}")
        ok = False
    if sockets_before is None or sockets_after is None:
        print("Sockets left open: cannot tell on this platform.")
    else:
        left_open = sockets_after - sockets_before
        print(f"Sockets left open: {left_open}.")
        ok &= left_open == 0
    print(f"Total {results.seconds:.0f} s.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
