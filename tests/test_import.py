"""Switching to this engine from another one without logging anyone out.

A visitor logs in through Django's test client while the source engine is
``SESSION_ENGINE``; the source is aged so that ``REMAINING`` seconds of the
session are left; the settings switch to this engine; and the same cookie
must still be logged in, with the same data and a TTL within a second of
``REMAINING``, after ``manage.py redis_sessions import`` or through the
read-through window (``MIGRATE_FROM``). Every move empties the source.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import time
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.cluster
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends import cache as cache_engine
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.contrib.sessions.backends.file import SessionStore as FileStore
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.test import AsyncClient, Client
from django.utils import timezone
from django.utils.crypto import get_random_string

from django_redis_sessions import migration
from django_redis_sessions.backends import handover
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.keys import glob_escape, hashed_id
from django_redis_sessions.redis_layer import RedisLayer, get_layer
from django_redis_sessions.scripts import Outcome
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.user_index import IndexWrite
from tests import listed_engine
from tests.twins import no_sync_client
from tests.utils import (
    Keys,
    data_name,
    index_names,
    needs_async_backend,
    redis_sessions,
    tombstone_name,
)

ENGINES = {
    "db": "django.contrib.sessions.backends.db",
    "cached_db": "django.contrib.sessions.backends.cached_db",
    "cache": "django.contrib.sessions.backends.cache",
    "file": "django.contrib.sessions.backends.file",
}
DB = ENGINES["db"]
SIGNED = "django.contrib.sessions.backends.signed_cookies"
THIS_ENGINE = "django_redis_sessions.backends.redis"
CACHE_BACKENDS = {
    "RedisCache": "django.core.cache.backends.redis.RedisCache",
    "django-redis": "django_redis.cache.RedisCache",
}
#: Seconds the source has left of each session when the switch happens.
REMAINING = 1000


# --- Settings and sources -----------------------------------------------------


def database_url(url: str, number: int) -> str:
    """``url`` with the database ``number`` in its path."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture
def cache_redis(redis_url: str) -> Iterator[redis.Redis]:
    """Database 1 of the test server: where the cache source keeps its sessions."""
    client = redis.Redis.from_url(database_url(redis_url, 1))
    yield client
    client.close()


def use_cache(settings: Any, backend: str, url: str, prefix: str) -> None:
    settings.CACHES = {
        "default": {"BACKEND": backend, "LOCATION": url, "KEY_PREFIX": prefix}
    }


def close_caches() -> None:
    """Disconnect the Redis caches' pools, which Django never closes itself."""
    for cache in caches.all(initialized_only=True):
        client = migration.redis_client_of(cache)
        if client is not None:
            client.connection_pool.disconnect()
        pools = getattr(getattr(cache, "_cache", None), "_pools", {})
        for pool in pools.values():
            pool.disconnect()


def forget_storage_path() -> None:
    # The file engine caches its directory on the class for good.
    if "_storage_path" in vars(FileStore):
        delattr(FileStore, "_storage_path")


@pytest.fixture
def sources(
    settings: Any,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    cache_redis: redis.Redis,
) -> Iterator[Path]:
    """Every source engine keeps this test's sessions apart; the file directory."""
    url = database_url(redis_url, 1)
    use_cache(settings, CACHE_BACKENDS["RedisCache"], url, prefix)
    settings.SESSION_FILE_PATH = str(tmp_path)
    forget_storage_path()
    yield tmp_path
    close_caches()
    forget_storage_path()
    names = list(cache_redis.scan_iter(match=glob_escape(prefix) + "*"))
    if names:
        cache_redis.unlink(*names)


@pytest.fixture
def user(db: None) -> Any:
    # No password: nothing to hash, the login view logs the user in directly.
    return get_user_model().objects.create_user("alice")


def use(settings: Any, engine: str, migrate_from: str | None = None) -> None:
    settings.SESSION_ENGINE = engine
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "MIGRATE_FROM": migrate_from}


def logged_in(user: Any) -> str:
    """The cookie of a visitor who counted two visits around logging in."""
    client = Client()
    assert client.get("/write/").content == b"1"
    assert client.get(f"/login/?id={user.pk}").content == b"in"
    assert client.get("/write/").content == b"2"
    return str(client.cookies["sessionid"].value)


def visitor(cookie: str, client_class: type[Any] = Client) -> Any:
    client = client_class()
    client.cookies["sessionid"] = cookie
    return client


def cache_name(cookie: str) -> str:
    return str(caches["default"].make_key(cache_engine.KEY_PREFIX + cookie))


def age(engine: str, cookie: str, directory: Path, cache_redis: redis.Redis) -> None:
    """Leave the source session of ``cookie`` ``REMAINING`` seconds to live."""
    if engine in ("db", "cached_db"):
        expires = timezone.now() + timedelta(seconds=REMAINING)
        assert Session.objects.filter(pk=cookie).update(expire_date=expires) == 1
    elif engine == "cache":
        assert cache_redis.pexpire(cache_name(cookie), REMAINING * 1000)
    else:
        modified = time.time() - (FileStore().get_session_cookie_age() - REMAINING)
        os.utime(directory / f"sessionid{cookie}", (modified, modified))


def source_holds(engine: str, cookie: str, directory: Path) -> bool:
    if engine == "file":
        return (directory / f"sessionid{cookie}").exists()
    if engine == "cache":
        return caches["default"].get(cache_engine.KEY_PREFIX + cookie) is not None
    in_cache = caches["default"].get("django.contrib.sessions.cached_db" + cookie)
    return in_cache is not None or Session.objects.filter(pk=cookie).exists()


def assert_logged_in(
    cookie: str, user: Any, raw_redis: redis.Redis, prefix: str, visits: bytes = b"2"
) -> None:
    client = visitor(cookie)
    assert client.get("/whoami/").content == str(user.pk).encode()
    assert client.get("/read/").content == visits
    ttl = raw_redis.pttl(data_name(prefix, cookie))
    assert REMAINING * 1000 - 1000 <= ttl <= REMAINING * 1000


def run_import(*args: str, stderr: io.StringIO | None = None) -> str:
    return redis_sessions("import", *args, stderr=stderr)


def summary(engine: str, read: int, **counts: int) -> str:
    """The report line of an import."""
    counts = {
        "created": 0,
        "present": 0,
        "tombstoned": 0,
        "expired": 0,
        "undecodable": 0,
        **counts,
    }
    noun = "session" if read == 1 else "sessions"
    return (
        f"Read {read:,} {noun} from {engine!r}: {counts['created']:,} created, "
        f"{counts['present']:,} already present, {counts['tombstoned']:,} "
        f"tombstoned, {counts['expired']:,} expired, {counts['undecodable']:,} "
        "undecodable.\n"
    )


def add_rows(count: int, data: dict[str, Any] | None = None) -> list[str]:
    """``count`` live rows in the session table; their keys."""
    text = DatabaseStore().encode({"n": 1} if data is None else data)
    expires = timezone.now() + timedelta(seconds=REMAINING)
    keys = [
        get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        for _ in range(count)
    ]
    Session.objects.bulk_create(
        Session(session_key=key, session_data=text, expire_date=expires) for key in keys
    )
    return keys


# --- Every source, through import and through the window ------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_import_keeps_a_logged_in_visitor_logged_in_with_the_same_data_and_lifetime(
    engine: str,
    sources: Path,
    cache_redis: redis.Redis,
    user: Any,
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
    redis_keys: Keys,
) -> None:
    use(settings, ENGINES[engine])
    cookie = logged_in(user)
    age(engine, cookie, sources, cache_redis)
    use(settings, THIS_ENGINE)
    stderr = io.StringIO()
    assert run_import("--from", ENGINES[engine], stderr=stderr) == summary(
        ENGINES[engine], 1, created=1
    )
    # Without the window, a visitor the import has not reached yet is out.
    assert "SESSION_REDIS['MIGRATE_FROM'] is not" in stderr.getvalue()
    assert not source_holds(engine, cookie, sources)
    assert redis_keys() == {
        data_name(prefix, cookie),
        *index_names(prefix, user.pk),
    }
    assert_logged_in(cookie, user, raw_redis, prefix)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_window_moves_a_session_on_its_first_request(
    engine: str,
    sources: Path,
    cache_redis: redis.Redis,
    user: Any,
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
    redis_keys: Keys,
) -> None:
    use(settings, ENGINES[engine])
    cookie = logged_in(user)
    age(engine, cookie, sources, cache_redis)
    use(settings, THIS_ENGINE, migrate_from=ENGINES[engine])
    assert_logged_in(cookie, user, raw_redis, prefix)
    assert not source_holds(engine, cookie, sources)
    assert redis_keys() == {
        data_name(prefix, cookie),
        *index_names(prefix, user.pk),
    }


@needs_async_backend
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES)
def test_the_window_moves_a_session_on_its_first_asyncio_request(
    engine: str,
    monkeypatch: pytest.MonkeyPatch,
    sources: Path,
    cache_redis: redis.Redis,
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
    redis_keys: Keys,
) -> None:
    user = get_user_model().objects.create_user("bob")
    use(settings, ENGINES[engine])
    cookie = logged_in(user)
    age(engine, cookie, sources, cache_redis)
    use(settings, THIS_ENGINE, migrate_from=ENGINES[engine])
    # The middleware saves through the sync methods; the load must not.
    monkeypatch.setattr(migration, "read_through", no_sync_client)

    async def visit() -> list[bytes]:
        client = visitor(cookie, AsyncClient)
        who = await client.get("/async-whoami/")
        visits = await client.get("/async-write/")
        return [who.content, visits.content]

    assert asyncio.run(visit()) == [str(user.pk).encode(), b"3"]
    assert not source_holds(engine, cookie, sources)
    assert redis_keys() == {
        data_name(prefix, cookie),
        *index_names(prefix, user.pk),
    }
    assert raw_redis.pttl(data_name(prefix, cookie)) >= REMAINING * 1000 - 1000


@pytest.mark.parametrize("backend", CACHE_BACKENDS)
def test_import_scans_the_cache_s_own_redis_whichever_client_serves_it(
    backend: str,
    sources: Path,
    cache_redis: redis.Redis,
    redis_url: str,
    user: Any,
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
) -> None:
    use_cache(settings, CACHE_BACKENDS[backend], database_url(redis_url, 1), prefix)
    use(settings, ENGINES["cache"])
    cookies = [logged_in(user) for _ in range(3)]
    for cookie in cookies:
        age("cache", cookie, sources, cache_redis)
    # Another engine's entry under the same cache prefix is no session.
    caches["default"].set("django.contrib.sessions.cached_db" + "k" * 32, {"a": 1})
    use(settings, THIS_ENGINE)
    assert run_import("--from", ENGINES["cache"], "--batch-size", "1") == summary(
        ENGINES["cache"], 3, created=3
    )
    for cookie in cookies:
        assert_logged_in(cookie, user, raw_redis, prefix)


def test_the_window_moves_sessions_of_a_cache_that_cannot_be_listed(
    user: Any, settings: Any, raw_redis: redis.Redis, prefix: str
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    use(settings, ENGINES["cache"])
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=ENGINES["cache"])
    client = visitor(cookie)
    assert client.get("/whoami/").content == str(user.pk).encode()
    assert client.get("/read/").content == b"2"
    # The cache does not tell the TTL: the session gets SESSION_COOKIE_AGE.
    age = settings.SESSION_COOKIE_AGE * 1000
    assert age - 1000 <= raw_redis.pttl(data_name(prefix, cookie)) <= age
    assert caches["default"].get(cache_engine.KEY_PREFIX + cookie) is None


def test_import_from_files_skips_the_engine_s_temporary_files_and_counts_expired_ones(
    sources: Path, user: Any, settings: Any, cache_redis: redis.Redis, prefix: str
) -> None:
    use(settings, ENGINES["file"])
    live, expired = logged_in(user), logged_in(user)
    age("file", live, sources, cache_redis)
    old = time.time() - FileStore().get_session_cookie_age() - 60
    os.utime(sources / f"sessionid{expired}", (old, old))
    (sources / "sessionid_out_x1y2z3").write_text("half-written")
    (sources / "another-app-file").write_text("not ours")
    use(settings, THIS_ENGINE)
    assert run_import("--from", ENGINES["file"]) == summary(
        ENGINES["file"], 2, created=1, expired=1
    )
    assert sorted(path.name for path in sources.iterdir()) == [
        "another-app-file",
        "sessionid_out_x1y2z3",
    ]


def test_a_third_party_engine_that_lists_its_keys_can_be_imported(
    settings: Any, raw_redis: redis.Redis, prefix: str, redis_keys: Keys
) -> None:
    engine = "tests.listed_engine"
    settings.SESSION_ENGINE = engine
    listed_engine.SessionStore.registry.clear()
    keys = []
    for number in range(3):
        session = listed_engine.SessionStore()
        session["n"] = number
        session.set_expiry(REMAINING)
        session.save()
        keys.append(str(session.session_key))
    use(settings, THIS_ENGINE)
    assert run_import("--from", engine, "--batch-size", "2") == summary(
        engine, 3, created=3
    )
    assert listed_engine.SessionStore.registry == set()
    store = RedisSessionStore()
    assert [store.get(key) for key in keys] == [
        {"n": number, "_session_expiry": REMAINING} for number in range(3)
    ]
    assert redis_keys() == {data_name(prefix, key) for key in keys}


# --- Signed cookies: adopted once, into a new key ----------------------------------


def test_a_signed_cookie_is_adopted_once_into_a_session_with_a_new_key(
    user: Any, settings: Any, prefix: str, redis_keys: Keys
) -> None:
    use(settings, SIGNED)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=SIGNED)
    client = visitor(cookie)
    assert client.get("/whoami/").content == str(user.pk).encode()
    new = client.cookies["sessionid"].value
    assert len(new) == 32
    assert new != cookie
    assert client.get("/read/").content == b"2"
    assert redis_keys() == {
        data_name(prefix, new),
        tombstone_name(prefix, hashed_id(cookie)),
        *index_names(prefix, user.pk),
    }
    # The same cookie again (copied before a logout, say) is no session.
    assert visitor(cookie).get("/whoami/").content == b"anonymous"
    assert len(redis_keys()) == 2 + len(index_names(prefix, user.pk))


def test_a_signed_cookie_flushed_before_its_first_access_is_not_adopted(
    user: Any, settings: Any, redis_keys: Keys
) -> None:
    use(settings, SIGNED)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=SIGNED)
    session = SessionStore(cookie)
    session.flush()  # a logout before anything read the session
    session["after"] = 1
    assert dict(session.items()) == {"after": 1}
    assert redis_keys() == set()


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_a_signed_cookie_is_adopted_once_on_the_asyncio_path(
    settings: Any, monkeypatch: pytest.MonkeyPatch, prefix: str, redis_keys: Keys
) -> None:
    user = get_user_model().objects.create_user("carol")
    use(settings, SIGNED)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=SIGNED)
    monkeypatch.setattr(migration, "adopt_cookie", no_sync_client)

    async def visit() -> list[bytes]:
        first = visitor(cookie, AsyncClient)
        replayed = visitor(cookie, AsyncClient)
        return [
            (await first.get("/async-whoami/")).content,
            (await first.get("/async-write/")).content,
            (await replayed.get("/async-whoami/")).content,
        ]

    assert asyncio.run(visit()) == [str(user.pk).encode(), b"3", b"anonymous"]
    assert tombstone_name(prefix, hashed_id(cookie)) in redis_keys()


# --- Idempotence and newer data ---------------------------------------------------


def test_import_run_again_changes_nothing(
    user: Any, settings: Any, raw_redis: redis.Redis, redis_keys: Keys
) -> None:
    use(settings, DB)
    cookies = [logged_in(user) for _ in range(3)]
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert run_import() == summary(DB, 3, created=3)

    def sessions() -> dict[str, Any]:
        # Data names end in "}"; the user's index, filled too, does not.
        return {name: raw_redis.get(name) for name in redis_keys() if name[-1] == "}"}

    before = sessions()
    ttls = {name: raw_redis.pttl(name) for name in before}
    assert run_import() == summary(DB, 0)
    assert sessions() == before
    assert all(raw_redis.pttl(name) <= ttl for name, ttl in ttls.items())
    assert len(before) == len(cookies)
    assert len(RedisSessionStore().user_sessions(user.pk)) == len(cookies)


def test_create_many_never_overwrites_and_never_passes_a_tombstone(
    raw_redis: redis.Redis, prefix: str, redis_keys: Keys
) -> None:
    store = RedisSessionStore()
    store.create("existing1", {"v": "old"}, ttl=60)
    store.create("loggedout1", {"v": 1}, ttl=60)
    store.destroy("loggedout1")
    raw_redis.rpush(data_name(prefix, "alist0001"), b"x")
    layer = RedisLayer()
    items: list[tuple[str, bytes, float, IndexWrite | None]] = [
        ("created01", b'{"v":1}', 60.0, None),
        ("existing1", b'{"v":"new"}', 60.0, None),
        ("loggedout1", b'{"v":1}', 60.0, None),
        ("expired01", b'{"v":1}', 0.0, None),
        ("alist0001", b'{"v":1}', 60.0, None),
    ]
    assert layer.create_many(items) == [
        Outcome.WRITTEN,
        Outcome.EXISTS,
        Outcome.TOMBSTONED,
        Outcome.EXPIRED,
        Outcome.EXISTS,
    ]
    assert store.get("existing1") == {"v": "old"}
    assert 59_000 < raw_redis.pttl(data_name(prefix, "created01")) <= 60_000
    # The very same payload again: nothing to create, and it says so.
    assert layer.create_many(items[:1]) == [Outcome.EXISTS]
    assert layer.create_many([]) == []
    assert redis_keys() == {
        data_name(prefix, "created01"),
        data_name(prefix, "existing1"),
        tombstone_name(prefix, "loggedout1"),
        data_name(prefix, "alist0001"),
    }


def test_import_again_keeps_the_newer_data_redis_holds(
    user: Any, settings: Any, raw_redis: redis.Redis, prefix: str
) -> None:
    use(settings, DB)
    cookie = logged_in(user)
    row = Session.objects.get(pk=cookie)
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert run_import() == summary(DB, 1, created=1)
    assert visitor(cookie).get("/write/").content == b"3"
    # As a failure between the write and the source's delete leaves it.
    row.save(force_insert=True)
    assert run_import() == summary(DB, 1, present=1)
    assert visitor(cookie).get("/read/").content == b"3"
    assert not Session.objects.exists()


# --- Logouts during the switch stay final -------------------------------------------


def test_a_logout_between_the_import_reading_a_session_and_writing_it_stays_final(
    user: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    redis_keys: Keys,
) -> None:
    use(settings, DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    create_many = RedisLayer.create_many

    def log_out_first(self: RedisLayer, items: Any) -> list[Outcome]:
        # The visitor's logout request: the window moves the session to
        # Redis, then the logout ends it there and in the source.
        assert visitor(cookie).get("/logout/").content == b"out"
        return create_many(self, items)

    monkeypatch.setattr(RedisLayer, "create_many", log_out_first)
    assert run_import() == summary(DB, 1, tombstoned=1)
    monkeypatch.undo()
    assert redis_keys() == {tombstone_name(prefix, cookie)}
    assert not Session.objects.exists()
    assert visitor(cookie).get("/whoami/").content == b"anonymous"
    assert run_import() == summary(DB, 0)


def test_a_logout_while_the_window_moves_the_session_stays_final(
    user: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    redis_keys: Keys,
) -> None:
    use(settings, DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    source = migration.window()
    assert source is not None
    fetch = source.fetch

    def fetch_then_log_out(key: str) -> migration.Found | None:
        found = fetch(key)
        monkeypatch.setattr(source, "fetch", fetch)
        # Another request logs out before this one writes what it read.
        SessionStore(key).flush()
        return found

    monkeypatch.setattr(source, "fetch", fetch_then_log_out)
    session = SessionStore(cookie)
    assert session.load() == {}
    assert session.session_key is None
    assert redis_keys() == {tombstone_name(prefix, cookie)}
    assert not Session.objects.exists()
    assert SessionStore(cookie).load() == {}


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_a_logout_while_the_window_moves_the_session_stays_final_on_the_asyncio_path(
    settings: Any, monkeypatch: pytest.MonkeyPatch, prefix: str, redis_keys: Keys
) -> None:
    user = get_user_model().objects.create_user("dave")
    use(settings, DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    source = migration.window()
    assert source is not None
    afetch = source.afetch

    async def fetch_then_log_out(key: str) -> migration.Found | None:
        found = await afetch(key)
        monkeypatch.setattr(source, "afetch", afetch)
        await SessionStore(key).aflush()
        return found

    monkeypatch.setattr(source, "afetch", fetch_then_log_out)

    async def load() -> tuple[dict[str, Any], Any, dict[str, Any]]:
        session = SessionStore(cookie)
        data = await session.aload()
        return data, session.session_key, await SessionStore(cookie).aload()

    assert asyncio.run(load()) == ({}, None, {})
    assert redis_keys() == {tombstone_name(prefix, cookie)}
    assert not Session.objects.exists()


def test_a_logout_or_login_during_the_window_deletes_the_key_from_the_source(
    user: Any, settings: Any
) -> None:
    use(settings, DB)
    cookies = [logged_in(user) for _ in range(3)]
    rows = {row.pk: row for row in Session.objects.all()}
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert run_import() == summary(DB, 3, created=3)
    # Copies a failed import left behind: each way of ending a key removes it.
    for row in rows.values():
        row.save(force_insert=True)
    assert visitor(cookies[0]).get("/logout/").content == b"out"
    session = SessionStore(cookies[1])
    session.cycle_key()
    session.save()
    assert RedisSessionStore().destroy(cookies[2]) is True
    assert not Session.objects.exists()


# --- Reports, bad data, failures ------------------------------------------------------


def test_undecodable_sessions_are_counted_logged_without_their_key_and_left(
    db: None, settings: Any, caplog: pytest.LogCaptureFixture, redis_keys: Keys
) -> None:
    settings.SECRET_KEY = "the-old-secret-key-of-the-tests"
    [rotated] = add_rows(1, {"signed": "with the old key"})
    settings.SECRET_KEY = "a-brand-new-secret-key-of-the-tests"
    settings.SECRET_KEY_FALLBACKS = ["the-old-secret-key-of-the-tests"]
    [current] = add_rows(1)
    garbage = add_rows(1)
    Session.objects.filter(pk__in=garbage).update(session_data="not signed at all")
    foreign = "UPPER-CASE-KEY-OF-ANOTHER-ENGINE"
    Session.objects.create(
        session_key=foreign,
        session_data=DatabaseStore().encode({"n": 1}),
        expire_date=timezone.now() + timedelta(seconds=60),
    )
    use(settings, THIS_ENGINE, migrate_from=DB)
    with caplog.at_level(logging.WARNING):
        output = run_import()
    assert output.splitlines()[0] == summary(DB, 4, created=2, undecodable=2).strip()
    assert "SECRET_KEY_FALLBACKS" in output.splitlines()[1]
    assert (
        "2 sessions of 'django.contrib.sessions.backends.db' could not" in caplog.text
    )
    for key in (rotated, current, *garbage, foreign):
        assert key not in caplog.text
        assert key not in output
    assert sorted(Session.objects.values_list("pk", flat=True)) == sorted(
        [*garbage, foreign]
    )
    assert RedisSessionStore().get(rotated) == {"signed": "with the old key"}


def test_a_dry_run_reads_the_source_and_writes_nothing(
    db: None, settings: Any, redis_keys: Keys
) -> None:
    add_rows(2)
    Session.objects.filter(pk__in=add_rows(1)).update(session_data="garbage")
    use(settings, THIS_ENGINE)
    assert run_import("--from", DB, "--dry-run") == (
        f"Would move 2 sessions from {DB!r} (0 expired, 1 undecodable); "
        "nothing was written.\n"
    )
    assert redis_keys() == set()
    assert Session.objects.count() == 3


@pytest.mark.parametrize("failure", [redis.ConnectionError, KeyboardInterrupt])
def test_an_interrupted_import_names_a_resume_token_that_is_no_session_key(
    failure: type[BaseException],
    db: None,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    redis_keys: Keys,
) -> None:
    keys = sorted(add_rows(5))
    use(settings, THIS_ENGINE, migrate_from=DB)
    create_many = RedisLayer.create_many
    calls = []

    def fail_the_second_batch(self: RedisLayer, items: Any) -> list[Outcome]:
        calls.append(len(items))
        if len(calls) == 2:
            raise failure("lost")
        return create_many(self, items)

    monkeypatch.setattr(RedisLayer, "create_many", fail_the_second_batch)
    with pytest.raises(CommandError) as excinfo:
        run_import("--batch-size", "2")
    monkeypatch.undo()
    message = str(excinfo.value)
    token = f"db:{keys[1][:2]}"
    assert message.endswith(
        "It read 2 sessions and moved every batch it read (2 created). Run the "
        f"command again to finish, or with --resume-after {token} to skip what "
        "was read."
    )
    assert not [key for key in keys if key in message]
    assert run_import("--resume-after", token) == summary(DB, 3, created=3)
    assert len(redis_keys()) == 5
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Name the session engine to import from, e.g. --from"),
        (("--from", "no.such.engine"), "it cannot be imported: ModuleNotFoundError"),
        (("--from", THIS_ENGINE), "it is this engine itself"),
        (("--from", SIGNED), "keeps each session in the browser's cookie"),
        (("--from", ENGINES["cache"]), "LocMemCache) cannot list its keys"),
        (("--from", "django.contrib.sessions.backends.cache_nope"), "cannot be"),
        (("--from", DB, "--resume-after", "scan:12"), "is not a resume token of"),
        (("--from", ENGINES["file"], "--resume-after", "db:ab"), "cannot resume"),
        (("--from", DB, "--batch-size", "0"), "--batch-size must be at least 1"),
    ],
)
def test_an_import_that_cannot_run_says_why(
    args: tuple[str, ...], message: str, db: None, settings: Any, redis_keys: Keys
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    with pytest.raises(CommandError, match=re.escape(message)):
        run_import(*args)
    assert redis_keys() == set()


def test_a_cache_resume_token_is_a_scan_cursor(
    sources: Path, settings: Any, redis_keys: Keys
) -> None:
    use(settings, THIS_ENGINE)
    with pytest.raises(CommandError, match="is not a resume token of"):
        run_import("--from", ENGINES["cache"], "--resume-after", "scan:abc")
    assert run_import("--from", ENGINES["cache"], "--resume-after", "scan:0") == (
        summary(ENGINES["cache"], 0)
    )


# --- Scale and Cluster ----------------------------------------------------------------


def peak_memory_of_import(rows: int) -> int:
    """Peak bytes allocated while importing ``rows`` sessions, 250 at a time."""
    add_rows(rows)
    importer = migration.Importer(migration.source_for(DB), get_layer(), batch_size=250)
    tracemalloc.start()
    try:
        importer.run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert importer.report.created == rows
    assert RedisSessionStore().clear() == rows
    return peak


def test_import_memory_stays_flat_as_the_source_grows(db: None, settings: Any) -> None:
    use(settings, THIS_ENGINE, migrate_from=DB)
    peak_memory_of_import(10)  # connects, loads the script, compiles the query
    small = peak_memory_of_import(1_500)
    large = peak_memory_of_import(6_000)
    # Four times the sessions, one batch in memory either way.
    assert large < small * 1.25


def test_import_into_a_cluster_pipelines_each_session_to_its_slot(
    db: None, settings: Any, prefix: str, cluster: redis.cluster.RedisCluster
) -> None:
    keys = add_rows(60)
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert run_import() == summary(DB, 60, created=60)
    names = [data_name(prefix, key) for key in keys]
    owners = {cluster.get_node_from_key(name).name for name in names}
    assert len(owners) == 3
    store = RedisSessionStore()
    assert store.count() == 60
    assert {store.get(key)["n"] for key in keys} == {1}  # type: ignore[index]
    items: list[tuple[str, bytes, float, IndexWrite | None]] = [
        (key, b"{}", 60.0, None) for key in keys
    ]
    assert RedisLayer().create_many(items) == [Outcome.EXISTS] * 60


def test_the_window_on_a_cluster_moves_a_session(
    db: None, settings: Any, prefix: str, cluster: redis.cluster.RedisCluster
) -> None:
    [key] = add_rows(1)
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert SessionStore(key).load() == {"n": 1}
    assert cluster.exists(data_name(prefix, key)) == 1
    assert not Session.objects.exists()


class TTYStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_import_shows_its_progress_on_a_terminal(db: None, settings: Any) -> None:
    keys = add_rows(12)
    use(settings, THIS_ENGINE, migrate_from=DB)
    stderr = TTYStringIO()
    assert run_import("--batch-size", "1", stderr=stderr) == summary(DB, 12, created=12)
    # Shown after ten batches, and ended on its own line.
    assert stderr.getvalue().startswith("\rRead 11 sessions...")
    assert stderr.getvalue().endswith("\rRead 12 sessions...\n")
    assert not [key for key in keys if key in stderr.getvalue()]


# --- Claimed first: a logout anywhere between the lookup and the write --------------


def old_engine(engine: str) -> Any:
    """The SessionStore of a process still running the old engine as it was."""
    return import_module(ENGINES[engine]).SessionStore


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_logout_on_an_old_process_between_the_lookup_and_the_write_stays_final(
    engine: str,
    sources: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    redis_keys: Keys,
    call: Any,
) -> None:
    user = get_user_model().objects.create_user("erin")
    use(settings, ENGINES[engine])
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=ENGINES[engine])
    source = migration.window()
    assert source is not None
    fetch, afetch = source.fetch, source.afetch
    logouts: list[str] = []

    def log_out_on_an_old_process() -> None:
        # Once: the asyncio path of some sources reads through fetch().
        if not logouts:
            logouts.append(cookie)
            old_engine(engine)(cookie).flush()

    def fetch_then_log_out(key: str) -> migration.Found | None:
        found = fetch(key)
        log_out_on_an_old_process()
        return found

    async def afetch_then_log_out(key: str) -> migration.Found | None:
        found = await afetch(key)
        await sync_to_async(log_out_on_an_old_process)()
        return found

    monkeypatch.setattr(source, "fetch", fetch_then_log_out)
    monkeypatch.setattr(source, "afetch", afetch_then_log_out)
    session = SessionStore(cookie)
    assert call(session, "load") == {}
    assert logouts == [cookie]
    assert session.session_key is None
    assert redis_keys() == set()
    monkeypatch.undo()
    assert call(SessionStore(cookie), "load") == {}
    assert not source_holds(engine, cookie, sources)


def test_a_save_by_an_old_process_between_the_lookup_and_the_claim_moves_as_saved(
    user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, redis_keys: Keys
) -> None:
    use(settings, DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    source = migration.window()
    assert source is not None
    fetch = source.fetch

    def fetch_then_save_elsewhere(key: str) -> migration.Found | None:
        found = fetch(key)
        monkeypatch.setattr(source, "fetch", fetch)
        old = DatabaseStore(key)
        old["late"] = "saved by an old process"
        old.save()
        return found

    monkeypatch.setattr(source, "fetch", fetch_then_save_elsewhere)
    data = SessionStore(cookie).load()
    assert data["late"] == "saved by an old process"
    assert data["visits"] == 2
    assert not Session.objects.exists()


# --- Old and new processes side by side: the handover engine -------------------------

HANDOVER = "django_redis_sessions.backends.handover"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_logout_on_an_old_process_ends_the_session_a_new_process_moved(
    engine: str,
    sources: Path,
    user: Any,
    settings: Any,
    prefix: str,
    redis_keys: Keys,
) -> None:
    use(settings, HANDOVER, migrate_from=ENGINES[engine])
    cookie = logged_in(user)
    # A new process moves the session on the visitor's next request...
    use(settings, THIS_ENGINE, migrate_from=ENGINES[engine])
    assert visitor(cookie).get("/whoami/").content == str(user.pk).encode()
    assert data_name(prefix, cookie) in redis_keys()
    # ...the logout lands on an old one, whose own engine no longer has it...
    use(settings, HANDOVER, migrate_from=ENGINES[engine])
    assert visitor(cookie).get("/logout/").content == b"out"
    # ...and it is final on the new ones too.
    use(settings, THIS_ENGINE, migrate_from=ENGINES[engine])
    assert visitor(cookie).get("/whoami/").content == b"anonymous"
    assert data_name(prefix, cookie) not in redis_keys()
    assert tombstone_name(prefix, cookie) in redis_keys()
    assert not source_holds(engine, cookie, sources)


def test_a_logout_on_an_old_process_while_a_new_one_moves_the_session_stays_final(
    user: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    redis_keys: Keys,
) -> None:
    use(settings, HANDOVER, migrate_from=DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    source = migration.window()
    assert source is not None
    claim = source.claim

    def claim_then_log_out_elsewhere(found: migration.Found) -> migration.Found | None:
        claimed = claim(found)
        # Between the claim and the create: the source is empty already.
        handover.store_class(DB)(cookie).flush()
        return claimed

    monkeypatch.setattr(source, "claim", claim_then_log_out_elsewhere)
    session = SessionStore(cookie)
    assert session.load() == {}
    assert session.session_key is None
    assert tombstone_name(prefix, cookie) in redis_keys()
    # Only tombstones: the cookie's, and the one the login's cycle_key left.
    assert {name.endswith(":tombstone") for name in redis_keys()} == {True}
    assert not Session.objects.exists()


def test_a_login_on_an_old_process_ends_the_key_a_new_process_moved(
    user: Any, settings: Any, prefix: str, redis_keys: Keys
) -> None:
    use(settings, HANDOVER, migrate_from=DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert visitor(cookie).get("/read/").content == b"2"
    use(settings, HANDOVER, migrate_from=DB)
    client = visitor(cookie)
    assert client.get(f"/login/?id={user.pk}").content == b"in"
    new_cookie = client.cookies["sessionid"].value
    assert new_cookie != cookie
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert visitor(cookie).get("/whoami/").content == b"anonymous"
    assert visitor(new_cookie).get("/whoami/").content == str(user.pk).encode()
    assert data_name(prefix, cookie) not in redis_keys()


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_a_logout_on_an_old_asyncio_process_ends_the_session_a_new_process_moved(
    settings: Any, prefix: str, redis_keys: Keys
) -> None:
    user = get_user_model().objects.create_user("frank")
    use(settings, HANDOVER, migrate_from=DB)
    cookie = logged_in(user)
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert visitor(cookie).get("/whoami/").content == str(user.pk).encode()
    use(settings, HANDOVER, migrate_from=DB)

    async def log_out() -> bytes:
        response = await visitor(cookie, AsyncClient).get("/async-logout/")
        return bytes(response.content)

    assert asyncio.run(log_out()) == b"out"
    use(settings, THIS_ENGINE, migrate_from=DB)
    assert visitor(cookie).get("/whoami/").content == b"anonymous"
    assert data_name(prefix, cookie) not in redis_keys()


def test_a_signed_cookie_logged_out_on_an_old_process_is_never_adopted(
    user: Any, settings: Any, prefix: str, redis_keys: Keys
) -> None:
    use(settings, HANDOVER, migrate_from=SIGNED)
    cookie = logged_in(user)
    assert visitor(cookie).get("/logout/").content == b"out"
    # signed_cookies cannot revoke a cookie; once every process is new, the
    # copied cookie is no session.
    use(settings, THIS_ENGINE, migrate_from=SIGNED)
    assert visitor(cookie).get("/whoami/").content == b"anonymous"
    assert tombstone_name(prefix, hashed_id(cookie)) in redis_keys()
    # Only tombstones: the cookie's, and the one the login's cycle_key left.
    assert {name.endswith(":tombstone") for name in redis_keys()} == {True}


def test_the_handover_engine_needs_migrate_from(settings: Any) -> None:
    use(settings, HANDOVER)
    with pytest.raises(
        ImproperlyConfigured, match=r"needs SESSION_REDIS\['MIGRATE_FROM'\]"
    ):
        handover.SessionStore  # noqa: B018
    use(settings, HANDOVER, migrate_from=DB)
    assert issubclass(handover.SessionStore, DatabaseStore)


@pytest.mark.django_db(transaction=True)
def test_a_logout_on_an_old_process_is_final_on_a_cluster(
    settings: Any, cluster: redis.cluster.RedisCluster, prefix: str, call: Any
) -> None:
    keys = add_rows(2)
    use(settings, THIS_ENGINE, migrate_from=DB)
    old = handover.store_class(DB)
    for key in keys:
        assert call(SessionStore(key), "load") == {"n": 1}  # moved by a new process
    # One logout lands on an old process, whose own engine forgot the key...
    session = old(keys[0])
    assert call(session, "get", "n") is None
    call(session, "flush")
    # ...the other is a login there, which ends the key as well.
    session = old(keys[1])
    assert call(session, "get", "n") is None
    call(session, "cycle_key")
    for key in keys:
        assert call(SessionStore(key), "load") == {}
        assert cluster.exists(data_name(prefix, key)) == 0
        assert cluster.exists(tombstone_name(prefix, key)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_claim_written_later_than_a_tombstone_lives_is_dropped(
    settings: Any, monkeypatch: pytest.MonkeyPatch, redis_keys: Keys, call: Any
) -> None:
    [key] = add_rows(1)
    use(settings, THIS_ENGINE, migrate_from=DB)
    # The process stalls between the claim and the write for as long as a
    # tombstone of a logout in between would live.
    clock = iter([0.0, float(get_layer().tombstone_seconds)])
    monkeypatch.setattr(migration, "monotonic", lambda: next(clock))
    assert call(SessionStore(key), "load") == {}
    assert redis_keys() == set()
    assert not Session.objects.exists()


def test_the_handover_engine_is_no_engine_to_move_from(settings: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="it is the handover engine"):
        migration.source_for(HANDOVER)
    use(settings, HANDOVER, migrate_from=HANDOVER)
    with pytest.raises(ImproperlyConfigured, match="it is the handover engine"):
        handover.SessionStore  # noqa: B018
