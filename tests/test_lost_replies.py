"""A reply lost after the server ran a command, and the client's retry.

redis-py resends a command whose connection broke before the reply arrived
(the engine allows one retry). The server then runs it twice; each store
operation must recognize its own second run, so that a lost reply never leaves
a second live session behind (one the user's logout would not end).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import Outcome
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.user_index import IndexWrite, now_ms
from tests.utils import (
    Keys,
    ReplyDroppingProxy,
    data_name,
    load_scripts,
    tombstone_name,
)


@pytest.fixture
def proxy(
    redis_url: str, session_redis: dict[str, Any]
) -> Iterator[ReplyDroppingProxy]:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None
    assert parts.port is not None
    with ReplyDroppingProxy(parts.hostname, parts.port) as proxy:
        session_redis["URL"] = proxy.url
        yield proxy


def warm_up(call: Any, redis_keys: Keys) -> Keys:
    """Connect and load the scripts, so the dropped reply is the one tested.

    Returns ``redis_keys`` without the tombstones the warm-up left.
    """
    session = SessionStore()
    call(session, "save")
    call(session, "cycle_key")
    call(session, "save")
    call(session, "delete")
    before = redis_keys()
    return lambda: redis_keys() - before


def test_a_create_whose_reply_is_lost_creates_one_session(
    proxy: ReplyDroppingProxy, call: Any, redis_keys: Keys, prefix: str
) -> None:
    redis_keys = warm_up(call, redis_keys)
    session = SessionStore()
    session["user"] = "1"
    proxy.drop_next_reply("EVALSHA")
    call(session, "save")
    assert proxy.dropped == 1
    assert redis_keys() == {data_name(prefix, str(session.session_key))}


def test_a_cycle_key_whose_reply_is_lost_leaves_one_live_session(
    proxy: ReplyDroppingProxy, call: Any, redis_keys: Keys, prefix: str
) -> None:
    redis_keys = warm_up(call, redis_keys)
    session = SessionStore()
    session["user"] = "1"
    call(session, "save")
    old = str(session.session_key)
    proxy.drop_next_reply("EVALSHA")
    call(session, "cycle_key")  # the script that performs the key change
    assert proxy.dropped == 1
    new = str(session.session_key)
    assert new not in ("None", old)
    assert redis_keys() == {data_name(prefix, new), tombstone_name(prefix, old)}
    assert SessionStore(new).load() == {"user": "1"}


def test_a_destroy_whose_reply_is_lost_still_reports_the_live_session(
    proxy: ReplyDroppingProxy, call: Any, redis_keys: Keys, prefix: str
) -> None:
    redis_keys = warm_up(call, redis_keys)
    store = RedisSessionStore()
    assert call(store, "create", "lostreply123", {"v": 1}, 60) is True
    proxy.drop_next_reply("EVALSHA")
    assert call(store, "destroy", "lostreply123") is True
    assert proxy.dropped == 1
    assert redis_keys() == {tombstone_name(prefix, "lostreply123")}


def test_a_destroy_of_an_ended_session_whose_reply_is_lost_reports_nothing(
    proxy: ReplyDroppingProxy, call: Any, redis_keys: Keys, prefix: str
) -> None:
    """The retry reports what the first run did: it ended nothing."""
    redis_keys = warm_up(call, redis_keys)
    store = RedisSessionStore()
    assert call(store, "create", "lostreply456", {"v": 1}, 60) is True
    assert call(store, "destroy", "lostreply456") is True
    proxy.drop_next_reply("EVALSHA")
    assert call(store, "destroy", "lostreply456") is False
    assert proxy.dropped == 1


# --- The logged-in path: the scripts that write the user index too -----------


def user_data(user_id: str) -> dict[str, Any]:
    return {"_auth_user_id": user_id}


def listed(call: Any, user_id: str) -> list[str]:
    return sorted(s.id for s in call(RedisSessionStore(), "user_sessions", user_id))


def test_a_login_at_the_cap_whose_reply_is_lost_ends_the_oldest_and_lists_the_rest(
    proxy: ReplyDroppingProxy,
    call: Any,
    raw_redis: redis.Redis,
    session_redis: dict[str, Any],
) -> None:
    session_redis["MAX_SESSIONS_PER_USER"] = 1
    load_scripts(raw_redis)
    store, layer = RedisSessionStore(), RedisLayer()
    assert call(store, "create", "oldestkey123", user_data("1"), 60) is True
    proxy.drop_next_reply("EVALSHA")
    assert call(store, "create", "newestkey123", user_data("1"), 60) is True
    assert proxy.dropped == 1
    assert call(store, "get", "oldestkey123") is None
    assert listed(call, "1") == [layer.session_id("newestkey123")]
    assert call(store, "logout_user", "1") == 1
    assert call(store, "get", "newestkey123") is None


def test_an_indexed_key_change_whose_reply_is_lost_lists_one_session(
    proxy: ReplyDroppingProxy, call: Any, raw_redis: redis.Redis
) -> None:
    load_scripts(raw_redis)
    store, layer = RedisSessionStore(), RedisLayer()
    assert call(store, "create", "beforekey123", user_data("2"), 60) is True
    written = IndexWrite("2", now_ms() + 60_000)
    proxy.drop_next_reply("EVALSHA")
    payload = b'{"_auth_user_id": "2"}'
    outcome = call(layer, "cycle", "beforekey123", "afterkey1234", payload, 60, written)
    assert outcome is Outcome.WRITTEN
    assert proxy.dropped == 1
    assert call(store, "get", "beforekey123") is None
    assert listed(call, "2") == [layer.session_id("afterkey1234")]
    index, _ = layer.index_names("2")
    assert raw_redis.hkeys(index) == [layer.session_id("afterkey1234").encode()]


def test_an_indexed_update_whose_reply_is_lost_writes_once_and_lists_it(
    proxy: ReplyDroppingProxy, call: Any, raw_redis: redis.Redis
) -> None:
    load_scripts(raw_redis)
    store, layer = RedisSessionStore(), RedisLayer()
    assert call(store, "create", "updatekey123", user_data("3"), 60) is True
    proxy.drop_next_reply("EVALSHA")
    data = {**user_data("3"), "cart": "book"}
    assert call(store, "update", "updatekey123", data, 60) is True
    assert proxy.dropped == 1
    assert call(store, "get", "updatekey123") == data
    assert listed(call, "3") == [layer.session_id("updatekey123")]


def test_an_indexed_destroy_whose_reply_is_lost_reports_and_unlists(
    proxy: ReplyDroppingProxy, call: Any, raw_redis: redis.Redis
) -> None:
    load_scripts(raw_redis)
    store, layer = RedisSessionStore(), RedisLayer()
    assert call(store, "create", "logoutkey123", user_data("4"), 60) is True
    proxy.drop_next_reply("EVALSHA")
    assert call(layer, "destroy", "logoutkey123", "4") is True
    assert proxy.dropped == 1
    index, expiry = layer.index_names("4")
    assert raw_redis.hlen(index) == raw_redis.zcard(expiry) == 0
