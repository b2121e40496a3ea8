"""The Django contract of ``SessionStore``, and the races it must survive.

``SessionContract`` is modelled on Django's own ``SessionTestsMixin``. It runs
through the sync API and, on Django 5.1 and later, again through the asyncio
twins (``aload``, ``asave``, ...), always on the real server.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.signing import JSONSerializer
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings
from django.utils import timezone

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.keys import is_cookie_key
from django_redis_sessions.payloads import CompactJSON, get_payloads
from django_redis_sessions.redis_layer import get_layer
from django_redis_sessions.store import RedisSessionStore
from tests.twins import AsyncTwins, no_sync_client, run_async
from tests.utils import Keys, data_name, needs_async_backend, tombstone_name

#: Backend attributes that stay sync in an asyncio test: no I/O behind them.
PLAIN = frozenset(
    {
        "session_key",
        "modified",
        "accessed",
        "store",
        "set_expiry",
        "get_expiry_age",
        "get_expiry_date",
        "get_expire_at_browser_close",
        "clear",
        "is_empty",
        "serializer",
    }
)


class AsyncSession(AsyncTwins):
    """A backend driven through its asyncio methods.

    Item access goes through ``aget``/``aset``, so a session loaded in a test
    is loaded by ``aload``.
    """

    def __getitem__(self, key: str) -> Any:
        value = run_async(self._target.aget(key, KeyError))
        if value is KeyError:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        run_async(self._target.aset(key, value))

    def __contains__(self, key: str) -> bool:
        return bool(run_async(self._target.ahas_key(key)))


@pytest.fixture(params=["sync", pytest.param("async", marks=needs_async_backend)])
def session_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_session(
    session_mode: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    if session_mode == "async":
        # An asyncio method that falls back to blocking I/O fails the test.
        monkeypatch.setattr(get_layer(), "_client", no_sync_client)

    def make(session_key: str | None = None) -> Any:
        session = SessionStore(session_key)
        return session if session_mode == "sync" else AsyncSession(session, plain=PLAIN)

    return make


@pytest.fixture
def session(make_session: Callable[..., Any]) -> Any:
    return make_session()


def data(prefix: str, key: str) -> str:
    return data_name(prefix, key)


def tomb(prefix: str, key: str) -> str:
    return tombstone_name(prefix, key)


def saved_key(make_session: Callable[..., Any], **data: Any) -> str:
    """The key of a new session saved with ``data``."""
    session = make_session()
    for name, value in data.items():
        session[name] = value
    session.save()
    return str(session.session_key)


# --- SessionTestsMixin, for this engine -------------------------------------------


def test_a_new_session_is_empty_and_writes_nothing(
    session: Any, redis_keys: Keys
) -> None:
    assert session.session_key is None
    assert session.load() == {}
    assert not session.modified
    assert redis_keys() == set()


def test_save_creates_a_random_key_holding_the_data(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["cat"] = "dog"
    session.save()
    key = session.session_key
    assert len(key) == 32
    assert redis_keys() == {data(prefix, key)}
    assert make_session(key)["cat"] == "dog"


def test_exists_returns_a_real_bool(
    session: Any, make_session: Callable[..., Any]
) -> None:
    session.save()
    assert session.exists(session.session_key) is True
    assert session.exists("a" * 32) is False
    assert session.exists(None) is False
    assert session.exists("") is False
    key = session.session_key
    session.delete()
    assert make_session().exists(key) is False


def test_load_of_an_unknown_key_resets_the_key_and_writes_nothing(
    make_session: Callable[..., Any], redis_keys: Keys
) -> None:
    session = make_session("unknownkey1234567890")
    assert session.load() == {}
    assert session.session_key is None
    assert redis_keys() == set()


def test_a_cookie_naming_an_unknown_key_gets_a_new_random_key(
    make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    chosen = "attacker-chosen-key-1234"
    session = make_session(chosen)
    session["user"] = 1
    session.save()
    assert session.session_key != chosen
    assert redis_keys() == {data(prefix, session.session_key)}


def test_save_after_delete_raises_update_error_and_writes_nothing(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.save()
    key = session.session_key
    other = make_session(key)
    other["a"]  # loaded
    session.delete()
    other["a"] = 2
    with pytest.raises(UpdateError):
        other.save()
    assert redis_keys() == {tomb(prefix, key)}


def test_save_must_create_on_a_taken_key_raises_create_error(
    session: Any, make_session: Callable[..., Any]
) -> None:
    session.save()
    other = make_session(session.session_key)
    other["a"] = 1
    with pytest.raises(CreateError):
        other.save(must_create=True)


def test_delete_of_an_unknown_key_is_fine(session: Any) -> None:
    session.delete("unknownkey1234567890")
    session.delete()  # no key at all
    assert session.session_key is None


def test_flush_destroys_the_session_and_drops_the_key(
    session: Any, redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.save()
    key = session.session_key
    session.flush()
    assert session.session_key is None
    assert session.is_empty()
    assert redis_keys() == {tomb(prefix, key)}


def test_cycle_key_moves_the_data_and_destroys_the_old_key_before_returning(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.save()
    old = session.session_key
    session.cycle_key()
    new = session.session_key
    assert new != old
    assert session["a"] == 1
    # Django's contract: the old key is gone when cycle_key() returns.
    assert session.exists(old) is False
    assert make_session(new)["a"] == 1
    assert redis_keys() == {data(prefix, new), tomb(prefix, old)}
    session["a"] = 2
    session.save()
    assert make_session(new)["a"] == 2


def test_a_second_store_on_the_old_key_after_cycle_key_cannot_end_the_session(
    make_session: Callable[..., Any],
) -> None:
    """A password change whose request checks a token on the old key.

    An auth package opens another ``SessionStore`` on the request's old key
    during the request, and Django's ``get_user()`` there flushes it (the
    password hash changed). The old key must already be gone, so the
    request's own save still lands.
    """
    key = saved_key(make_session, _auth_user_id="1", _auth_user_hash="old")
    session = make_session(key)
    assert session["_auth_user_hash"] == "old"
    session.cycle_key()  # update_session_auth_hash()
    session["_auth_user_hash"] = "new"
    token_check = make_session(key)
    assert token_check.load() == {}
    token_check.flush()
    session.save()
    assert make_session(session.session_key)["_auth_user_hash"] == "new"


def test_cycle_key_of_unserializable_data_raises_and_changes_nothing(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.save()
    old = session.session_key
    session["a"] = {1, 2}  # JSON has no sets
    with pytest.raises(TypeError):
        session.cycle_key()
    assert session.session_key == old
    assert make_session(old)["a"] == 1
    assert redis_keys() == {data(prefix, old)}


def test_flush_after_cycle_key_ends_the_new_session(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.save()
    old = session.session_key
    session.cycle_key()
    new = session.session_key
    session.flush()
    assert session.session_key is None
    assert make_session(old).load() == {}
    assert make_session(new).load() == {}
    assert redis_keys() == {tomb(prefix, old), tomb(prefix, new)}


def test_cycle_key_of_a_new_session_creates_it(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.cycle_key()
    assert redis_keys() == {data(prefix, session.session_key)}
    assert make_session(session.session_key)["a"] == 1


def test_set_expiry_fourteen_days_reaches_redis(
    session: Any, raw_redis: redis.Redis, prefix: str
) -> None:
    session.set_expiry(timedelta(days=14))
    session.save()
    ttl = raw_redis.pttl(data(prefix, session.session_key))
    assert 14 * 86400 * 1000 - 5000 < ttl <= 14 * 86400 * 1000


@override_settings(SESSION_COOKIE_AGE=4321)
def test_set_expiry_zero_keeps_the_session_for_the_cookie_age(
    session: Any, raw_redis: redis.Redis, prefix: str
) -> None:
    session.set_expiry(0)
    session.save()
    assert session.get_expire_at_browser_close() is True
    assert 4_320_000 < raw_redis.pttl(data(prefix, session.session_key)) <= 4_321_000


def test_set_expiry_seconds_reaches_redis(
    session: Any, raw_redis: redis.Redis, prefix: str
) -> None:
    session.set_expiry(300)
    session.save()
    assert 299_000 < raw_redis.pttl(data(prefix, session.session_key)) <= 300_000


def test_an_expiry_in_the_past_deletes_instead_of_saving(
    session: Any, make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    session["a"] = 1
    session.save()
    key = session.session_key
    session.set_expiry(timezone.now() - timedelta(seconds=1))
    session.save()  # no "ERR invalid expire time"
    assert redis_keys() == {tomb(prefix, key)}
    assert make_session(key).load() == {}


def test_a_key_alive_past_its_absolute_expiry_loads_as_empty(
    make_session: Callable[..., Any], raw_redis: redis.Redis, prefix: str
) -> None:
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    raw_redis.set(
        data(prefix, "driftedkey123456"),
        json.dumps({"_session_expiry": past, "a": 1}),
        ex=600,
    )
    session = make_session("driftedkey123456")
    assert session.load() == {}
    assert session.session_key is None


def test_a_corrupt_payload_loads_as_empty_and_logs_a_security_line(
    make_session: Callable[..., Any],
    raw_redis: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw_redis.set(data(prefix, "corruptkey123456"), b"\x00\xffgarbage", ex=600)
    session = make_session("corruptkey123456")
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert session.load() == {}
    assert session.session_key is None
    assert [r.name for r in caplog.records] == ["django.security.SuspiciousSession"]


@pytest.mark.parametrize(
    "key",
    [
        "a*b?[c]xyz",
        "{brace}key1",
        "nul\x00bytekey",
        "ключ-сессии",
        "k" * 5000,
        "}leadingbrace",
    ],
)
def test_unusual_cookie_values_load_as_empty_without_a_redis_error(
    make_session: Callable[..., Any], redis_keys: Keys, key: str
) -> None:
    session = make_session(key)
    assert session.load() == {}
    assert session.session_key is None
    assert redis_keys() == set()


def test_unserializable_data_raises_and_writes_nothing(
    session: Any, redis_keys: Keys
) -> None:
    session["when"] = object()
    with pytest.raises(TypeError):
        session.save()
    assert redis_keys() == set()


def test_clear_expired_is_a_no_op() -> None:
    assert SessionStore.clear_expired() is None


# --- Races with another request, interleaved by hand ---------------------------------


def test_logout_while_another_request_saves_does_not_resurrect(
    make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    """the save of request A lands after B's logout."""
    key = saved_key(make_session, user=1)
    request_a = make_session(key)
    assert request_a["user"] == 1  # A has loaded
    request_b = make_session(key)
    request_b.flush()  # B logs out in between
    request_a["cart"] = ["book"]
    with pytest.raises(UpdateError):
        request_a.save()
    assert redis_keys() == {tomb(prefix, key)}


def test_a_save_after_the_tombstone_lapsed_is_still_refused(
    make_session: Callable[..., Any],
    raw_redis: redis.Redis,
    redis_keys: Keys,
    prefix: str,
) -> None:
    """save is update-only, tombstone or not."""
    key = saved_key(make_session, user=1)
    late = make_session(key)
    late["user"]
    make_session(key).flush()
    raw_redis.delete(tomb(prefix, key))
    late["user"] = 2
    with pytest.raises(UpdateError):
        late.save()
    assert redis_keys() == set()


def test_an_unmodified_save_after_logout_creates_nothing(
    make_session: Callable[..., Any],
    raw_redis: redis.Redis,
    redis_keys: Keys,
    prefix: str,
) -> None:
    """the touch of a save-every-request refresh."""
    key = saved_key(make_session, user=1)
    refresh = make_session(key)
    refresh["user"]  # loaded, not modified
    make_session(key).flush()
    raw_redis.pexpire(tomb(prefix, key), 5000)
    with pytest.raises(UpdateError):
        refresh.save()
    assert redis_keys() == {tomb(prefix, key)}
    assert raw_redis.pttl(tomb(prefix, key)) <= 5000


def test_cycle_key_racing_a_request_on_the_old_key_keeps_it_dead(
    make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    """login cycles the key while another request still has the old one."""
    session = make_session()
    session["anonymous_cart"] = 1
    session.save()
    old = session.session_key
    in_flight = make_session(old)
    in_flight["anonymous_cart"]
    session.cycle_key()
    session.save()
    in_flight["anonymous_cart"] = 2
    with pytest.raises(UpdateError):
        in_flight.save()
    assert redis_keys() == {data(prefix, session.session_key), tomb(prefix, old)}


def test_two_writers_of_different_keys_both_land(
    make_session: Callable[..., Any],
) -> None:
    """The later save merges its own change into the earlier one's."""
    session = make_session()
    session.save()
    key = session.session_key
    first, second = make_session(key), make_session(key)
    first["a"], second["b"] = 1, 2
    first.save()
    second.save()
    assert make_session(key).load() == {"a": 1, "b": 2}


# --- The middleware -----------------------------------------------------------------


def test_the_middleware_reports_a_logout_race_as_session_interrupted() -> None:
    session = SessionStore()
    session["user"] = 1
    session.save()
    key = session.session_key

    def view(request: HttpRequest) -> HttpResponse:
        request.session["visits"] = 1
        SessionStore(key).flush()  # a logout elsewhere while this view runs
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    request.COOKIES["sessionid"] = str(key)
    with pytest.raises(SessionInterrupted):
        SessionMiddleware(view)(request)


def test_a_redis_outage_fails_the_request_and_keeps_the_cookie(
    session_redis: dict[str, Any],
) -> None:
    with override_settings(
        SESSION_REDIS={
            **session_redis,
            "URL": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5},
        }
    ):

        def view(request: HttpRequest) -> HttpResponse:
            request.session["visits"] = 1
            return HttpResponse("ok")

        request = RequestFactory().get("/")
        request.COOKIES["sessionid"] = "a" * 32
        with pytest.raises(redis.ConnectionError):
            SessionMiddleware(view)(request)


# --- Serializers --------------------------------------------------------------------


SIGNED = "django_redis_sessions.serializers.SignedJSONSerializer"


def test_a_custom_serializer_writes_and_reads_its_own_format(
    settings: Any,
    session_redis: dict[str, Any],
    raw_redis: redis.Redis,
    prefix: str,
) -> None:
    settings.SESSION_REDIS = {**session_redis, "SERIALIZER": SIGNED}
    session = SessionStore()
    session["cat"] = "dog"
    session.save()
    stored = raw_redis.get(data(prefix, str(session.session_key)))
    assert stored is not None
    assert b"dog" not in stored  # compressed and signed, not plain JSON
    assert SessionStore(session.session_key)["cat"] == "dog"


def test_a_signed_payload_tampered_with_in_redis_loads_as_empty(
    settings: Any,
    session_redis: dict[str, Any],
    raw_redis: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.SESSION_REDIS = {**session_redis, "SERIALIZER": SIGNED}
    session = SessionStore()
    session["is_staff"] = False
    session.save()
    key = str(session.session_key)
    forged = json.dumps({"is_staff": True}).encode()
    stored = raw_redis.get(data(prefix, key))
    assert isinstance(stored, bytes)
    signature = stored.rsplit(b":", 1)[1]
    raw_redis.set(data(prefix, key), forged + b":" + signature, ex=600)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert SessionStore(key).load() == {}
    assert [r.name for r in caplog.records] == ["django.security.SuspiciousSession"]


def test_unchanged_signed_sessions_still_save_with_a_touch(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    settings.SESSION_REDIS = {**session_redis, "SERIALIZER": SIGNED}
    key = saved_key(SessionStore, a=1)
    first, second = SessionStore(key), SessionStore(key)
    assert first._payloads.dumps({"a": 1}, key) == second._payloads.dumps({"a": 1}, key)


def test_a_stalled_redis_on_save_fails_in_bounded_time_and_loses_nothing(
    settings: Any,
    session_redis: dict[str, Any],
    raw_redis: redis.Redis,
    redis_keys: Keys,
    prefix: str,
) -> None:
    """writes stall (CLIENT PAUSE WRITE); the save gives up."""
    settings.SESSION_REDIS = {**session_redis, "OPTIONS": {"socket_timeout": 0.2}}
    key = saved_key(SessionStore, user=1)
    session = SessionStore(key)
    assert session["user"] == 1
    session["user"] = 2
    raw_redis.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            session.save()
        # Two attempts of 0.2 s and a short backoff, far below the stall.
        assert time.monotonic() - started < 2.5
    finally:
        raw_redis.execute_command("CLIENT", "UNPAUSE")
    # The update may or may not have landed once Redis resumed, but the
    # session is whole either way: nothing lost, nothing else written.
    assert SessionStore(key)["user"] in {1, 2}
    assert redis_keys() == {data(prefix, key)}


# --- Races and faults of the second release ----------------------------------------


def test_a_session_created_with_an_expiry_in_the_past_writes_nothing(
    session: Any, redis_keys: Keys
) -> None:
    session["a"] = 1
    session.set_expiry(timezone.now() - timedelta(seconds=1))
    session.save()
    assert redis_keys() == set()


def test_cycle_key_after_a_logout_elsewhere_carries_nothing_over(
    make_session: Callable[..., Any],
    redis_keys: Keys,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A password change or login racing a logout: never a 500, never the data."""
    key = saved_key(make_session, _auth_user_id="1", cart="book")
    request_a = make_session(key)
    assert request_a["_auth_user_id"] == "1"  # A has loaded
    request_b = make_session(key)
    assert request_b["_auth_user_id"] == "1"  # as the auth middleware does
    request_b.flush()  # B logs out
    with caplog.at_level(logging.WARNING, "django.security"):
        request_a.cycle_key()
    assert request_a.session_key is None
    assert request_a.load() == {}
    assert [record.name for record in caplog.records] == [
        "django.security.SessionInterrupted"
    ]
    assert key not in caplog.text
    assert redis_keys() == {tomb(prefix, key)}
    request_a["_auth_user_hash"] = "new"  # update_session_auth_hash() goes on
    request_a.save()  # a fresh, anonymous session
    new = request_a.session_key
    assert new not in (None, key)
    assert make_session(new).load() == {"_auth_user_hash": "new"}
    assert redis_keys() == {tomb(prefix, key), data(prefix, new)}


def test_two_cycle_keys_racing_leave_one_live_session_with_the_data(
    make_session: Callable[..., Any], redis_keys: Keys, prefix: str
) -> None:
    """Two logins racing on one session: one of them carries the data."""
    key = saved_key(make_session, cart="book")
    first, second = make_session(key), make_session(key)
    assert first["cart"] == second["cart"] == "book"
    first.cycle_key()
    second.cycle_key()
    assert second.session_key is None
    assert second.load() == {}
    first.save()
    assert make_session(first.session_key)["cart"] == "book"
    assert redis_keys() == {data(prefix, first.session_key), tomb(prefix, key)}


def test_cycle_key_after_a_store_clear_carries_nothing_over(
    make_session: Callable[..., Any], redis_keys: Keys
) -> None:
    key = saved_key(make_session, cart="book")
    in_flight = make_session(key)
    assert in_flight["cart"] == "book"
    assert RedisSessionStore().clear() == 1
    in_flight.cycle_key()
    assert in_flight.load() == {}
    assert redis_keys() == set()


def test_an_explicit_write_of_the_loaded_value_is_not_dropped(
    make_session: Callable[..., Any],
) -> None:
    """A loads sudo=False, B saves sudo=True, A writes False last."""
    key = saved_key(make_session, sudo=False)
    request_a = make_session(key)
    assert request_a["sudo"] is False
    request_b = make_session(key)
    request_b["sudo"] = True
    request_b.save()
    request_a["sudo"] = False
    request_a.save()
    assert make_session(key)["sudo"] is False


@pytest.mark.parametrize(
    "kind", ["list", "hash", "set", "zset", "stream"], ids=lambda kind: kind
)
def test_a_value_of_another_type_under_the_key_loads_as_empty_and_logs(
    make_session: Callable[..., Any],
    raw_redis: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    """never a 500."""
    key = "foreignvalue12345678"
    name = data(prefix, key)
    write = {
        "list": lambda: raw_redis.rpush(name, "x"),
        "hash": lambda: raw_redis.hset(name, "x", "y"),
        "set": lambda: raw_redis.sadd(name, "x"),
        "zset": lambda: raw_redis.zadd(name, {"x": 1}),
        "stream": lambda: raw_redis.xadd(name, {"x": "y"}),
    }[kind]
    write()
    session = make_session(key)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert session.load() == {}
    assert session.session_key is None
    assert session.exists(key) is False
    assert [r.name for r in caplog.records] == ["django.security.SuspiciousSession"]
    assert raw_redis.type(name) == kind.encode()


def test_new_keys_are_32_characters_of_the_alphabet_drawn_evenly() -> None:
    from collections import Counter

    from django.contrib.sessions.backends.base import VALID_KEY_CHARS

    from django_redis_sessions.backends.redis import random_key

    keys = [random_key() for _ in range(2000)]
    assert len(set(keys)) == 2000
    assert all(len(key) == 32 and set(key) <= set(VALID_KEY_CHARS) for key in keys)
    counts = Counter("".join(keys))
    # 64,000 draws, 1,778 expected per character, a standard deviation of 42:
    # these bounds are ten deviations away, so only an uneven draw fails.
    assert set(counts) == set(VALID_KEY_CHARS)
    assert all(1_350 < count < 2_200 for count in counts.values()), counts


# --- Shortcuts that must answer exactly what Django's own code answers --------


def test_cookie_keys_are_exactly_the_keys_of_django_s_alphabet() -> None:
    alphabet = set(VALID_KEY_CHARS)
    for code in range(0x250):
        char = chr(code)
        key = "a" * 7 + char
        assert is_cookie_key(key) is (char in alphabet), repr(char)
    assert is_cookie_key("12345678")
    assert is_cookie_key("abcdefgh")
    assert not is_cookie_key("1234567")  # too short
    assert not is_cookie_key("a" * 65)
    assert not is_cookie_key(12345678)
    assert not is_cookie_key("#" + "a" * 43)


def test_compact_json_writes_the_bytes_of_django_s_serializer() -> None:
    serializer = get_payloads().serializer
    assert isinstance(serializer, CompactJSON)
    django_json = JSONSerializer()
    for data in [
        {},
        {"cart": [1, 2.5, None, True], "name": "Zoë ✓", "nested": {"a": {"b": []}}},
        {"_session_expiry": "2030-01-01T00:00:00+00:00", "n": 10**30},
        {"nan": float("nan"), "inf": float("inf")},
    ]:
        payload = serializer.dumps(data)
        assert payload == django_json.dumps(data)
        assert json.dumps(serializer.loads(payload)) == json.dumps(data)
    with pytest.raises(TypeError):
        serializer.dumps({"when": timezone.now()})


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":1}',
        b' {"a":1}',  # whitespace around: the shortcut steps aside
        b'{"a":1}\n',
        b'{"a":1}x',  # extra data
        b'{"a":1}{"b":2}',
        b'{"a":"\xe9\\u00e9"}',  # latin-1 bytes and an escape
        b"[1, 2]",
        b'"text"',
        b"",
        b"{",
        b"NaN",
    ],
)
def test_compact_json_loads_what_django_s_serializer_loads(payload: bytes) -> None:
    def outcome(loads: Callable[[bytes], Any]) -> tuple[str, str]:
        try:
            return "value", repr(loads(payload))
        except ValueError as error:
            return type(error).__name__, str(error)

    assert outcome(CompactJSON().loads) == outcome(JSONSerializer().loads)


def test_a_script_the_server_forgot_is_loaded_again(
    call: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    raw_redis.script_flush()  # as after a restart
    session = SessionStore()
    session["n"] = 1
    call(session, "save")
    assert call(SessionStore(session.session_key), "load") == {"n": 1}


def test_expiry_age_is_django_s(call: Callable[..., Any]) -> None:
    now = timezone.now()
    later = (now + timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"_session_expiry": 0}, {}),
        ({"_session_expiry": 300}, {}),
        (
            {"_session_expiry": later},
            {"modification": now},
        ),
        ({}, {"expiry": 60}),
        ({"_session_expiry": 300}, {"expiry": None}),
        ({}, {"modification": now, "expiry": now + timedelta(seconds=90)}),
    ]
    for data, kwargs in cases:
        session = SessionStore()
        session.update(data)
        expected = SessionBase.get_expiry_age(session, **kwargs)
        assert call(session, "get_expiry_age", **kwargs) == expected, (data, kwargs)


def test_a_session_has_every_attribute_sessionbase_gives_one() -> None:
    key = "a" * 32
    assert set(vars(SessionBase(key))) <= set(vars(SessionStore(key)))
    assert SessionStore(key).serializer is SessionBase(key).serializer
