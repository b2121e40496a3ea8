"""The per-user index: exact, cheap, never missing a live session."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.cluster
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.sessions.backends.base import UpdateError
from django.test import AsyncClient, Client

import django_redis_sessions.backends.redis as backend_module
import django_redis_sessions.redis_layer as layer_module
import django_redis_sessions.user_index as user_index_module
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.keys import glob_escape, user_index_key
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import CommandLog
from django_redis_sessions.user_index import INDEX_MARK, SLACK_MS
from tests.utils import load_scripts, needs_async_backend

pytestmark = pytest.mark.django_db


@pytest.fixture
def user() -> AbstractBaseUser:
    created: AbstractBaseUser = get_user_model().objects.create_user(
        "alice", password="x"
    )
    return created


def logged_in(user: AbstractBaseUser, **headers: str) -> Client:
    client = Client()
    client.defaults.update(headers)
    assert client.get(f"/login/?id={user.pk}").content == b"in"
    return client


def cookie(client: Client) -> str:
    return client.cookies["sessionid"].value


def index_name(prefix: str, user_id: object) -> str:
    return user_index_key(prefix, str(user_id))


# --- What the index holds -----------------------------------------------------


def test_a_login_is_listed_and_a_logout_leaves_no_index(
    user: AbstractBaseUser, raw_redis: redis.Redis, prefix: str
) -> None:
    client = logged_in(user)
    store = RedisSessionStore()
    [session] = store.user_sessions(user.pk)
    assert session.id == store.session_id(cookie(client))
    assert session.created_at <= session.last_seen_at < session.expires_at
    assert session.ip is None
    assert session.user_agent is None
    assert client.get("/logout/").content == b"out"
    assert store.user_sessions(user.pk) == []
    assert raw_redis.exists(index_name(prefix, user.pk)) == 0


def test_anonymous_sessions_are_never_indexed(
    raw_redis: redis.Redis, prefix: str
) -> None:
    client = Client()
    assert client.get("/write/").content == b"1"
    pattern = glob_escape(prefix) + "{u:*}:sessions"
    assert list(raw_redis.scan_iter(match=pattern)) == []


def test_sessions_are_listed_newest_first_with_their_metadata(
    user: AbstractBaseUser, session_redis: dict[str, Any]
) -> None:
    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    first = logged_in(user, REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Firefox")
    second = logged_in(user, REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Safari|15")
    store = RedisSessionStore()
    sessions = store.user_sessions(user.pk)
    assert [s.id for s in sessions] == [
        store.session_id(cookie(second)),
        store.session_id(cookie(first)),
    ]
    assert [(s.ip, s.user_agent) for s in sessions] == [
        ("203.0.113.9", "Safari|15"),
        ("198.51.100.7", "Firefox"),
    ]
    # Later requests keep what the login recorded.
    assert second.get("/write/", HTTP_USER_AGENT="Other").content == b"1"
    assert store.user_sessions(user.pk)[0].user_agent == "Safari|15"


@pytest.mark.parametrize("user_id", ["42", "a{b}:c", "ключ", "0" * 200])
def test_any_user_id_string_works(user_id: str, api_mode: str) -> None:
    store = RedisSessionStore()
    key = "k" * 32
    assert store.create(key, {"_auth_user_id": user_id}, ttl=60) is True
    if api_mode == "async":
        sessions = asyncio.run(store.auser_sessions(user_id))
    else:
        sessions = store.user_sessions(user_id)
    assert [s.id for s in sessions] == [store.session_id(key)]
    assert store.get(key) == {"_auth_user_id": user_id}  # the mark stays hidden


# --- Logging a user out -------------------------------------------------------


def test_logout_user_ends_every_session_but_the_kept_one(
    user: AbstractBaseUser,
) -> None:
    clients_ = [logged_in(user) for _ in range(3)]
    store = RedisSessionStore()
    assert store.logout_user(user.pk, keep=cookie(clients_[0])) == 2
    assert [s.id for s in store.user_sessions(user.pk)] == [
        store.session_id(cookie(clients_[0]))
    ]
    assert clients_[0].get("/read/").content == b"0"
    for ended in clients_[1:]:
        response = ended.get("/logout-others/")
        assert response.content == b"0"  # anonymous: nothing to end
    assert store.logout_user(user.pk, keep=store.session_id(cookie(clients_[0]))) == 0


def test_logout_other_sessions_keeps_the_requests_own(
    user: AbstractBaseUser,
) -> None:
    here, there = logged_in(user), logged_in(user)
    assert here.get("/logout-others/").content == b"1"
    assert here.get("/logout-others/").content == b"0"
    assert there.get("/logout-others/").content == b"0"  # logged out
    assert len(RedisSessionStore().user_sessions(user.pk)) == 1


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_alogout_other_sessions_keeps_the_requests_own(
    user: AbstractBaseUser,
) -> None:
    async def visit() -> list[bytes]:
        here, there = AsyncClient(), AsyncClient()
        for client in (here, there):
            await client.get(f"/async-login/?id={user.pk}")
        return [
            (await here.get("/async-logout-others/")).content,
            (await there.get("/async-logout-others/")).content,
        ]

    assert asyncio.run(visit()) == [b"1", b"0"]


def test_a_login_beyond_the_cap_ends_the_oldest_sessions(
    user: AbstractBaseUser, session_redis: dict[str, Any]
) -> None:
    session_redis["MAX_SESSIONS_PER_USER"] = 2
    first, second, third = (logged_in(user) for _ in range(3))
    store = RedisSessionStore()
    assert {s.id for s in store.user_sessions(user.pk)} == {
        store.session_id(cookie(second)),
        store.session_id(cookie(third)),
    }
    assert store.get(cookie(first)) is None
    assert first.get("/logout-others/").content == b"0"  # logged out


# --- Cheap: round trips -------------------------------------------------------


@pytest.fixture
def log(session_redis: dict[str, Any], raw_redis: redis.Redis) -> CommandLog:
    load_scripts(raw_redis)
    log = CommandLog()
    session_redis["OPTIONS"] = {"connection_class": log.connection_class}
    return log


def test_a_login_costs_no_extra_round_trip(
    user: AbstractBaseUser, log: CommandLog, session_redis: dict[str, Any]
) -> None:
    def login_commands() -> list[str]:
        client = Client()
        client.get("/write/")
        log.take()
        client.get(f"/login/?id={user.pk}")
        return log.take()

    login_commands()  # connects and loads the scripts
    indexed = login_commands()
    session_redis["USER_INDEX"] = False
    # Load, cycle_key, and the save that writes the user (with its entry).
    assert len(indexed) == len(login_commands()) == 3
    assert indexed == ["GET", "EVALSHA", "EVALSHA"]


def test_requests_of_a_logged_in_user_cost_what_they_did(
    user: AbstractBaseUser, log: CommandLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = logged_in(user)
    log.take()
    assert client.get("/read/").content == b"0"
    assert log.take() == ["GET"]
    assert client.get("/write/").content == b"1"
    assert log.take() == ["GET", "EVALSHA"]
    # Once the expiry moved past the entry's by more than the slack, one save
    # rewrites the entry with the session, in the same round trip...
    later = user_index_module.now_ms() + SLACK_MS + 60_000
    monkeypatch.setattr(f"{backend_module.__name__}.now_ms", lambda: later)
    assert client.get("/write/").content == b"2"
    assert log.take() == ["GET", "EVALSHA"]
    # ...and the next ones cost the same.
    assert client.get("/write/").content == b"3"
    assert log.take() == ["GET", "EVALSHA"]
    [session] = RedisSessionStore().user_sessions(user.pk)
    assert session.last_seen_at > session.created_at


# --- Stale entries and expiry -------------------------------------------------


def test_entries_of_sessions_gone_are_pruned_and_the_index_expires(
    user: AbstractBaseUser, raw_redis: redis.Redis, prefix: str
) -> None:
    first, second = logged_in(user), logged_in(user)
    store = RedisSessionStore()
    index = index_name(prefix, user.pk)
    session_ttl = raw_redis.pttl(RedisLayer().data_name(cookie(second)))
    # The index outlives the user's last session by the slack, no more.
    assert 0 < raw_redis.pttl(index) - session_ttl <= SLACK_MS + 1000
    # A session that vanished behind the index's back (expired, cleared).
    raw_redis.delete(RedisLayer().data_name(cookie(first)))
    assert [s.id for s in store.user_sessions(user.pk)] == [
        store.session_id(cookie(second))
    ]
    assert raw_redis.hlen(index) == 1


def test_an_index_write_prunes_entries_past_their_expiry(
    user: AbstractBaseUser,
    raw_redis: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = logged_in(user)
    store = RedisSessionStore()
    [entry] = store.user_sessions(user.pk)
    # A login long after the first session's expiry plus the slack.
    expired = int(entry.expires_at.timestamp() * 1000) + SLACK_MS + 1
    monkeypatch.setattr(layer_module, "now_ms", lambda: expired)
    monkeypatch.setattr(f"{backend_module.__name__}.now_ms", lambda: expired)
    new = logged_in(user)
    index = index_name(prefix, user.pk)
    fields = {field.decode() for field in raw_redis.hkeys(index)}  # type: ignore[union-attr]
    assert fields == {store.session_id(cookie(new))}
    assert store.session_id(cookie(old)) not in fields


# --- Forced races -------------------------------------------------------------


def test_logout_user_while_a_request_saves_never_revives_it(
    user: AbstractBaseUser, prefix: str, raw_redis: redis.Redis
) -> None:
    client = logged_in(user)
    in_flight = SessionStore(cookie(client))
    assert in_flight["_auth_user_id"] == str(user.pk)
    assert RedisSessionStore().logout_user(user.pk) == 1
    in_flight["cart"] = "book"
    with pytest.raises(UpdateError):
        in_flight.save()
    assert RedisSessionStore().user_sessions(user.pk) == []
    assert raw_redis.exists(RedisLayer().data_name(cookie(client))) == 0


@pytest.mark.parametrize("logout_at", ["before-login", "after-cycle", "after-save"])
def test_a_login_racing_logout_user_is_listed_or_ended(
    user: AbstractBaseUser, logout_at: str
) -> None:
    """Never live and unlisted, wherever the logout lands in the login."""
    store = RedisSessionStore()
    layer = RedisLayer()
    anonymous = SessionStore()
    anonymous["cart"] = "book"
    anonymous.save()
    login = SessionStore(anonymous.session_key)
    assert login["cart"] == "book"

    def logout_user() -> None:
        for session_id, _, _ in layer.user_entries(str(user.pk)):
            layer.destroy(session_id, str(user.pk))

    if logout_at == "before-login":
        logout_user()
    login.cycle_key()
    if logout_at == "after-cycle":
        logout_user()
    login["_auth_user_id"] = str(user.pk)
    login.save()  # writes the new key, the user and the entry at once
    if logout_at == "after-save":
        logout_user()
    key = str(login.session_key)
    live = store.get(key) is not None
    listed = store.session_id(key) in {s.id for s in store.user_sessions(user.pk)}
    assert live == listed
    assert live is (logout_at != "after-save")


def test_the_backend_never_shows_the_mark_in_the_session(
    user: AbstractBaseUser,
) -> None:
    client = logged_in(user)
    session = SessionStore(cookie(client))
    assert INDEX_MARK not in dict(session.items())
    assert set(session.keys()) == {
        "_auth_user_id",
        "_auth_user_backend",
        "_auth_user_hash",
    }


# --- Redis Cluster ------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_the_index_on_cluster(
    cluster: redis.cluster.RedisCluster,
    user: AbstractBaseUser,
    mode: str,
    prefix: str,
) -> None:
    store = RedisSessionStore()

    def call_store(name: str, *args: Any, **kwargs: Any) -> Any:
        if mode == "sync":
            return getattr(store, name)(*args, **kwargs)
        return asyncio.run(getattr(store, "a" + name)(*args, **kwargs))

    first, second = logged_in(user), logged_in(user)
    ids = {store.session_id(cookie(first)), store.session_id(cookie(second))}
    assert {s.id for s in call_store("user_sessions", user.pk)} == ids
    # The index lives on the user's slot, apart from the sessions.
    index = index_name(prefix, user.pk)
    assert cluster.exists(index) == 1
    login = SessionStore(cookie(first))
    assert login["_auth_user_id"] == str(user.pk)
    login.cycle_key()  # a password change: the entry moves to the new id
    login.save()
    ids = {store.session_id(str(login.session_key)), store.session_id(cookie(second))}
    assert {s.id for s in call_store("user_sessions", user.pk)} == ids
    assert call_store("logout_user", user.pk, keep=cookie(second)) == 1
    assert [s.id for s in call_store("user_sessions", user.pk)] == [
        store.session_id(cookie(second))
    ]
