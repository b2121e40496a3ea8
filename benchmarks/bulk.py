"""count(), all() and clear() of the store against a raw redis-py SCAN loop, on a
keyspace of sessions of many users, each user with its index (``USER_INDEX``)."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/bulk.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import gc
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from django.core.signing import JSONSerializer

from benchmarks import common

#: How long the benchmark's sessions live (they are deleted at the end).
TTL = 3600.0


def base(size: int) -> str:
    """Every key of the ``size`` sessions run starts with this."""
    return f"{common.NAMESPACE}{size}:"


def prefix(size: int) -> str:
    """The store's prefix; its ``[s]`` must be escaped in a SCAN pattern."""
    return f"{base(size)}[s]:"


def session_key(index: int) -> str:
    """The cookie of the ``index``-th session, as Django draws them (32 of a-z0-9)."""
    return f"k{index:031d}"


def fill(client: redis.Redis, size: int, *, extras: bool = False) -> None:
    """``size`` sessions, each logged in as a user of its own, created by the
    engine with ``USER_INDEX`` on (so beside each session its user's index);
    with ``extras`` also tombstones (1 %, through ``destroy()``) and decoys,
    which every SCAN must skip. Run again after a ``clear()``, it writes back
    the sessions (and index entries) the clear deleted."""
    sessions = (
        (session_key(index), {**common.SESSION, "_auth_user_id": str(index)})
        for index in range(size)
    )
    common.create_sessions(sessions, ttl=TTL, prefix=prefix(size))
    if not extras:
        return
    store = common.store(PREFIX=prefix(size))
    for index in range(size // 100):
        store.destroy(session_key(size + index))
    # Outside the pattern; the first would match it if "[s]" were not escaped.
    pipe = client.pipeline(transaction=False)
    for index in range(max(300, size // 1000)):
        decoy = ("{}s:{{{}}}", "{}[s]:plain-{}", "{}[s]x:{{{}}}")[index % 3]
        pipe.set(decoy.format(base(size), f"{index:032x}"), b"{}", px=3_600_000)
    pipe.execute()


def raw_count(client: redis.Redis, pattern: str) -> int:
    return sum(len(keys) for keys in common.scan_pages(client, pattern, "string"))


def raw_all(client: redis.Redis, pattern: str) -> int:
    decode, found = JSONSerializer().loads, 0  # the store's default serializer
    for keys in common.scan_pages(client, pattern, "string"):
        values: list[Any] = client.mget(keys)
        for value in values:
            if value is not None:
                decode(value)
                found += 1
    return found


def raw_clear(client: redis.Redis, pattern: str) -> int:
    pages = common.scan_pages(client, pattern, "string")
    return sum(client.unlink(*keys) for keys in pages)


def naive_clear(client: redis.Redis, pattern: str) -> int:
    """The memory control: every key in one list first, then UNLINK."""
    keys = list(client.scan_iter(match=pattern, count=1000, _type="string"))
    return sum(client.unlink(*keys[i : i + 1000]) for i in range(0, len(keys), 1000))


RAW = "raw SCAN COUNT 1000 TYPE string"
#: Each comparison: the reference loop, and the same done by the store.
COMPARISONS: dict[str, tuple[Callable[..., int], Callable[[common.Store], int]]] = {
    "count": (raw_count, lambda store: store.count()),
    "all": (raw_all, lambda store: sum(1 for _ in store.all())),
    "clear": (raw_clear, lambda store: store.clear()),
}


def checked(size: int, name: str, action: Callable[[], int]) -> Callable[[int], None]:
    def run(_: int) -> None:
        if (found := action()) != size:
            raise SystemExit(f"{name} found {found:,} sessions instead of {size:,}.")

    return run


class CpuMeter:
    """The CPU time of each run: this process's and the server's.

    A machine shared with other work stretches elapsed time with waits for a
    core; CPU time it does not. The server's is read with ``INFO cpu``
    (``used_cpu_user`` + ``used_cpu_sys``, every thread of the server)
    before and after each run, on a client of its own (``info``), so that
    the two ``INFO`` commands are not counted as the variant's round trips.
    """

    def __init__(self, info: redis.Redis) -> None:
        self._info = info
        self.runs: dict[str, list[tuple[float, float]]] = {}

    def _server(self) -> float:
        cpu: dict[str, float] = self._info.info("cpu")
        return cpu["used_cpu_user"] + cpu["used_cpu_sys"]

    def measured(self, name: str, run: Callable[[int], None]) -> Callable[[int], None]:
        def timed(argument: int) -> None:
            server, client = self._server(), time.process_time()
            run(argument)
            client, server = time.process_time() - client, self._server() - server
            self.runs.setdefault(name, []).append((client, server))

        return timed

    def table(self, names: list[str], rounds: int) -> str:
        """Median CPU ms per run, and the total over the first's, per round."""
        runs = {name: self.runs[name][-rounds:] for name in names}
        reference = [sum(run) for run in runs[names[0]]]
        rows = [["variant", "client ms", "server ms", "CPU ratio", "range"]]
        for name, found in runs.items():
            ratios = [sum(run) / ref for run, ref in zip(found, reference, strict=True)]
            rows.append(
                [
                    name,
                    f"{statistics.median(run[0] for run in found) * 1000:,.0f}",
                    f"{statistics.median(run[1] for run in found) * 1000:,.0f}",
                    f"{statistics.median(ratios):.2f}x",
                    f"{min(ratios):.2f}-{max(ratios):.2f}",
                ]
            )
        self.runs.clear()
        return common.table(rows)


def bench(
    client: redis.Redis, size: int, args: argparse.Namespace, meter: CpuMeter
) -> None:
    pattern = common.scan_pattern(prefix(size))
    stores = {
        f"store SCAN_COUNT={count}": common.store(PREFIX=prefix(size), SCAN_COUNT=count)
        for count in args.scan_counts
    }
    fill(client, size, extras=True)
    under = common.glob_escape(base(size)) + "*"
    keys = sum(len(names) for names in common.scan_pages(client, under))
    extras = (
        f"{size:,} users, {size // 100:,} tombstones, "
        f"{max(300, size // 1000):,} decoys: {keys:,} keys"
    )
    for method, (raw, of_store) in COMPARISONS.items():
        # clear() runs on a refilled store; count() has warmed every client up.
        setup = partial(fill, client) if method == "clear" else None
        actions: dict[str, Callable[[], int]] = {RAW: partial(raw, client, pattern)}
        for name, store in stores.items():
            actions[name] = partial(of_store, store)
        variants = [
            common.Variant(name, meter.measured(name, checked(size, name, act)), setup)
            for name, act in actions.items()
        ]
        title = f"{method}() of {size:,} sessions ({extras}), {args.rounds} rounds"
        common.compare(
            title, variants, size, rounds=args.rounds, warmup=not setup, per_op=False
        )
        print(f"\n{meter.table(list(actions), args.rounds)}", flush=True)


def peak_memory(
    client: redis.Redis, url: str, size: int, args: argparse.Namespace
) -> dict[str, int]:
    """Peak RSS growth (KiB) of one clear, each in a fresh interpreter."""
    growth = {}
    for kind in [RAW, *(f"store SCAN_COUNT={c}" for c in args.scan_counts), "naive"]:
        fill(client, size)
        command = [sys.executable, __file__, "--child", kind, "--redis-url", url]
        command += ["--prefix", prefix(size)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"Peak memory (Linux only) failed:\n{done.stderr}")
        report = json.loads(done.stdout)
        if report["deleted"] != size:
            raise SystemExit(f"{kind} deleted {report['deleted']:,} of {size:,}.")
        growth[kind.replace("naive", "list(scan_iter()) (control)")] = report["kib"]
    return growth


def child(kind: str, url: str, store_prefix: str) -> None:
    """One clear in this fresh interpreter; prints the peak RSS growth in KiB."""
    scan_count = int(kind.partition("=")[2] or 1000)
    config = {"PREFIX": store_prefix, "SCAN_COUNT": scan_count}
    common.configure(url, session_redis=config)
    client, store = redis.Redis.from_url(url), common.store()
    pattern = common.scan_pattern(store_prefix)
    clears: dict[str, Callable[[], int]] = {
        RAW: partial(raw_clear, client, pattern),
        "naive": partial(naive_clear, client, pattern),
    }
    clear = clears.get(kind, store.clear)
    store.exists("warm-up")  # both clients connect before the measurement
    client.ping()
    gc.collect()
    # Resets the peak RSS to the current RSS (Linux), so that memory freed at
    # import time cannot hide the growth.
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    deleted = clear()
    print(json.dumps({"deleted": deleted, "kib": status_kib("VmHWM") - before}))


def status_kib(field: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))


def main() -> None:
    parser = common.parser(__doc__)
    numbers = lambda text: [int(n) for n in text.split(",")]  # noqa: E731
    parser.add_argument("--quick", action="store_true", help="20,000 sessions")
    parser.add_argument("--sizes", type=numbers, help="default 100000")
    parser.add_argument("--scan-counts", type=numbers, default=[1000])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.redis_url, args.prefix)
        return
    sizes = args.sizes or ([20_000] if args.quick else [100_000])
    growth = {}
    with common.server(args.redis_url) as url:
        options = {"connection_class": common.LOG.connection_class}
        common.configure(url, session_redis={"OPTIONS": options})
        with (
            redis.Redis.from_url(url, **options) as client,
            redis.Redis.from_url(url) as info,
        ):
            meter = CpuMeter(info)
            for size in sizes:
                bench(client, size, args, meter)
                if not args.skip_memory:
                    growth[size] = peak_memory(client, url, size, args)
                common.delete_under(client, base(size))
    if growth:
        rows = [["peak RSS growth of one clear, KiB", *(f"{s:,}" for s in sizes)]]
        for kind in growth[sizes[0]]:
            rows.append([kind, *(f"{growth[size][kind]:,}" for size in sizes)])
        print(f"\n{common.table(rows)}")


if __name__ == "__main__":
    main()
