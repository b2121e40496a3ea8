"""Walking several nodes at once: every item once, errors raised, workers stopped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
)
from typing import cast

import pytest

from django_redis_sessions.bulk import WORKER_NAME, amerged, merged


def numbers(start: int, count: int) -> Callable[[], Iterator[int]]:
    return lambda: iter(range(start, start + count))


def anumbers(start: int, count: int) -> Callable[[], AsyncIterator[int]]:
    async def produce() -> AsyncIterator[int]:
        for number in range(start, start + count):
            yield number

    return produce


def failing_after(count: int) -> Callable[[], Iterator[int]]:
    def produce() -> Iterator[int]:
        yield from range(count)
        raise ConnectionError("A node went away.")

    return produce


def test_merged_yields_every_item_of_every_source() -> None:
    sources = [numbers(0, 50), numbers(100, 30), numbers(200, 0)]
    assert sorted(merged(sources)) == [*range(50), *range(100, 130)]


def workers() -> list[threading.Thread]:
    """``merged``'s worker threads still alive (other tests' threads may come
    and go meanwhile, so all threads cannot be compared)."""
    return [thread for thread in threading.enumerate() if thread.name == WORKER_NAME]


def test_merged_raises_the_first_error_of_a_source() -> None:
    with pytest.raises(ConnectionError, match="went away"):
        list(merged([numbers(0, 1000), failing_after(3)]))
    assert workers() == []


def test_closing_merged_early_stops_its_workers() -> None:
    stream = cast(
        "Generator[int, None, None]",
        merged([numbers(0, 10_000), numbers(10_000, 10_000)]),
    )
    assert next(stream) in (0, 10_000)
    assert len(workers()) == 2
    stream.close()
    assert workers() == []


def test_amerged_yields_every_item_and_raises_errors() -> None:
    async def collect() -> list[int]:
        sources = [anumbers(0, 40), anumbers(100, 20)]
        return [number async for number in amerged(sources)]

    assert sorted(asyncio.run(collect())) == [*range(40), *range(100, 120)]

    async def fail() -> None:
        async def broken() -> AsyncIterator[int]:
            yield 1
            raise ConnectionError("A node went away.")

        async for _ in amerged([anumbers(0, 1000), broken]):
            pass

    with pytest.raises(ConnectionError, match="went away"):
        asyncio.run(fail())


def test_closing_amerged_early_cancels_its_tasks() -> None:
    async def first() -> tuple[int, int]:
        stream = cast(
            "AsyncGenerator[int, None]",
            amerged([anumbers(0, 10_000), anumbers(10_000, 10_000)]),
        )
        number = await anext(stream)
        await stream.aclose()
        others = [task for task in asyncio.all_tasks() if not task.done()]
        return number, len(others)

    number, running = asyncio.run(first())
    assert number in (0, 10_000)
    assert running == 1  # only the test's own task
