"""One harness for the benchmark scripts: variants x rounds -> a median ratio table.

What is measured and how to read it: ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import django
import redis
from django.conf import settings
from django.http import HttpResponse
from django.test.utils import override_settings

# Every name the scripts use from the package, so that a change of its
# internals touches nothing else: the public API, and for the overhead and
# memory scripts the names a session lives under and the create script, for
# the Cluster one how clear() walks a single primary, for the encryption one
# the payload codec and a key like the engine's.
from django_redis_sessions import get_store
from django_redis_sessions import scripts as scripts
from django_redis_sessions.backends.redis import SessionStore as SessionStore
from django_redis_sessions.backends.redis import random_key as random_key
from django_redis_sessions.bulk import cleared_on as cleared_on
from django_redis_sessions.payloads import get_payloads as get_payloads
from django_redis_sessions.redis_layer import RedisLayer as RedisLayer
from django_redis_sessions.testing import CommandLog, RedisServer
from django_redis_sessions.testing import RedisClusterServers as RedisClusterServers

if TYPE_CHECKING:
    from django.core.handlers.wsgi import WSGIHandler

#: Every command sent through its connection classes: one per round trip.
LOG = CommandLog()
#: Every key a run writes starts with this, and all of them go at the end.
NAMESPACE = f"drs-bench-{secrets.token_hex(6)}:"
#: The data of a logged-in visitor's session.
SESSION = {
    "_auth_user_id": "48213",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "3f1c" * 16,
    "cart": [1017, 2203, 87],
    "theme": "dark",
}


@dataclass(frozen=True)
class Variant:
    """``run`` does the ``n`` operations, as a function or a coroutine function.

    ``setup`` (untimed, before every run, sync or async) returns what ``run``
    is given; without it ``run`` is given ``n``.
    """

    name: str
    run: Callable[[Any], object]
    setup: Callable[[int], object] | None = None


class PerOp(NamedTuple):
    """Median seconds per operation: elapsed, and of this process's CPU."""

    wall: float
    cpu: float


async def call(function: Callable[[Any], object], argument: Any) -> Any:
    """``function(argument)``, awaited if it is a coroutine function."""
    result = function(argument)
    return await result if inspect.isawaitable(result) else result


async def _rounds(
    variants: Sequence[Variant], n: int, rounds: int, warmup: bool
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    seconds: dict[str, list[float]] = {variant.name: [] for variant in variants}
    cpu: dict[str, list[float]] = {variant.name: [] for variant in variants}
    trips: dict[str, int] = {}
    for index in range(-1 if warmup else 0, rounds):
        step = f"round {index + 1}/{rounds}" if index >= 0 else "warm-up"
        print(f"  .. {step}", file=sys.stderr, flush=True)
        # Rotated so that no variant always runs first.
        shift = index % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            argument = n if variant.setup is None else await call(variant.setup, n)
            LOG.take()
            start, start_cpu = time.perf_counter(), time.process_time()
            await call(variant.run, argument)
            elapsed = time.perf_counter() - start
            used = time.process_time() - start_cpu
            trips[variant.name] = len(LOG.take())
            if index >= 0:  # -1 is the untimed warm-up
                seconds[variant.name].append(elapsed)
                cpu[variant.name].append(used)
    return seconds, cpu, trips


def compare(
    title: str,
    variants: Sequence[Variant],
    n: int,
    *,
    rounds: int,
    warmup: bool = True,
    per_op: bool = True,
    speed: bool = False,
) -> dict[str, PerOp]:
    """Time every variant once per round and print the table under ``title``.

    The first variant is the reference: each ratio is a variant's time over the
    reference's time of the same round (with ``speed``, the reference's time
    over the variant's: its throughput relative to the reference's), median
    and range of the rounds. Round trips are those of the last run, per
    operation or (``per_op`` False) in all. Returns each variant's median
    seconds per operation: elapsed, and of this process's CPU (which time
    spent waiting for the server or for a core does not inflate).
    """
    seconds, cpu, trips = asyncio.run(_rounds(variants, n, rounds, warmup))
    reference = seconds[variants[0].name]
    rows = [["variant", "ops/s", "ratio", "range", f"RT/{'op' if per_op else 'run'}"]]
    for name, times in seconds.items():
        pairs = zip(times, reference, strict=True)
        ratios = [ref / mine if speed else mine / ref for mine, ref in pairs]
        rate, median = n / statistics.median(times), statistics.median(ratios)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        trip = f"{trips[name] / n:.2f}" if per_op else f"{trips[name]:,}"
        rows.append([name, f"{rate:,.0f}", f"{median:.2f}x", spread, trip])
    print(f"\n{title}\n\n{table(rows)}", flush=True)
    return {
        name: PerOp(statistics.median(times) / n, statistics.median(cpu[name]) / n)
        for name, times in seconds.items()
    }


def table(rows: Sequence[Sequence[str]]) -> str:
    """Plain text: a header row, the first column left-aligned, others right."""
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]

    def line(row: Sequence[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)
        )

    return "\n".join(
        [line(rows[0]), line(["-" * w for w in widths]), *map(line, rows[1:])]
    )


def parser(description: str | None) -> argparse.ArgumentParser:
    """The options every script takes: ``--rounds`` and ``--redis-url``."""
    found = argparse.ArgumentParser(description=description)
    found.add_argument("--rounds", type=int, default=5, help="default 5")
    found.add_argument(
        "--redis-url",
        help="this server instead of a throwaway one; only keys under a random "
        "drs-bench-<hex>: namespace are written, and deleted at the end",
    )
    return found


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The URL to run against (a throwaway server's unless ``url`` is given);
    every key under ``NAMESPACE`` is deleted at the end, never FLUSHDB."""
    with ExitStack() as stack:
        if url is None:
            url = stack.enter_context(RedisServer()).url
        client = stack.enter_context(redis.Redis.from_url(url))
        info = client.info("server")
        version = info.get("valkey_version") or info.get("redis_version")
        print(
            f"Server {version}, Django {django.get_version()}, redis-py "
            f"{redis.__version__}, Python {sys.version.split()[0]}.",
            flush=True,
        )
        try:
            yield url
        finally:
            delete_under(client, NAMESPACE)


def scan_pages(client: redis.Redis, pattern: str) -> Iterator[list[Any]]:
    """A raw redis-py loop: each non-empty page of SCAN MATCH pattern COUNT 1000."""
    cursor = None
    while cursor != 0:
        cursor, keys = client.scan(cursor or 0, match=pattern, count=1000)
        if keys:
            yield keys


def delete_under(client: redis.Redis, prefix: str) -> None:
    for keys in scan_pages(client, glob_escape(prefix) + "*"):
        client.unlink(*keys)


def glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN MATCH pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def scan_pattern(prefix: str) -> str:
    """What the store scans: a data key is ``<prefix>{<key>}``, a tombstone is
    not matched (it ends in ``:tombstone``)."""
    return glob_escape(prefix) + "{*}"


def configure(url: str, *, session_redis: dict[str, Any], **extra: Any) -> None:
    """Django without a project; sessions under ``NAMESPACE`` unless told.

    ``extra`` settings are added, or replace these (``INSTALLED_APPS``).
    """
    settings.configure(
        **{
            "SECRET_KEY": "django-redis-sessions-benchmark",
            "USE_TZ": True,
            "INSTALLED_APPS": ["django.contrib.sessions"],
            "SESSION_REDIS": {"URL": url, "PREFIX": f"{NAMESPACE}s:", **session_redis},
            **extra,
        }
    )
    django.setup()


class Store(Protocol):
    """What the bulk benchmark uses of ``get_store()``."""

    def exists(self, key: str) -> bool: ...
    def count(self) -> int: ...
    def all(self) -> Iterator[tuple[str, dict[str, Any]]]: ...
    def clear(self) -> int: ...


def store(**session_redis: Any) -> Store:
    """``get_store()`` with these ``SESSION_REDIS`` keys changed.

    Built under ``override_settings``, used after it: a store keeps the
    ``PREFIX`` and ``SCAN_COUNT`` it was built with, and rebuilding the client
    inside every timed run would add a connection to it.
    """
    with override_settings(SESSION_REDIS={**settings.SESSION_REDIS, **session_redis}):
        return get_store()


# --- A small Django app under gunicorn, and its keep-alive clients ------------
#: The environment variable that hands an app's settings to gunicorn's workers.
APP = "DRS_BENCH_APP"
LINUX = Path("/proc/self/stat").exists()  # where workers and CPU time are read


def configure_app(app: dict[str, str], urlconf: str) -> None:
    """Django for an app under gunicorn: sessions of ``app["engine"]``,
    auth, a SQLite database and django-redis as the cache, on ``app["url"]``."""
    configure(
        app["url"],
        session_redis={"PREFIX": app["prefix"]},
        INSTALLED_APPS=[f"django.contrib.{name}"
                        for name in ("auth", "contenttypes", "sessions")],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": app["db"]}},
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache",
                            "LOCATION": app["url"], "KEY_PREFIX": app["prefix"]}},
        SESSION_ENGINE=app["engine"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware"],
        ROOT_URLCONF=urlconf,
        ALLOWED_HOSTS=["127.0.0.1"],
        # The sessions are measured, not a password hasher built to be slow.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )  # fmt: skip


def wsgi_application(urlconf: str) -> WSGIHandler:
    """What a gunicorn worker serves: the app ``gunicorn()`` was given."""
    from django.contrib.auth.signals import user_logged_in
    from django.core.wsgi import get_wsgi_application

    configure_app(json.loads(os.environ[APP]), urlconf)
    application = get_wsgi_application()
    # A write to SQLite at every login would queue the workers on its lock.
    user_logged_in.disconnect(dispatch_uid="update_last_login")
    return application


def make_database(app: dict[str, str], urlconf: str, users: int = 0) -> None:
    """The app's SQLite database (in WAL mode, so that a reader never waits
    for a writer), with ``users`` users ``bench<n>``, password ``bench``."""
    configure_app(app, urlconf)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")  # kept in the file
    for index in range(users):
        User.objects.create_user(f"bench{index}", password="bench")


def reply(text: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    response["Content-Length"] = str(len(response.content))  # no chunking
    return response


@contextmanager
def gunicorn(
    target: str, app: dict[str, str], logs: Path, probe: str
) -> Iterator[tuple[int, list[int]]]:
    """A gunicorn serving ``target`` (``module:application``, which calls
    ``wsgi_application()``) with the settings ``app`` on a free loopback port,
    stopped at the end: the port, and the ids of its workers (on Linux). It is
    ready when ``GET probe`` answers 200."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
               "--threads", "8", "--workers", "2", "--bind", f"127.0.0.1:{port}",
               "--chdir", str(Path(__file__).resolve().parent.parent),
               target]  # fmt: skip
    env = {**os.environ, APP: json.dumps(app)}
    with logs.open("ab") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not ready(port, probe) or len(children(server.pid)) < 2 * LINUX:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start:\n{logs.read_text()}")
            time.sleep(0.2)
        yield port, children(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its own process group
            server.wait()


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError):  # the parent's id follows the name
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def cpu(pids: list[int]) -> float:
    """Seconds of CPU these processes used so far (Linux; 0 elsewhere)."""
    ticks = 0
    for pid in pids:
        with suppress(OSError):  # the fields after the command's name
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the server used so far."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def ready(port: int, probe: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
            client.sendall(f"GET {probe} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return client.recv(12).endswith(b"200")
    except OSError:
        return False


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def request(
    streams: Streams, method: str, target: str, cookie: str, form: str = ""
) -> tuple[int, str, bytes]:
    """One request on a keep-alive HTTP/1.1 connection, ``form`` its
    urlencoded body: the status, the session cookie after the response ("":
    none), the body."""
    reader, writer = streams
    body = form.encode()
    head = f"{method} {target} HTTP/1.1\r\n"
    head += f"Host: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/x-www-form-urlencoded\r\n"
    if cookie:
        head += f"Cookie: sessionid={cookie}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "set-cookie" and value.strip().startswith("sessionid="):
            cookie = value.strip()[10:].split(";")[0].strip('"')
    return int(lines[0].split()[1]), cookie, await reader.readexactly(length)
