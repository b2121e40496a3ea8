"""One command on a plain redis-py client, without its per-command layers.

Every single-session operation is one command, so what redis-py does around
a command is much of what a load or a save costs in Python. Its
``execute_command`` times each call for its metrics, checks for ``HIMPORT
SET`` and builds two closures; its pool's ``get_connection()`` and
``release()`` go through a deprecation wrapper and record four metric updates,
a pool name and an event. Together that was about half of a load's Python.
``execute`` and ``aexecute`` do the rest, on the client's own pool:

* take a connection as the pool does (fork check, under the pool's lock,
  made if none is free, counted against ``max_connections``), connect it, and
  make sure it holds no stale data (else reconnect, as the pool does);
* send the command and parse its reply with the client's ``parse_response``
  (its response callbacks included);
* retry as the client does: the connection's ``retry`` object decides which
  errors, how often and after what backoff; a failed attempt disconnects the
  connection and the next one reconnects it;
* give the connection back as the pool does, whatever happened
  (disconnected if it must reconnect, the release event sent);
* raise what the client raises: ``ConnectionError``, ``TimeoutError``, a
  server's ``ResponseError`` (``NoScriptError`` among them) unchanged.

It is used only where that is all redis-py would do: a client of exactly
``redis.Redis`` or ``redis.asyncio.Redis`` (a subclass may override
``execute_command``) over a pool of exactly ``ConnectionPool`` (not a blocking
or Sentinel pool), without a dedicated connection or client-side caching,
whose ``execute_command`` is redis-py's own (an
instrumentation such as ``opentelemetry-instrumentation-redis`` wraps it, and
then every command goes through the wrapper), while redis-py's own metrics
are off, and with redis-py 6 to 8, whose internals this follows (5.x clients
re-raised the first error of a command instead of retrying). Any other client
gets ``execute_command``; tests run every path both ways.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError, TimeoutError

try:
    from redis.event import (
        AfterConnectionReleasedEvent,
        AsyncAfterConnectionReleasedEvent,
    )
except ImportError:  # pragma: no cover - redis-py 5 has no events (nor a fast path)
    AfterConnectionReleasedEvent = AsyncAfterConnectionReleasedEvent = None  # type: ignore[assignment,misc]

try:  # redis-py 7.2 and later record command metrics when asked to
    from redis.observability.providers import (
        get_observability_instance as _observability,
    )
except ImportError:  # pragma: no cover - older redis-py has no such hooks
    _observability = None  # type: ignore[assignment]

#: The redis-py releases whose pool and client internals this module follows.
SUPPORTED = range(6, 9)


def _own_method(cls: type) -> Any:
    """``cls.execute_command`` as redis-py defines it; None where no fast path
    applies (another release, or already wrapped at import)."""
    method = cls.__dict__.get("execute_command")
    major = int(redis.__version__.split(".")[0])
    if method is None or hasattr(method, "__wrapped__") or major not in SUPPORTED:
        return None
    return method


_SYNC_EXECUTE = _own_method(redis.Redis)
_ASYNC_EXECUTE = _own_method(redis.asyncio.Redis)


def observed() -> bool:
    """Whether redis-py's own metrics are on (then every command is timed)."""
    if _observability is None:
        return False  # pragma: no cover
    manager = _observability().get_provider_manager()
    return manager is not None and bool(manager.config.enabled_telemetry)


def applies(client: Any) -> bool:
    """Whether ``execute`` sends the commands of ``client`` itself."""
    cls = type(client)
    pool_class: type
    if cls is redis.Redis:
        own, pool_class = _SYNC_EXECUTE, redis.ConnectionPool
    elif cls is redis.asyncio.Redis:
        own, pool_class = _ASYNC_EXECUTE, redis.asyncio.ConnectionPool
    else:
        return False
    if own is None or cls.__dict__.get("execute_command") is not own:
        return False
    pool = client.connection_pool
    return (
        type(pool) is pool_class
        # An asyncio client opens its dedicated connection on first use.
        and client.connection is None
        and not getattr(client, "single_connection_client", False)
        and getattr(pool, "cache", None) is None
        and not observed()
    )


# --- Sync ---------------------------------------------------------------------


def execute(client: Any, *args: Any) -> Any:
    """``client.execute_command(*args)``, without the layers around it."""
    if not applies(client):
        return client.execute_command(*args)
    pool = client.connection_pool
    connection = _take(pool)
    try:
        return connection.retry.call_with_retry(
            lambda: _round_trip(client, connection, args),
            lambda _error: connection.disconnect(),
        )
    finally:
        _give_back(pool, connection)


def _round_trip(client: Any, connection: Any, args: tuple[Any, ...]) -> Any:
    connection.send_command(*args)
    return client.parse_response(connection, args[0])


def _take(pool: Any) -> Any:
    """``pool.get_connection()`` without its metrics."""
    pool._checkpid()
    with pool._lock:
        try:
            connection = pool._available_connections.pop()
        except IndexError:
            connection = pool.make_connection()
        pool._in_use_connections.add(connection)
    # With maintenance notifications (redis-py 8 asks for them over RESP3)
    # the server may push a notice between replies: data to read then is no
    # sign of a broken connection, and the next reply handles it.
    notified = getattr(pool, "maint_notifications_enabled", None)
    pushes = notified is not None and bool(notified())
    try:
        connection.connect()
        # A pooled connection with data to read, or closed by the server,
        # is not ready for a command: reconnect it once.
        try:
            if connection.can_read() and not pushes:
                raise ConnectionError("Connection has data")
        except (ConnectionError, TimeoutError, OSError):
            connection.disconnect()
            connection.connect()
            if connection.can_read() and not pushes:
                raise ConnectionError("Connection not ready") from None
    except BaseException:
        pool.release(connection)
        raise
    return connection


def _give_back(pool: Any, connection: Any) -> None:
    """``pool.release(connection)`` without its metrics."""
    if not pool.owns_connection(connection):
        # Made before a fork: the pool has its own rules for those.
        pool.release(connection)
        return
    pool._checkpid()
    with pool._lock:
        try:
            pool._in_use_connections.remove(connection)
        except KeyError:
            return
        if _must_reconnect(connection):
            connection.disconnect()
        pool._available_connections.append(connection)
        pool._event_dispatcher.dispatch(
            AfterConnectionReleasedEvent(connection)  # type: ignore[no-untyped-call]
        )


def _must_reconnect(connection: Any) -> bool:
    should_reconnect = getattr(connection, "should_reconnect", None)
    return should_reconnect is not None and bool(should_reconnect())


# --- asyncio --------------------------------------------------------------------


async def aexecute(client: Any, *args: Any) -> Any:
    """See execute()."""
    if not applies(client):
        return await client.execute_command(*args)
    pool = client.connection_pool
    connection = await _atake(pool)
    try:
        return await connection.retry.call_with_retry(
            lambda: _around_trip(client, connection, args),
            lambda _error: connection.disconnect(),
        )
    finally:
        await _agive_back(pool, connection)


async def _around_trip(client: Any, connection: Any, args: tuple[Any, ...]) -> Any:
    await connection.send_command(*args)
    return await client.parse_response(connection, args[0])


async def _atake(pool: Any) -> Any:
    """See _take()."""
    async with pool._lock:
        connection = pool.get_available_connection()
    try:
        await pool.ensure_connection(connection)
    except BaseException:
        await pool.release(connection)
        raise
    return connection


async def _agive_back(pool: Any, connection: Any) -> None:
    """See _give_back()."""
    async with pool._lock:
        pool._in_use_connections.remove(connection)
        if _must_reconnect(connection):
            await connection.disconnect()
        pool._available_connections.append(connection)
    await pool._event_dispatcher.dispatch_async(
        AsyncAfterConnectionReleasedEvent(connection)  # type: ignore[no-untyped-call]
    )
