"""What ``manage.py redis_sessions stats`` and ``show`` report, and how it looks.

``collect()`` reads every session under the prefix once, a SCAN batch at a
time through ``RedisLayer.measure()``, and keeps only fixed-size histograms:
memory stays flat however many sessions there are, the figures of several
Cluster primaries simply add up, and the same store gives the same figures
on every run. A bounded reservoir (a random sample of a few thousand values)
would also keep memory flat, but its quantiles change from run to run, it
needs a random source to test, and its p99 rests on a few dozen values.

Each histogram counts values in buckets 1 % wide (``floor(100 * ln(v + 1))``,
computed by the script that measures the batch, see ``scripts.MEASURE``), so
a quantile is reported as the largest value its bucket can hold: at most 1 %
above the exact figure, exact below 100, and never above the maximum, which
is exact. Lifetimes are whole seconds, rounded up.

``inspect()`` describes one session for ``show``.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django_redis_sessions.conf import conf
from django_redis_sessions.keys import is_hashed_id
from django_redis_sessions.payloads import Payloads
from django_redis_sessions.redis_layer import NO_TTL, RedisLayer
from django_redis_sessions.user_index import INDEX_MARK, USER_ID_KEY, parse_entry

#: Buckets per unit of ln(value + 1): each one is 1 % wide.
SCALE = 100

#: Version of the ``--json`` document; a change that can break a reader
#: (a field removed or changing meaning) increments it, new fields do not.
SCHEMA = 1

#: The rows of the histograms drawn on a terminal: each row counts the values
#: from its edge up to the next, the last everything above.
SIZE_EDGES = (0, 128, 256, 512, 1024, 2048, 4096, 16384, 65536)
LIFETIME_EDGES = (0, 60, 600, 3600, 21600, 86400, 259200, 604800, 1209600, 2592000)

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def bucket_of(value: int) -> int:
    """The bucket number of ``value`` (the script computes the same in Lua)."""
    return math.floor(SCALE * math.log(value + 1))


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """The smallest and the largest whole value in ``bucket``.

    From the inverse of ``bucket_of``, then corrected by a step where
    rounding of ``exp`` and ``log`` disagree at an edge.
    """
    low = max(0, math.ceil(math.exp(bucket / SCALE)) - 1)
    while low > 0 and bucket_of(low - 1) >= bucket:
        low -= 1
    while bucket_of(low) < bucket:
        low += 1
    high = max(low, math.ceil(math.exp((bucket + 1) / SCALE)) - 2)
    while bucket_of(high + 1) <= bucket:
        high += 1
    while high > low and bucket_of(high) > bucket:
        high -= 1
    return low, high


class Histogram:
    """Counts per bucket number, and the exact maximum."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.largest = 0

    def add(self, buckets: Iterable[int], largest: int) -> None:
        # Counting an array of the script's bucket numbers is a C loop.
        self._counts.update(buckets)
        self.largest = max(self.largest, largest)

    def counts(self) -> list[tuple[int, int]]:
        """``(bucket, count)`` in increasing order of bucket."""
        return sorted(self._counts.items())

    def distribution(self, edges: Sequence[int]) -> Distribution | None:
        counts = self.counts()
        total = sum(count for _, count in counts)
        if not total:
            return None
        figures = {
            name: min(self.largest, _quantile(counts, total, q))
            for name, q in QUANTILES
        }
        rows = [0] * len(edges)
        for bucket, count in counts:
            low, _ = bucket_bounds(bucket)
            rows[bisect.bisect_right(edges, low) - 1] += count
        return Distribution(
            p50=figures["p50"],
            p90=figures["p90"],
            p99=figures["p99"],
            max=self.largest,
            histogram=[
                HistogramRow(edge, edges[i + 1] if i + 1 < len(edges) else None, n)
                for i, (edge, n) in enumerate(zip(edges, rows, strict=True))
            ],
        )


def _quantile(counts: list[tuple[int, int]], total: int, q: float) -> int:
    """The nearest-rank quantile: the largest value of the bucket holding it."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, count in counts:
        seen += count
        if seen >= rank:
            return bucket_bounds(bucket)[1]
    raise AssertionError("the ranks add up to the total")  # pragma: no cover


@dataclass(frozen=True)
class HistogramRow:
    start: int
    #: None for the last row, which counts everything from ``start`` up.
    end: int | None
    count: int


@dataclass(frozen=True)
class Distribution:
    p50: int
    p90: int
    p99: int
    max: int
    histogram: list[HistogramRow]

    def as_json(self) -> dict[str, Any]:
        return {
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "histogram": [
                {"from": row.start, "to": row.end, "count": row.count}
                for row in self.histogram
            ],
        }


@dataclass(frozen=True)
class MemorySample:
    """``MEMORY USAGE`` of the first sessions found, in bytes."""

    sessions: int
    mean: int
    p50: int
    p90: int
    p99: int
    max: int
    #: The mean times the live sessions: what the whole store takes, roughly.
    estimated_total: int

    @classmethod
    def of(cls, values: list[int], live: int) -> MemorySample | None:
        if not values:
            return None
        ordered = sorted(values)
        n = len(ordered)

        def nearest_rank(q: float) -> int:
            return ordered[max(1, math.ceil(q * n)) - 1]

        mean = sum(ordered) / n
        return cls(
            sessions=n,
            mean=round(mean),
            p50=nearest_rank(0.5),
            p90=nearest_rank(0.9),
            p99=nearest_rank(0.99),
            max=ordered[-1],
            estimated_total=round(mean * live),
        )


@dataclass(frozen=True)
class Stats:
    prefix: str
    live_sessions: int
    tombstones: int
    #: Live sessions whose name has no TTL: this store never writes one, so
    #: they were written by something else (and never expire).
    without_expiry: int
    #: None when there is no live session.
    payload_bytes: Distribution | None
    lifetime_seconds: Distribution | None
    #: None with ``--sample 0``, or when the server refuses ``MEMORY USAGE``.
    memory_bytes: MemorySample | None
    #: Live sessions per Cluster primary ("host:port"); None on one server.
    primaries: dict[str, int] | None
    #: Users with at least one session in the per-user index; None while the
    #: store keeps no such index.
    indexed_users: int | None = None
    #: Live sessions still stored unencrypted; None while ``ENCRYPTION`` is
    #: off. In "migrate" mode, 0 means ENCRYPTION can be set to True.
    unencrypted: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document; ``docs/operating.rst`` lists the fields."""
        memory = self.memory_bytes
        return {
            "schema": SCHEMA,
            "prefix": self.prefix,
            "live_sessions": self.live_sessions,
            "tombstones": self.tombstones,
            "indexed_users": self.indexed_users,
            "unencrypted": self.unencrypted,
            "without_expiry": self.without_expiry,
            "payload_bytes": _json_or_none(self.payload_bytes),
            "lifetime_seconds": _json_or_none(self.lifetime_seconds),
            "memory_bytes": None if memory is None else vars(memory).copy(),
            "primaries": self.primaries,
        }


def _json_or_none(distribution: Distribution | None) -> dict[str, Any] | None:
    return None if distribution is None else distribution.as_json()


@dataclass
class _Totals:
    live: int = 0
    tombstones: int = 0
    without_expiry: int = 0
    sizes: Histogram = field(default_factory=Histogram)
    lifetimes: Histogram = field(default_factory=Histogram)
    memory: list[int] | None = None
    primaries: Counter[str] = field(default_factory=Counter)
    encrypted: int = 0


def collect(
    layer: RedisLayer,
    *,
    sample: int = 1000,
    on_batch: Callable[[int], None] | None = None,
) -> Stats:
    """Measure every session under the layer's prefix; see the module docstring.

    ``sample`` sessions (the first found: SCAN's order is the hash order of
    the names, as good as random) are also sized with ``MEMORY USAGE``.
    ``on_batch`` is told how many sessions each batch held (progress).
    """
    totals = _Totals(memory=[] if sample > 0 else None)
    cluster = False
    encryption = conf.ENCRYPTION is not False
    for batch in layer.measure(sample=sample, count_encrypted=encryption):
        totals.encrypted += batch.encrypted.count(b"1")
        live = len(batch.sizes)
        totals.live += live
        totals.tombstones += batch.tombstones
        totals.sizes.add(batch.sizes, batch.largest)
        expiring: Sequence[int]
        if NO_TTL in batch.ttls:
            expiring = [ttl for ttl in batch.ttls if ttl != NO_TTL]
            totals.without_expiry += len(batch.ttls) - len(expiring)
        else:
            expiring = batch.ttls
        totals.lifetimes.add(expiring, math.ceil(batch.longest / 1000))
        if batch.node:
            cluster = True
            totals.primaries[batch.node] += live
        if totals.memory is not None and batch.memory is not None:
            totals.memory += batch.memory
        if on_batch is not None:
            on_batch(live)
    return Stats(
        prefix=layer.prefix,
        live_sessions=totals.live,
        tombstones=totals.tombstones,
        without_expiry=totals.without_expiry,
        payload_bytes=totals.sizes.distribution(SIZE_EDGES),
        lifetime_seconds=totals.lifetimes.distribution(LIFETIME_EDGES),
        memory_bytes=MemorySample.of(totals.memory or [], totals.live),
        primaries=dict(sorted(totals.primaries.items())) if cluster else None,
        indexed_users=layer.count_indexed_users() if layer.user_index else None,
        unencrypted=totals.live - totals.encrypted if encryption else None,
    )


# --- Text for a terminal -------------------------------------------------------

#: Width of the longest bar, in characters.
BAR_WIDTH = 40
#: Eighths of a character cell, for bars that end between two cells.
EIGHTHS = "▏▎▍▌▋▊▉"


def render(stats: Stats, *, where: str, unicode: bool = True) -> str:
    """The report ``stats`` prints, histograms drawn with block characters.

    ``unicode=False`` draws them with ``#`` for terminals that cannot show
    the blocks.
    """
    lines = [
        f"Sessions under the prefix {stats.prefix!r} in Redis {where}.",
        "",
        *_table(
            [
                ("Live sessions", f"{stats.live_sessions:,}"),
                ("Tombstones", f"{stats.tombstones:,}"),
                (
                    "Indexed users",
                    "no per-user index"
                    if stats.indexed_users is None
                    else f"{stats.indexed_users:,}",
                ),
            ]
            + (
                [("Without expiry", f"{stats.without_expiry:,}")]
                if stats.without_expiry
                else []
            )
            + (
                [("Not encrypted yet", f"{stats.unencrypted:,}")]
                if stats.unencrypted is not None
                else []
            )
        ),
    ]
    for title, distribution, unit in (
        ("Payload size", stats.payload_bytes, format_bytes),
        ("Remaining lifetime", stats.lifetime_seconds, format_seconds),
    ):
        if distribution is not None:
            lines += ["", *_distribution(title, distribution, unit, unicode)]
    memory = stats.memory_bytes
    if memory is not None:
        lines += [
            "",
            f"Redis memory per session (MEMORY USAGE of {memory.sessions:,} "
            f"sessions): mean {format_bytes(memory.mean)}, "
            + _figures(memory, format_bytes)
            + f"; about {format_bytes(memory.estimated_total)} for all "
            f"{stats.live_sessions:,}.",
        ]
    if stats.primaries is not None:
        lines += ["", "Live sessions per primary:"]
        lines += _table([(node, f"{n:,}") for node, n in stats.primaries.items()])
    return "\n".join(lines)


def _table(rows: list[tuple[str, str]]) -> list[str]:
    left = max(len(label) for label, _ in rows) + 1
    right = max(len(value) for _, value in rows)
    return [f"  {label + ':':<{left}}  {value:>{right}}" for label, value in rows]


def _figures(figures: Any, unit: Callable[[int], str]) -> str:
    return ", ".join(
        f"{name} {unit(getattr(figures, name))}"
        for name in ("p50", "p90", "p99", "max")
    )


def _distribution(
    title: str, distribution: Distribution, unit: Callable[[int], str], unicode: bool
) -> list[str]:
    rows = distribution.histogram
    labels = [
        f"{unit(row.start)} to {unit(row.end)}"
        if row.end is not None
        else f"{unit(row.start)} or more"
        for row in rows
    ]
    total = sum(row.count for row in rows)
    largest = max(row.count for row in rows)
    label_width = max(len(label) for label in labels)
    count_width = len(f"{total:,}")
    lines = [f"{title}: {_figures(distribution, unit)}"]
    for label, row in zip(labels, rows, strict=True):
        bar = _bar(row.count, largest, unicode)
        lines.append(
            f"  {label:>{label_width}}  {bar:<{BAR_WIDTH}}  {row.count:>{count_width},}"
        )
    lines.append(
        f"  {'total':>{label_width}}  {'':<{BAR_WIDTH}}  {total:>{count_width},}"
    )
    return lines


def _bar(count: int, largest: int, unicode: bool) -> str:
    """A bar ``count / largest`` of the full width; a count above 0 always shows."""
    if not count:
        return ""
    if not unicode:
        return "#" * max(1, round(BAR_WIDTH * count / largest))
    eighths = max(1, BAR_WIDTH * 8 * count // largest)
    full, rest = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[rest - 1] if rest else "")


def format_bytes(value: int) -> str:
    """``412 B``, ``1.5 KiB``, ``12 MiB``."""
    if value < 1024:
        return f"{value:,} B"
    size, unit = value / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:,.1f}".removesuffix(".0") + f" {unit}"


def format_seconds(seconds: int) -> str:
    """``45 s``, ``12 min``, ``3 h 20 min``, ``13 d 23 h``: two units at most."""
    parts: list[tuple[int, str]] = []
    for name, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount or parts:
            parts.append((amount, name))
        if len(parts) == 2:
            break
    return " ".join(f"{amount} {name}" for amount, name in parts if amount) or "0 s"


# --- One session, for ``show`` ---------------------------------------------------


@dataclass(frozen=True)
class SessionReport:
    """What ``show`` prints about one session; never its key."""

    id: str
    #: "live", "destroyed" (only a tombstone), "missing" or "foreign" (the
    #: name holds something other than a string).
    state: str
    ttl: float | None
    tombstone_ttl: float | None
    size: int | None
    #: ``_auth_user_id`` of the session; None for an anonymous session.
    user_id: str | None
    #: The decoded session; None when there is none or it cannot be decoded.
    data: dict[str, Any] | None
    #: The per-user index's entry for this session (when it was indexed,
    #: its metadata); None while the store keeps no such index.
    index: dict[str, Any] | None = None
    #: The payload is encrypted (``ENCRYPTION``); without the session key
    #: ``data`` and ``user_id`` are None.
    encrypted: bool = False


def inspect(layer: RedisLayer, key_or_id: str, payloads: Payloads) -> SessionReport:
    """Describe the session of ``key_or_id`` in one round trip, changing nothing.

    The payload is always read and decoded: it costs the same round trip as
    its length, and the user id is not a secret (the payload is printed only
    with ``--decode``).
    """
    found = layer.inspect(key_or_id)
    if found.foreign:
        state = "foreign"
    elif found.payload is not None:
        state = "live"
    elif found.tombstone_ttl is not None:
        state = "destroyed"
    else:
        state = "missing"
    data = None
    encrypted = False
    if found.payload is not None:
        encryption = payloads.encryption
        encrypted = encryption is not None and encryption.is_sealed(found.payload)
        if encryption is None or not is_hashed_id(key_or_id):
            data = payloads.loads(found.payload, key_or_id)
        elif not encrypted:  # stored before encryption ("migrate")
            data = payloads.loads_without_key(found.payload)
    if data is not None:
        data.pop(INDEX_MARK, None)  # the engine's bookkeeping, not the session's
    user_id = None if data is None else data.get(USER_ID_KEY)
    if user_id is None and encrypted and data is None:
        # The payload names no user without the cookie; the index does.
        user_id = layer.indexed_user(found.id)
    index = None
    if user_id is not None:
        entry = layer.index_entry(str(user_id), found.id)
        listed = None if entry is None else parse_entry(found.id, entry, None)
        index = (
            {"entry": "missing"}
            if listed is None
            else {
                "created": listed.created_at.isoformat(timespec="seconds"),
                "last seen": listed.last_seen_at.isoformat(timespec="seconds"),
                "ip": listed.ip or "-",
                "user agent": listed.user_agent or "-",
            }
        )
    return SessionReport(
        id=found.id,
        state=state,
        ttl=found.ttl,
        tombstone_ttl=found.tombstone_ttl,
        size=None if found.payload is None else len(found.payload),
        user_id=None if user_id is None else str(user_id),
        data=data,
        index=index,
        encrypted=encrypted,
    )
