"""``manage.py redis_sessions stats`` and ``show`` against stores built here."""

from __future__ import annotations

import io
import json
import math
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster
from django.core.management import call_command
from django.core.management.base import CommandError

from django_redis_sessions import scripts, stats
from django_redis_sessions.client import clients
from django_redis_sessions.redis_layer import Measured, RedisLayer
from django_redis_sessions.store import RedisSessionStore
from tests.utils import measure_repeating_names

KEY = "abcdefgh12345678abcdefgh12345678"


def run(*args: str) -> str:
    stdout = io.StringIO()
    call_command("redis_sessions", *args, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue()


def upper(value: int) -> int:
    """The figure a quantile falling on ``value`` is reported as."""
    return stats.bucket_bounds(stats.bucket_of(value))[1]


def write(layer: RedisLayer, sessions: list[tuple[int, int]]) -> None:
    """Sessions of known payload size (bytes) and TTL (seconds)."""
    for number, (size, ttl) in enumerate(sessions):
        assert layer.create(f"session{number:04d}", b"x" * size, ttl).name == "WRITTEN"


#: (payload bytes, TTL seconds): 20 sessions whose quantiles fall on a
#: chosen value each. The TTLs lie well inside their 1 % bucket, so the few
#: milliseconds a test takes cannot move them to the next.
SIZES = [50] * 10 + [300] * 7 + [1000] * 2 + [5000]
TTLS = [300_000] * 10 + [40_000] * 7 + [7_000] * 2 + [1_000_000]
KNOWN = list(zip(SIZES, TTLS, strict=True))


@pytest.fixture
def known(prefix: str) -> RedisLayer:
    layer = RedisLayer(prefix=prefix)
    write(layer, KNOWN)
    for ttl in TTLS:
        # Each TTL's bucket also holds the TTL a few seconds later.
        assert stats.bucket_of(ttl) == stats.bucket_of(ttl - 5)
    store = RedisSessionStore(prefix=prefix)
    for number in range(3):
        store.create(f"gone{number:04d}", {"n": number}, ttl=60)
        store.destroy(f"gone{number:04d}")
    return layer


def expected_document(prefix: str, lifetime_max: int) -> dict[str, Any]:
    def rows(edges: tuple[int, ...], counts: dict[int, int]) -> list[dict[str, Any]]:
        return [
            {
                "from": edge,
                "to": edges[i + 1] if i + 1 < len(edges) else None,
                "count": counts.get(edge, 0),
            }
            for i, edge in enumerate(edges)
        ]

    return {
        "schema": 1,
        "prefix": prefix,
        "live_sessions": 20,
        "tombstones": 3,
        "indexed_users": 0,
        "unencrypted": None,
        "without_expiry": 0,
        "payload_bytes": {
            "p50": 50,
            "p90": upper(1000),
            "p99": 5000,
            "max": 5000,
            "histogram": rows(stats.SIZE_EDGES, {0: 10, 256: 7, 512: 2, 4096: 1}),
        },
        "lifetime_seconds": {
            "p50": upper(300_000),
            "p90": upper(300_000),
            "p99": lifetime_max,
            "max": lifetime_max,
            "histogram": rows(
                stats.LIFETIME_EDGES, {3600: 2, 21600: 7, 259200: 10, 604800: 1}
            ),
        },
        "memory_bytes": None,
        "primaries": None,
    }


def test_stats_json_gives_the_exact_figures_of_a_known_store(
    known: RedisLayer, prefix: str
) -> None:
    document = json.loads(run("stats", "--json", "--sample", "0"))

    # The longest lifetime is exact, so it shrinks while the test runs.
    lifetime_max = document["lifetime_seconds"]["max"]
    assert 1_000_000 - 5 <= lifetime_max <= 1_000_000
    assert document == expected_document(prefix, lifetime_max)


def test_stats_gives_the_same_figures_one_name_per_batch(
    known: RedisLayer, prefix: str
) -> None:
    document = json.loads(run("stats", "--json", "--sample", "0", "--scan-count", "1"))

    lifetime_max = document["lifetime_seconds"]["max"]
    assert document == expected_document(prefix, lifetime_max)


def test_stats_sizes_a_sample_of_sessions_with_memory_usage(known: RedisLayer) -> None:
    memory = json.loads(run("stats", "--json", "--sample", "5"))["memory_bytes"]

    assert memory["sessions"] == 5
    # A 50-byte payload takes more than 50 bytes of Redis memory, and the
    # figures are ordered.
    assert 50 < memory["p50"] <= memory["p90"] <= memory["p99"] <= memory["max"]
    assert memory["estimated_total"] == pytest.approx(memory["mean"] * 20, abs=20)


def test_stats_of_an_empty_store_has_no_distributions() -> None:
    document = json.loads(run("stats", "--json"))

    assert document["live_sessions"] == 0
    assert document["tombstones"] == 0
    assert document["payload_bytes"] is None
    assert document["lifetime_seconds"] is None
    assert document["memory_bytes"] is None


def test_stats_counts_names_without_a_ttl_apart(
    prefix: str, raw_redis: redis.Redis
) -> None:
    layer = RedisLayer(prefix=prefix)
    write(layer, [(10, 600)])
    raw_redis.set(layer.data_name("forever0000"), b"y" * 20)

    document = json.loads(run("stats", "--json", "--sample", "0"))

    assert document["live_sessions"] == 2
    assert document["without_expiry"] == 1
    assert document["payload_bytes"]["max"] == 20
    assert document["lifetime_seconds"]["max"] == 600


def test_stats_ignores_other_prefixes_foreign_names_and_other_types(
    prefix: str, raw_redis: redis.Redis
) -> None:
    layer = RedisLayer(prefix=prefix)
    write(layer, [(10, 600)])
    raw_redis.set(f"{prefix}other:{{x}}", b"decoy", ex=60)
    raw_redis.set(f"{prefix}{{x}}y", b"decoy", ex=60)
    raw_redis.rpush(layer.data_name("alist0000"), b"decoy")
    raw_redis.set(prefix[:-1] + "X{abc}", b"decoy", ex=60)

    document = json.loads(run("stats", "--json", "--sample", "0"))

    assert (document["live_sessions"], document["tombstones"]) == (1, 0)


def test_stats_draws_aligned_histograms_with_a_total_line(
    known: RedisLayer, prefix: str, redis_url: str
) -> None:
    output = run("stats", "--sample", "0")

    longest = stats.format_seconds(
        json.loads(run("stats", "--json"))["lifetime_seconds"]["max"]
    )
    expected = f"""\
Sessions under the prefix {prefix!r} in Redis at {redis_url}.

  Live sessions:  20
  Tombstones:      3
  Indexed users:   0

Payload size: p50 50 B, p90 {stats.format_bytes(upper(1000))}, p99 4.9 KiB, max 4.9 KiB
      0 B to 128 B  ████████████████████████████████████████  10
    128 B to 256 B                                             0
    256 B to 512 B  ████████████████████████████               7
    512 B to 1 KiB  ████████                                   2
    1 KiB to 2 KiB                                             0
    2 KiB to 4 KiB                                             0
   4 KiB to 16 KiB  ████                                       1
  16 KiB to 64 KiB                                             0
    64 KiB or more                                             0
             total                                            20

Remaining lifetime: p50 {stats.format_seconds(upper(300_000))}, \
p90 {stats.format_seconds(upper(300_000))}, p99 {longest}, max {longest}
     0 s to 1 min                                             0
  1 min to 10 min                                             0
    10 min to 1 h                                             0
       1 h to 6 h  ████████                                   2
       6 h to 1 d  ████████████████████████████               7
       1 d to 3 d                                             0
       3 d to 7 d  ████████████████████████████████████████  10
      7 d to 14 d  ████                                       1
     14 d to 30 d                                             0
     30 d or more                                             0
            total                                            20
"""
    assert output == expected


def test_histogram_bars_end_in_eighths_and_fall_back_to_hashes() -> None:
    assert stats._bar(0, 10, unicode=True) == ""
    assert stats._bar(10, 10, unicode=True) == "█" * 40
    assert stats._bar(1, 10, unicode=True) == "████"
    assert stats._bar(1, 3, unicode=True) == "█" * 13 + "▎"
    # A count far below the largest still shows.
    assert stats._bar(1, 1_000_000, unicode=True) == "▏"
    assert stats._bar(1, 3, unicode=False) == "#" * 13
    assert stats._bar(1, 1_000_000, unicode=False) == "#"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (1023, "1,023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024 * 1024, "5 MiB"),
        (3 * 1024**3, "3 GiB"),
    ],
)
def test_sizes_are_shown_in_binary_units(value: int, text: str) -> None:
    assert stats.format_bytes(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (600, "10 min"),
        (3600 + 125, "1 h 2 min"),
        (86400 * 13 + 3600 * 23 + 59, "13 d 23 h"),
        (86400 + 5, "1 d"),
    ],
)
def test_lifetimes_are_shown_in_two_units_at_most(seconds: int, text: str) -> None:
    assert stats.format_seconds(seconds) == text


def test_every_value_lies_within_the_bounds_of_its_bucket_at_most_1_percent_wide() -> (
    None
):
    values = [*range(10_000), *range(10_000, 10**9, 9_973), 2**31, 10**12]
    for value in values:
        low, high = stats.bucket_bounds(stats.bucket_of(value))
        assert low <= value <= high
        assert high - low <= max(1, math.ceil(low * 0.0101)), value
    # Below 100 every value has a bucket of its own: exact figures.
    assert all(stats.bucket_bounds(stats.bucket_of(v)) == (v, v) for v in range(100))


def test_the_script_and_python_agree_on_buckets(prefix: str) -> None:
    layer = RedisLayer(prefix=prefix)
    sizes = [0, 1, 99, 100, 101, 1000, 4095, 65536, 100_000]
    write(layer, [(size, 600) for size in sizes])

    batches = list(layer.measure())

    assert sorted(b for batch in batches for b in batch.sizes) == sorted(
        stats.bucket_of(size) for size in sizes
    )


# --- Cluster ----------------------------------------------------------------


def test_stats_on_cluster_counts_sessions_per_primary(
    cluster: redis.cluster.RedisCluster, prefix: str
) -> None:
    layer = RedisLayer()
    write(layer, [(100, 600)] * 40)
    RedisSessionStore().destroy("session0000")
    expected: dict[str, int] = {}
    for number in range(1, 40):
        node = cluster.get_node_from_key(layer.data_name(f"session{number:04d}"))
        name = f"{node.host}:{node.port}"
        expected[name] = expected.get(name, 0) + 1

    document = json.loads(run("stats", "--json", "--sample", "3"))

    assert document["live_sessions"] == 39
    assert document["tombstones"] == 1
    assert document["primaries"] == dict(sorted(expected.items()))
    assert len(document["primaries"]) == 3
    assert document["payload_bytes"]["max"] == 100
    assert document["memory_bytes"]["sessions"] == 3
    assert "Live sessions per primary:" in run("stats")


# --- Failures and Ctrl-C -------------------------------------------------------


def test_a_negative_sample_is_an_error() -> None:
    with pytest.raises(CommandError) as excinfo:
        run("stats", "--sample", "-1")

    assert str(excinfo.value) == "--sample must be at least 0, not -1."


def test_ctrl_c_during_stats_says_how_far_it_got(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(RedisLayer(prefix=prefix), [(10, 600)] * 30)
    measured: list[int] = []
    measure = RedisLayer.measure

    def interrupted(layer: RedisLayer, **kwargs: Any) -> Iterator[Measured]:
        for batch in measure(layer, **kwargs):
            if len(measured) == 2:
                raise KeyboardInterrupt
            measured.append(len(batch.sizes))
            yield batch

    monkeypatch.setattr(RedisLayer, "measure", interrupted)

    with pytest.raises(CommandError) as excinfo:
        run("stats", "--scan-count", "2")

    assert str(excinfo.value) == (
        f"Interrupted: measured {sum(measured)} sessions so far. Nothing was "
        "changed; run the command again for the figures."
    )
    assert excinfo.value.returncode == 130


# --- show ------------------------------------------------------------------------


def test_show_prints_the_id_lifetime_size_and_user_never_the_key(
    prefix: str,
) -> None:
    store = RedisSessionStore(prefix=prefix)
    store.create(KEY, {"_auth_user_id": "42", "cart": [1, 2]}, ttl=7200)

    output = run("show", KEY)

    size = len(RedisLayer(prefix=prefix).read(KEY) or b"")
    lines = output.splitlines()
    assert lines[0] == f"id:                {store.session_id(KEY)}"
    assert lines[1] == "state:             live"
    assert lines[2] in {
        "expires in:        1 h 59 min (7,199 s)",
        "expires in:        2 h (7,200 s)",
    }
    assert lines[3:6] == [
        f"size:              {size} bytes",
        "user:              42",
        "tombstone:         none",
    ]
    # The user's index entry, written with the session.
    assert [line.split(":")[0] for line in lines[6:]] == [
        "index created",
        "index last seen",
        "index ip",
        "index user agent",
    ]
    if store.session_id(KEY) != KEY:
        assert KEY not in output


def test_show_by_id_with_decode_prints_the_data(prefix: str) -> None:
    store = RedisSessionStore(prefix=prefix)
    store.create(KEY, {"cart": [1, 2], "_auth_user_id": "42"}, ttl=7200)

    output = run("show", store.session_id(KEY), "--decode")

    assert "user:              42\ntombstone:         none\n" in output
    assert output.endswith(
        "data:\n"
        "  {\n"
        '    "_auth_user_id": "42",\n'
        '    "cart": [\n'
        "      1,\n"
        "      2\n"
        "    ]\n"
        "  }\n"
    )


def test_show_of_an_anonymous_session_says_so(prefix: str) -> None:
    RedisSessionStore(prefix=prefix).create(KEY, {"n": 1}, ttl=60)

    assert "user:        anonymous\n" in run("show", KEY)


def test_show_of_a_destroyed_session_shows_its_tombstone(prefix: str) -> None:
    store = RedisSessionStore(prefix=prefix, tombstone_seconds=300)
    store.create(KEY, {"n": 1}, ttl=60)
    store.destroy(KEY)

    output = run("show", KEY)

    assert output.splitlines()[1:] == [
        "state:      destroyed (logged out)",
        "tombstone:  refuses writes for 4 min 59 s more",
    ]


def test_show_of_an_unknown_session_is_an_error_naming_the_id(prefix: str) -> None:
    session_id = RedisLayer(prefix=prefix).session_id(KEY)

    with pytest.raises(CommandError) as excinfo:
        run("show", KEY)

    assert str(excinfo.value) == (
        f"No session and no tombstone has the id {session_id} under the prefix "
        f"{prefix!r}."
    )


@pytest.mark.parametrize("text", ["", "}abc", "\udcff"])
def test_show_of_something_that_is_no_key_never_echoes_it(text: str) -> None:
    with pytest.raises(CommandError) as excinfo:
        run("show", text)

    assert str(excinfo.value) == (
        "KEY_OR_ID is neither a session id ('#' and 43 characters) nor a session key."
    )


def test_show_of_a_name_holding_a_list_says_it_is_not_a_session(
    prefix: str, raw_redis: redis.Redis
) -> None:
    raw_redis.rpush(RedisLayer(prefix=prefix).data_name(KEY), b"x")

    assert run("show", KEY).splitlines()[1:] == [
        "state:      not a session: the name holds another type",
        "tombstone:  none",
    ]


def test_stats_memory_does_not_grow_with_the_store(
    prefix: str, raw_redis: redis.Redis
) -> None:
    # Batches of about 100 names, so that both stores outgrow the window of
    # recent names that drops SCAN's repeats (20 batches at most).
    layer = RedisLayer(prefix=prefix, scan_count=100)
    peaks: list[int] = []
    written = 0
    for count in (5_000, 20_000):
        pipeline = raw_redis.pipeline(transaction=False)
        for number in range(written, count):
            name = layer.data_name(f"session{number:06d}")
            pipeline.set(name, b"x" * (number % 500), px=600_000 + number)
        pipeline.execute()
        written = count
        tracemalloc.start()
        try:
            figures = stats.collect(layer, sample=100)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert figures.live_sessions == count
        peaks.append(peak)
    # One SCAN batch and fixed histograms: four times the sessions, about the
    # same peak (keeping every figure would grow fourfold).
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_stats_counts_a_name_scan_repeats_once(
    known: RedisLayer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = measure_repeating_names(monkeypatch)

    document = json.loads(run("stats", "--json", "--sample", "0", "--scan-count", "4"))

    assert pages, "no batch named a session"
    lifetime_max = document["lifetime_seconds"]["max"]
    assert document == expected_document(prefix, lifetime_max)


def test_stats_measures_a_batch_whose_names_hold_a_line_break_exactly(
    known: RedisLayer,
    prefix: str,
    raw_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The names come joined with "\n": these split into more parts than names,
    # so the batch is asked for again with its names as a list. Split at the
    # "\n", the name that is not UTF-8 would leave a part that is, and its
    # size would be counted.
    raw_redis.set(f"{prefix}{{line\nbreak}}", b"x" * 300, ex=300_000)
    raw_redis.set(prefix.encode() + b"{\xff\nx}", b"x" * 300, ex=60)
    raw_redis.set(f"{prefix}{{gone\n}}:tombstone", b"1", ex=60)
    forms: list[int] = []
    run_script = scripts.run

    def recording(client: Any, script: str, keys: Any, args: Any) -> Any:
        if script is scripts.MEASURE:
            forms.append(args[3])
        return run_script(client, script, keys, args)

    monkeypatch.setattr(scripts, "run", recording)

    document = json.loads(run("stats", "--json", "--sample", "0"))

    assert forms == [1, 0]
    expected = expected_document(prefix, document["lifetime_seconds"]["max"])
    expected["live_sessions"] = 21
    expected["tombstones"] = 4
    expected["payload_bytes"]["histogram"][2]["count"] = 8
    expected["payload_bytes"]["p50"] = upper(300)
    expected["lifetime_seconds"]["histogram"][6]["count"] = 11
    assert document == expected


def test_stats_skips_names_that_are_not_utf8(
    prefix: str, raw_redis: redis.Redis
) -> None:
    write(RedisLayer(prefix=prefix), [(10, 600), (20, 600)])
    raw_redis.set(prefix.encode() + b"{\xff\xfe}", b"x" * 5000, ex=60)

    document = json.loads(run("stats", "--json", "--sample", "0"))

    assert document["live_sessions"] == 2
    assert document["payload_bytes"]["histogram"][0]["count"] == 2


def test_stats_leaves_memory_out_where_memory_usage_is_refused(
    known: RedisLayer,
    raw_redis: redis.Redis,
    redis_url: str,
    session_redis: dict[str, Any],
) -> None:
    user = f"stats-{uuid.uuid4().hex[:8]}"
    raw_redis.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-memory"
    )
    try:
        host_port = redis_url.split("://", 1)[1]
        session_redis["URL"] = f"redis://{user}:pw@{host_port}"
        clients.close()  # the next command connects as the new user

        document = json.loads(run("stats", "--json", "--sample", "5"))
        text = run("stats", "--sample", "5")
    finally:
        raw_redis.execute_command("ACL", "DELUSER", user)
        clients.close()

    assert document["memory_bytes"] is None
    assert document["live_sessions"] == 20
    assert "MEMORY USAGE" not in text


def test_show_in_migrate_mode_does_not_move_a_plain_session(
    session_redis: dict[str, Any], prefix: str, raw_redis: redis.Redis
) -> None:
    session_redis["HASH_IDS"] = "migrate"
    RedisSessionStore(hash_ids=False).create(KEY, {"n": 1}, ttl=60)

    output = run("show", KEY)

    assert output.splitlines()[1] == "state:       live"
    assert raw_redis.exists(f"{prefix}{{{KEY}}}") == 1


def _index_three_users(store: RedisSessionStore) -> None:
    """Four sessions of three users, one anonymous session, one ended user."""
    for number, user in enumerate(["1", "1", "2", "{3}:x"]):
        data = {"_auth_user_id": user, "n": number}
        assert store.create(f"user{number:04d}" + "a" * 24, data, ttl=600)
    assert store.create("anon" + "a" * 28, {"n": 9}, ttl=600)
    assert store.create("gone" + "a" * 28, {"_auth_user_id": "4"}, ttl=600)
    assert store.logout_user("4") == 1


def test_stats_counts_the_users_the_index_holds(
    session_redis: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    _index_three_users(RedisSessionStore())
    # Counted by name, whatever the type: an index may become a sorted set.
    raw_redis.zadd(f"{prefix}{{u:NQ}}:sessions", {"#x": 1})
    # Not an index: another prefix's, and a name that only starts like one.
    raw_redis.set(f"other-{prefix}{{u:MQ}}:sessions", b"x")
    raw_redis.set(f"{prefix}{{u:MQ}}:sessions:extra", b"x")

    document = json.loads(run("stats", "--json", "--sample", "0"))

    assert document["indexed_users"] == 4
    assert "  Indexed users:  4\n" in run("stats", "--sample", "0")


def test_stats_says_there_is_no_index_when_user_index_is_off(
    session_redis: dict[str, Any],
) -> None:
    _index_three_users(RedisSessionStore())
    session_redis["USER_INDEX"] = False

    assert json.loads(run("stats", "--json"))["indexed_users"] is None
    assert "no per-user index" in run("stats")


def test_stats_on_cluster_counts_the_users_of_every_primary(
    cluster: redis.cluster.RedisCluster, prefix: str
) -> None:
    store = RedisSessionStore()
    for user in range(12):
        assert store.create(f"{user:032d}", {"_auth_user_id": str(user)}, ttl=600)
    layer = RedisLayer(prefix=prefix)
    slots = {
        cluster.get_node_from_key(layer._index_name(str(user))).name
        for user in range(12)
    }
    assert len(slots) > 1  # the users' indexes are spread over primaries

    assert json.loads(run("stats", "--json"))["indexed_users"] == 12
