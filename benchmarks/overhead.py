"""The engine's own Python cost against the bare redis-py call it makes."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/overhead.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import cProfile
import hashlib
import inspect
import pstats
import re
import secrets
import subprocess
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from django.conf import settings
from django.core.signing import JSONSerializer
from django.test.utils import override_settings

from benchmarks import common
from benchmarks.common import SessionStore, Variant

ANONYMOUS = {"cart": common.SESSION["cart"], "theme": common.SESSION["theme"]}
USER = {key: value for key, value in common.SESSION.items() if key[0] == "_"}
TTL_MS = 1_209_600_000  # Django's default SESSION_COOKIE_AGE
#: The engine's default socket options, for both sides: a socket with a
#: timeout polls before each read. Both sides count their commands (RT/op).
OPTIONS: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
SYNC = {**OPTIONS, "connection_class": common.LOG.connection_class}
ASYNC = {**OPTIONS, "connection_class": common.LOG.async_connection_class}
SAVED = JSONSerializer().dumps({**ANONYMOUS, "n": 9999})  # what save() sends
CREATED = JSONSerializer().dumps({"a": 1})
SHA = common.scripts.sha(common.scripts.CREATE)
SAVE_SHA = common.scripts.sha(common.scripts.UPDATE_VERSIONED)
SAVED_DIGEST = hashlib.sha1(SAVED).hexdigest()
SETTINGS: dict[str, Any] = {}  # SESSION_REDIS as configured
CLIENT: list[redis.Redis] = []
_override: list[Any] = []


def use(**changes: Any) -> None:
    """``SESSION_REDIS`` with ``changes`` until the next call; it drops the
    engine's clients, so it is called in setups only."""
    while _override:
        _override.pop().disable()
    _override.append(override_settings(SESSION_REDIS={**SETTINGS, **changes}))
    _override[0].enable()


def loaded(data: dict[str, Any]) -> Callable[[int], SessionStore]:
    """A setup: a new session of ``data``, loaded."""

    def setup(n: int) -> SessionStore:
        store = SessionStore()
        store.update(data)
        store.save()
        store = SessionStore(store.session_key)
        store.get("cart")
        return store

    return setup


def fresh_keys(n: int, data: dict[str, Any] | None = None) -> list[str]:
    """A setup: the last runs' sessions deleted, ``n`` new keys, each holding
    a session of ``data`` if given."""
    common.delete_under(CLIENT[0], common.NAMESPACE)
    keys, layer = [secrets.token_hex(16) for _ in range(n)], common.RedisLayer()
    with CLIENT[0].pipeline(transaction=False) as pipe:
        for key in keys if data else ():
            pipe.set(layer.data_name(key), JSONSerializer().dumps(data), px=TTL_MS)
        pipe.execute()
    return keys


# --- Timed: n operations of the engine, on what its setup prepared ----------
def load(store: SessionStore, n: int) -> None:
    for _ in range(n):
        SessionStore(store.session_key).load()


async def aload(store: SessionStore, n: int) -> None:
    for _ in range(n):
        await SessionStore(store.session_key).aload()


def save(store: SessionStore, n: int) -> None:
    for i in range(n):
        store["n"] = i
        store.save()


async def asave(store: SessionStore, n: int) -> None:
    for i in range(n):
        store["n"] = i
        await store.asave()


def create(_: object, n: int) -> None:
    for _ in range(n):
        store = SessionStore()
        store["a"] = 1
        store.save()


async def acreate(_: object, n: int) -> None:
    for _ in range(n):
        store = SessionStore()
        store["a"] = 1
        await store.asave()


def login(keys: list[str], n: int) -> None:
    """As ``django.contrib.auth.login`` does it, each time for another user."""
    for i, key in enumerate(keys):
        store = SessionStore(key)
        store.get("_auth_user_id")
        store.cycle_key()
        store.update({**USER, "_auth_user_id": str(i)})
        store.save()


async def alogin(keys: list[str], n: int) -> None:
    for i, key in enumerate(keys):
        store = SessionStore(key)
        await store.aget("_auth_user_id")
        await store.acycle_key()
        await store.aupdate({**USER, "_auth_user_id": str(i)})
        await store.asave()


# --- Timed: the bare calls the engine makes, on the names it would use ------
def get(client: redis.Redis, names: list[str]) -> None:
    for name in names:
        client.get(name)


async def aget(client: redis.asyncio.Redis, names: list[str]) -> None:
    for name in names:
        await client.get(name)
    await client.aclose()  # once a run: its event loop ends with the table


def save_over(client: redis.Redis, names: list[str]) -> None:
    """The versioned save the engine sends, as a bare ``EVALSHA``."""
    for name in names:
        client.evalsha(SAVE_SHA, 1, name, SAVED, TTL_MS, SAVED_DIGEST)


async def asave_over(client: redis.asyncio.Redis, names: list[str]) -> None:
    for name in names:
        await client.evalsha(SAVE_SHA, 1, name, SAVED, TTL_MS, SAVED_DIGEST)
    await client.aclose()


def evalsha(client: redis.Redis, names: list[tuple[str, str]]) -> None:
    for data, tombstone in names:
        client.evalsha(SHA, 2, data, tombstone, CREATED, TTL_MS)


async def aevalsha(client: redis.asyncio.Redis, names: list[tuple[str, str]]) -> None:
    for data, tombstone in names:
        await client.evalsha(SHA, 2, data, tombstone, CREATED, TTL_MS)
    await client.aclose()


def bare(command: str, run: Callable[..., Any], data: dict[str, Any] | None) -> Variant:
    """``run`` on one session of ``data``, or on new names if ``data`` is None."""

    async def setup(n: int) -> tuple[Any, list[Any]]:
        use()
        layer = common.RedisLayer()
        if data is None:
            keys = fresh_keys(n)
            names: list[Any] = [
                (layer.data_name(k), layer.tombstone_name(k)) for k in keys
            ]
            CLIENT[0].script_load(common.scripts.CREATE)
        else:
            names = [layer.data_name(str(loaded(data)(n).session_key))] * n
            CLIENT[0].script_load(common.scripts.UPDATE_VERSIONED)
        if not inspect.iscoroutinefunction(run):
            return CLIENT[0], names
        client = redis.asyncio.Redis.from_url(SETTINGS["URL"], **ASYNC)
        await client.ping()
        return client, names

    return Variant(f"redis-py {command}", lambda args: run(*args), setup)


def engine(
    run: Callable[..., Any], prepare: Callable[[int], Any], **config: Any
) -> Variant:
    """``run`` with ``SESSION_REDIS`` changed by ``config``, after ``prepare``."""
    ((setting, value),) = config.items()

    async def setup(n: int) -> tuple[Any, int]:
        use(**config)
        prepared = prepare(n)
        if not inspect.iscoroutinefunction(run):
            SessionStore().exists("warm-up")  # connects its client
            return prepared, n
        use(**config, OPTIONS=ASYNC)
        await SessionStore().aexists("warm-up")
        return prepared, n

    return Variant(f"engine, {setting} {value}", lambda args: run(*args), setup)


def tables(n: int) -> list[tuple[str, int, list[Variant]]]:
    """Each operation, sync then asyncio: the bare call (if any), then the
    engine with a setting on and off."""
    found = []
    for mode in 0, 1:
        hashing = [{"HASH_IDS": True}, {"HASH_IDS": False}]
        indexing = [{"USER_INDEX": False}, {"USER_INDEX": True}]
        specs: list[tuple[str, int, Variant | None, Any, Any, Any]] = [
            ("load", n, bare("GET", (get, aget)[mode], common.SESSION),
             (load, aload), loaded(common.SESSION), hashing),
            ("save", n, bare("EVALSHA", (save_over, asave_over)[mode], ANONYMOUS),
             (save, asave), loaded(ANONYMOUS), hashing),
            ("create", n, bare("EVALSHA", (evalsha, aevalsha)[mode], None),
             (create, acreate), fresh_keys, hashing),
            ("save, logged in", n, None, (save, asave), loaded(common.SESSION),
             indexing),
            ("login", n // 2, None, (login, alogin),
             lambda k: fresh_keys(k, ANONYMOUS), indexing),
        ]  # fmt: skip
        for label, count, reference, runs, prepare, configs in specs:
            variants = [engine(runs[mode], prepare, **config) for config in configs]
            label = f"{label}, {('sync', 'asyncio')[mode]}"
            found.append(
                (label, count, [reference, *variants] if reference else variants)
            )
    return found


def profile(n: int) -> None:
    """Sync load and save under cProfile: the 10 functions of most own time."""
    use()
    for run, data in (load, common.SESSION), (save, ANONYMOUS):
        store = loaded(data)(n)
        run(store, 1000)
        profiler = cProfile.Profile()
        profiler.runcall(run, store, n)
        stats = pstats.Stats(profiler).sort_stats("tottime")
        print(f"\n{run.__name__}, {n:,} ops: every function, then outside redis-py")
        stats.print_stats(10)
        stats.print_stats(r"^(?!.*(/redis/|_socket|select\.poll))", 10)


#: The tables ``--instructions`` counts, and the variants of each it runs.
COUNTED = ("load, sync", "save, sync", "load, asyncio", "save, asyncio")
COUNTED_VARIANTS = 2  # the bare call and the engine with HASH_IDS True


def count_instructions(url: str, n: int) -> None:
    """Instructions per operation of each counted variant, under callgrind.

    Each variant runs in a child process twice, with ``n`` operations and with
    none, after the same setup; the difference over ``n`` is its cost. Only
    instructions in user space are counted (the system calls of both sides
    are the same, one ``sendto`` and two ``recvfrom`` per command), so the
    figure is the same on a busy machine as on a quiet one.
    """
    rows = [["operation", "variant", "instructions/op", "speed"]]
    for label, _, variants in tables(n):
        if label not in COUNTED:
            continue
        counts = []
        for index in range(COUNTED_VARIANTS):
            counts.append(
                (child_instructions(url, label, index, n)
                 - child_instructions(url, label, index, 0)) / n
            )  # fmt: skip
            speed = f"{counts[0] / counts[-1]:.2f}x"
            name = variants[index].name
            rows.append([label, name, f"{counts[-1]:,.0f}", speed])
    print(f"\nInstructions per operation (callgrind)\n\n{common.table(rows)}")


def child_instructions(url: str, label: str, index: int, n: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--redis-url", url,
        "--child", label, str(index), str(n),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(re.findall(r"Collected : (\d+)", done.stderr)[-1])


def child(label: str, index: int, n: int) -> None:
    """One variant's setup, then ``n`` operations (see count_instructions)."""
    variant = next(found for name, _, found in tables(n) if name == label)[index]
    setup = variant.setup
    assert setup is not None

    async def run() -> None:
        argument = await common.call(setup, n)
        await common.call(variant.run, argument)

    asyncio.run(run())


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--ops", type=int, default=5000, help="default 5000")
    parser.add_argument("--profile", action="store_true", help="sync load and save")
    parser.add_argument(
        "--instructions", action="store_true", help="count them (needs valgrind)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with common.server(args.redis_url) as url:
        common.configure(url, session_redis={"OPTIONS": SYNC})
        SETTINGS.update(settings.SESSION_REDIS)
        CLIENT.append(redis.Redis.from_url(url, **SYNC))
        if args.child:
            label, index, n = args.child
            return child(label, int(index), int(n))
        if args.profile:
            return profile(args.ops)
        if args.instructions:
            return count_instructions(url, args.ops)
        rows = [["operation", "variant", "us/op", "CPU us/op", "CPU over first"]]
        for label, n, variants in tables(args.ops):
            title = f"{label}: {n:,} ops, {args.rounds} rounds; ratio: speed"
            times = common.compare(title, variants, n, rounds=args.rounds, speed=True)
            first = times[variants[0].name].cpu
            for name, (wall, cpu) in times.items():
                cells = [
                    f"{wall * 1e6:.1f}",
                    f"{cpu * 1e6:.1f}",
                    f"{(cpu - first) * 1e6:+.1f}",
                ]
                rows.append([label, name, *cells])
        print(f"\nMedians per operation, microseconds\n\n{common.table(rows)}")
    return None


if __name__ == "__main__":
    main()
