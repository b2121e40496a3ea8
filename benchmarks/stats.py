"""``redis_sessions stats`` against ``count`` on a large store.

What is measured
----------------
A throwaway server (or ``--redis-url``, under a random ``drs-bench-*:``
prefix removed at the end) is filled with N sessions (payloads of 100 to 400
bytes, TTLs spread over two weeks) and N/100 tombstones. Each of ``--rounds``
rounds then runs, in an order rotated from round to round:

* ``count``: ``RedisSessionStore.count()``, the reference;
* ``stats``: ``stats.collect()`` with the default sample of 1,000 sessions
  for ``MEMORY USAGE``, what ``manage.py redis_sessions stats`` does;
* ``pipeline``: the design not taken, a redis-py pipeline of ``STRLEN`` and
  ``PTTL`` per SCAN batch (figures discarded);
* ``tombstone scan``: counting tombstones with a SCAN of their own, which
  ``stats`` avoids by matching them in its one scan.

Each is divided by ``count`` of the same round; the median ratio and its
range are printed. Run from the repository root::

    python benchmarks/stats.py                 # 1,000,000 sessions
    python benchmarks/stats.py --sizes 100000 --rounds 5
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/stats.py`` without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import django
import redis
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django_redis_sessions import stats  # noqa: E402
from django_redis_sessions.keys import data_key, glob_escape, tombstone_key  # noqa: E402
from django_redis_sessions.redis_layer import RedisLayer  # noqa: E402
from django_redis_sessions.store import RedisSessionStore  # noqa: E402


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from django_redis_sessions.testing import RedisServer

    with RedisServer() as throwaway:
        yield throwaway.url


def fill(client: redis.Redis, prefix: str, count: int) -> None:
    pipeline = client.pipeline(transaction=False)
    for number in range(count):
        session_id = f"#{number:043d}"
        payload = b"x" * random.randint(100, 400)
        ttl_ms = random.randint(60_000, 14 * 86_400_000)
        pipeline.execute_command(
            "SET", data_key(prefix, session_id), payload, "PX", ttl_ms
        )
        if number % 100 == 0:
            name = tombstone_key(prefix, session_id + "t")
            pipeline.execute_command("SET", name, b"1", "PX", 3_600_000)
        if number % 10_000 == 9_999:
            pipeline.execute()
    pipeline.execute()


def pipelined(client: redis.Redis, prefix: str) -> int:
    """SCAN, then STRLEN and PTTL of every name in one pipeline per batch."""
    measured = 0
    for names in scan(client, glob_escape(prefix) + "{*}"):
        pipeline = client.pipeline(transaction=False)
        for name in names:
            pipeline.execute_command("STRLEN", name)
            pipeline.execute_command("PTTL", name)
        measured += len(pipeline.execute()) // 2
    return measured


def tombstone_scan(client: redis.Redis, prefix: str) -> int:
    return sum(
        len(names) for names in scan(client, glob_escape(prefix) + "{*}:tombstone")
    )


def scan(client: redis.Redis, pattern: str) -> Iterator[list[Any]]:
    cursor = 0
    while True:
        cursor, names = client.scan(cursor, match=pattern, count=1000, _type="string")
        yield list(names)
        if not cursor:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url")
    options = parser.parse_args()
    with server(options.redis_url) as url:
        client = redis.Redis.from_url(url)
        for size in options.sizes:
            prefix = f"drs-bench-{uuid.uuid4().hex[:8]}:"
            settings.SESSION_REDIS = {"URL": url, "PREFIX": prefix}
            started = time.perf_counter()
            fill(client, prefix, size)
            print(f"{size:,} sessions written in {time.perf_counter() - started:.0f} s")
            subjects: dict[str, Callable[[], object]] = {
                "count": RedisSessionStore().count,
                "stats": lambda: stats.collect(RedisLayer(), sample=1000),
                "pipeline": partial(pipelined, client, prefix),
                "tombstone scan": partial(tombstone_scan, client, prefix),
            }
            seconds: dict[str, list[float]] = {name: [] for name in subjects}
            for round_number in range(options.rounds):
                order = list(subjects)
                shift = round_number % len(order)
                for name in order[shift:] + order[:shift]:
                    started = time.perf_counter()
                    subjects[name]()
                    seconds[name].append(time.perf_counter() - started)
            print(f"{'':16}{'median s':>10}{'x count':>10}{'range':>14}")
            for name, times in seconds.items():
                ratios = [t / c for t, c in zip(times, seconds["count"], strict=True)]
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                print(
                    f"{name:16}{statistics.median(times):>10.2f}"
                    f"{statistics.median(ratios):>10.2f}{spread:>14}"
                )
            for names in scan(client, glob_escape(prefix) + "*"):
                if names:
                    client.unlink(*names)
        client.close()


if __name__ == "__main__":
    main()
