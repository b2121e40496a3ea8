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
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, NamedTuple

import redis
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks import common

ENGINES = {
    "this engine": "django_redis_sessions.backends.redis",
    "django-redis cache": "django.contrib.sessions.backends.cache",
    # Storing a session costs nothing: what no engine can pass in this app.
    "ceiling: no store": "benchmarks.process_sessions",
}
PEER = "django-redis cache"  # the reference of the ratios
#: Each client repeats: a login, 8 reads and 2 writes, a logout.
PLAN = ["login", *(["read"] * 4 + ["write"]) * 2, "logout"]
LINUX = Path("/proc/self/stat").exists()  # where CPU time is read
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
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    view: str,
    cookie: str,
    user: str,
) -> tuple[int, str, bytes]:
    """Status, the session cookie after the response ("": none), body."""
    reader, writer = streams
    body = f"username={user}&password=bench".encode() if view == "login" else b""
    head = f"{'GET' if view == 'read' else 'POST'} /{view}/ HTTP/1.1\r\n"
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


async def client(port: int, until: float, latencies: list[float], user: str) -> int:
    """Runs the plan as ``user`` until ``until``; the number of wrong answers."""
    streams = await asyncio.open_connection("127.0.0.1", port)
    cookie, wrong = "", 0
    try:
        while time.perf_counter() < until:
            for view in PLAN:
                if (start := time.perf_counter()) >= until:
                    break
                pending = request(streams, view, cookie, user)
                status, cookie, body = await asyncio.wait_for(pending, 30)
                latencies.append(time.perf_counter() - start)
                # A read after the login must see the user: no session lost.
                wrong += status != 200 or (view == "read" and not body)
        if cookie:  # untimed: no session outlives its slice, as in use
            await asyncio.wait_for(request(streams, "logout", cookie, user), 30)
    finally:
        streams[1].close()
    return wrong


class Slice(NamedTuple):
    seconds: float
    latencies: list[float]
    wrong: int
    app_cpu: float  # seconds of CPU the gunicorn workers used
    redis_cpu: float


def measure(server: Server, clients: int, seconds: float) -> Slice:
    async def run() -> list[int]:
        until = time.perf_counter() + seconds
        users = (f"bench{index}" for index in range(clients))
        tasks = [client(server.port, until, latencies, user) for user in users]
        return await asyncio.gather(*tasks)

    latencies: list[float] = []
    start, app, used = time.perf_counter(), cpu(server.workers), redis_cpu(server)
    wrong = sum(asyncio.run(run()))
    app, used = cpu(server.workers) - app, redis_cpu(server) - used
    return Slice(time.perf_counter() - start, latencies, wrong, app, used)


class Server(NamedTuple):
    port: int
    workers: list[int]
    redis: redis.Redis


def cpu(pids: list[int]) -> float:
    """Seconds of CPU these processes used so far (Linux; 0 elsewhere)."""
    ticks = 0
    for pid in pids:
        with suppress(OSError):  # the fields after the command's name
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_cpu(server: Server) -> float:
    info = server.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextmanager
def gunicorn(app: dict[str, str], logs: Path) -> Iterator[tuple[int, list[int]]]:
    """A gunicorn serving the app on a free loopback port, stopped at the end:
    the port, and the ids of its workers (on Linux)."""
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
        while not ready(port) or len(children(server.pid)) < 2 * LINUX:
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


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
            probe.sendall(b"GET /read/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return probe.recv(12).endswith(b"200")
    except OSError:
        return False


def main() -> None:
    parser = common.parser(__doc__)
    parser.set_defaults(rounds=10)
    parser.add_argument("--seconds", type=float, default=20, help="default 20")
    parser.add_argument("--clients", type=int, default=32, help="default 32")
    parser.add_argument("--warmup", type=float, default=3, help="seconds, default 3")
    args = parser.parse_args()
    results: dict[str, list[Slice]] = {name: [] for name in ENGINES}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        app = {"db": f"{folder}/db.sqlite3", "prefix": f"{common.NAMESPACE}s:"}
        make_database({**app, "url": "", "engine": ENGINES["this engine"]}, args)
        servers = {}
        for name, engine in ENGINES.items():
            url = stack.enter_context(common.server(args.redis_url))
            config = {**app, "url": url, "engine": engine}
            port, workers = stack.enter_context(gunicorn(config, Path(folder, "log")))
            client = stack.enter_context(redis.Redis.from_url(url))
            servers[name] = Server(port, workers, client)
            measure(servers[name], args.clients, args.warmup)
        # Short slices, alternating, so that both engines meet whatever else
        # the machine is doing at the time.
        for index in range(args.rounds):
            print(f"  .. slice {index + 1}/{args.rounds}", file=sys.stderr, flush=True)
            turn = index % len(ENGINES)
            for name in [*ENGINES][turn:] + [*ENGINES][:turn]:
                seconds = args.seconds / args.rounds
                results[name].append(measure(servers[name], args.clients, seconds))
    report(results, args)


def make_database(app: dict[str, str], args: Any) -> None:
    """The app's SQLite database, with a user for each client."""
    configure(app)
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    for index in range(args.clients):
        User.objects.create_user(f"bench{index}", password="bench")


def report(results: dict[str, list[Slice]], args: Any) -> None:
    """Requests per second over all slices, and the range of the slices';
    latencies of every request; each engine's figures divided by the peer's,
    the range of that ratio being that of the slices'."""
    rows = [["engine", "req/s", "range", "p50 ms", "p99 ms", "app CPU", "Redis CPU"]]
    figures, rates = {}, {}
    for name, slices in results.items():
        latencies = [latency for part in slices for latency in part.latencies]
        cuts, count = statistics.quantiles(latencies, n=100), len(latencies)
        app, used = (sum(getattr(part, key) for part in slices) / count * 1e6
                     for key in ("app_cpu", "redis_cpu"))  # fmt: skip
        rate = count / sum(part.seconds for part in slices)
        figures[name] = (rate, cuts[49], cuts[98], app, used)
        rates[name] = [len(part.latencies) / part.seconds for part in slices]
        cells = [f"{rate:,.0f}", f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}"]
        cells += [f"{cuts[49] * 1000:.1f}", f"{cuts[98] * 1000:.1f}"]
        rows.append([name, *cells, f"{app:,.0f}", f"{used:,.0f}"])
        if wrong := sum(part.wrong for part in slices):
            raise SystemExit(f"{name}: {wrong} wrong answers (not 200, or no user).")
    for name in results:
        if name == PEER:
            continue
        pairs = zip(figures[name], figures[PEER], strict=True)
        ratios = [f"{mine / peer:.2f}x" if peer else "-" for mine, peer in pairs]
        each = zip(rates[name], rates[PEER], strict=True)
        per_slice = [mine / peer for mine, peer in each]
        spread = f"{min(per_slice):.2f}-{max(per_slice):.2f}"
        rows.append([f"{name} / peer", ratios[0], spread, *ratios[1:]])
    print(
        f"\ngunicorn gthread, 2 workers x 8 threads; {args.clients} keep-alive "
        f"clients, {args.seconds:g} s per engine in {args.rounds} alternating "
        f"slices; each client: {' '.join(PLAN)}, repeated. CPU: microseconds "
        f"per request, of the gunicorn workers and of Redis.\n\n{common.table(rows)}"
    )


if __name__ == "__main__":
    main()
