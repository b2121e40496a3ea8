"""Building clients from SESSION_REDIS: URL forms, ACL users, OPTIONS, CLIENT."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.connection
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured

from django_redis_sessions import client as client_module
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import RedisServer

FACTORY_CALLS: list[bool] = []


def client_factory(*, asynchronous: bool) -> Any:
    """A ``CLIENT`` factory, as a project would write one."""
    FACTORY_CALLS.append(asynchronous)
    url = os.environ["TEST_CLIENT_FACTORY_URL"]
    return (redis.asyncio.Redis if asynchronous else redis.Redis).from_url(url)


def decoding_client_factory(*, asynchronous: bool) -> Any:
    """A ``CLIENT`` factory whose clients return str instead of bytes."""
    url = os.environ["TEST_CLIENT_FACTORY_URL"]
    client_class = redis.asyncio.Redis if asynchronous else redis.Redis
    return client_class.from_url(url, decode_responses=True)


DECODING_FACTORY_ERROR = (
    "The client returned by SESSION_REDIS['CLIENT'] "
    "('tests.test_client.decoding_client_factory') decodes responses, but "
    "session payloads are bytes that must be read back unchanged; build it with "
    "decode_responses=False."
)


@pytest.fixture
def decoding_factory(
    settings: Any,
    session_redis: dict[str, Any],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_CLIENT_FACTORY_URL", redis_url)
    settings.SESSION_REDIS = {
        "PREFIX": session_redis["PREFIX"],
        "CLIENT": "tests.test_client.decoding_client_factory",
    }


def test_clients_are_built_once_and_rebuilt_when_the_setting_changes(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    first = client_module.clients.get()
    assert client_module.clients.get() is first
    settings.SESSION_REDIS = {**session_redis, "OPTIONS": {"max_connections": 7}}
    second = client_module.clients.get()
    assert second is not first
    assert second.connection_pool.max_connections == 7


def test_timeouts_are_bounded_by_default_and_options_override_them(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    kwargs = client_module.clients.get().connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == 2.0
    assert kwargs["socket_timeout"] == 5.0
    settings.SESSION_REDIS = {**session_redis, "OPTIONS": {"socket_timeout": 0.25}}
    kwargs = client_module.clients.get().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25


def test_an_acl_user_in_the_url_is_used(
    settings: Any, session_redis: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    user = f"sessions-{uuid.uuid4().hex[:8]}"
    # Allowed only this test's keys: a wrong user would fail loudly.
    raw_redis.execute_command(
        "ACL", "SETUSER", user, "on", ">s3cret", f"~{prefix}*", "+@all"
    )
    try:
        host_port = session_redis["URL"].split("//", 1)[1]
        settings.SESSION_REDIS = {
            **session_redis,
            "URL": f"redis://{user}:s3cret@{host_port}",
        }
        store = RedisSessionStore()
        assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
        assert store.get("abcdefgh") == {"v": 1}
        assert raw_redis.execute_command("ACL", "WHOAMI") == b"default"
        settings.SESSION_REDIS = {
            **session_redis,
            "URL": f"redis://{user}:wrong@{host_port}",
        }
        with pytest.raises(redis.AuthenticationError):
            RedisSessionStore().get("abcdefgh")
    finally:
        client_module.clients.close()
        raw_redis.execute_command("ACL", "DELUSER", user)


@pytest.fixture
def unix_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "redis.sock")
        with RedisServer(extra_args=["--unixsocket", path, "--unixsocketperm", "700"]):
            yield path


def test_a_unix_socket_url_works(
    settings: Any, session_redis: dict[str, Any], unix_server: str
) -> None:
    settings.SESSION_REDIS = {**session_redis, "URL": f"unix://{unix_server}?db=0"}
    store = RedisSessionStore()
    assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert asyncio.run(store.aget("abcdefgh")) == {"v": 1}
    client_module.clients.close()


def test_a_rediss_url_builds_a_tls_connection(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    settings.SESSION_REDIS = {
        **session_redis,
        "URL": "rediss://user:pw@redis.invalid:6380/2",
        "OPTIONS": {"ssl_cert_reqs": "required"},
    }
    pool = client_module.clients.get().connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["username"] == "user"
    assert pool.connection_kwargs["db"] == 2


def test_sentinels_ask_for_the_primary_with_the_url_credentials(
    settings: Any,
) -> None:
    settings.SESSION_REDIS = {
        "URL": "redis://user:pw@ignored:1/3",
        "SENTINELS": [("127.0.0.1", 26379)],
        "SENTINEL_SERVICE": "sessions",
    }
    client = client_module.clients.get()
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "sessions"
    assert pool.is_master
    assert pool.connection_kwargs["username"] == "user"
    assert pool.connection_kwargs["db"] == 3


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
# Scheme names are case-insensitive, and newer redis-py accept capitals.
@pytest.mark.parametrize("scheme", ["rediss", "REDISS"])
def test_sentinels_with_a_rediss_url_reach_the_primary_over_tls(
    settings: Any, asynchronous: bool, scheme: str
) -> None:
    settings.SESSION_REDIS = {
        "URL": f"{scheme}://ignored:1/0",
        "SENTINELS": [("127.0.0.1", 26379)],
        "OPTIONS": {"ssl_ca_certs": "/nonexistent/ca.pem"},
    }
    try:
        redis.connection.parse_url(settings.SESSION_REDIS["URL"])
    except ValueError:
        # This redis-py refuses capitals (and the checks report them): then
        # nothing is built, rather than a client in the clear.
        with pytest.raises(ValueError, match="scheme"):
            client_module.build_client(asynchronous=asynchronous)
        return
    pool = client_module.build_client(asynchronous=asynchronous).connection_pool
    ssl_class = redis.asyncio.SSLConnection if asynchronous else redis.SSLConnection
    managed_class: type[Any] = (
        redis.asyncio.sentinel.SentinelManagedConnection
        if asynchronous
        else redis.sentinel.SentinelManagedConnection
    )
    assert issubclass(pool.connection_class, ssl_class)
    assert issubclass(pool.connection_class, managed_class)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/nonexistent/ca.pem"


def test_a_client_factory_builds_both_clients(
    settings: Any,
    session_redis: dict[str, Any],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_CLIENT_FACTORY_URL", redis_url)
    FACTORY_CALLS.clear()
    settings.SESSION_REDIS = {
        **session_redis,
        "CLIENT": "tests.test_client.client_factory",
    }
    store = RedisSessionStore()
    assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert asyncio.run(store.aget("abcdefgh")) == {"v": 1}
    assert FACTORY_CALLS == [False, True]


def test_a_client_factory_returning_a_decoding_client_is_refused(
    decoding_factory: None,
) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        RedisSessionStore().get("abcdefgh")
    assert str(excinfo.value) == DECODING_FACTORY_ERROR
    # Nothing half-built was kept: the next use is refused the same way.
    with pytest.raises(ImproperlyConfigured):
        client_module.clients.get()


def test_an_asyncio_client_factory_returning_a_decoding_client_is_refused(
    decoding_factory: None,
) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        asyncio.run(RedisSessionStore().aget("abcdefgh"))
    assert str(excinfo.value) == DECODING_FACTORY_ERROR


def test_settings_and_options_may_be_any_mapping(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    settings.SESSION_REDIS = MappingProxyType(
        {**session_redis, "OPTIONS": MappingProxyType({"socket_timeout": 0.25})}
    )
    store = RedisSessionStore()
    assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert store.get("abcdefgh") == {"v": 1}
    kwargs = client_module.clients.get().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25


def test_a_cluster_is_described_by_every_node_the_client_may_start_from(
    settings: Any,
) -> None:
    settings.SESSION_REDIS = {
        "URL": "redis://user:s3cret@redis-1:7000/0",
        "CLUSTER": True,
        "CLUSTER_NODES": [("redis-2", 7000), ("redis-3", 7001)],
    }
    assert client_module.describe_target() == (
        "at redis://user@redis-1:7000/0 or redis-2:7000, redis-3:7001"
    )
