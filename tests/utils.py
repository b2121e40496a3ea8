"""Helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Callable
from typing import Any

import django
import pytest
import redis
import redis.asyncio
from django.core.management import call_command

from django_redis_sessions import scripts
from django_redis_sessions.redis_layer import RedisLayer

#: The exact set of keys a test left in Redis (see the ``redis_keys`` fixture).
Keys = Callable[[], set[str]]

needs_async_backend = pytest.mark.skipif(
    django.VERSION < (5, 1), reason="SessionBase has asyncio methods from Django 5.1"
)

#: Browsers other than the test client, for the sessions page's metadata.
FIREFOX_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
)
CHROME_ON_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
)


class LostReplies:
    """Connection classes that can lose the reply of the next command.

    ``arm()`` makes the reply to the next command sent through either class
    vanish after the server ran it: the client sees a ``ConnectionError``, as
    when a connection drops at the worst moment. redis-py then reconnects and
    sends the command again, which is what every store operation must survive.
    The handshake of a new connection is never the one hit.
    """

    HANDSHAKE = frozenset({"AUTH", "CLIENT", "HELLO", "PING", "SELECT"})

    def __init__(self) -> None:
        self.armed = False
        self.lost = 0
        replies = self

        class Connection(redis.Connection):
            command = ""

            def send_command(self, *args: Any, **kwargs: Any) -> None:
                self.command = str(args[0]).upper()
                super().send_command(*args, **kwargs)

            def read_response(self, *args: Any, **kwargs: Any) -> Any:
                response = super().read_response(*args, **kwargs)
                replies._lose(self.command)
                return response

        class AsyncConnection(redis.asyncio.Connection):
            command = ""

            async def send_command(self, *args: Any, **kwargs: Any) -> None:
                self.command = str(args[0]).upper()
                await super().send_command(*args, **kwargs)

            async def read_response(self, *args: Any, **kwargs: Any) -> Any:
                response = await super().read_response(*args, **kwargs)
                replies._lose(self.command)
                return response

        self.connection_class: type[redis.Connection] = Connection
        self.async_connection_class: type[redis.asyncio.Connection] = AsyncConnection

    def arm(self) -> None:
        self.armed = True

    def _lose(self, command: str) -> None:
        if self.armed and command not in self.HANDSHAKE:
            self.armed = False
            self.lost += 1
            raise redis.ConnectionError("The reply was lost (forced by the test).")


class ReplyDroppingProxy:
    """A loopback TCP proxy in front of a Redis server that can drop one reply.

    After ``drop_next_reply(command)``, the reply to the next request that
    sends ``command`` is thrown away and its connection is closed: the server
    ran the command, the client never hears of it and sees its socket close.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._command: bytes | None = None
        self._drop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.dropped = 0
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def drop_next_reply(self, command: str) -> None:
        self._command = f"\r\n{command.upper()}\r\n".encode()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by close()
            server = socket.create_connection(self._upstream)
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(
        self, source: socket.socket, target: socket.socket, replies: bool
    ) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            # Requests are forwarded before their replies can arrive, so the
            # flag is up before the reply to be dropped is read.
            if not replies and self._command is not None and self._command in data:
                self._command = None
                self._drop.set()
            if replies and data and self._drop.is_set():
                self._drop.clear()
                self.dropped += 1
                data = b""
            if not data:
                # Closing both ends tells the client its connection is gone.
                for sock in (source, target):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()

    def __enter__(self) -> ReplyDroppingProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def redis_sessions(
    *args: str, stderr: io.StringIO | None = None, **options: Any
) -> str:
    """Run ``manage.py redis_sessions`` with ``args``; what it printed on stdout."""
    stdout = io.StringIO()
    call_command(
        "redis_sessions",
        *args,
        stdout=stdout,
        stderr=io.StringIO() if stderr is None else stderr,
        **options,
    )
    return stdout.getvalue()


def saved_session(**data: Any) -> Any:
    """A new session holding ``data``, saved through the engine."""
    from django_redis_sessions.backends.redis import SessionStore

    session = SessionStore()
    session.update(data)
    session.save()
    return session


def load_scripts(client: redis.Redis) -> None:
    """Load every script of the engine, so a count of round trips sees none of it."""
    for script in scripts.ALL:
        client.script_load(script)


def data_name(prefix: str, key: str) -> str:
    """The Redis name of the session of ``key`` under the configured layout."""
    return RedisLayer(prefix=prefix).data_name(key)


def index_names(prefix: str, user_id: object) -> set[str]:
    """The Redis names of a user's index under the configured layout."""
    return set(RedisLayer(prefix=prefix).index_names(str(user_id)))


def tombstone_name(prefix: str, key: str) -> str:
    """The Redis name of the tombstone of ``key`` under the configured layout."""
    return RedisLayer(prefix=prefix).tombstone_name(key)


class Monitor:
    """Every command the server receives while the block runs (``MONITOR``)."""

    MARKER = "end-of-monitor-a6f1"

    def __init__(self, url: str) -> None:
        self._url = url
        self.commands: list[str] = []
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> Monitor:
        self._monitor.__enter__()
        self._thread.start()
        return self

    def _listen(self) -> None:
        while True:
            command = str(self._monitor.next_command()["command"])
            if self.MARKER in command:
                return
            self.commands.append(command)

    def __exit__(self, *exc_info: object) -> None:
        with redis.Redis.from_url(self._url) as other:
            other.echo(self.MARKER)
        self._thread.join(timeout=10)
        self._monitor.__exit__(*exc_info)
        self._client.close()


def everything_in(client: redis.Redis) -> list[bytes]:
    """Every name in the database and everything stored under it, any type."""
    found: list[Any] = []
    for name in client.scan_iter(count=1000):
        found.append(name)
        kind = client.type(name)
        if kind == b"string":
            found.append(client.get(name) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(name).items():
                found += [field, value]
        elif kind == b"set":
            found += list(client.smembers(name))
        elif kind == b"zset":
            found += list(client.zrange(name, 0, -1))
        elif kind == b"list":
            found += list(client.lrange(name, 0, -1))
    return found


def shard_with_a_replica(cluster: Any) -> int:
    """A shard of a ``RedisClusterServers`` whose primary and replica both run."""
    pairs = zip(cluster.nodes, cluster.replicas, strict=True)
    return next(
        shard
        for shard, (primary, replica) in enumerate(pairs)
        if primary.process.poll() is None and replica.process.poll() is None
    )
