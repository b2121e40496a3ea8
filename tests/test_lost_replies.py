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

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.store import RedisSessionStore
from tests.utils import (
    Keys,
    ReplyDroppingProxy,
    data_name,
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
