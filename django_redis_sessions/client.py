"""redis-py clients built from ``SESSION_REDIS``, and ``Clients``, their owner.

``build_client`` turns the setting into a client (standalone, TLS, unix
socket, Sentinel, Cluster or the user's factory). ``clients`` holds one sync
client per process and one asyncio client per running event loop, and drops
them when ``SESSION_REDIS`` changes.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.retry
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url

from django_redis_sessions.conf import SETTING_NAME, conf, redact_url

#: Applied before ``OPTIONS``, which override them. A session lookup is on the
#: path of every request: it must fail within seconds, not hang a worker.
DEFAULT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
}
#: One retry covers a pooled connection that went stale when Redis restarted,
#: and on Cluster a node that moved (the retry follows the refreshed slot
#: map); every store command may safely run twice (see ``store.py``). More
#: would only make every request wait on a dead shard: redis-py's own cluster
#: default of 10 retries, with backoffs of up to a second, held each request
#: for about 4 s and piled every worker up behind the shard.
RETRIES = 1
#: The longest wait before the retry, in seconds.
BACKOFF_CAP = 0.2
_BACKOFF_BASE = 0.02


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=BACKOFF_CAP, base=_BACKOFF_BASE)


def _options(asynchronous: bool) -> dict[str, Any]:
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    retry = {"retry": retry_class(_backoff(), RETRIES)}
    return {**DEFAULT_OPTIONS, **retry, **conf.OPTIONS}


def build_client(*, asynchronous: bool = False) -> Any:
    """A new client for the current settings (not cached)."""
    if conf.CLIENT is not None:
        factory = import_string(conf.CLIENT)
        return _byte_exact(factory(asynchronous=asynchronous))
    options = _options(asynchronous)
    if conf.SENTINELS:
        return _sentinel_primary(options, asynchronous=asynchronous)
    if conf.CLUSTER:
        return _cluster(options, asynchronous=asynchronous)
    client_class: Any = redis.asyncio.Redis if asynchronous else redis.Redis
    return client_class.from_url(conf.URL, **options)


def _cluster(options: dict[str, Any], *, asynchronous: bool) -> Any:
    cluster_class: Any
    node_class: Any
    if asynchronous:
        cluster_class = redis.asyncio.cluster.RedisCluster
        node_class = redis.asyncio.cluster.ClusterNode
    else:
        cluster_class = redis.cluster.RedisCluster
        node_class = redis.cluster.ClusterNode
    if "topology_refresh_min_interval" in inspect.signature(cluster_class).parameters:
        # A request that fails on a node asks for a new slot map, which redis-py
        # runs at most once a second by default: a retry made sooner went to
        # the dead node again, and failed even after its replica took over.
        # With the interval no longer than the wait before the retry, the
        # refresh is due when the retry runs, which reads the new map.
        options.setdefault("topology_refresh_min_interval", _backoff().compute(1))
    # The client learns the topology from the first of these that answers,
    # URL's node among them: with only one, a process started while that node
    # is down could not connect at all.
    startup_nodes = [
        *(options.pop("startup_nodes", None) or ()),
        *(node_class(host, port) for host, port in conf.CLUSTER_NODES),
    ]
    return cluster_class.from_url(conf.URL, startup_nodes=startup_nodes, **options)


def _byte_exact(client: Any) -> Any:
    """``client``, unless it decodes responses.

    A session payload is bytes that must be read back unchanged; a decoding
    client returns str, which fails to decode as a session on every load and
    so logs every user out. The system checks catch ``decode_responses`` in
    URL and OPTIONS, but only this can see inside a client from ``CLIENT``.
    """
    # get_connection_kwargs() exists on the sync and asyncio clients, cluster
    # or not; a client without it is given the benefit of the doubt.
    connection_kwargs = getattr(client, "get_connection_kwargs", None)
    if connection_kwargs is not None and connection_kwargs().get("decode_responses"):
        raise ImproperlyConfigured(
            f"The client returned by {SETTING_NAME}['CLIENT'] ({conf.CLIENT!r}) "
            "decodes responses, but session payloads are bytes that must be read "
            "back unchanged; build it with decode_responses=False."
        )
    return client


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
    # Not startswith("rediss://"): a scheme in capitals would silently drop TLS.
    tls = urlsplit(conf.URL).scheme == "rediss"
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


class Clients:
    """Owns the process's sync client and one asyncio client per event loop.

    Both are built from ``SESSION_REDIS`` on first use and dropped when the
    setting changes. An asyncio client is closed when its loop shuts down
    (``asyncio.run``, asgiref's ``async_to_sync``, an ASGI server): a redis-py
    asyncio pool is bound to the loop that opened its connections.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: Any = None
        # Plain dicts, emptied when each loop shuts down: an asyncio client
        # references its loop, so a weak mapping from loop to client could
        # never drop either.
        self._by_loop: dict[asyncio.AbstractEventLoop, Any] = {}
        # The loop tracks async generators only weakly: a closer nobody holds
        # would be collected, and would close its client while still in use.
        self._closers: dict[
            asyncio.AbstractEventLoop, list[AsyncGenerator[None, None]]
        ] = {}
        self._starting: set[asyncio.Task[None]] = set()

    def get(self) -> Any:
        """The process-wide sync client, built on first use."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = build_client()
                client = self._sync
        return client

    def for_running_loop(self) -> Any:
        """The asyncio client of the running event loop, built on first use.

        A loop closed without ``shutdown_asyncgens()`` keeps its client until
        the process ends.
        """
        loop = asyncio.get_running_loop()
        client = self._by_loop.get(loop)
        if client is None:
            client = build_client(asynchronous=True)
            self._by_loop[loop] = client
            closer = self._close_at_shutdown(loop, client)
            self._closers.setdefault(loop, []).append(closer)
            # Started now so the loop tracks it; its ``finally`` runs at shutdown.
            started = loop.create_task(_start(closer))
            self._starting.add(started)
            started.add_done_callback(self._starting.discard)
        return client

    @property
    def loops(self) -> int:
        """How many event loops hold a client now."""
        return len(self._by_loop)

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, client: Any
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._by_loop.get(loop) is client:
                del self._by_loop[loop]
            self._closers.pop(loop, None)
            await client.aclose()
            for sentinel in _sentinel_clients(client):
                await sentinel.aclose()

    def close(self) -> None:
        """Close and forget the sync client; forget the asyncio ones.

        An asyncio client can only be closed from its own loop; dropping it
        here means the next call builds a new one, and its loop closes the old
        one at shutdown.
        """
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            if hasattr(client, "disconnect_connection_pools"):
                # RedisCluster.close() leaves the per-node connections open.
                client.disconnect_connection_pools()
            client.close()
            for sentinel in _sentinel_clients(client):
                sentinel.close()
        self._by_loop.clear()


async def _start(closer: AsyncGenerator[None, None]) -> None:
    await anext(closer)


def _sentinel_clients(client: Any) -> list[Any]:
    # Closing a client from Sentinel.master_for() leaves the manager's own
    # connections to the Sentinels open.
    manager = getattr(
        getattr(client, "connection_pool", None), "sentinel_manager", None
    )
    return list(manager.sentinels) if manager is not None else []


#: The clients of this process.
clients = Clients()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        clients.close()


def describe_target() -> str:
    """Where the configured client connects, for messages; no credentials."""
    if conf.CLIENT is not None:
        return f"through the client of SESSION_REDIS['CLIENT'] ({conf.CLIENT})"
    if conf.SENTINELS:
        sentinels = ", ".join(f"{host}:{port}" for host, port in conf.SENTINELS)
        return f"through Sentinel service {conf.SENTINEL_SERVICE!r} at {sentinels}"
    if conf.CLUSTER and conf.CLUSTER_NODES:
        nodes = ", ".join(f"{host}:{port}" for host, port in conf.CLUSTER_NODES)
        return f"at {redact_url(conf.URL)} or {nodes}"
    return f"at {redact_url(conf.URL)}"
