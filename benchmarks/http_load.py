"""Requests per second under gunicorn: this engine against Django's cache
sessions over django-redis, with the same small app and the same clients."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Runnable as ``python benchmarks/http_load.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import json
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks import common

ENGINES = {
    "this engine": "django_redis_sessions.backends.redis",
    "django-redis cache": "django.contrib.sessions.backends.cache",
}
#: Each client repeats: a login, 8 reads and 2 writes, a logout.
PLAN = ["login", *(["read"] * 4 + ["write"]) * 2, "logout"]
CREDENTIALS = b"username=bench&password=bench"
APP = "DRS_BENCH_HTTP"  # the app's settings, for gunicorn's workers
APPS = ["auth", "contenttypes", "sessions"]


# --- The app: gunicorn's workers import this module --------------------------
def reply(text: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    response["Content-Length"] = str(len(response.content))  # no chunking
    return response


def read_view(request: HttpRequest) -> HttpResponse:
    return reply(str(request.session.get("_auth_user_id", "")))


def write_view(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return reply(str(request.session["n"]))


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, **request.POST.dict())
    if user is None:
        return reply("Wrong credentials.", 403)
    login(request, user)
    return reply(str(user.pk))


def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return reply("")


urlpatterns = [
    path("read/", read_view),
    path("write/", write_view),
    path("login/", login_view),
    path("logout/", logout_view),
]


def configure(app: dict[str, str]) -> None:
    common.configure(
        app["url"],
        session_redis={"PREFIX": app["prefix"]},
        INSTALLED_APPS=[f"django.contrib.{name}" for name in APPS],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": app["db"]}},
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache",
                            "LOCATION": app["url"], "KEY_PREFIX": app["prefix"]}},
        SESSION_ENGINE=app["engine"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware"],
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1"],
        # The sessions are measured, not a password hasher built to be slow.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )  # fmt: skip


if __name__ != "__main__" and APP in os.environ:
    from django.contrib.auth.signals import user_logged_in
    from django.core.wsgi import get_wsgi_application

    configure(json.loads(os.environ[APP]))
    application = get_wsgi_application()
    # A write to SQLite at every login would queue the workers on its lock.
    user_logged_in.disconnect(dispatch_uid="update_last_login")


# --- The clients: keep-alive HTTP/1.1 over raw asyncio streams ---------------
async def request(
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], view: str, cookie: str
) -> tuple[int, str | None, bytes]:
    """Status, the new session cookie (None: unchanged, "": deleted), body."""
    reader, writer = streams
    body = CREDENTIALS if view == "login" else b""
    head = f"{'GET' if view == 'read' else 'POST'} /{view}/ HTTP/1.1\r\n"
    head += f"Host: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/x-www-form-urlencoded\r\n"
    if cookie:
        head += f"Cookie: sessionid={cookie}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    length, new_cookie = 0, None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "set-cookie" and value.strip().startswith("sessionid="):
            new_cookie = value.strip()[10:].split(";")[0].strip('"')
    return int(lines[0].split()[1]), new_cookie, await reader.readexactly(length)


async def client(port: int, until: float, latencies: list[float]) -> int:
    """Runs the plan until ``until``; returns the number of wrong answers."""
    streams = await asyncio.open_connection("127.0.0.1", port)
    cookie, wrong = "", 0
    try:
        while time.perf_counter() < until:
            for view in PLAN:
                if (start := time.perf_counter()) >= until:
                    break
                status, new_cookie, body = await asyncio.wait_for(
                    request(streams, view, cookie), 30
                )
                latencies.append(time.perf_counter() - start)
                cookie = cookie if new_cookie is None else new_cookie
                # A read after the login must see the user: no session lost.
                wrong += status != 200 or (view == "read" and not body)
    finally:
        streams[1].close()
    return wrong


async def measure(port: int, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    start = time.perf_counter()
    tasks = [client(port, start + seconds, latencies) for _ in range(clients)]
    wrong = sum(await asyncio.gather(*tasks))
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return {"req/s": len(latencies) / elapsed, "p50": cuts[49], "p99": cuts[98],
            "wrong": wrong}  # fmt: skip


@contextmanager
def gunicorn(app: dict[str, str], logs: Path) -> Iterator[int]:
    """A gunicorn serving the app on a free loopback port, stopped at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
               "--threads", "8", "--workers", "2", "--bind", f"127.0.0.1:{port}",
               "--chdir", str(Path(__file__).resolve().parent.parent),
               "benchmarks.http_load:application"]  # fmt: skip
    env = {**os.environ, APP: json.dumps(app)}
    with logs.open("ab") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not ready(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start:\n{logs.read_text()}")
            time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its own process group
            server.wait()


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
            probe.sendall(b"GET /read/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return probe.recv(12).endswith(b"200")
    except OSError:
        return False


def main() -> None:
    parser = common.parser(__doc__)
    parser.set_defaults(rounds=1)
    parser.add_argument("--seconds", type=float, default=20, help="default 20")
    parser.add_argument("--clients", type=int, default=32, help="default 32")
    parser.add_argument("--warmup", type=float, default=3, help="seconds, default 3")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in ENGINES}
    with tempfile.TemporaryDirectory() as folder:
        app = {"db": f"{folder}/db.sqlite3", "prefix": f"{common.NAMESPACE}s:"}
        make_database({**app, "url": "", "engine": ENGINES["this engine"]})
        for index in range(args.rounds):
            names = list(ENGINES)[index % 2 :] + list(ENGINES)[: index % 2]
            for name in names:
                with common.server(args.redis_url) as url:
                    config = {**app, "url": url, "engine": ENGINES[name]}
                    with gunicorn(config, Path(folder, "gunicorn.log")) as port:
                        print(
                            f"  .. {name}, round {index + 1}",
                            file=sys.stderr,
                            flush=True,
                        )
                        asyncio.run(measure(port, args.clients, args.warmup))
                        found = asyncio.run(measure(port, args.clients, args.seconds))
                        results[name].append(found)
    report(results, args)


def make_database(app: dict[str, str]) -> None:
    """The app's SQLite database, with its one user."""
    configure(app)
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    User.objects.create_user("bench", password="bench")


def report(results: dict[str, list[dict[str, float]]], args: Any) -> None:
    rows = [["engine", "req/s", "range", "p50 ms", "p99 ms", "wrong"]]
    medians = []
    for name, runs in results.items():
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        medians.append(median)
        rates = [run["req/s"] for run in runs]
        cells = [f"{median['req/s']:,.0f}", f"{min(rates):,.0f}-{max(rates):,.0f}"]
        cells += [f"{median['p50'] * 1000:.1f}", f"{median['p99'] * 1000:.1f}"]
        rows.append([name, *cells, f"{sum(run['wrong'] for run in runs):.0f}"])
    ratios = [medians[0][key] / medians[1][key] for key in ("req/s", "p50", "p99")]
    cells = [f"{ratio:.2f}x" for ratio in ratios]
    rows.append(["this engine / peer", cells[0], "", *cells[1:], ""])
    print(
        f"\ngunicorn gthread, 2 workers x 8 threads; {args.clients} keep-alive "
        f"clients for {args.seconds:g} s, {args.rounds} round(s), medians; each "
        f"client: {' '.join(PLAN)}, repeated\n\n{common.table(rows)}"
    )


if __name__ == "__main__":
    main()
