"""Building and caching redis-py clients from ``SESSION_REDIS``.

One sync client per process and one asyncio client per running event loop: a
redis-py asyncio connection pool is bound to the loop that opened its
connections and cannot be shared with another. Both caches are dropped (and
the clients closed) when ``SESSION_REDIS`` changes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url

from django_redis_sessions.conf import SETTING_NAME, conf

#: Applied before ``OPTIONS``, which override them. A session lookup is on the
#: path of every request: it must fail within seconds, not hang a worker. One
#: retry covers a pooled connection that went stale when Redis restarted; every
#: store command may safely run twice (see ``store.py``).
DEFAULT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
}
RETRIES = 1


def _options(asynchronous: bool) -> dict[str, Any]:
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    options = {
        **DEFAULT_OPTIONS,
        "retry": retry_class(ExponentialBackoff(cap=0.2, base=0.02), RETRIES),
    }
    options.update(conf.OPTIONS)
    return options


def build_client(*, asynchronous: bool = False) -> Any:
    """A new client for the current settings (not cached)."""
    if conf.CLIENT is not None:
        factory = import_string(conf.CLIENT)
        return factory(asynchronous=asynchronous)
    options = _options(asynchronous)
    if conf.SENTINELS:
        return _sentinel_primary(options, asynchronous=asynchronous)
    if conf.CLUSTER:
        # The cluster client retries on its own, node by node.
        options.pop("retry", None)
        cluster_class: Any = (
            redis.asyncio.cluster.RedisCluster
            if asynchronous
            else redis.cluster.RedisCluster
        )
        return cluster_class.from_url(conf.URL, **options)
    client_class: Any = redis.asyncio.Redis if asynchronous else redis.Redis
    return client_class.from_url(conf.URL, **options)


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # redis-py reconnects here without asking Sentinel: to the dead primary.
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _SentinelSSLConnection(_SentinelConnection, redis.connection.SSLConnection):
    pass


class _AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    async def send_packed_command(
        self, command: Any, check_health: bool = True
    ) -> None:
        # redis-py reconnects here without asking Sentinel: to the dead primary.
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class _AsyncSentinelSSLConnection(
    _AsyncSentinelConnection, redis.asyncio.connection.SSLConnection
):
    pass


def _sentinel_primary(options: dict[str, Any], *, asynchronous: bool) -> Any:
    # Credentials, database and TLS come from URL; its host and port are
    # replaced by what Sentinel reports. Always the primary: a session must
    # read its own writes, which a replica does not promise.
    connection = {
        name: value
        for name, value in parse_url(conf.URL).items()  # type: ignore[no-untyped-call]
        if name not in {"host", "port", "path", "connection_class"}
    }
    tls = conf.URL.startswith("rediss://")
    sentinel_class: Any
    connection_class: type[Any]
    if asynchronous:
        sentinel_class = redis.asyncio.sentinel.Sentinel
        connection_class = (
            _AsyncSentinelSSLConnection if tls else _AsyncSentinelConnection
        )
    else:
        sentinel_class = redis.sentinel.Sentinel
        connection_class = _SentinelSSLConnection if tls else _SentinelConnection
    sentinel = sentinel_class(
        conf.SENTINELS,
        sentinel_kwargs={
            key: options[key]
            for key in ("socket_connect_timeout", "socket_timeout")
            if key in options
        },
    )
    # A connection_class in OPTIONS still wins, as it did before.
    return sentinel.master_for(
        conf.SENTINEL_SERVICE,
        **{"connection_class": connection_class, **connection, **options},
    )


_lock = threading.Lock()
_sync_client: Any = None
# Plain dicts, emptied when each loop shuts down: an asyncio client references
# its loop, so a weak mapping from loop to client could never drop either.
_async_clients: dict[asyncio.AbstractEventLoop, Any] = {}
# The loop tracks async generators only weakly: a closer nobody holds would be
# collected, and would close its client while the loop still uses it.
_closers: dict[asyncio.AbstractEventLoop, list[AsyncGenerator[None, None]]] = {}
_starting: set[asyncio.Task[None]] = set()


def get_client() -> Any:
    """The process-wide sync client, built on first use."""
    global _sync_client
    client = _sync_client
    if client is None:
        with _lock:
            if _sync_client is None:
                _sync_client = build_client()
            client = _sync_client
    return client


def get_async_client() -> Any:
    """The asyncio client of the running event loop, built on first use.

    When the loop shuts down (``asyncio.run``, asgiref's ``async_to_sync``, an
    ASGI server), ``loop.shutdown_asyncgens()`` closes the client and forgets
    it, so neither a socket nor the loop outlives the loop's run. A loop closed
    without ``shutdown_asyncgens()`` keeps its client until the process ends.
    """
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = build_client(asynchronous=True)
        _async_clients[loop] = client
        closer = _close_at_loop_shutdown(loop, client)
        _closers.setdefault(loop, []).append(closer)
        # Started now so the loop tracks it; its ``finally`` runs at shutdown.
        started = loop.create_task(_start(closer))
        _starting.add(started)
        started.add_done_callback(_starting.discard)
    return client


async def _start(closer: AsyncGenerator[None, None]) -> None:
    await anext(closer)


async def _close_at_loop_shutdown(
    loop: asyncio.AbstractEventLoop, client: Any
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if _async_clients.get(loop) is client:
            del _async_clients[loop]
        _closers.pop(loop, None)
        await client.aclose()
        for sentinel in _sentinel_clients(client):
            await sentinel.aclose()


def _sentinel_clients(client: Any) -> list[Any]:
    # Closing a client from Sentinel.master_for() leaves the manager's own
    # connections to the Sentinels open.
    manager = getattr(
        getattr(client, "connection_pool", None), "sentinel_manager", None
    )
    return list(manager.sentinels) if manager is not None else []


def close_clients() -> None:
    """Close and forget the cached sync client; forget the asyncio ones.

    An asyncio client can only be closed from its own loop; dropping it here
    means the next call builds a new one, and its loop closes the old one at
    shutdown.
    """
    global _sync_client
    with _lock:
        client, _sync_client = _sync_client, None
    if client is not None:
        if hasattr(client, "disconnect_connection_pools"):
            # RedisCluster.close() leaves the per-node connections open.
            client.disconnect_connection_pools()
        client.close()
        for sentinel in _sentinel_clients(client):
            sentinel.close()
    _async_clients.clear()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        close_clients()
