"""Run a test written against the sync API through the asyncio twins instead.

``AsyncTwins(obj)`` answers ``obj.name(...)`` with ``asyncio.run(obj.aname(...))``,
each call on a fresh event loop, which also proves that per-loop clients are
built and closed without leaking a connection (the suite turns
``ResourceWarning`` into an error). ``AsyncTwins(obj, loop=loop)`` runs every
call on that one loop instead, as an ASGI server does, so the loop's cached
client serves them all. The sync client is replaced by one that
fails, so an async method that falls back to blocking I/O fails the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any


def no_sync_client() -> Any:
    raise AssertionError("An asyncio method used the sync Redis client.")


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


def run_async(value: Any, loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """Await a coroutine, or collect an async iterator, on ``loop`` or a fresh one."""
    if hasattr(value, "__aiter__"):
        value = _collect(value)
    if loop is None:
        return asyncio.run(value)
    return loop.run_until_complete(value)


class AsyncTwins:
    def __init__(
        self,
        target: Any,
        *,
        plain: frozenset[str] = frozenset(),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._target = target
        self._plain = plain
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        if name in self._plain or name.startswith("_"):
            return getattr(self._target, name)
        twin: Callable[..., Any] = getattr(self._target, "a" + name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return run_async(twin(*args, **kwargs), self._loop)

        return call
