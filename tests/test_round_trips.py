"""Redis round trips per operation: the number that does not drift.

Every command a connection sends is recorded; the first use of a client opens
its connection and loads the scripts, so each test warms up before counting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import django
import pytest
import redis
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.test import Client

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.testing import CommandLog
from tests.utils import load_scripts

LOG = CommandLog()
SENT = LOG.sent


@pytest.fixture(autouse=True)
def counting(
    session_redis: dict[str, Any], settings: Any, raw_redis: redis.Redis
) -> Iterator[None]:
    load_scripts(raw_redis)
    settings.SESSION_REDIS = {
        **session_redis,
        "OPTIONS": {"connection_class": LOG.connection_class},
    }
    warm = SessionStore()
    warm.save()  # connects and loads the scripts
    warm.cycle_key()
    warm.save()
    warm.delete()
    SENT.clear()
    yield
    SENT.clear()


def saved_session(**data: Any) -> str:
    session = SessionStore()
    session.update(data)
    session.save()
    SENT.clear()
    return str(session.session_key)


def test_create_is_one_round_trip_without_exists() -> None:
    session = SessionStore()
    session["a"] = 1
    session.save()
    assert SENT == ["EVALSHA"]


def test_load_is_one_get() -> None:
    key = saved_session(a=1)
    assert SessionStore(key).load() == {"a": 1}
    assert SENT == ["GET"]


def test_save_of_a_changed_session_is_one_versioned_script() -> None:
    key = saved_session(a=1)
    session = SessionStore(key)
    session["a"] = 2
    SENT.clear()
    session.save()
    assert SENT == ["EVALSHA"]


def test_a_save_that_meets_another_requests_save_merges_in_two_scripts() -> None:
    key = saved_session(a=1)
    first, second = SessionStore(key), SessionStore(key)
    first["a"], second["b"] = 2, 3
    first.save()
    SENT.clear()
    second.save()
    # The first script answers with the newer data; the second writes the merge.
    assert SENT == ["EVALSHA", "EVALSHA"]
    assert SessionStore(key).load() == {"a": 2, "b": 3}


def test_save_of_an_unchanged_session_is_one_touch() -> None:
    key = saved_session(a=1)
    session = SessionStore(key)
    assert session["a"] == 1
    SENT.clear()
    session.save()
    assert SENT == ["PEXPIRE"]


def test_save_of_an_unchanged_session_with_disable_touch_sends_nothing(
    settings: Any,
) -> None:
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "DISABLE_TOUCH": True}
    key = saved_session(a=1)
    session = SessionStore(key)
    assert session["a"] == 1
    SENT.clear()
    session.save()
    assert SENT == []


def test_delete_is_one_round_trip() -> None:
    key = saved_session(a=1)
    SessionStore(key).delete()
    assert SENT == ["EVALSHA"]


def test_cycle_key_is_one_script_and_the_next_save_one_more() -> None:
    key = saved_session(a=1)
    session = SessionStore(key)
    assert session["a"] == 1
    SENT.clear()
    session.cycle_key()
    assert SENT == ["EVALSHA"]
    SENT.clear()
    session["b"] = 2
    session.save()
    assert SENT == ["EVALSHA"]


@pytest.mark.django_db
def test_a_login_is_three_round_trips_and_a_logout_two() -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("login", password="x")
    client = Client()
    client.get("/write/")  # a visitor with a session logs in
    SENT.clear()
    assert client.get(f"/login/?id={user.pk}").content == b"in"
    # Load, cycle_key (Django's contract: the old key ends before login()
    # goes on), and the save that writes the user and its index entry.
    assert SENT == ["GET", "EVALSHA", "EVALSHA"]
    SENT.clear()
    assert client.get("/logout/").content == b"out"
    assert SENT == ["GET", "EVALSHA"]


@pytest.fixture
def window(db: None, settings: Any) -> None:
    """MIGRATE_FROM open on Django's db engine, the client warmed up again."""
    settings.SESSION_REDIS = {
        **settings.SESSION_REDIS,
        "MIGRATE_FROM": "django.contrib.sessions.backends.db",
    }
    warm = SessionStore()
    warm.save()
    SENT.clear()


@pytest.mark.usefixtures("window")
def test_a_load_that_hits_while_the_window_is_open_is_one_get_and_no_query(
    django_assert_num_queries: Any,
) -> None:
    key = saved_session(a=1)
    with django_assert_num_queries(0):
        assert SessionStore(key).load() == {"a": 1}
    assert SENT == ["GET"]


@pytest.mark.usefixtures("window")
def test_a_miss_while_the_window_is_open_costs_one_source_query(
    django_assert_num_queries: Any,
) -> None:
    with django_assert_num_queries(1):
        assert SessionStore("unknown" * 4).load() == {}
    assert SENT == ["GET"]


@pytest.mark.usefixtures("window")
def test_a_session_the_window_moves_costs_a_create_and_a_delete_in_the_source(
    django_assert_num_queries: Any,
) -> None:
    source = DatabaseStore()
    source["a"] = 1
    source.create()
    SENT.clear()
    with django_assert_num_queries(2):
        assert SessionStore(source.session_key).load() == {"a": 1}
    assert SENT == ["GET", "EVALSHA"]


def test_a_request_that_only_reads_is_one_round_trip() -> None:
    client = Client()
    client.get("/write/")
    SENT.clear()
    assert client.get("/read/").content == b"1"
    assert SENT == ["GET"]


def test_a_request_that_writes_is_two_round_trips() -> None:
    client = Client()
    client.get("/write/")
    SENT.clear()
    assert client.get("/write/").content == b"2"
    assert SENT == ["GET", "EVALSHA"]


def test_the_first_request_of_a_visitor_is_one_round_trip() -> None:
    assert Client().get("/write/").content == b"1"
    assert SENT == ["EVALSHA"]


@pytest.mark.skipif(django.VERSION < (5, 1), reason="asyncio sessions need Django 5.1")
def test_the_asyncio_path_has_the_same_round_trips(settings: Any) -> None:
    settings.SESSION_REDIS = {
        **settings.SESSION_REDIS,
        "OPTIONS": {"connection_class": LOG.async_connection_class},
    }

    async def flow() -> dict[str, list[str]]:
        warm = SessionStore()
        await warm.asave()
        await warm.acycle_key()
        await warm.asave()
        await warm.adelete()
        counts: dict[str, list[str]] = {}

        async def step(name: str, coro: Any) -> None:
            SENT.clear()
            await coro
            counts[name] = list(SENT)

        session = SessionStore()
        await session.aset("a", 1)
        await step("create", session.asave())
        loaded = SessionStore(session.session_key)
        await step("load", loaded.aload())
        assert await loaded.aget("a") == 1  # loaded into its cache
        await step("touch", loaded.asave())
        await loaded.aset("a", 2)
        await step("save", loaded.asave())
        await step("cycle_key", loaded.acycle_key())
        await step("save after cycle_key", loaded.asave())
        await step("delete", loaded.adelete())
        return counts

    assert asyncio.run(flow()) == {
        "create": ["EVALSHA"],
        "load": ["GET"],
        "touch": ["PEXPIRE"],
        "save": ["EVALSHA"],
        "cycle_key": ["EVALSHA"],
        "save after cycle_key": ["EVALSHA"],
        "delete": ["EVALSHA"],
    }
