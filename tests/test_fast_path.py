"""``fast_path``: the same replies, errors, retries and pool as ``execute_command``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from django_redis_sessions import fast_path
from django_redis_sessions.backends.redis import SessionStore

pytestmark = pytest.mark.skipif(
    fast_path._SYNC_EXECUTE is None, reason="no fast path for this redis-py"
)

#: Each command twice: on a name of its own through the fast path, and
#: through execute_command; NAME is replaced by that name.
NAME = object()
COMMANDS: list[tuple[Any, ...]] = [
    ("GET", NAME),
    ("SET", NAME, b"one", "PX", 60_000),
    ("SET", NAME, b"two", "PX", 60_000, "XX"),
    ("SET", NAME, b"three", "NX"),
    ("GET", NAME),
    ("PEXPIRE", NAME, 60_000),
    ("TYPE", NAME),
    ("INCR", NAME),
    ("EVALSHA", "0" * 40, 1, NAME),
    ("EVAL", "return {KEYS[1], 7}", 1, NAME),
    ("DEL", NAME),
]


def outcome(call: Callable[[], Any]) -> Any:
    """A reply, or the class and message of the error raised instead."""
    try:
        return call()
    except Exception as error:
        return type(error), str(error)


def filled(command: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    return tuple(name if part is NAME else part for part in command)


def unnamed(reply: Any, name: str) -> Any:
    """``reply`` with ``name`` (which EVAL returns) replaced by "NAME"."""
    if isinstance(reply, list):
        return [b"NAME" if part == name.encode() else part for part in reply]
    return reply


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_replies_and_errors_are_those_of_execute_command(
    client: redis.Redis, prefix: str
) -> None:
    fast, plain = f"{prefix}fast", f"{prefix}plain"
    replies = []
    for command in COMMANDS:
        expected = outcome(partial(client.execute_command, *filled(command, plain)))
        got = outcome(partial(fast_path.execute, client, *filled(command, fast)))
        assert unnamed(got, fast) == unnamed(expected, plain)
        replies.append(unnamed(got, fast))
    # Every kind of reply came back: callbacks applied, errors as raised.
    assert replies[:8] == [None, True, True, None, b"two", 1, b"string", replies[7]]
    assert replies[7][0] is ResponseError
    assert replies[8][0] is NoScriptError
    assert replies[9:] == [[b"NAME", 7], 1]
    pool = client.connection_pool
    assert not pool._in_use_connections
    assert len(pool._available_connections) == 1


def test_async_replies_and_errors_are_those_of_execute_command(
    redis_url: str, prefix: str
) -> None:
    async def compare() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fast, plain = f"{prefix}fast", f"{prefix}plain"
        for command in COMMANDS:
            try:
                expected = await client.execute_command(*filled(command, plain))
            except Exception as error:
                expected = (type(error), str(error))
            try:
                got = await fast_path.aexecute(client, *filled(command, fast))
            except Exception as error:
                got = (type(error), str(error))
            assert unnamed(got, fast) == unnamed(expected, plain)
        assert not client.connection_pool._in_use_connections
        assert len(client.connection_pool._available_connections) == 1
        await client.aclose()

    asyncio.run(compare())


def test_a_script_error_is_raised_as_redis_py_raises_it(client: redis.Redis) -> None:
    with pytest.raises(NoScriptError):
        fast_path.execute(client, "EVALSHA", "0" * 40, 0)
    with pytest.raises(ResponseError, match="user_script"):
        fast_path.execute(client, "EVAL", "return redis.call('NOPE')", 0)


class Subclass(redis.Redis):
    pass


def test_applies_only_where_it_does_what_execute_command_does(
    client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fast_path.applies(client)
    others = [
        Subclass.from_url(redis_url),
        redis.Redis.from_url(redis_url, single_connection_client=True),
        redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(redis_url)),
    ]
    for other in others:
        assert not fast_path.applies(other)
        other.close()

    manager = SimpleNamespace(config=SimpleNamespace(enabled_telemetry=["metric"]))
    instance = SimpleNamespace(get_provider_manager=lambda: manager)
    with monkeypatch.context() as patch:
        patch.setattr(fast_path, "_observability", lambda: instance)
        assert fast_path.observed()
        assert not fast_path.applies(client)
    assert not fast_path.observed()

    # An instrumentation wraps the method on the class, as wrapt does.
    own = redis.Redis.execute_command
    calls: list[tuple[Any, ...]] = []

    @functools.wraps(own)
    def traced(self: redis.Redis, *args: Any, **options: Any) -> Any:
        calls.append(args)
        return own(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", traced)
    assert not fast_path.applies(client)
    assert fast_path.execute(client, "PING") is True
    assert calls == [("PING",)]


def test_async_applies_only_to_a_pooled_client(redis_url: str) -> None:
    pooled = redis.asyncio.Redis.from_url(redis_url)
    dedicated = redis.asyncio.Redis.from_url(redis_url, single_connection_client=True)
    # The dedicated connection is opened on first use: none yet.
    assert dedicated.connection is None
    assert fast_path.applies(pooled)
    assert not fast_path.applies(dedicated)
    assert not fast_path.applies(redis.Redis.from_url(redis_url).pipeline())


def is_ping(command: Any) -> bool:
    """Whether a packed command is the PING under test (a reconnection sends
    its own handshake first)."""
    packed = command if isinstance(command, bytes) else b"".join(command)
    return b"PING" in packed


class Flaky(redis.Connection):
    """Fails the next ``failures`` PINGs, as a connection reset would."""

    failures = 0
    attempts = 0
    disconnects = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if is_ping(command):
            self.fail_if_told()
        super().send_packed_command(command, check_health)

    def fail_if_told(self) -> None:
        type(self).attempts += 1
        if type(self).failures:
            type(self).failures -= 1
            raise ConnectionError("Connection reset by peer.")

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        type(self).disconnects += 1
        super().disconnect(*args, **kwargs)


@pytest.mark.parametrize("failures", [1, 2])
def test_retries_as_the_client_does(redis_url: str, failures: int) -> None:
    """One retry by default: a first failure is retried, a second raised."""
    seen = []
    for send in (fast_path.execute, redis.Redis.execute_command):
        client = redis.Redis.from_url(
            redis_url,
            connection_class=Flaky,
            retry=redis.retry.Retry(NoBackoff(), 1),
        )
        client.ping()
        Flaky.failures, Flaky.attempts, Flaky.disconnects = failures, 0, 0
        seen.append((outcome(partial(send, client, "PING")), Flaky.attempts))
        assert Flaky.disconnects >= failures
        assert not client.connection_pool._in_use_connections
        client.close()
    assert seen[0] == seen[1]
    assert seen[0][1] == 2


def test_async_retries_as_the_client_does(redis_url: str) -> None:
    class AsyncFlaky(redis.asyncio.Connection):
        failures = 0
        attempts = 0

        async def send_packed_command(
            self, command: Any, check_health: bool = True
        ) -> None:
            if is_ping(command):
                type(self).attempts += 1
                if type(self).failures:
                    type(self).failures -= 1
                    raise ConnectionError("Connection reset by peer.")
            await super().send_packed_command(command, check_health)

    async def attempts(failures: int, send: Callable[..., Any]) -> tuple[Any, int]:
        client = redis.asyncio.Redis.from_url(
            redis_url,
            connection_class=AsyncFlaky,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 1),
        )
        await client.ping()
        AsyncFlaky.failures, AsyncFlaky.attempts = failures, 0
        try:
            reply: Any = await send(client, "PING")
        except ConnectionError as error:
            reply = str(error)
        assert not client.connection_pool._in_use_connections
        await client.aclose()
        return reply, AsyncFlaky.attempts

    for failures in (1, 2):
        fast = asyncio.run(attempts(failures, fast_path.aexecute))
        plain = asyncio.run(attempts(failures, redis.asyncio.Redis.execute_command))
        assert fast == plain
        assert fast[1] == 2


def test_a_connection_the_server_closed_is_reconnected_before_use(
    redis_url: str, raw_redis: redis.Redis
) -> None:
    # No retry at all: only the check when the connection is taken saves it.
    client = redis.Redis.from_url(redis_url, retry=redis.retry.Retry(NoBackoff(), 0))
    first = fast_path.execute(client, "CLIENT", "ID")
    raw_redis.execute_command("CLIENT", "KILL", "ID", first)
    assert fast_path.execute(client, "CLIENT", "ID") != first
    client.close()


def test_the_pool_limit_holds(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=1)
    held = client.connection_pool.get_connection()
    fast = outcome(lambda: fast_path.execute(client, "PING"))
    plain = outcome(lambda: client.execute_command("PING"))
    assert fast == plain
    assert issubclass(fast[0], ConnectionError)
    client.connection_pool.release(held)
    assert fast_path.execute(client, "PING") is True
    client.close()


def test_a_connection_from_before_a_fork_is_not_reused(client: redis.Redis) -> None:
    pool = client.connection_pool
    connection = pool.get_connection()
    connection.pid = -1
    fast_path._give_back(pool, connection)
    assert connection not in pool._available_connections
    assert connection._sock is None


def test_the_engine_sends_its_commands_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken: list[object] = []
    take = fast_path._take

    def counted(pool: Any) -> Any:
        taken.append(pool)
        return take(pool)

    session = SessionStore()
    session.save()  # the server learns the create script
    monkeypatch.setattr(fast_path, "_take", counted)
    session = SessionStore()
    session["n"] = 1
    session.save()
    SessionStore(session.session_key).load()
    assert len(taken) == 2
