"""The store API, on real Redis and on fakeredis, through sync and asyncio methods."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from django.test import override_settings

from django_redis_sessions.bulk import RecentKeys
from django_redis_sessions.keys import (
    glob_escape,
    scan_pattern,
)
from django_redis_sessions.redis_layer import RedisLayer, ttl_milliseconds
from tests.utils import Keys, data_name, tombstone_name


def test_create_writes_one_data_key_and_get_reads_it(
    store: Any, store_keys: Keys, prefix: str
) -> None:
    assert store.create("abcdefgh", {"cat": "dog"}, ttl=60) is True
    assert store.get("abcdefgh") == {"cat": "dog"}
    assert store_keys() == {data_name(prefix, "abcdefgh")}


def test_create_refuses_a_live_key(store: Any, store_keys: Keys) -> None:
    store.create("abcdefgh", {"first": 1}, ttl=60)
    assert store.create("abcdefgh", {"second": 2}, ttl=60) is False
    assert store.get("abcdefgh") == {"first": 1}


def test_create_refuses_a_tombstoned_key(
    store: Any, store_keys: Keys, prefix: str
) -> None:
    store.create("abcdefgh", {"a": 1}, ttl=60)
    assert store.destroy("abcdefgh") is True
    assert store.create("abcdefgh", {"a": 2}, ttl=60) is False
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}


def test_set_upserts_a_live_or_missing_key(store: Any) -> None:
    assert store.set("abcdefgh", {"v": 1}, ttl=60) is True
    assert store.set("abcdefgh", {"v": 2}, ttl=60) is True
    assert store.get("abcdefgh") == {"v": 2}


def test_set_is_refused_while_the_tombstone_lives(
    store: Any, store_keys: Keys, prefix: str
) -> None:
    store.set("abcdefgh", {"v": 1}, ttl=60)
    store.destroy("abcdefgh")
    assert store.set("abcdefgh", {"v": 2}, ttl=60) is False
    assert store.get("abcdefgh") is None
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}


def test_update_writes_only_a_live_session(store: Any, store_keys: Keys) -> None:
    assert store.update("abcdefgh", {"v": 1}, ttl=60) is False
    assert store_keys() == set()
    store.create("abcdefgh", {"v": 1}, ttl=60)
    assert store.update("abcdefgh", {"v": 2}, ttl=60) is True
    assert store.get("abcdefgh") == {"v": 2}


def test_update_after_destroy_is_refused_even_when_the_tombstone_lapsed(
    store: Any, store_keys: Keys, raw: redis.Redis, prefix: str
) -> None:
    store.create("abcdefgh", {"v": 1}, ttl=60)
    store.destroy("abcdefgh")
    assert store.update("abcdefgh", {"v": 2}, ttl=60) is False
    raw.delete(tombstone_name(prefix, "abcdefgh"))  # the tombstone lapses
    assert store.update("abcdefgh", {"v": 3}, ttl=60) is False
    assert store_keys() == set()


def test_touch_resets_the_ttl_of_a_live_session(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    store.create("abcdefgh", {"v": 1}, ttl=10)
    assert store.touch("abcdefgh", 1000) is True
    assert 999_000 < raw.pttl(data_name(prefix, "abcdefgh")) <= 1_000_000


def test_touch_after_destroy_creates_nothing_and_keeps_the_tombstone_ttl(
    store: Any, store_keys: Keys, raw: redis.Redis, prefix: str
) -> None:
    store.create("abcdefgh", {"v": 1}, ttl=60)
    store.destroy("abcdefgh")
    raw.pexpire(tombstone_name(prefix, "abcdefgh"), 5000)
    assert store.touch("abcdefgh", 3600) is False
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}
    assert raw.pttl(tombstone_name(prefix, "abcdefgh")) <= 5000


def test_touch_without_ttl_uses_ttl_seconds(
    make_store: Callable[..., Any], raw: redis.Redis, prefix: str
) -> None:
    store = make_store(ttl_seconds=777)
    store.create("abcdefgh", {"v": 1}, ttl=10)
    assert store.touch("abcdefgh") is True
    assert 776_000 < raw.pttl(data_name(prefix, "abcdefgh")) <= 777_000


def test_destroy_leaves_a_tombstone_for_tombstone_seconds(
    make_store: Callable[..., Any], store_keys: Keys, raw: redis.Redis, prefix: str
) -> None:
    store = make_store(tombstone_seconds=42)
    store.create("abcdefgh", {"v": 1}, ttl=60)
    assert store.destroy("abcdefgh") is True
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}
    assert 41_000 < raw.pttl(tombstone_name(prefix, "abcdefgh")) <= 42_000


def test_destroy_of_an_unknown_key_returns_false_and_still_tombstones(
    store: Any, store_keys: Keys, prefix: str
) -> None:
    assert store.destroy("abcdefgh") is False
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}


def test_exists_is_a_bool_and_a_tombstone_is_not_a_session(store: Any) -> None:
    assert store.exists("abcdefgh") is False
    store.create("abcdefgh", {}, ttl=60)
    assert store.exists("abcdefgh") is True
    store.destroy("abcdefgh")
    assert store.exists("abcdefgh") is False


@pytest.mark.parametrize(
    ("seconds", "milliseconds"),
    [(1.2345, 1235), (0.0001, 1), (86400, 86_400_000), (0, 0), (-3.5, 0)],
)
def test_ttls_are_rounded_up_to_whole_milliseconds(
    seconds: float, milliseconds: int
) -> None:
    assert ttl_milliseconds(seconds) == milliseconds


@pytest.mark.parametrize("ttl", [1.2345, 0.0001, 86400])
def test_a_fractional_ttl_reaches_redis_in_whole_milliseconds(
    store: Any, raw: redis.Redis, prefix: str, ttl: float
) -> None:
    """Redis refuses a fractional expiry. The exact rounding is checked above:
    a PTTL read after the write can only bound it, by the time in between."""
    assert store.set("abcdefgh", {"v": 1}, ttl=ttl) is True
    high = ttl_milliseconds(ttl)
    assert high - 1000 < raw.pttl(data_name(prefix, "abcdefgh")) <= high


@pytest.mark.parametrize("ttl", [0, -1, -0.5])
def test_a_ttl_that_is_not_positive_destroys_instead_of_writing(
    store: Any, store_keys: Keys, prefix: str, ttl: float
) -> None:
    store.create("abcdefgh", {"v": 1}, ttl=60)
    assert store.set("abcdefgh", {"v": 2}, ttl=ttl) is False
    assert store.update("abcdefgh", {"v": 2}, ttl=ttl) is False
    assert store.touch("abcdefgh", ttl) is False
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}


def test_ttl_comes_from_session_expiry_seconds(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    store.set("abcdefgh", {"_session_expiry": 14 * 86400})
    assert raw.pttl(data_name(prefix, "abcdefgh")) > 14 * 86400 * 1000 - 5000


def test_ttl_comes_from_an_absolute_session_expiry(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    expires = datetime.now(timezone.utc) + timedelta(hours=2)
    store.set("abcdefgh", {"_session_expiry": expires.isoformat()})
    assert 7_190_000 < raw.pttl(data_name(prefix, "abcdefgh")) <= 7_200_000


@override_settings(SESSION_COOKIE_AGE=1234)
def test_expiry_zero_means_browser_close_and_uses_the_cookie_age(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    store.set("abcdefgh", {"_session_expiry": 0})
    assert 1_233_000 < raw.pttl(data_name(prefix, "abcdefgh")) <= 1_234_000


def test_an_absolute_expiry_in_the_past_destroys(
    store: Any, store_keys: Keys, prefix: str
) -> None:
    past = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat()
    assert store.set("abcdefgh", {"_session_expiry": past}) is False
    assert store_keys() == {tombstone_name(prefix, "abcdefgh")}


def test_data_without_expiry_falls_back_to_ttl_seconds(
    make_store: Callable[..., Any], raw: redis.Redis, prefix: str
) -> None:
    make_store(ttl_seconds=300).set("abcdefgh", {"v": 1})
    assert 299_000 < raw.pttl(data_name(prefix, "abcdefgh")) <= 300_000


def test_ttl_seconds_zero_refuses_data_without_expiry(
    make_store: Callable[..., Any], store_keys: Keys
) -> None:
    store = make_store(ttl_seconds=0)
    with pytest.raises(ValueError, match=r"SESSION_REDIS\['TTL_SECONDS'\] is 0"):
        store.set("abcdefgh", {"v": 1})
    assert store_keys() == set()


def test_a_key_alive_past_its_absolute_expiry_reads_as_missing(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    payload = json.dumps({"_session_expiry": past, "v": 1}).encode()
    raw.set(data_name(prefix, "abcdefgh"), payload, ex=3600)  # drifted TTL
    assert store.get("abcdefgh") is None
    assert list(store.all()) == []


@pytest.mark.parametrize(
    "payload", [b"\x80\x81not json", b"[1, 2, 3]", b'"a string"', b"{broken"]
)
def test_a_corrupt_or_foreign_payload_reads_as_missing_and_is_logged(
    store: Any,
    raw: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
) -> None:
    raw.set(data_name(prefix, "abcdefgh"), payload, ex=60)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert store.get("abcdefgh") is None
    assert [r.name for r in caplog.records] == ["django.security.SuspiciousSession"]


@pytest.mark.parametrize(
    "key",
    ["", "}abcdefgh", "\udcff-surrogate", None, 12345678],
)
def test_a_key_that_cannot_name_a_session_reads_as_missing(
    store: Any, store_keys: Keys, key: Any
) -> None:
    assert store.get(key) is None
    assert store.exists(key) is False
    assert store.destroy(key) is False
    assert store.touch(key, 60) is False
    with pytest.raises(ValueError, match="cannot name a session"):
        store.create(key, {"v": 1}, ttl=60)
    assert store_keys() == set()


@pytest.mark.parametrize(
    "key",
    ["a*b?[c]", "{brace}", "nul\x00byte", "ключ-сессии", "k" * 10_000, "a\\b"],
)
def test_unusual_keys_round_trip_without_a_redis_error(
    store: Any, store_keys: Keys, key: str, prefix: str
) -> None:
    assert store.get(key) is None
    assert store.create(key, {"v": key[:10]}, ttl=60) is True
    assert store.get(key) == {"v": key[:10]}
    assert dict(store.all()) == {store.session_id(key): {"v": key[:10]}}
    assert store.count() == 1
    assert store.destroy(key) is True
    assert store_keys() == {tombstone_name(prefix, key)}


def test_cycle_moves_the_data_and_destroys_the_old_key(
    store: Any, layer: Any, store_keys: Keys, prefix: str
) -> None:
    store.create("oldoldold", {"v": 1}, ttl=60)
    outcome = layer.cycle("oldoldold", "newnewnew", b'{"v":1}', 60)
    assert outcome.name == "WRITTEN"
    assert store.get("newnewnew") == {"v": 1}
    assert store_keys() == {
        data_name(prefix, "newnewnew"),
        tombstone_name(prefix, "oldoldold"),
    }


def test_cycle_to_a_taken_key_changes_nothing(
    store: Any, layer: Any, store_keys: Keys, prefix: str
) -> None:
    store.create("oldoldold", {"v": 1}, ttl=60)
    store.create("newnewnew", {"other": 1}, ttl=60)
    assert layer.cycle("oldoldold", "newnewnew", b'{"v":1}', 60).name == "EXISTS"
    assert store.get("oldoldold") == {"v": 1}
    assert store.get("newnewnew") == {"other": 1}


# --- Bulk operations ----------------------------------------------------------


def fill(store: Any, count: int, *, start: int = 0) -> list[str]:
    keys = [f"session{n:06d}" for n in range(start, start + count)]
    for key in keys:
        store.create(key, {"n": key}, ttl=600)
    return keys


def test_count_all_and_clear_see_only_live_sessions(
    make_store: Callable[..., Any], store_keys: Keys, prefix: str
) -> None:
    store = make_store(scan_count=7)
    keys = fill(store, 40)
    for key in keys[:5]:
        store.destroy(key)
    assert store.count() == 35
    assert dict(store.all()) == {store.session_id(k): {"n": k} for k in keys[5:]}
    assert store.clear() == 35
    assert store.count() == 0
    assert store_keys() == {tombstone_name(prefix, key) for key in keys[:5]}


def test_clear_does_not_rearm_tombstones(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    fill(store, 3)
    store.destroy("session000000")
    raw.pexpire(tombstone_name(prefix, "session000000"), 5000)
    assert store.clear() == 2
    assert 0 < raw.pttl(tombstone_name(prefix, "session000000")) <= 5000


def test_keys_outside_the_prefix_are_never_touched(
    make_store: Callable[..., Any], raw: redis.Redis, prefix: str
) -> None:
    store = make_store()
    fill(store, 3)
    decoys = {
        prefix[:-1] + "{session000000}",  # a leading substring of the prefix
        prefix + "x{session000000}",  # the prefix followed by something else
        prefix + "session000000",  # no hash tag: not this store's layout
        "other:" + prefix + "{session000000}",
    }
    for decoy in decoys:
        raw.set(decoy, b"{}", ex=600)
    try:
        assert store.count() == 3
        assert store.clear() == 3
        assert {key for key in decoys if raw.exists(key)} == decoys
    finally:
        raw.delete(*decoys)


def test_foreign_values_under_the_prefix_are_skipped_and_cleared(
    store: Any, raw: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """a list, a hash or a name that is not UTF-8 never crashes."""
    keys = fill(store, 2)
    raw.rpush(data_name(prefix, "a-list"), b"x")
    raw.hset(data_name(prefix, "a-hash"), b"x", b"y")
    raw.set(prefix.encode() + b"{\xff\xfe}", b"{}", ex=600)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert store.get("a-list") is None
        assert store.get("a-hash") is None
    assert len(caplog.records) == 2
    assert store.exists("a-list") is False
    assert store.count() == 2
    assert dict(store.all()) == {store.session_id(k): {"n": k} for k in keys}
    # clear deletes every name of this store's layout, whatever it holds.
    assert store.clear() == 5
    assert store.count() == 0


def test_a_create_already_over_writes_nothing(store: Any, store_keys: Keys) -> None:
    assert store.create("abcdefgh", {"v": 1}, ttl=0) is False
    assert store_keys() == set()


def test_cycle_of_a_session_ended_elsewhere_writes_nothing(
    store: Any, layer: Any, store_keys: Keys, prefix: str
) -> None:
    store.create("oldoldold", {"v": 1}, ttl=60)
    store.destroy("oldoldold")
    assert layer.cycle("oldoldold", "newnewnew", b'{"v":1}', 60).name == "MISSING"
    assert store_keys() == {tombstone_name(prefix, "oldoldold")}


def test_a_create_run_twice_with_the_same_payload_reports_written_both_times(
    store: Any, store_keys: Keys, prefix: str
) -> None:
    """What redis-py's retry after a lost reply does to a create."""
    assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert store.create("abcdefgh", {"v": 2}, ttl=60) is False
    assert store.get("abcdefgh") == {"v": 1}
    assert store_keys() == {data_name(prefix, "abcdefgh")}


@pytest.mark.parametrize(
    ("glob_prefix", "lookalike"),
    [
        ("a*:", "aXYZ:"),
        ("b?:", "bQ:"),
        ("c[x]:", "cx:"),
        ("d\\:", "d:"),
        ("e[!a]*:", "eb:"),
    ],
)
def test_a_prefix_with_glob_characters_matches_only_itself(
    make_store: Callable[..., Any], glob_prefix: str, lookalike: str, prefix: str
) -> None:
    # ``lookalike`` is what the prefix would match as an unescaped pattern.
    mine = make_store(prefix=prefix + glob_prefix)
    other = make_store(prefix=prefix + lookalike)
    fill(mine, 2)
    fill(other, 3, start=10)
    assert mine.count() == 2
    assert sorted(key for key, _ in mine.all()) == sorted(
        mine.session_id(key) for key in ["session000000", "session000001"]
    )
    assert mine.clear() == 2
    assert other.count() == 3


def test_scan_pattern_escapes_every_glob_character() -> None:
    assert glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert scan_pattern("s*:") == "s\\*:{*}"


class ScanProxy:
    """A client whose SCAN, MGET and UNLINK can be made to misbehave."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.repeat_previous_batch = False
        self.vanish_before_mget: list[bytes] = []
        self.fail_unlink_after = -1
        self._previous: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        # Every command comes here: the store sends each through
        # execute_command.
        name = args[0]
        if name == "MGET":
            for key in self.vanish_before_mget:
                self.client.delete(key)
        elif name == "UNLINK":
            if self.fail_unlink_after == 0:
                raise redis.ConnectionError("Connection lost half-way.")
            self.fail_unlink_after -= 1
        reply = self.client.execute_command(*args, **options)
        if name != "SCAN":
            return reply
        cursor, page = reply
        keys = [key for key in page if isinstance(key, bytes)]
        if self.repeat_previous_batch:
            # SCAN may return a key again, within a batch or in the next one.
            keys = keys + keys[:1] + self._previous
        self._previous = keys
        return cursor, keys

    def mget(self, keys: list[bytes]) -> Any:
        return self.execute_command("MGET", *keys)

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the store's walks send SCAN through execute_command")

    def unlink(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the store's walks send UNLINK through execute_command")


@pytest.fixture
def proxied(
    backend_name: str, raw: redis.Redis, prefix: str, store_raw: Any
) -> tuple[Any, ScanProxy]:
    from django_redis_sessions.store import RedisSessionStore

    proxy = ScanProxy(raw)
    return RedisSessionStore(prefix=prefix, scan_count=5, client=lambda: proxy), proxy


def test_duplicates_from_scan_are_counted_once(
    proxied: tuple[Any, ScanProxy],
) -> None:
    store, proxy = proxied
    keys = fill(store, 23)
    proxy.repeat_previous_batch = True
    assert store.count() == 23
    assert sorted(key for key, _ in store.all()) == sorted(map(store.session_id, keys))
    assert store.clear() == 23


def test_all_stays_aligned_when_keys_vanish_between_scan_and_mget(
    proxied: tuple[Any, ScanProxy], prefix: str
) -> None:
    store, proxy = proxied
    keys = fill(store, 12)
    vanished = {keys[1], keys[6], keys[11]}
    proxy.vanish_before_mget = [data_name(prefix, key).encode() for key in vanished]
    assert dict(store.all()) == {
        store.session_id(k): {"n": k} for k in keys if k not in vanished
    }


def test_a_clear_that_fails_half_way_raises_and_a_second_run_finishes(
    proxied: tuple[Any, ScanProxy], store_keys: Keys
) -> None:
    store, proxy = proxied
    fill(store, 30)
    proxy.fail_unlink_after = 2
    with pytest.raises(redis.ConnectionError):
        store.clear()
    remaining = store.count()
    assert 0 < remaining < 30
    proxy.fail_unlink_after = -1  # the connection is back
    assert store.clear() == remaining
    assert store_keys() == set()


def test_the_layer_clears_batch_by_batch(
    make_store: Callable[..., Any],
) -> None:
    store = make_store(scan_count=10)
    layer = make_store(RedisLayer, scan_count=10)
    fill(store, 25)
    batches = list(layer.scan(remember=0, sessions_only=False))
    assert sum(len(names) for names in batches) == 25
    assert len(batches) >= 2
    deleted = [count for count, _ in layer.clear_batches()]
    assert sum(deleted) == 25
    assert len(deleted) >= 2
    assert store.count() == 0


def test_recent_keys_drops_repeats_within_and_across_batches() -> None:
    recent = RecentKeys(2)
    assert recent.fresh([b"a", b"b", b"a"]) == [b"a", b"b"]
    assert recent.fresh([b"b", b"c"]) == [b"c"]
    assert recent.fresh([b"c", b"c", b"d"]) == [b"d"]
    assert recent.fresh([b"a", b"e"]) == [b"e"]
    # Empty pages do not push remembered batches out.
    assert recent.fresh([]) == []
    assert recent.fresh([b"d", b"e"]) == []


def test_recent_keys_forgets_old_batches_so_memory_stays_flat() -> None:
    recent = RecentKeys(2)
    for n in range(10):
        recent.fresh([bytes([n])])
    # At least the last two batches are remembered, never more than four.
    assert recent.fresh([bytes([8]), bytes([9])]) == []
    assert recent.fresh([bytes([0]), bytes([1]), bytes([2])]) == [
        bytes([0]),
        bytes([1]),
        bytes([2]),
    ]


def test_recent_keys_with_no_window_passes_pages_through() -> None:
    recent = RecentKeys(0)
    assert recent.fresh([b"a", b"a"]) == [b"a", b"a"]
    assert recent.fresh([b"a"]) == [b"a"]


@override_settings(USE_TZ=False, TIME_ZONE="America/New_York")
def test_a_naive_expiry_written_without_time_zones_is_local_time(
    store: Any, raw: redis.Redis, prefix: str
) -> None:
    from django.utils import timezone as django_timezone

    expires = django_timezone.now() + timedelta(hours=1)  # naive, New York time
    assert django_timezone.is_naive(expires)
    store.set("abcdefgh", {"_session_expiry": expires.isoformat()})
    assert 3_590_000 < raw.pttl(data_name(prefix, "abcdefgh")) <= 3_600_000
