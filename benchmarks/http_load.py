"""Requests per second under gunicorn: this engine against Django's cache
sessions over django-redis, with the same small app and the same clients."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Runnable as ``python benchmarks/http_load.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import statistics
import tempfile
import time
from contextlib import ExitStack
from typing import Any, NamedTuple

import redis
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks import common
from benchmarks.common import reply

ENGINES = {
    "this engine": "django_redis_sessions.backends.redis",
    "django-redis cache": "django.contrib.sessions.backends.cache",
    # Storing a session costs nothing: what no engine can pass in this app.
    "ceiling: no store": "benchmarks.process_sessions",
}
PEER = "django-redis cache"  # the reference of the ratios
TARGET = "benchmarks.http_load:application"  # what gunicorn serves
#: Each client repeats: a login, 8 reads and 2 writes, a logout.
PLAN = ["login", *(["read"] * 4 + ["write"]) * 2, "logout"]


# --- The app: gunicorn's workers import this module --------------------------
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

if __name__ != "__main__" and common.APP in os.environ:
    application = common.wsgi_application(__name__)


# --- The clients: keep-alive HTTP/1.1 over raw asyncio streams ---------------
async def request(
    streams: common.Streams, view: str, cookie: str, user: str
) -> tuple[int, str, bytes]:
    """Status, the session cookie after the response ("": none), body."""
    form = f"username={user}&password=bench" if view == "login" else ""
    method = "GET" if view == "read" else "POST"
    return await common.request(streams, method, f"/{view}/", cookie, form)


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
    start, app = time.perf_counter(), common.cpu(server.workers)
    used = common.redis_cpu(server.redis)
    wrong = sum(asyncio.run(run()))
    app, used = common.cpu(server.workers) - app, common.redis_cpu(server.redis) - used
    return Slice(time.perf_counter() - start, latencies, wrong, app, used)


class Server(NamedTuple):
    port: int
    workers: list[int]
    redis: redis.Redis


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
        config = {**app, "url": "", "engine": ENGINES["this engine"]}
        common.make_database(config, __name__, users=args.clients)
        servers = {}
        for name, engine in ENGINES.items():
            url = stack.enter_context(common.server(args.redis_url))
            config = {**app, "url": url, "engine": engine}
            port, workers = stack.enter_context(
                common.gunicorn(TARGET, config, Path(folder, "log"), "/read/")
            )
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
