"""Expiry dates whose time zone awareness differs from ``USE_TZ``.

Django is the reference. Its ``get_expiry_age()`` subtracts the expiry from
``timezone.now()``, so a naive expiry under ``USE_TZ = True``, or an aware one
without it, raises ``TypeError`` in the cache and file backends' saves and in
the session middleware: the engine's saves raise it too, and write nothing.
A date already stored that way (written before the project switched
``USE_TZ``, or through the store) means what Django's ``DateTimeField``, and
so its database backend, makes of it: a naive date is wall time in
``TIME_ZONE``, never in the time zone a request activated; an aware one is the
instant it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from django.contrib.sessions.backends.base import SessionBase
from django.test import override_settings
from django.utils import timezone

from django_redis_sessions.backends.redis import SessionStore
from tests.utils import Keys, data_name

#: ``TIME_ZONE`` in these tests, and zones a request may activate, far from it
#: either way: an expiry read in one of them is wrong by many hours.
DEFAULT = "America/New_York"
AHEAD = "Asia/Tokyo"
BEHIND = "Pacific/Honolulu"

KEY = "tzsessionkey0123456789abcdefghij"


def wall_time(hours: float) -> datetime:
    """``TIME_ZONE`` wall time ``hours`` from now, naive as without ``USE_TZ``."""
    now = datetime.now(ZoneInfo(DEFAULT)) + timedelta(hours=hours)
    return now.replace(tzinfo=None)


def instant(hours: float) -> datetime:
    """An aware UTC datetime ``hours`` from now."""
    return datetime.now(dt_timezone.utc) + timedelta(hours=hours)


@override_settings(USE_TZ=True, TIME_ZONE=DEFAULT)
def test_saving_a_naive_expiry_with_use_tz_raises_type_error_like_django(
    call: Callable[..., Any], redis_keys: Keys
) -> None:
    naive = wall_time(1)
    with pytest.raises(TypeError):
        SessionBase().get_expiry_age(expiry=naive.isoformat())
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(naive)
    with pytest.raises(TypeError):
        call(session, "save")
    assert redis_keys() == set()


@override_settings(USE_TZ=False, TIME_ZONE=DEFAULT)
def test_saving_an_aware_expiry_without_use_tz_raises_type_error_like_django(
    call: Callable[..., Any], redis_keys: Keys
) -> None:
    aware = instant(1)
    with pytest.raises(TypeError):
        SessionBase().get_expiry_age(expiry=aware.isoformat())
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(aware)
    with pytest.raises(TypeError):
        call(session, "save")
    assert redis_keys() == set()


@pytest.mark.parametrize(
    ("activated", "hours", "live"),
    [(AHEAD, 1, True), (BEHIND, -1, False)],
    ids=["live-in-time-zone", "over-in-time-zone"],
)
@override_settings(USE_TZ=True, TIME_ZONE=DEFAULT)
def test_a_stored_naive_expiry_is_wall_time_in_time_zone(
    call: Callable[..., Any],
    raw_redis: redis.Redis,
    prefix: str,
    activated: str,
    hours: int,
    live: bool,
) -> None:
    # Written while USE_TZ was False; Redis keeps the key longer than that.
    data = {"a": 1, "_session_expiry": wall_time(hours).isoformat()}
    raw_redis.set(data_name(prefix, KEY), json.dumps(data), ex=3 * 3600)
    with timezone.override(activated):
        loaded = call(SessionStore(KEY), "load")
    assert loaded == (data if live else {})


@pytest.mark.parametrize(
    ("activated", "hours", "live"),
    [(AHEAD, -1, False), (BEHIND, 1, True)],
    ids=["over", "live"],
)
@override_settings(USE_TZ=False, TIME_ZONE=DEFAULT)
def test_a_stored_aware_expiry_without_use_tz_is_the_instant_it_names(
    call: Callable[..., Any],
    raw_redis: redis.Redis,
    prefix: str,
    activated: str,
    hours: int,
    live: bool,
) -> None:
    data = {"a": 1, "_session_expiry": instant(hours).isoformat()}
    raw_redis.set(data_name(prefix, KEY), json.dumps(data), ex=3 * 3600)
    with timezone.override(activated):
        loaded = call(SessionStore(KEY), "load")
    assert loaded == (data if live else {})


@pytest.mark.parametrize("activated", [AHEAD, BEHIND])
@override_settings(USE_TZ=True, TIME_ZONE=DEFAULT)
def test_the_store_reads_a_naive_expiry_with_use_tz_as_wall_time_in_time_zone(
    store: Any, raw: redis.Redis, prefix: str, activated: str
) -> None:
    data = {"a": 1, "_session_expiry": wall_time(1).isoformat()}
    with timezone.override(activated):
        assert store.set(KEY, data) is True
        assert store.get(KEY) == data
    assert 3_590_000 < raw.pttl(data_name(prefix, KEY)) <= 3_600_000


@pytest.mark.parametrize("activated", [AHEAD, BEHIND])
@override_settings(USE_TZ=False, TIME_ZONE=DEFAULT)
def test_the_store_reads_an_aware_expiry_without_use_tz_as_its_instant(
    store: Any, raw: redis.Redis, prefix: str, activated: str
) -> None:
    data = {"a": 1, "_session_expiry": instant(1).isoformat()}
    with timezone.override(activated):
        assert store.set(KEY, data) is True
        assert store.get(KEY) == data
    assert 3_590_000 < raw.pttl(data_name(prefix, KEY)) <= 3_600_000
