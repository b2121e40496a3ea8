"""Switching engines: ``redis_sessions import`` at scale, and what the window costs.

What is measured
----------------
* ``import``: N rows (default 100,000) in Django's session table (SQLite in a
  temporary file; each row a distinct session of about 200 bytes, signed by
  ``SessionBase.encode()`` as Django's db engine writes it) are moved into
  Redis by ``call_command("redis_sessions", "import", ...)``. Printed: the
  wall time and sessions per second (the run is timed without tracemalloc),
  then the peak of Python allocations during a second, traced run of N and
  of N/10 sessions: flat memory means both peaks are alike.
* The read-through window (``MIGRATE_FROM`` = the db engine), microseconds
  per ``SessionStore(key).load()``, median of ``--rounds`` rounds of
  ``--ops`` loads each: a hit with the window closed (the reference) and open
  (it must cost the same: one ``GET``), a miss with the window closed and
  open (``GET`` + one ``SELECT``), and one ``EXISTS`` round trip, which is what
  a separate tombstone check would add to every miss. Each load subject runs
  through a client of its own (``override_settings``), warmed up first.
  ``--rows 0`` skips the import.

Run from the repository root::

    python benchmarks/import_sessions.py
    python benchmarks/import_sessions.py --rows 20000 --ops 2000
    python benchmarks/import_sessions.py --redis-url redis://127.0.0.1:6379/5

Without ``--redis-url`` a throwaway server is started; with it, only keys
under a random ``drs-bench-<hex>:`` prefix are written, and deleted at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/import_sessions.py`` without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import io
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import django
import redis
from django.conf import settings

DB_ENGINE = "django.contrib.sessions.backends.db"


@contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    if given is not None:
        yield given
        return
    from django_redis_sessions.testing import RedisServer

    with RedisServer() as server:
        yield server.url


def configure(url: str, prefix: str, database: str) -> None:
    settings.configure(
        SECRET_KEY="django-redis-sessions-benchmark",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions", "django_redis_sessions"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}
        },
        SESSION_ENGINE="django_redis_sessions.backends.redis",
        SESSION_REDIS={"URL": url, "PREFIX": prefix, "MIGRATE_FROM": DB_ENGINE},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "sessions", verbosity=0)


def fill(rows: int) -> list[str]:
    """``rows`` live, distinct sessions in the session table; their keys."""
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    encoder = SessionStore()
    expires = timezone.now() + timedelta(days=7)
    keys = []
    for start in range(0, rows, 10_000):
        batch = []
        for number in range(start, min(rows, start + 10_000)):
            key = get_random_string(32, VALID_KEY_CHARS)
            data = {
                "_auth_user_id": str(number),
                "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                "_auth_user_hash": get_random_string(64),
                "cart": [number % 7, number % 11],
            }
            text = encoder.encode(data)
            batch.append(
                Session(session_key=key, session_data=text, expire_date=expires)
            )
            keys.append(key)
        Session.objects.bulk_create(batch)
    return keys


def run_import() -> str:
    from django.core.management import call_command

    stdout = io.StringIO()
    call_command("redis_sessions", "import", stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue().strip()


def clear() -> None:
    from django_redis_sessions.store import RedisSessionStore

    RedisSessionStore().clear()


def measure_import(rows: int) -> None:
    if not rows:
        return
    fill(rows)
    started = time.perf_counter()
    report = run_import()
    seconds = time.perf_counter() - started
    print(report)
    print(
        f"import of {rows:,} rows: {seconds:.1f} s, "
        f"{rows / seconds:,.0f} sessions/s (untraced)"
    )
    clear()
    for size in (rows // 10, rows):
        fill(size)
        tracemalloc.start()
        run_import()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        clear()
        print(
            f"peak Python allocations, import of {size:,} rows: {peak / 1024:,.0f} KiB"
        )


def per_load(keys: Sequence[str], ops: int) -> float:
    """Microseconds per load of ``keys`` (cycled), ``ops`` loads."""
    from django_redis_sessions.backends.redis import SessionStore

    started = time.perf_counter()
    for number in range(ops):
        SessionStore(keys[number % len(keys)]).load()
    return (time.perf_counter() - started) / ops * 1e6


def measure_window(url: str, ops: int, rounds: int) -> None:
    from django.test.utils import override_settings

    from django_redis_sessions.backends.redis import SessionStore

    hits = []
    for number in range(100):
        session = SessionStore()
        session["n"] = number
        session.save()
        hits.append(str(session.session_key))
    # Keys no source holds: a bot's random cookies.
    misses = [uuid.uuid4().hex for _ in range(100)]
    client = redis.Redis.from_url(url)

    def exists_round_trip() -> float:
        names = [f"{settings.SESSION_REDIS['PREFIX']}{{{key}}}" for key in misses]
        client.exists(names[0])
        started = time.perf_counter()
        for number in range(ops):
            client.exists(names[number % len(names)])
        return (time.perf_counter() - started) / ops * 1e6

    def loads(keys: Sequence[str], source: str | None) -> Callable[[], float]:
        """Loads of ``keys`` through a client of their own, warmed up first."""
        window = {**settings.SESSION_REDIS, "MIGRATE_FROM": source}

        def run() -> float:
            with override_settings(SESSION_REDIS=window):
                per_load(keys[:1], 1)
                return per_load(keys, ops)

        return run

    subjects: dict[str, Callable[[], float]] = {
        "hit, window closed (reference)": loads(hits, None),
        "hit, window open": loads(hits, DB_ENGINE),
        "miss, window closed": loads(misses, None),
        "miss, window open (+1 SELECT)": loads(misses, DB_ENGINE),
        "one EXISTS round trip": exists_round_trip,
    }
    results: dict[str, list[float]] = {name: [] for name in subjects}
    for round_number in range(rounds):
        names = list(subjects)
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(subjects[name]())
    client.close()
    reference = statistics.median(results["hit, window closed (reference)"])
    print(f"\nload, median of {rounds} rounds of {ops:,} (us per load, ratio):")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<32} {median:8.1f} us  {median / reference:5.2f}x")


def delete_prefix(url: str, prefix: str) -> None:
    from django_redis_sessions.keys import glob_escape

    with redis.Redis.from_url(url) as client:
        for name in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
            client.unlink(name)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prefix = f"drs-bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as directory, redis_url(args.redis_url) as url:
        configure(url, prefix, str(Path(directory) / "sessions.sqlite3"))
        try:
            measure_import(args.rows)
            measure_window(url, args.ops, args.rounds)
        finally:
            from django_redis_sessions.client import clients

            clients.close()
            delete_prefix(url, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
