"""The per-user index: exact, cheap, never missing a live session."""

from __future__ import annotations

import asyncio
import itertools
import time
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
from django_redis_sessions.keys import data_key, glob_escape, user_index_key
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import PRUNE_BATCH, Outcome
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import CommandLog
from django_redis_sessions.user_index import INDEX_MARK, SLACK_MS, IndexWrite
from tests.utils import Server, load_scripts, needs_async_backend, redis_sessions

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
    user: AbstractBaseUser,
    raw_redis: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = logged_in(user), logged_in(user)
    store = RedisSessionStore()
    index, expiry = RedisLayer().index_names(str(user.pk))
    session_ttl = raw_redis.pttl(RedisLayer().data_name(cookie(second)))
    # The index outlives the user's last session by the slack, no more.
    for name in (index, expiry):
        assert 0 < raw_redis.pttl(name) - session_ttl <= SLACK_MS + 1000
    # A session that vanished behind the index's back (expired, cleared).
    raw_redis.delete(RedisLayer().data_name(cookie(first)))
    assert [s.id for s in store.user_sessions(user.pk)] == [
        store.session_id(cookie(second))
    ]
    # Its entry is younger than the slack: it might be a session being
    # written, so it stays until a listing finds it older.
    assert raw_redis.hlen(index) == raw_redis.zcard(expiry) == 2
    later = user_index_module.now_ms() + SLACK_MS + 1
    monkeypatch.setattr(layer_module, "now_ms", lambda: later)
    assert len(store.user_sessions(user.pk)) == 1
    assert raw_redis.hkeys(index) == raw_redis.zrange(expiry, 0, -1)
    assert raw_redis.hkeys(index) == [store.session_id(cookie(second)).encode()]


def test_an_index_write_prunes_entries_past_their_expiry(
    user: AbstractBaseUser,
    raw_redis: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged_in(user)
    store = RedisSessionStore()
    [entry] = store.user_sessions(user.pk)
    # A login long after the first session's expiry plus the slack.
    expired = int(entry.expires_at.timestamp() * 1000) + SLACK_MS + 1
    monkeypatch.setattr(layer_module, "now_ms", lambda: expired)
    monkeypatch.setattr(f"{backend_module.__name__}.now_ms", lambda: expired)
    new = logged_in(user)
    index, expiry = RedisLayer().index_names(str(user.pk))
    fields = {field.decode() for field in raw_redis.hkeys(index)}  # type: ignore[union-attr]
    assert fields == {store.session_id(cookie(new))}
    assert raw_redis.zrange(expiry, 0, -1) == [store.session_id(cookie(new)).encode()]


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


# --- Listed once saved, on one server and on Cluster -------------------------


def user_data(user_id: str, **more: Any) -> dict[str, Any]:
    return {"_auth_user_id": user_id, **more}


def index_fields(server: Server, user_id: str) -> set[str]:
    """The fields of the user's index, the same in its hash and its set."""
    index, expiry = RedisLayer().index_names(user_id)
    fields = {field.decode() for field in server.raw.hkeys(index)}
    assert fields == {member.decode() for member in server.raw.zrange(expiry, 0, -1)}
    return fields


def test_a_listing_between_an_entry_and_its_session_prunes_nothing(
    server: Server, call: Any
) -> None:
    """On Cluster the entry is written first: a listing in between keeps it."""
    layer, store = RedisLayer(), RedisSessionStore()
    key = "e" * 32
    written = IndexWrite("7", user_index_module.now_ms() + 60_000)
    call(layer, "index", key, written)
    assert call(store, "user_sessions", "7") == []
    assert index_fields(server, "7") == {layer.session_id(key)}
    # A logout that must end everything sees it as pending.
    [(session_id, _, expiry)] = call(layer, "user_entries", "7", pending=True)
    assert (session_id, expiry) == (layer.session_id(key), None)
    assert call(store, "create", key, user_data("7"), 60) is True
    assert [s.id for s in call(store, "user_sessions", "7")] == [layer.session_id(key)]


def test_a_store_touch_past_the_slack_keeps_the_session_listed(
    server: Server, call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A touch that moves the expiry far ahead moves the entry with it: a
    write after the entry's old expiry plus the slack prunes nothing live."""
    store = RedisSessionStore()
    key, other = "t" * 32, "o" * 32
    metadata = {"ip": "192.0.2.1"}
    created = IndexWrite("7", user_index_module.now_ms() + 60_000, **metadata)
    call(RedisLayer(), "create", key, b'{"_auth_user_id":"7"}', 60, created)
    assert call(store, "touch", key, 30 * 86400) is True  # a month
    [listed] = call(store, "user_sessions", "7")
    assert listed.ip == "192.0.2.1"  # the entry's metadata is kept
    # Long after the entry's first minute plus the slack, before the month.
    later = created.expires_ms + SLACK_MS + 1
    monkeypatch.setattr(layer_module, "now_ms", lambda: later)
    assert call(store, "create", other, user_data("7"), 60) is True
    assert store.session_id(key) in index_fields(server, "7")
    assert call(store, "get", key) == user_data("7")


def test_a_store_touch_past_the_slack_keeps_a_write_made_in_between(
    server: Server, call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite is versioned: a save between its read and its write is
    kept, and the touch reads again and moves the entry over that save."""
    store = RedisSessionStore()
    key = "w" * 32
    assert call(store, "create", key, user_data("7", v=1), 60) is True
    layer = store._layer
    read, aread = layer.read, layer.aread
    writes = iter([user_data("7", v=2)])

    def write_in_between() -> None:
        for data in writes:  # once: the first read only
            assert RedisSessionStore().update(key, data, ttl=60) is True

    def read_then_write(*args: Any) -> bytes | None:
        payload = read(*args)
        write_in_between()
        return payload

    async def aread_then_write(*args: Any) -> bytes | None:
        payload = await aread(*args)
        write_in_between()
        return payload

    monkeypatch.setattr(layer, "read", read_then_write)
    monkeypatch.setattr(layer, "aread", aread_then_write)
    assert call(store, "touch", key, 30 * 86400) is True
    assert call(store, "get", key) == user_data("7", v=2)
    assert 29 * 86400 < call(store, "ttl", key) <= 30 * 86400
    # The entry records the new expiry, not the first one.
    _, expiry = layer.index_names("7")
    recorded = server.raw.zscore(expiry, store.session_id(key))
    assert recorded is not None
    assert recorded > (time.time() + 29 * 86400) * 1000


def test_a_store_touch_within_the_slack_is_a_read_and_a_pexpire(
    log: CommandLog, session_redis: dict[str, Any]
) -> None:
    store = RedisSessionStore()
    key = "t" * 32
    assert store.create(key, user_data("7"), ttl=600) is True
    log.take()
    assert store.touch(key, 601) is True
    assert store.touch("n" * 32, 601) is False
    assert log.take() == ["GET", "PEXPIRE", "GET"]
    session_redis["USER_INDEX"] = False
    assert RedisSessionStore().touch(key, 602) is True
    assert log.take() == ["PEXPIRE"]


def test_a_write_prunes_a_bounded_batch_of_expired_entries(
    server: Server, call: Any
) -> None:
    """Stale entries go without a cap, a batch per write: no write is O(n)."""
    layer, store = RedisLayer(), RedisSessionStore()
    index, expiry = layer.index_names("8")
    past = user_index_module.now_ms() - 2 * SLACK_MS
    stale = {f"#{n:043d}": past for n in range(100)}
    server.raw.hset(index, mapping=dict.fromkeys(stale, f"{past}|{past}|{past}||"))
    server.raw.zadd(expiry, stale)
    assert call(store, "create", "f" * 32, user_data("8"), 60) is True
    assert server.raw.zcard(expiry) == 100 - PRUNE_BATCH + 1
    assert call(store, "create", "g" * 32, user_data("8"), 60) is True
    assert index_fields(server, "8") == {layer.session_id(k * 32) for k in "fg"}


# --- The cap ends live sessions only -------------------------------------------


@pytest.fixture
def cap_of_two(
    server: Server, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """MAX_SESSIONS_PER_USER = 2; the ids the layer reports ended."""
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "MAX_SESSIONS_PER_USER": 2}
    # Logins in one millisecond would tie for the oldest: a clock that moves
    # at every reading keeps the order of the logins.
    ticks = itertools.count()
    real = user_index_module.now_ms
    monkeypatch.setattr(layer_module, "now_ms", lambda: real() + next(ticks))
    ended: list[str] = []

    async def aon_evicted(ids: list[str]) -> None:
        ended.extend(ids)

    built = RedisLayer.__init__

    def init(self: RedisLayer, **kwargs: Any) -> None:
        built(self, **kwargs)
        self.on_evicted = ended.extend
        self.aon_evicted = aon_evicted

    monkeypatch.setattr(RedisLayer, "__init__", init)
    return ended


@pytest.mark.parametrize("gone", ["ended", "expired"])
def test_the_cap_counts_only_live_sessions(
    server: Server, call: Any, cap_of_two: list[str], gone: str
) -> None:
    """A dead entry never counts, nor makes a live session end in its place."""
    store, layer = RedisSessionStore(), RedisLayer()
    first, dead, last = "a" * 32, "b" * 32, "c" * 32
    for key in (first, dead):
        assert call(store, "create", key, user_data("9"), 60) is True
    if gone == "ended":
        assert call(store, "destroy", dead) is True  # no user known: listed still
    else:
        server.raw.delete(layer.data_name(dead))
    assert call(store, "create", last, user_data("9"), 60) is True
    assert cap_of_two == []
    assert call(store, "get", first) == user_data("9")
    ids = {s.id for s in call(store, "user_sessions", "9")}
    assert ids == {layer.session_id(first), layer.session_id(last)}


def test_the_cap_ends_the_oldest_live_session_and_reports_it(
    server: Server, call: Any, cap_of_two: list[str]
) -> None:
    store, layer = RedisSessionStore(), RedisLayer()
    keys = [letter * 32 for letter in "abc"]
    for key in keys:
        assert call(store, "create", key, user_data("9"), 60) is True
    assert cap_of_two == [layer.session_id(keys[0])]
    assert call(store, "get", keys[0]) is None
    assert server.raw.exists(layer.tombstone_name(keys[0])) == 1
    assert index_fields(server, "9") == {layer.session_id(key) for key in keys[1:]}


def test_the_cap_never_ends_the_session_being_written(
    server: Server, call: Any, cap_of_two: list[str]
) -> None:
    """The one written stays, even if it is not the newest by its entry."""
    store, layer = RedisSessionStore(), RedisLayer()
    old, new, again = "a" * 32, "b" * 32, "c" * 32
    for key in (old, new):
        assert call(store, "create", key, user_data("9"), 60) is True
    # A save of the oldest that refreshes its entry: it keeps its creation
    # time, so a cap of one would end every other session but this one.
    call(layer, "cycle", old, again, b'{"_auth_user_id": "9"}', 60, None)
    assert call(store, "update", again, user_data("9", n=1), 60) is True
    assert call(store, "get", again) == user_data("9", n=1)
    assert cap_of_two == []


# --- The logged-in path keeps the plain path's guarantees -------------------------


def test_an_update_of_a_logged_in_session_after_its_logout_never_revives_it(
    server: Server, call: Any
) -> None:
    store, layer = RedisSessionStore(), RedisLayer()
    key = "h" * 32
    assert call(store, "create", key, user_data("5"), 60) is True
    assert call(layer, "destroy", key, "5") is True  # a logout
    assert call(store, "update", key, user_data("5", cart="book"), 60) is False
    assert server.raw.exists(layer.data_name(key)) == 0
    assert call(store, "user_sessions", "5") == []


def test_a_create_over_a_logged_in_sessions_tombstone_is_refused(
    server: Server, call: Any
) -> None:
    store, layer = RedisSessionStore(), RedisLayer()
    key = "i" * 32
    assert call(store, "create", key, user_data("5"), 60) is True
    assert call(layer, "destroy", key, "5") is True
    assert call(store, "create", key, user_data("5", again=1), 60) is False
    assert server.raw.exists(layer.data_name(key)) == 0
    assert call(store, "user_sessions", "5") == []


def test_a_key_change_of_an_ended_logged_in_session_writes_nothing(
    server: Server, call: Any
) -> None:
    store, layer = RedisSessionStore(), RedisLayer()
    old, new = "j" * 32, "k" * 32
    assert call(store, "create", old, user_data("5"), 60) is True
    assert call(layer, "destroy", old, "5") is True
    written = IndexWrite("5", user_index_module.now_ms() + 60_000)
    payload = b'{"_auth_user_id": "5"}'
    outcome = call(layer, "cycle", old, new, payload, 60, written)
    assert outcome is Outcome.MISSING
    assert server.raw.exists(layer.data_name(new)) == 0
    assert call(store, "user_sessions", "5") == []


def test_a_key_change_on_cluster_lists_the_new_id_before_the_old_session_ends(
    cluster: redis.cluster.RedisCluster, call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing between the steps of a key change still finds the session."""
    store, layer = RedisSessionStore(), RedisLayer()
    old, new = "l" * 32, "m" * 32
    assert call(store, "create", old, user_data("5"), 60) is True
    seen: list[set[str]] = []
    destroy = RedisLayer.destroy

    def destroy_after_a_listing(
        self: RedisLayer, key: str, *args: Any, **kwargs: Any
    ) -> bool:
        seen.append(index_fields(Server(cluster, True), "5"))
        return destroy(self, key, *args, **kwargs)

    monkeypatch.setattr(RedisLayer, "destroy", destroy_after_a_listing)
    written = IndexWrite("5", user_index_module.now_ms() + 60_000)
    payload = b'{"_auth_user_id": "5"}'
    assert layer.cycle(old, new, payload, 60, written) is Outcome.WRITTEN
    assert seen == [{layer.session_id(k) for k in (old, new)}]
    assert [s.id for s in call(store, "user_sessions", "5")] == [layer.session_id(new)]


@pytest.mark.parametrize("change", ["another user", "no user", "flush"])
def test_a_session_whose_user_changes_leaves_the_old_users_index(
    server: Server,
    user: AbstractBaseUser,
    change: str,
    monkeypatch: pytest.MonkeyPatch,
    call: Any,
) -> None:
    client = logged_in(user)
    session = SessionStore(cookie(client))
    session.load()
    if change == "flush":
        call(session, "flush")
    elif change == "no user":
        del session["_auth_user_id"]
    else:
        session["_auth_user_id"] = "other"
    if change != "flush":
        call(session, "save")
    store = RedisSessionStore()
    assert store.user_sessions(user.pk) == []
    assert index_fields(server, str(user.pk)) == set()
    if change == "another user":
        assert [s.id for s in store.user_sessions("other")] == [
            store.session_id(str(session.session_key))
        ]
    if change != "flush":
        # Later saves, one refreshing its entry, never bring it back.
        later = user_index_module.now_ms() + SLACK_MS + 60_000
        monkeypatch.setattr(f"{backend_module.__name__}.now_ms", lambda: later)
        again = SessionStore(session.session_key)
        again["n"] = 1
        call(again, "save")
        assert store.user_sessions(user.pk) == []


# --- Switching HASH_IDS: False -> "migrate" -> True ---------------------------------


def hash_ids(settings: Any, mode: bool | str) -> None:
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "HASH_IDS": mode}


def test_hash_ids_switches_list_each_session_once_by_its_id(
    server: Server, settings: Any, call: Any
) -> None:
    keys = ["n" * 32, "o" * 32]
    hash_ids(settings, False)
    for key in keys:
        assert call(RedisSessionStore(), "create", key, user_data("4"), 60) is True
    assert index_fields(server, "4") == set(keys)  # no ids without hashing
    hash_ids(settings, "migrate")
    store = RedisSessionStore()
    ids = {store.session_id(key) for key in keys}
    assert ids.isdisjoint(keys)
    # A save by the new id, while the old field is still there: listed once.
    assert call(store, "get", keys[0]) == user_data("4")
    assert call(store, "update", keys[0], user_data("4", n=1), 60) is True
    listed = [s.id for s in call(store, "user_sessions", "4")]
    assert sorted(listed) == sorted(ids)
    assert index_fields(server, "4") == ids  # no cookie left in the index
    output = redis_sessions("user", "4")
    assert not any(key in output for key in keys)
    assert all(session_id in output for session_id in ids)
    hash_ids(settings, True)
    assert {s.id for s in call(RedisSessionStore(), "user_sessions", "4")} == ids


def test_logout_user_after_switching_to_migrate_ends_every_session(
    server: Server, settings: Any, call: Any
) -> None:
    """Sessions still under their plain names are found, moved, and ended."""
    keys = ["p" * 32, "q" * 32]
    hash_ids(settings, False)
    for key in keys:
        assert call(RedisSessionStore(), "create", key, user_data("3"), 60) is True
    hash_ids(settings, "migrate")
    store = RedisSessionStore()
    ids = {store.session_id(key) for key in keys}
    assert {s.id for s in call(store, "user_sessions", "3")} == ids
    assert call(store, "logout_user", "3") == 2
    for key in keys:
        assert call(store, "get", key) is None
        assert server.raw.exists(data_key(store._layer.prefix, key)) == 0
    assert call(store, "user_sessions", "3") == []


def test_rehash_rewrites_index_fields_to_ids(server: Server, settings: Any) -> None:
    keys = ["r" * 32, "s" * 32]
    hash_ids(settings, False)
    for key in keys:
        assert RedisSessionStore().create(key, user_data("2"), 60) is True
    hash_ids(settings, "migrate")
    assert "Rewrote 2 user index entries to session ids." in redis_sessions("rehash")
    store = RedisSessionStore()
    ids = {store.session_id(key) for key in keys}
    assert index_fields(server, "2") == ids
    hash_ids(settings, True)
    output = redis_sessions("user", "2")
    assert not any(key in output for key in keys)
    assert RedisSessionStore().logout_user("2") == 2
    assert everything_in_index(server, "2") == []


def everything_in_index(server: Server, user_id: str) -> list[bytes]:
    index, expiry = RedisLayer().index_names(user_id)
    return [*server.raw.hkeys(index), *server.raw.zrange(expiry, 0, -1)]
