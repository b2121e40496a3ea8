"""SCAN batches on one server, or on every primary of a Redis Cluster at once.

``node_batches`` walks one node's keyspace a batch at a time, dropping the
names SCAN repeats. On Cluster, ``merged`` (threads) and ``amerged`` (asyncio
tasks) walk every primary concurrently and hand their batches over as they
come, through a queue of one batch per node, so memory stays flat and the
whole takes about as long as the largest primary. ``unlink_on`` deletes a
batch of one server with one ``UNLINK``. A primary of a Cluster is cleared by
``cleared_on``: one script per SCAN batch that unlinks each name on the node
itself (``scripts.CLEAR_BATCH``), so no command spans two slots and a batch
costs one round trip and one small reply.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import redis.asyncio.cluster
import redis.cluster

from django_redis_sessions import scripts

T = TypeVar("T")

#: How many recent SCAN batches are remembered to drop duplicates. SCAN
#: repeats a key only when the keyspace shrinks mid-iteration, and the repeated
#: keys come from the buckets visited just before, so a window of recent
#: batches catches them while memory stays flat however many sessions exist.
DEDUPE_BATCHES = 10

#: The name of ``merged``'s worker threads, so a leaked one can be told apart.
WORKER_NAME = "redis-sessions-scan"


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


def scan_nodes(client: Any) -> list[Any]:
    """What to SCAN: the client itself, or each primary of a Redis Cluster.

    An asyncio cluster client must have refreshed its topology before.
    """
    if isinstance(client, redis.cluster.RedisCluster):
        # A cluster client learns of a failover only when a command it routes
        # by key fails or is MOVED. SCAN goes to each primary directly, past
        # that routing: after a primary died and its replica took over, a
        # stale list still names the dead node, and count() would fail until
        # some keyed request refreshed it; after a graceful failover it names
        # the demoted one, now a replica. So one CLUSTER SLOTS per walk.
        client.nodes_manager.initialize()
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(node) for node in primaries]
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return list(client.get_primaries())
    return [client]


def node_batches(
    node: Any, pattern: str, count: int, kind: str | None, remember: int
) -> Iterator[list[bytes]]:
    """One node's names matching ``pattern`` (of type ``kind``), batch by batch."""
    recent = RecentKeys(remember)
    cursor = 0
    args = _scan_args(pattern, count, kind)
    while True:
        cursor, names = node.execute_command("SCAN", cursor, *args)
        if batch := recent.fresh(names):
            yield batch
        if not int(cursor):
            return


async def anode_batches(
    node: Any, pattern: str, count: int, kind: str | None, remember: int
) -> AsyncIterator[list[bytes]]:
    """See node_batches()."""
    recent = RecentKeys(remember)
    cursor = 0
    args = _scan_args(pattern, count, kind)
    while True:
        cursor, names = await node.execute_command("SCAN", cursor, *args)
        if batch := recent.fresh(list(names)):
            yield batch
        if not int(cursor):
            return


def _scan_args(pattern: str, count: int, kind: str | None) -> tuple[Any, ...]:
    """What follows the cursor in a SCAN, as ``scan()`` sends it."""
    args: tuple[Any, ...] = ("MATCH", pattern, "COUNT", count)
    return args if kind is None else (*args, "TYPE", kind)


def merged(sources: Sequence[Callable[[], Iterator[T]]]) -> Iterator[T]:
    """The items of several iterators as they come, each run in its own thread.

    A worker waits while the item it made is not taken, so at most one item
    per source is in memory; closing the generator stops every worker after
    its current call. The first error of any worker is raised here.
    """
    if len(sources) == 1:
        yield from sources[0]()
        return
    items: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=len(sources))
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> None:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def work(source: Callable[[], Iterator[T]]) -> None:
        try:
            for item in source():
                if stop.is_set():
                    return
                offer((False, item))
        except BaseException as error:
            offer((True, error))
        else:
            offer((True, None))

    threads = [
        threading.Thread(target=work, args=(source,), name=WORKER_NAME)
        for source in sources
    ]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            done, value = items.get()
            if not done:
                yield value
            elif value is None:
                running -= 1
            else:
                raise value
    finally:
        stop.set()
        for thread in threads:
            thread.join()


async def amerged(
    sources: Sequence[Callable[[], AsyncIterator[T]]],
) -> AsyncIterator[T]:
    """See merged(): the same with one asyncio task per source."""
    if len(sources) == 1:
        async for item in sources[0]():
            yield item
        return
    items: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=len(sources))

    async def work(source: Callable[[], AsyncIterator[T]]) -> None:
        try:
            async for item in source():
                await items.put((False, item))
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            await items.put((True, error))
        else:
            await items.put((True, None))

    tasks = [asyncio.ensure_future(work(source)) for source in sources]
    try:
        running = len(tasks)
        while running:
            done, value = await items.get()
            if not done:
                yield value
            elif value is None:
                running -= 1
            else:
                raise value
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def unlink_on(node: Any, names: list[bytes]) -> int:
    """``UNLINK`` ``names`` on one server: one round trip; how many existed."""
    return int(node.execute_command("UNLINK", *names))


async def aunlink_on(node: Any, names: list[bytes]) -> int:
    """See unlink_on()."""
    return int(await node.execute_command("UNLINK", *names))


def cleared_on(
    node: Any, pattern: str, count: int, remember: int
) -> Iterator[tuple[int, list[bytes]]]:
    """Clear one primary of a Redis Cluster, one script per SCAN batch.

    Yields how many names each batch deleted and, with ``remember`` (the
    dedupe window, for callers that need the names), the names themselves.
    """
    recent = RecentKeys(remember)
    cursor: Any = 0
    while True:
        args = (cursor, pattern, count, 1 if remember else 0)
        cursor, deleted, names = scripts.run(node, scripts.CLEAR_BATCH, (), args)
        fresh = recent.fresh(list(names))
        if int(deleted) or fresh:
            yield int(deleted), fresh
        if not int(cursor):
            return


async def acleared_on(
    node: Any, pattern: str, count: int, remember: int
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """See cleared_on(); ``node`` is an asyncio ``ClusterNode``."""
    recent = RecentKeys(remember)
    cursor: Any = 0
    while True:
        args = (cursor, pattern, count, 1 if remember else 0)
        reply = await scripts.arun(node, scripts.CLEAR_BATCH, (), args)
        cursor, deleted, names = reply
        fresh = recent.fresh(list(names))
        if int(deleted) or fresh:
            yield int(deleted), fresh
        if not int(cursor):
            return
