"""Sentinel: sessions live on the primary and survive a failover."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from django_redis_sessions import client as client_module
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import RedisSentinelServers
from tests.utils import data_name, saved_session


@pytest.fixture
def sentinel_setup(settings: Any, prefix: str) -> Iterator[RedisSentinelServers]:
    """A fresh primary, replica and Sentinel: the failover test consumes them."""
    with RedisSentinelServers(service="sessions") as servers:
        settings.SESSION_REDIS = {
            "URL": "redis://ignored:1/0",  # the address comes from Sentinel
            "SENTINELS": servers.sentinels,
            "SENTINEL_SERVICE": "sessions",
            "PREFIX": prefix,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 1.0},
        }
        yield servers
        client_module.clients.close()


def replicate(servers: RedisSentinelServers) -> None:
    """Wait until the replica has every write the primary acknowledged."""
    with redis.Redis(port=servers.primary.port) as primary:
        # WAIT covers this connection's own writes only: one write of its own
        # comes after every earlier write in the replication stream, so its
        # acknowledgement covers those of the engine's connections too.
        primary.set("replication-marker", b"1", px=60_000)
        assert primary.execute_command("WAIT", 1, 5000) == 1


def test_sessions_are_read_and_written_on_the_primary(
    sentinel_setup: RedisSentinelServers, prefix: str
) -> None:
    session = saved_session(user=1)
    with redis.Redis(port=sentinel_setup.primary.port) as primary:
        assert primary.exists(data_name(prefix, str(session.session_key)))
    assert SessionStore(session.session_key)["user"] == 1
    assert asyncio.run(RedisSessionStore().aget(str(session.session_key))) == {
        "user": 1
    }


def test_a_failover_is_survived_without_a_restart(
    sentinel_setup: RedisSentinelServers,
) -> None:
    session = saved_session(user=1)
    key = str(session.session_key)
    assert SessionStore(key)["user"] == 1  # the cached client is connected
    replicate(sentinel_setup)

    sentinel_setup.primary.stop()
    # Sentinel needs half a second to call the primary down: meanwhile a
    # request fails loudly instead of reading an empty session.
    with pytest.raises(redis.ConnectionError):
        SessionStore(key).load()
    sentinel_setup.wait_for_failover()

    # The same process and cached client: it asks Sentinel again on reconnect.
    after = SessionStore(key)
    assert after["user"] == 1
    after["user"] = 2
    after.save()
    assert SessionStore(key)["user"] == 2
    assert asyncio.run(RedisSessionStore().aget(key)) == {"user": 2}


def replicated_session(servers: RedisSentinelServers) -> str:
    """The key of a session holding ``{"user": 1}``, replicated to the replica."""
    session = saved_session(user=1)
    replicate(servers)
    return str(session.session_key)


async def current_async_client() -> Any:
    return client_module.clients.for_running_loop()


def test_the_first_asyncio_request_after_a_failover_reads_the_session(
    sentinel_setup: RedisSentinelServers,
) -> None:
    key = replicated_session(sentinel_setup)
    store = RedisSessionStore()
    # One loop across the failover, as an ASGI worker has: its cached client
    # holds a pooled connection to the old primary.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(store.aget(key)) == {"user": 1}
        client = loop.run_until_complete(current_async_client())

        sentinel_setup.fail_over()

        assert loop.run_until_complete(store.aget(key)) == {"user": 1}
        assert loop.run_until_complete(current_async_client()) is client
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_the_first_sync_request_after_a_failover_reads_the_session(
    sentinel_setup: RedisSentinelServers,
) -> None:
    key = replicated_session(sentinel_setup)
    store = RedisSessionStore()
    assert store.get(key) == {"user": 1}
    client = client_module.clients.get()

    sentinel_setup.fail_over()

    assert store.get(key) == {"user": 1}
    assert client_module.clients.get() is client


def test_a_sync_request_whose_primary_dies_mid_command_is_retried_on_the_new_primary(
    sentinel_setup: RedisSentinelServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = replicated_session(sentinel_setup)
    store = RedisSessionStore()
    assert store.get(key) == {"user": 1}
    pool = client_module.clients.get().connection_pool
    get_connection = pool.get_connection

    def checked_out_then_failed_over(*args: Any, **kwargs: Any) -> Any:
        # The pool's health check has passed; only the command's retry can
        # notice that the primary is gone.
        connection = get_connection(*args, **kwargs)
        monkeypatch.undo()
        sentinel_setup.fail_over()
        return connection

    monkeypatch.setattr(pool, "get_connection", checked_out_then_failed_over)
    assert store.get(key) == {"user": 1}
