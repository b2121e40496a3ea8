"""Helpers shared by the benchmark scripts.

* ``LOG``: the round-trip counter, a ``django_redis_sessions.testing.CommandLog``
  (every command sent, by name, through its connection classes);
* ``server_url`` and ``add_redis_url_argument``: the server to run against,
  given or throwaway, and the ``--redis-url`` option that names it;
  ``server_version``: what that server says it is;
* ``namespace_pattern``, ``unlink_matching`` and ``delete_namespace``: the
  SCAN + UNLINK loop that removes the keys a run wrote;
* ``rotated``: the running order of one round;
* ``table``, ``ratio_cells`` and ``progress``: output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis

from django_redis_sessions.store import glob_escape
from django_redis_sessions.testing import CommandLog

T = TypeVar("T")

# --- Round trips ----------------------------------------------------------------

#: Every command sent through ``LOG.connection_class`` (or its asyncio twin),
#: one command per round trip.
LOG = CommandLog()


# --- The server -----------------------------------------------------------------


@contextmanager
def server_url(url: str | None) -> Iterator[tuple[str, str]]:
    """Yield ``(url, origin)``: ``url`` if given, else a throwaway server's."""
    if url is not None:
        yield url, "given"
        return
    from django_redis_sessions.testing import RedisServer

    with RedisServer() as server:
        yield server.url, f"throwaway {server.version}"


def add_redis_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        help="use this server instead of a throwaway one; only keys under a "
        "random drs-bench-*: namespace are written, and deleted at the end",
    )


def server_version(client: redis.Redis) -> Any:
    info = client.info("server")
    return info.get("valkey_version") or info.get("redis_version")


# --- Keys -----------------------------------------------------------------------


def namespace_pattern(namespace: str) -> str:
    """The SCAN pattern of every key under ``namespace``."""
    return glob_escape(namespace) + "*"


def unlink_matching(client: redis.Redis, pattern: str, count: int = 1000) -> int:
    """UNLINK every key matching ``pattern``, one ``SCAN ... COUNT count`` batch
    at a time; returns how many were deleted."""
    deleted = 0
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=count)
        if keys:
            deleted += int(client.unlink(*keys))
        if not cursor:
            return deleted


def delete_namespace(client: redis.Redis, namespace: str) -> int:
    """UNLINK every key under ``namespace``."""
    return unlink_matching(client, namespace_pattern(namespace))


# --- Rounds and output ----------------------------------------------------------


def rotated(items: Sequence[T], by: int) -> list[T]:
    """``items`` rotated left by ``by``: the running order of round ``by``."""
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right."""
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(headers, *rows, strict=True)
    ]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [
            cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def ratio_cells(ratios: Sequence[float]) -> list[str]:
    """The median of per-round ratios and their range, as two table cells."""
    return [f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}"]


def progress(message: str) -> None:
    """A progress line on stderr, after whatever stdout holds so far."""
    sys.stdout.flush()
    print(f"  .. {message}", file=sys.stderr, flush=True)
