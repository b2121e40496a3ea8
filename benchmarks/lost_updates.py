"""Items lost when one user's requests run at once, under gunicorn: this
engine against Django's cache sessions over django-redis and Django's db
sessions; and what the merge costs against this engine saving last-write-wins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Runnable as ``python benchmarks/lost_updates.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks import common
from benchmarks.common import reply

MERGING, CONTROL = "this engine", "this engine, no merging"
ENGINES = {
    MERGING: "django_redis_sessions.backends.redis",
    CONTROL: "benchmarks.lost_updates",  # LastWriteWins, below
    "django-redis cache": "django.contrib.sessions.backends.cache",
    "db (SQLite, WAL)": "django.contrib.sessions.backends.db",
}
TARGET = "benchmarks.lost_updates:application"  # what gunicorn serves
PARALLEL = 8  # requests of one round, each on its own connection
CART = "cart:"  # one session key per item: distinct items are distinct keys


# --- The control: this engine, every save last-write-wins --------------------
class LastWriteWins(common.SessionStore):
    """This engine without the versioned save: the reference of the cost.

    ``_loaded_payload()`` is the one private method of the package a benchmark
    overrides, and the narrowest way to switch the merge off: the save asks it
    which version the request loaded and, told none, sends the plain update
    (``SET XX``), as before the merge existed: no version compared, so no
    conflict and no merge, and the later save replaces the whole session.
    Everything else (loads, payloads, creates) stays the engine's, so the
    difference between the two is what the versioned save and the merge cost.
    """

    def _loaded_payload(self, key: str) -> bytes | None:
        return None


SessionStore = LastWriteWins  # what SESSION_ENGINE imports


# --- The app: gunicorn's workers import this module --------------------------
def start_view(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = 1
    return reply("")


def add_view(request: HttpRequest, item: int) -> HttpResponse:
    request.session[f"{CART}{item}"] = item
    return reply("")


def cart_view(request: HttpRequest) -> HttpResponse:
    """The items in the cart, separated by spaces."""
    keys = request.session.keys()
    return reply(" ".join(key[len(CART) :] for key in keys if key.startswith(CART)))


urlpatterns = [
    path("start/", start_view),
    path("add/<int:item>/", add_view),
    path("cart/", cart_view),
]

if __name__ != "__main__" and common.APP in os.environ:
    application = common.wsgi_application(__name__)


# --- The clients -------------------------------------------------------------
@dataclass
class Tally:
    """One engine's rounds of one kind: one session, or a session each."""

    added: int = 0  # add requests answered 200
    lost: int = 0  # of those, items missing from the cart afterwards
    refused: int = 0  # add requests answered otherwise (SessionInterrupted...)
    lossy: int = 0  # rounds that lost an item
    sessions: int = 0  # sessions started
    scripts: int = 0  # scripts run (EVALSHA): one per start, one per save sent
    requests: int = 0  # all of them: starts, adds, carts
    app_cpu: float = 0  # seconds, of the gunicorn workers
    redis_cpu: float = 0
    latencies: list[float] = field(default_factory=list)  # of every add
    slices: list[tuple[int, float]] = field(default_factory=list)  # adds, seconds


class Server(NamedTuple):
    port: int
    workers: list[int]
    redis: redis.Redis


def scripts_run(server: Server) -> int:
    stats = server.redis.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


async def add(
    streams: common.Streams, item: int, cookie: str, latencies: list[float]
) -> int:
    start = time.perf_counter()
    status, _, _ = await common.request(streams, "POST", f"/add/{item}/", cookie)
    latencies.append(time.perf_counter() - start)
    return status


async def start(connections: list[common.Streams], tally: Tally) -> list[str]:
    """A new session on each connection: their keys."""
    tally.sessions += len(connections)
    started = await asyncio.gather(
        *(common.request(streams, "POST", "/start/", "") for streams in connections)
    )
    if any(status != 200 or not cookie for status, cookie, _ in started):
        raise SystemExit(f"No session started: {started[0][0]}.")
    return [cookie for _, cookie, _ in started]


async def adds(
    connections: list[common.Streams],
    cookies: list[str],
    first: int,
    tally: Tally,
) -> tuple[set[int], float]:
    """Item ``first + n`` added over connection n, all at once: the items
    answered 200, and the seconds all took."""
    begin = time.perf_counter()
    answers = await asyncio.gather(
        *(
            add(streams, first + index, cookie, tally.latencies)
            for index, (streams, cookie) in enumerate(
                zip(connections, cookies, strict=True)
            )
        )
    )
    seconds = time.perf_counter() - begin
    tally.requests += len(answers)
    added = {first + index for index, status in enumerate(answers) if status == 200}
    tally.added += len(added)
    tally.refused += len(answers) - len(added)
    return added, seconds


async def lost(
    connections: list[common.Streams], cookies: list[str], added: set[int]
) -> int:
    """How many of the items ``added`` the sessions ``cookies`` miss."""
    carts = await asyncio.gather(
        *(
            common.request(streams, "GET", "/cart/", cookie)
            for streams, cookie in zip(connections, cookies, strict=False)
        )
    )
    held = {int(item) for _, _, body in carts for item in body.split()}
    return len(added - held)


async def turn(
    connections: list[common.Streams], rounds: int, shared: bool, tally: Tally
) -> float:
    """``rounds`` rounds of adds; the seconds the adds took.

    Shared: each round on a new session, its cart read after the round. Not
    shared: a session per connection for the whole turn, each round adding
    new items, the carts read at the end (no request but the adds per round:
    this is the cost's reference, where no save ever conflicts).
    """
    seconds = 0.0
    if not shared:
        cookies = await start(connections, tally)
        everything: set[int] = set()
    for index in range(rounds):
        if shared:
            cookies = await start(connections[:1], tally) * PARALLEL
        added, took = await adds(connections, cookies, index * PARALLEL, tally)
        seconds += took
        if shared:
            missing = await lost(connections[:1], cookies, added)
            tally.lost += missing
            tally.lossy += missing > 0
            tally.requests += 2
        else:
            everything |= added
    if not shared:
        tally.lost += await lost(connections, cookies, everything)
        tally.requests += 2 * PARALLEL
    return seconds


def run(server: Server, rounds: int, shared: bool, tally: Tally) -> None:
    async def main() -> float:
        connections = [
            await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(PARALLEL)
        ]
        try:
            return await turn(connections, rounds, shared, tally)
        finally:
            for _, writer in connections:
                writer.close()

    sent, scripts = tally.added + tally.refused, scripts_run(server)
    app, used = common.cpu(server.workers), common.redis_cpu(server.redis)
    seconds = asyncio.run(main())
    tally.app_cpu += common.cpu(server.workers) - app
    tally.redis_cpu += common.redis_cpu(server.redis) - used
    tally.scripts += scripts_run(server) - scripts
    tally.slices.append((tally.added + tally.refused - sent, seconds))


def main() -> None:
    parser = common.parser(__doc__)
    parser.set_defaults(rounds=1000)
    parser.add_argument("--slices", type=int, default=20, help="turns, default 20")
    parser.add_argument("--warmup", type=int, default=20, help="rounds, default 20")
    args = parser.parse_args()
    kinds = {"one session": True, "a session each": False}
    tallies = {(name, kind): Tally() for name in ENGINES for kind in kinds}
    measured = [(name, kind) for name in ENGINES for kind in kinds
                if kinds[kind] or name in (MERGING, CONTROL)]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        app = {"db": f"{folder}/db.sqlite3", "prefix": f"{common.NAMESPACE}s:"}
        common.make_database({**app, "url": "", "engine": ENGINES[MERGING]}, __name__)
        servers = {}
        for name, engine in ENGINES.items():
            url = stack.enter_context(common.server(args.redis_url))
            config = {**app, "url": url, "engine": engine}
            log = Path(folder, "log")
            served = common.gunicorn(TARGET, config, log, "/cart/")
            port, workers = stack.enter_context(served)
            client = stack.enter_context(redis.Redis.from_url(url))
            servers[name] = Server(port, workers, client)
            for kind in kinds:
                run(servers[name], args.warmup, kinds[kind], Tally())
        # Short turns, in a rotating order, so that every engine meets
        # whatever else the machine is doing at the time.
        for index in range(args.slices):
            print(f"  .. slice {index + 1}/{args.slices}", file=sys.stderr, flush=True)
            rounds = args.rounds // args.slices + (index < args.rounds % args.slices)
            turn = index % len(measured)
            for name, kind in measured[turn:] + measured[:turn]:
                run(servers[name], rounds, kinds[kind], tallies[name, kind])
    report({pair: tallies[pair] for pair in measured}, args)
    if lost := sum(tallies[MERGING, kind].lost for kind in kinds):
        raise SystemExit(f"{MERGING}: {lost} items lost.")


def report(tallies: dict[tuple[str, str], Tally], args: Any) -> None:
    rows = [["engine", "sessions", "added", "lost", "per 1,000", "refused",
             "lossy rounds", "retries/add"]]  # fmt: skip
    for (name, kind), tally in tallies.items():
        sent = tally.added + tally.refused
        # Only this engine retries: a save that met a conflict runs again.
        again = tally.scripts - tally.sessions - sent
        retries = f"{again / sent:.2f}" if name == MERGING else "-"
        cells = [tally.added, tally.lost, round(tally.lost * 1000 / tally.added)]
        cells += [tally.refused, tally.lossy]
        rows.append([name, kind, *(f"{cell:,}" for cell in cells), retries])
    print(
        f"\ngunicorn gthread, 2 workers x 8 threads; {args.rounds:,} rounds per "
        f"engine and kind, in {args.slices} turns. A round: {PARALLEL} parallel "
        f"requests, each on its own keep-alive connection, each adding its own "
        f"item (key '{CART}<n>') to one session, or to a session each; then the "
        f"carts are read. Lost: answered 200 but missing from the cart, and per "
        f"1,000 answered 200; refused: answered otherwise.\n\n"
        f"{common.table(rows)}"
    )
    rows = [["engine", "sessions", "adds/s", "range", "p50 ms", "p99 ms",
             "app CPU", "Redis CPU"]]  # fmt: skip
    figures: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    for (name, kind), tally in tallies.items():
        if name not in (MERGING, CONTROL):
            continue
        cuts = statistics.quantiles(tally.latencies, n=100)
        rate = len(tally.latencies) / sum(seconds for _, seconds in tally.slices)
        app, used = (1e6 * tally.app_cpu / tally.requests,
                     1e6 * tally.redis_cpu / tally.requests)  # fmt: skip
        figures[name, kind] = [rate, cuts[49], cuts[98], app, used]
        rates[name, kind] = [adds / seconds for adds, seconds in tally.slices]
        spread = f"{min(rates[name, kind]):,.0f}-{max(rates[name, kind]):,.0f}"
        latency = [f"{cuts[49] * 1000:.1f}", f"{cuts[98] * 1000:.1f}"]
        rows.append([name, kind, f"{rate:,.0f}", spread, *latency,
                     f"{app:,.0f}", f"{used:,.0f}"])  # fmt: skip
    for kind in ("one session", "a session each"):
        pairs = zip(figures[MERGING, kind], figures[CONTROL, kind], strict=True)
        ratios = [f"{mine / control:.2f}x" if control else "-"
                  for mine, control in pairs]  # fmt: skip
        each = zip(rates[MERGING, kind], rates[CONTROL, kind], strict=True)
        per_slice = [mine / control for mine, control in each]
        spread = f"{min(per_slice):.2f}-{max(per_slice):.2f}"
        rows.append(["merging / not", kind, ratios[0], spread, *ratios[1:]])
    print(
        f"\nThe cost: the adds of the same rounds, this engine against itself "
        f"saving last-write-wins. adds/s: over all turns (range: of the "
        f"turns); latency of each add; CPU: microseconds per request (starts, "
        f"adds and carts), of the gunicorn workers and of the server.\n\n"
        f"{common.table(rows)}"
    )


if __name__ == "__main__":
    main()
