"""Native asyncio sessions against Django's cache sessions through sync_to_async."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/async_sessions.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import django
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.cache import SessionStore as CacheStore
from django.core.cache import caches

from benchmarks import common

USER = {key: value for key, value in common.SESSION.items() if key.startswith("_auth")}
CART = common.SESSION["cart"]
Op = Callable[[SessionBase], Awaitable[None]]


class BuiltinCacheStore(CacheStore):
    """Django's cache sessions over Django's own ``RedisCache``."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._cache = caches["builtin"]


#: The first is the reference: every ratio is a peer's time over its time.
ENGINES: dict[str, Callable[..., SessionBase]] = {
    "this engine": common.SessionStore,
    "django-redis": CacheStore,  # the default cache alias
    "Django RedisCache": BuiltinCacheStore,
}


async def each(op: Op, concurrency: int, stores: Sequence[SessionBase]) -> None:
    """``op`` on every store, ``concurrency`` tasks at a time."""

    async def worker(first: int) -> None:
        for store in stores[first::concurrency]:
            await op(store)

    await asyncio.gather(*(worker(first) for first in range(concurrency)))


async def load(store: SessionBase) -> None:
    if not await store.aload():
        raise SystemExit("A session of the pool is missing.")


async def create(store: SessionBase) -> None:
    await store.aset("cart", CART)
    await store.asave()


async def save(store: SessionBase) -> None:
    await store.asave()


async def login_logout(store: SessionBase) -> None:
    """As ``django.contrib.auth`` does them, from an anonymous session."""
    await create(store)
    await store.acycle_key()
    await store.aupdate(USER)
    await store.asave()
    await store.aflush()


def fresh(engine: Callable[..., SessionBase], n: int) -> list[SessionBase]:
    return [engine() for _ in range(n)]


def pooled(engine: Callable[..., SessionBase], n: int) -> list[SessionBase]:
    return [engine(POOLS[engine][index % len(POOLS[engine])]) for index in range(n)]


async def changed(engine: Callable[..., SessionBase], n: int) -> list[SessionBase]:
    """Loaded sessions with one new value: ``asave`` must write them."""

    async def change(store: SessionBase) -> None:
        await store.aget("cart")
        await store.aset("visits", 1)

    stores = pooled(engine, n)
    await each(change, 50, stores)
    return stores


POOLS: dict[Callable[..., SessionBase], list[str]] = {}
#: Each operation, the share of ``--ops`` it runs, and its untimed setup.
OPERATIONS = [
    ("load (aload)", load, 1, pooled),
    ("create (asave of a new session)", create, 1, fresh),
    ("save (asave of a changed session)", save, 1, changed),
    ("login + logout", login_logout, 4, fresh),
]


async def make_pool(engine: Callable[..., SessionBase], size: int) -> list[str]:
    stores = fresh(engine, size)
    for store in stores:
        await store.aupdate(common.SESSION)
        await store.asave()
    return [str(store.session_key) for store in stores]


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--ops", type=int, default=5000, help="default 5000")
    parser.add_argument("--concurrency", type=int, default=50, help="default 50")
    args = parser.parse_args()
    if django.VERSION < (5, 1):
        raise SystemExit("Native asyncio sessions need Django 5.1 or later.")
    with common.server(args.redis_url) as url:
        count = {"connection_class": common.LOG.connection_class}
        common.configure(
            url,
            session_redis={
                "OPTIONS": {"connection_class": common.LOG.async_connection_class}
            },
            CACHES={
                "default": {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": url,
                    "KEY_PREFIX": f"{common.NAMESPACE}django-redis",
                    "OPTIONS": {"CONNECTION_POOL_KWARGS": count},
                },
                "builtin": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": url,
                    "KEY_PREFIX": f"{common.NAMESPACE}django",
                    "OPTIONS": count,
                },
            },
        )
        for engine in ENGINES.values():
            POOLS[engine] = asyncio.run(make_pool(engine, 4 * args.concurrency))
        for label, op, share, setup in OPERATIONS:
            variants = [
                common.Variant(
                    name, partial(each, op, args.concurrency), partial(setup, engine)
                )
                for name, engine in ENGINES.items()
            ]
            n = args.ops // share
            title = (
                f"{label}: {n:,} ops, {args.concurrency} tasks, {args.rounds} rounds"
            )
            common.compare(title, variants, n, rounds=args.rounds)


if __name__ == "__main__":
    main()
