"""Bulk operations at scale: ``RedisSessionStore.count()`` and ``clear()``.

What is measured
----------------
For every size N (default 100,000 and 1,000,000 sessions) the script fills a
dedicated key prefix with N sessions (``SET <prefix>{<key>} <~200-byte JSON>
PX <ttl>``, pipelined in chunks), N/100 tombstones (``<prefix>{<key>}:tombstone``)
and a few hundred decoy keys that look like sessions but lie outside the prefix
or outside its ``{*}`` pattern. Then:

* ``count()``: the store at each ``--scan-counts`` value (``SCAN_COUNT``)
  against a reference raw redis-py loop ``SCAN MATCH <pattern> COUNT 1000``
  that adds up ``len(keys)``. Both use the same pattern,
  ``django_redis_sessions.store.scan_pattern(prefix)``.
* ``clear()``: the store against a raw ``SCAN MATCH <pattern> COUNT 1000`` +
  ``UNLINK`` loop. The sessions are refilled before every clear and only the
  clear is timed. After every clear the script checks that no session is left
  and that every tombstone and decoy survived.
* Peak memory of a clear: each clear runs again in a fresh interpreter (this
  script re-invoked with a hidden ``--child`` flag) that reports how much its
  peak resident set size (``ru_maxrss``) grew between "imported and connected"
  and "clear finished". A ``naive`` control (``list(scan_iter())`` then
  ``UNLINK``) shows that the measurement does see memory that grows with N.

How to read it
--------------
The machine is assumed to be shared and noisy, so the headline figure is a
ratio: in each of ``--rounds`` rounds the reference and every store variant run
once, in an order rotated from round to round; each store run is divided by the
reference run of its own round and the median of those ratios is printed with
its range. A ratio of 1.00 means as fast as the raw loop, 1.20 means 20 %
slower. The absolute seconds (median) are printed for scale only.

"round trips" counts the commands the client sent during one run (SCAN and
UNLINK calls), via a ``redis.Connection`` subclass passed as
``connection_class``. "server us/call" is the average server-side time of one
SCAN call during the run (from ``INFO commandstats``; on a shared server other
clients' SCANs are included): the price of a larger ``SCAN_COUNT`` is that each
call blocks the single-threaded server for longer.

The summary names the smallest ``SCAN_COUNT`` whose worst ratio (count and
clear, every size) is within 1.2x of the raw loop, if any.

Run from the repository root::

    python benchmarks/bulk.py --quick          # 20,000 and 100,000 sessions
    python benchmarks/bulk.py                  # 100,000 and 1,000,000
    python benchmarks/bulk.py --redis-url redis://host:6379/5 --sizes 50000

Without ``--redis-url`` a throwaway server is started (see
``django_redis_sessions.testing.RedisServer``). With it, only keys under a
random ``drs-bench-<hex>:`` namespace are written, and all of them are deleted
at the end (never FLUSHDB/FLUSHALL).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/bulk.py`` without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import gc
import json
import resource
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import django
import redis
from django.conf import settings

from benchmarks import common
from django_redis_sessions.store import scan_pattern

DEFAULT_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (20_000, 100_000)
DEFAULT_SCAN_COUNTS = (100, 1000, 5000)
#: COUNT of the reference loops, fixed whatever SCAN_COUNT the store uses.
REFERENCE_COUNT = 1000
FILL_CHUNK = 10_000
TTL_MS = 3_600_000
TARGET_RATIO = 1.2
SESSION_KEY_LENGTH = 32

#: A realistic logged-in session as Django's JSON serializer writes it.
PAYLOAD = json.dumps(
    {
        "_auth_user_id": "48213",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": "3f1c" * 16,
        "cart": [1017, 2203, 87],
        "theme": "dark",
    },
    separators=(",", ":"),
).encode()


# --- Key layout ---------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Every key a run creates lives under ``namespace``.

    The session prefix contains glob metacharacters (``[s]``), and one kind of
    decoy (``<ns>s:{key}``) would match the pattern if it were not escaped.
    """

    namespace: str

    @property
    def prefix(self) -> str:
        return f"{self.namespace}[s]:"

    def session_key(self, index: int) -> str:
        return f"{index:0{SESSION_KEY_LENGTH}x}"

    def data_key(self, index: int) -> str:
        return f"{self.prefix}{{{self.session_key(index)}}}"

    def tombstone(self, index: int) -> str:
        # Destroyed sessions: keys no live session uses.
        return f"{self.prefix}{{t{self.session_key(index)[1:]}}}:tombstone"

    def decoys(self, count: int) -> list[str]:
        keys = []
        for index in range(count):
            key = self.session_key(index)
            kind = index % 3
            if kind == 0:
                keys.append(f"{self.namespace}s:{{{key}}}")  # unescaped [s]
            elif kind == 1:
                keys.append(f"{self.prefix}plain-{key}")  # no hash tag
            else:
                keys.append(f"{self.namespace}[s]x:{{{key}}}")  # sibling prefix
        return keys

    def kind(self, key: bytes) -> str:
        text = key.decode()
        if text.startswith(self.prefix + "{"):
            if text.endswith("}"):
                return "session"
            if text.endswith("}:tombstone"):
                return "tombstone"
        return "decoy"


def tombstone_count(size: int) -> int:
    return size // 100


def decoy_count(size: int) -> int:
    return max(300, size // 1000)


def fill_sessions(client: redis.Redis, layout: Layout, size: int) -> None:
    for start in range(0, size, FILL_CHUNK):
        pipe = client.pipeline(transaction=False)
        for index in range(start, min(start + FILL_CHUNK, size)):
            pipe.set(layout.data_key(index), PAYLOAD, px=TTL_MS)
        pipe.execute()


def fill_extras(client: redis.Redis, layout: Layout, size: int) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(tombstone_count(size)):
        pipe.set(layout.tombstone(index), "1", px=TTL_MS)
    for key in layout.decoys(decoy_count(size)):
        pipe.set(key, PAYLOAD, px=TTL_MS)
    pipe.execute()


def census(client: redis.Redis, layout: Layout) -> Counter[str]:
    """Keys under the namespace, by kind (session, tombstone, decoy)."""
    kinds: Counter[str] = Counter()
    pattern = common.namespace_pattern(layout.namespace)
    for key in client.scan_iter(match=pattern, count=REFERENCE_COUNT):
        kinds[layout.kind(key)] += 1
    return kinds


# --- The reference loops ------------------------------------------------------

# The clear reference is ``unlink_matching(client, pattern, REFERENCE_COUNT)``.


def raw_count(client: redis.Redis, pattern: str) -> int:
    total = 0
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=REFERENCE_COUNT)
        total += len(keys)
        if not cursor:
            return total


def naive_clear(client: redis.Redis, pattern: str) -> int:
    """The memory control: every key in a list first, then UNLINK."""
    keys = list(client.scan_iter(match=pattern, count=REFERENCE_COUNT))
    deleted = 0
    for start in range(0, len(keys), REFERENCE_COUNT):
        deleted += int(client.unlink(*keys[start : start + REFERENCE_COUNT]))
    return deleted


# --- Measuring ----------------------------------------------------------------


@dataclass
class Variant:
    label: str
    scan_count: int | None  # None: the reference raw loop


@dataclass
class Run:
    seconds: float
    result: int
    commands: Counter[str]
    scan_usec_per_call: float | None


@dataclass
class Series:
    """Runs of every variant, round by round."""

    runs: dict[str, list[Run]] = field(default_factory=dict)

    def add(self, label: str, run: Run) -> None:
        self.runs.setdefault(label, []).append(run)

    def ratios(self, label: str, reference: str) -> list[float]:
        return [
            run.seconds / ref.seconds
            for run, ref in zip(self.runs[label], self.runs[reference], strict=True)
        ]


def scan_stats(client: redis.Redis) -> tuple[int, int] | None:
    try:
        stats = client.info("commandstats")
    except redis.ResponseError:
        return None
    scan = stats.get("cmdstat_scan", {})
    return int(scan.get("calls", 0)), int(scan.get("usec", 0))


def measure(admin: redis.Redis, action: Callable[[], int]) -> Run:
    common.LOG.sent.clear()
    before = scan_stats(admin)
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    after = scan_stats(admin)
    per_call = None
    if before is not None and after is not None and after[0] > before[0]:
        per_call = (after[1] - before[1]) / (after[0] - before[0])
    return Run(seconds, result, Counter(common.LOG.sent), per_call)


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS; Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


class PeakGrowth:
    """How far the peak RSS rises above the RSS at ``start()``, in KiB.

    With ``/proc/self/clear_refs`` the peak is reset at the start, so memory
    freed before (at import time) cannot hide growth; otherwise it falls back
    to ``ru_maxrss`` after minus before, which can under-report.
    """

    def start(self) -> None:
        gc.collect()
        self.method = "VmHWM reset" if reset_peak_rss() else "ru_maxrss"
        if self.method == "ru_maxrss":
            self.before = peak_rss_kib()
        else:
            self.before = _status_kib("VmRSS") or 0

    def growth(self) -> int:
        if self.method == "ru_maxrss":
            return peak_rss_kib() - self.before
        return (_status_kib("VmHWM") or 0) - self.before


# --- Output -------------------------------------------------------------------


def series_table(series: Series, variants: Sequence[Variant], reference: str) -> str:
    rows = []
    for variant in variants:
        runs = series.runs[variant.label]
        seconds = statistics.median(run.seconds for run in runs)
        ratios = series.ratios(variant.label, reference)
        last = runs[-1]
        trips = sum(last.commands.values())
        detail = "+".join(f"{n} {name}" for name, n in sorted(last.commands.items()))
        per_calls = [r.scan_usec_per_call for r in runs if r.scan_usec_per_call]
        per_call = statistics.median(per_calls) if per_calls else None
        rows.append(
            [
                variant.label,
                f"{seconds:.3f}",
                *common.ratio_cells(ratios),
                f"{trips:,}",
                detail,
                "n/a" if per_call is None else f"{per_call:.0f}",
            ]
        )
    headers = [
        "variant",
        "median s",
        "ratio",
        "range",
        "round trips",
        "commands",
        "server us/SCAN",
    ]
    return common.table(headers, rows)


# --- Django -------------------------------------------------------------------


def configure_django(url: str, prefix: str, *, counting: bool) -> None:
    options: dict[str, Any] = {}
    if counting:
        options["connection_class"] = common.LOG.connection_class
    settings.configure(
        SECRET_KEY="django-redis-sessions-benchmark",
        USE_TZ=True,
        INSTALLED_APPS=[],
        SESSION_REDIS={"URL": url, "PREFIX": prefix, "OPTIONS": options},
    )
    django.setup()


# --- One size -----------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    count: Series
    clear: Series
    memory: dict[str, int]  # label -> peak RSS growth in KiB
    memory_method: str
    seconds: float


class Failure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def check_survivors(admin: redis.Redis, layout: Layout, size: int, what: str) -> None:
    kinds = census(admin, layout)
    check(kinds["session"] == 0, f"{what}: {kinds['session']} sessions left")
    check(
        kinds["tombstone"] == tombstone_count(size),
        f"{what}: {kinds['tombstone']} tombstones left of {tombstone_count(size)}",
    )
    check(
        kinds["decoy"] == decoy_count(size),
        f"{what}: {kinds['decoy']} decoys left of {decoy_count(size)}",
    )


def bench_size(
    size: int,
    *,
    url: str,
    admin: redis.Redis,
    reference_client: redis.Redis,
    scan_counts: Sequence[int],
    rounds: int,
    memory: bool,
) -> SizeResult:
    from django_redis_sessions.store import RedisSessionStore

    started = time.perf_counter()
    layout = Layout(f"drs-bench-{uuid.uuid4().hex[:12]}:")
    pattern = scan_pattern(layout.prefix)
    stores = {
        count: RedisSessionStore(prefix=layout.prefix, scan_count=count)
        for count in scan_counts
    }
    reference = Variant(f"raw SCAN COUNT {REFERENCE_COUNT}", None)
    variants = [reference]
    variants += [Variant(f"store SCAN_COUNT={count}", count) for count in scan_counts]
    count_series = Series()
    clear_series = Series()
    memory_growth: dict[str, int] = {}
    memory_method = [""]
    try:
        common.progress(f"{size:,}: filling")
        fill_extras(admin, layout, size)
        fill_sessions(admin, layout, size)

        def counter(variant: Variant) -> Callable[[], int]:
            if variant.scan_count is None:
                return lambda: raw_count(reference_client, pattern)
            return stores[variant.scan_count].count

        for variant in variants:  # warm-up: connections, scripts, caches
            counter(variant)()
        for round_index in range(rounds):
            common.progress(f"{size:,}: count round {round_index + 1}/{rounds}")
            for variant in common.rotated(variants, round_index):
                run = measure(admin, counter(variant))
                check(
                    run.result == size,
                    f"count {variant.label}: {run.result} instead of {size}",
                )
                count_series.add(variant.label, run)

        def clearer(variant: Variant) -> Callable[[], int]:
            if variant.scan_count is None:
                return lambda: common.unlink_matching(
                    reference_client, pattern, REFERENCE_COUNT
                )
            return stores[variant.scan_count].clear

        for round_index in range(rounds):
            common.progress(f"{size:,}: clear round {round_index + 1}/{rounds}")
            for variant in common.rotated(variants, round_index):
                fill_sessions(admin, layout, size)
                run = measure(admin, clearer(variant))
                check(
                    run.result == size,
                    f"clear {variant.label}: deleted {run.result} of {size}",
                )
                check_survivors(admin, layout, size, f"clear {variant.label}")
                clear_series.add(variant.label, run)

        if memory:
            children = [("raw", None), *(("store", c) for c in scan_counts)]
            children.append(("naive", None))
            for impl, count in children:
                label = memory_label(impl, count)
                common.progress(f"{size:,}: peak memory of {label}")
                fill_sessions(admin, layout, size)
                report = run_child(impl, url, layout.prefix, count)
                check(
                    report["deleted"] == size,
                    f"memory {label}: deleted {report['deleted']} of {size}",
                )
                check_survivors(admin, layout, size, f"memory {label}")
                memory_growth[label] = report["growth"]
                memory_method[0] = report["method"]
    finally:
        common.delete_namespace(admin, layout.namespace)
        left = sum(census(admin, layout).values())
        check(left == 0, f"cleanup left {left} keys under {layout.namespace}")

    print(f"\n== {size:,} sessions ({tombstone_count(size):,} tombstones, ", end="")
    print(f"{decoy_count(size):,} decoys), {rounds} interleaved rounds ==")
    print("\ncount(): ratio = store time / raw loop time (median of rounds)\n")
    print(series_table(count_series, variants, reference.label))
    print("\nclear(): ratio = store time / raw SCAN+UNLINK time (refilled each run)\n")
    print(series_table(clear_series, variants, reference.label))
    elapsed = time.perf_counter() - started
    print(f"\n({size:,} sessions: {elapsed:.0f} s including fills)", flush=True)
    return SizeResult(
        size, count_series, clear_series, memory_growth, memory_method[0], elapsed
    )


# --- The memory child ---------------------------------------------------------


def memory_label(impl: str, scan_count: int | None) -> str:
    if impl == "store":
        return f"store SCAN_COUNT={scan_count}"
    if impl == "raw":
        return f"raw SCAN COUNT {REFERENCE_COUNT} + UNLINK"
    return "naive list(scan_iter) + UNLINK (control)"


def run_child(impl: str, url: str, prefix: str, scan_count: int | None) -> Any:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", impl]
    command += ["--redis-url", url, "--child-prefix", prefix]
    if scan_count is not None:
        command += ["--child-scan-count", str(scan_count)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode:
        raise Failure(f"memory child {impl} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    """Clear once in this fresh process and report the peak RSS growth (KiB)."""
    configure_django(args.redis_url, args.child_prefix, counting=False)
    from django_redis_sessions.client import close_clients, get_client
    from django_redis_sessions.store import RedisSessionStore

    pattern = scan_pattern(args.child_prefix)
    client = redis.Redis.from_url(args.redis_url)
    action: Callable[[], int]
    if args.child == "store":
        store = RedisSessionStore(
            prefix=args.child_prefix, scan_count=args.child_scan_count
        )
        get_client().ping()
        action = store.clear
    elif args.child == "raw":
        client.ping()
        action = partial(common.unlink_matching, client, pattern, REFERENCE_COUNT)
    else:
        client.ping()
        action = partial(naive_clear, client, pattern)
    peak = PeakGrowth()
    peak.start()
    deleted = action()
    growth = peak.growth()
    client.close()
    close_clients()
    report = {"growth": growth, "method": peak.method, "deleted": deleted}
    print(json.dumps(report))


# --- Main ---------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="comma-separated session counts (default 100000,1000000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="sizes 20000,100000 (unless --sizes)"
    )
    parser.add_argument(
        "--scan-counts",
        type=parse_sizes,
        default=DEFAULT_SCAN_COUNTS,
        help="store SCAN_COUNT values to compare (default 100,1000,5000)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="default 5")
    parser.add_argument(
        "--skip-memory", action="store_true", help="skip the peak memory children"
    )
    common.add_redis_url_argument(parser)
    parser.add_argument(
        "--child", choices=["store", "raw", "naive"], help=argparse.SUPPRESS
    )
    parser.add_argument("--child-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--child-scan-count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def summary(results: Sequence[SizeResult], scan_counts: Sequence[int]) -> None:
    reference = f"raw SCAN COUNT {REFERENCE_COUNT}"
    headers = ["SCAN_COUNT"]
    for result in results:
        headers += [f"count {result.size:,}", f"clear {result.size:,}"]
    headers += ["worst", f"<= {TARGET_RATIO}x?"]
    rows = []
    meeting = []
    for count in scan_counts:
        label = f"store SCAN_COUNT={count}"
        cells = [str(count)]
        worst = 0.0
        for result in results:
            for series in (result.count, result.clear):
                ratio = statistics.median(series.ratios(label, reference))
                worst = max(worst, ratio)
                cells.append(f"{ratio:.2f}")
        ok = worst <= TARGET_RATIO
        if ok:
            meeting.append(count)
        rows.append([*cells, f"{worst:.2f}", "yes" if ok else "no"])
    print("\n== Summary: median ratio store / raw loop ==\n")
    print(common.table(headers, rows))
    if meeting:
        print(
            f"\nSmallest SCAN_COUNT within {TARGET_RATIO}x of the raw loop for "
            f"count and clear at every size: {min(meeting)} "
            f"(all meeting it: {', '.join(map(str, meeting))})."
        )
    else:
        print(f"\nNo SCAN_COUNT tried is within {TARGET_RATIO}x everywhere.")

    if any(result.memory for result in results):
        labels = list(results[0].memory)
        headers = ["peak RSS growth during clear (KiB)"]
        headers += [f"{result.size:,}" for result in results]
        rows = [
            [label, *(f"{result.memory[label]:,}" for result in results)]
            for label in labels
        ]
        print("\n== Peak memory of one clear, in a fresh process ==\n")
        print(common.table(headers, rows))
        print(
            "\n(Peak RSS during the clear minus RSS after imports and connecting, "
            f"measured by {results[0].memory_method}; a few hundred KiB is noise.)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    started = time.perf_counter()
    with common.server_url(args.redis_url) as (url, origin):
        configure_django(url, "drs-bench-unused:", counting=True)
        from django_redis_sessions.client import close_clients

        admin = redis.Redis.from_url(url)
        reference_client = redis.Redis.from_url(
            url, connection_class=common.LOG.connection_class
        )
        try:
            server = common.server_version(admin)
            print(
                f"bulk.py: sizes {', '.join(f'{s:,}' for s in args.sizes)}; "
                f"SCAN_COUNT {', '.join(map(str, args.scan_counts))}; "
                f"{args.rounds} rounds; payload {len(PAYLOAD)} bytes; "
                f"server {server} ({origin}); redis-py {redis.__version__}; "
                f"Django {django.__version__}; Python {sys.version.split()[0]}"
            )
            results = [
                bench_size(
                    size,
                    url=url,
                    admin=admin,
                    reference_client=reference_client,
                    scan_counts=args.scan_counts,
                    rounds=args.rounds,
                    memory=not args.skip_memory,
                )
                for size in args.sizes
            ]
        except Failure as failure:
            print(f"\nFAILED: {failure}", file=sys.stderr)
            return 1
        finally:
            close_clients()
            reference_client.close()
            admin.close()
    summary(results, args.scan_counts)
    print(f"\nTotal {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
