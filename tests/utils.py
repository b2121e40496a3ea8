"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import importlib.metadata
import io
import itertools
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import django
import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.cluster
import redis.connection
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.core.management import call_command

from django_redis_sessions import scripts
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.redis_layer import RedisLayer

#: The exact set of keys a test left in Redis (see the ``redis_keys`` fixture).
Keys = Callable[[], set[str]]

needs_async_backend = pytest.mark.skipif(
    django.VERSION < (5, 1), reason="SessionBase has asyncio methods from Django 5.1"
)

#: Where Django's own tests are kept once fetched: beside the checkout, one
#: directory per Django version (see ``django_tests()``).
DJANGO_TESTS_CACHE = Path(__file__).resolve().parent.parent / ".django-tests"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def cannot_run(reason: str) -> None:
    """Skip for ``reason`` on a developer's machine; fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} CI must run this test.", pytrace=False)
    pytest.skip(reason)


def installed(binary: str, package: str) -> str:
    """The path of ``binary``; skipped (failed in CI) where it is missing."""
    path = shutil.which(binary)
    if path is None:
        cannot_run(f"{binary} is not installed: apt-get install {package}.")
    assert path is not None
    return path


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


def measure_repeating_names(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make the first ``scripts.MEASURE`` batch that names sessions name each
    of them twice, as SCAN may while the keyspace is being rehashed.

    Within one batch, so that the repeat does not depend on how the server
    pages a few keys; across batches it meets the same dedupe. Returns the
    list the repeated reply is put in, for the test to check it happened.
    """
    repeated: list[Any] = []
    run_script = scripts.run

    def repeating(client: Any, script: str, keys: Any, args: Any) -> Any:
        reply = run_script(client, script, keys, args)
        if script is not scripts.MEASURE or not reply[1] or repeated:
            return reply
        repeated.append(reply)
        cursor, names, sizes, ttls, largest, longest, tombstones, n, sealed = reply
        return [
            cursor,
            names + b"\n" + names,
            sizes + sizes,
            ttls + ttls,
            largest,
            longest,
            2 * tombstones,
            2 * n,
            sealed + sealed,
        ]

    monkeypatch.setattr(scripts, "run", repeating)
    return repeated


def load_scripts(client: Any) -> None:
    """Load every script of the engine, so a count of round trips sees none of it.

    On a Redis Cluster, on every node.
    """
    if isinstance(client, redis.cluster.RedisCluster):
        nodes = [client.get_redis_connection(node) for node in client.get_nodes()]
    else:
        nodes = [client]
    for node in nodes:
        for script in scripts.ALL:
            node.script_load(script)


def data_name(prefix: str, key: str) -> str:
    """The Redis name of the session of ``key`` under the configured layout."""
    return RedisLayer(prefix=prefix).data_name(key)


@dataclasses.dataclass
class Server:
    """Where a test runs: a plain client on it, and whether it is a Cluster."""

    raw: Any
    cluster: bool


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


def django_tests(package: str) -> Path:
    """A directory holding ``package`` from the installed Django's own ``tests/``.

    Django publishes its test suite only in its sdist. The sdist of exactly
    the installed version comes from the package index through pip, the first
    time a version is asked for; ``package`` is extracted, unchanged, into
    ``DJANGO_TESTS_CACHE / <version>``, and later runs read it from there.
    A failed download raises ``subprocess.CalledProcessError``: the tests that
    need the package then fail, they are never skipped.
    """
    version = importlib.metadata.version("Django")
    home = DJANGO_TESTS_CACHE / version
    if (home / package / "__init__.py").is_file():
        return home
    DJANGO_TESTS_CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DJANGO_TESTS_CACHE) as scratch:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        subprocess.run(
            [*pip, "--no-binary", ":all:", "--dest", scratch, f"Django=={version}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (sdist,) = Path(scratch).glob("*.tar.gz")
        staged = Path(scratch) / "staged"
        _extract_tests(sdist, package, staged)
        home.mkdir(exist_ok=True)
        try:
            # Two runs fetching the same version at once (tox run-parallel):
            # the first to arrive wins, the other keeps what it found.
            os.replace(staged / package, home / package)
        except OSError:
            if not (home / package / "__init__.py").is_file():
                raise
    return home


def _extract_tests(sdist: Path, package: str, target: Path) -> None:
    """Copy the files of ``<top>/tests/<package>/`` to ``target/<package>/``."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if parts[1:3] != ("tests", package) or not member.isfile():
                continue
            if ".." in parts:
                raise ValueError(
                    f"{sdist.name} names a path outside it: {member.name!r}"
                )
            destination = target.joinpath(*parts[2:])
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, destination.open("wb") as file:
                shutil.copyfileobj(source, file)


#: How many schedules a forced-interleaving scenario plays at least.
SCHEDULES = 500


def interleavings(
    steps: list[int], seed: int, wanted: int = SCHEDULES
) -> list[list[int]]:
    """Orders of the steps of requests taking ``steps[i]`` round trips each.

    An order lists, for each round trip, which request runs its next step:
    every distinct order when there are at most ``wanted``, else a seeded
    sample of ``wanted`` distinct ones.
    """
    slots = [index for index, count in enumerate(steps) for _ in range(count)]
    total = math.factorial(len(slots))
    for count in steps:
        total //= math.factorial(count)
    if total <= wanted:
        return [list(order) for order in sorted(set(itertools.permutations(slots)))]
    rng = random.Random(seed)
    sampled: set[tuple[int, ...]] = set()
    while len(sampled) < wanted:
        rng.shuffle(slots)
        sampled.add(tuple(slots))
    return [list(order) for order in sorted(sampled)]


#: The actor of the running ``Interleaving`` this code runs as; None: ungated.
_ACTOR: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "actor", default=None
)

#: Commands that open or route a connection rather than act on sessions.
_UNGATED = frozenset(
    {b"AUTH", b"CLIENT", b"CLUSTER", b"COMMAND", b"HELLO", b"PING", b"READONLY"}
    | {b"SCRIPT", b"SELECT", b"INFO"}
)

#: How long an actor may take to reach its next command: a deadlock guard,
#: never a timing the tests depend on.
_STUCK_SECONDS = 30


def _command_name(packed: Any) -> bytes:
    """The name of the (first) command in what a connection sends."""
    first = packed if isinstance(packed, (bytes, bytearray, memoryview)) else packed[0]
    parts = bytes(first).split(b"\r\n", 3)
    return parts[2].upper() if len(parts) > 2 else b""


class Interleaving:
    """Run several operations one Redis command at a time, in a forced order.

    Each actor (a thread, or an asyncio task) waits before every command it
    sends, through any redis-py connection (a client, a pipeline, a Cluster
    node), until ``order`` gives it the turn; the next turn is given only
    once every actor stands before its next command or has finished. So a
    schedule plays exactly the interleaving of round trips it names, with no
    timing involved. Turns of an actor that has finished are skipped; once
    ``order`` is spent, everyone runs freely. ``sent`` lists ``(actor,
    command)`` as they ran. With ``lose_at``, the reply of the script (an
    ``EVALSHA``) sent at that position or the first one after it is lost
    after the server ran it, and redis-py's retry sends it again when its
    turn comes: other actors may run in between, as other clients do.

    ``patched()`` installs the gate on redis-py's connection classes for the
    duration of a test; code outside an actor is never gated.
    """

    current: Interleaving | None = None

    def __init__(self, order: Sequence[int], lose_at: int | None = None) -> None:
        self.order = list(order)
        self.lose_at = lose_at
        self.sent: list[tuple[int, str]] = []
        self.lost = 0
        self.errors: list[BaseException] = []
        self._arrived: Counter[int] = Counter()
        self._granted: Counter[int] = Counter()
        self._done: set[int] = set()
        self._retrying: set[int] = set()
        self._free = False
        self._actors = 0

    # The gate, as the patched connections call it.

    def _may_go(self, actor: int) -> bool:
        return self._free or self._granted[actor] >= self._arrived[actor]

    def _arrive(self, actor: int, name: bytes) -> bool:
        """Count an arrival at the gate (every send, a retry too)."""
        self._arrived[actor] += 1
        return True

    def _went(self, actor: int, name: bytes) -> bool:
        """Record a command about to be sent; True if its reply is to be lost."""
        again = actor in self._retrying
        self._retrying.discard(actor)
        self.sent.append((actor, name.decode() + (" again" if again else "")))
        lose = (
            self.lose_at is not None
            and len(self.sent) - 1 >= self.lose_at
            and name == b"EVALSHA"
            and not self.lost
        )
        if lose:
            self.lost += 1
            self._retrying.add(actor)
        return lose

    def _settled(self) -> bool:
        return all(
            actor in self._done or self._arrived[actor] > self._granted[actor]
            for actor in range(self._actors)
        )

    # Sync: one thread per actor.

    def run(self, actors: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run the actors in threads under ``order``; their results."""
        self._actors = len(actors)
        self._cond = threading.Condition()
        results: list[Any] = [None] * len(actors)

        def play(actor: int, function: Callable[[], Any]) -> None:
            _ACTOR.set(actor)
            try:
                results[actor] = function()
            except BaseException as error:  # reported by run()
                self.errors.append(error)
            finally:
                with self._cond:
                    self._done.add(actor)
                    self._cond.notify_all()

        threads = [
            threading.Thread(target=play, args=(actor, function), daemon=True)
            for actor, function in enumerate(actors)
        ]
        Interleaving.current = self
        try:
            for thread in threads:
                thread.start()
            with self._cond:
                for actor in self.order:
                    self._wait(self._settled)
                    if actor not in self._done:
                        self._granted[actor] += 1
                        self._cond.notify_all()
                self._wait(self._settled)
                self._free = True
                self._cond.notify_all()
                unfinished = self._unfinished()
            for thread in threads:
                thread.join(_STUCK_SECONDS)
        finally:
            Interleaving.current = None
        if self.errors:
            raise self.errors[0]
        self._check(unfinished)
        return results

    def _unfinished(self) -> list[int]:
        return [actor for actor in range(self._actors) if actor not in self._done]

    def _check(self, unfinished: list[int]) -> None:
        # The rest of those actors ran without a schedule: give them turns.
        assert not unfinished, (
            f"Actors {unfinished} had commands left after the schedule: {self.sent}"
        )

    def _wait(self, ready: Callable[[], bool]) -> None:
        if not self._cond.wait_for(ready, timeout=_STUCK_SECONDS):
            raise AssertionError(f"An actor is stuck; sent so far: {self.sent}")

    def _gate(self, name: bytes) -> bool:
        actor = _ACTOR.get()
        if actor is None or name in _UNGATED:
            return False
        with self._cond:
            if not self._arrive(actor, name):
                return False
            self._cond.notify_all()
            self._wait(lambda: self._may_go(actor))
            return self._went(actor, name)

    # asyncio: one task per actor, on the running loop.

    async def arun(self, actors: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """See run(); the actors are coroutine functions."""
        self._actors = len(actors)
        self._acond = asyncio.Condition()

        async def play(actor: int, function: Callable[[], Awaitable[Any]]) -> Any:
            _ACTOR.set(actor)
            try:
                return await function()
            finally:
                async with self._acond:
                    self._done.add(actor)
                    self._acond.notify_all()

        Interleaving.current = self
        try:
            tasks = [
                asyncio.ensure_future(play(actor, function))
                for actor, function in enumerate(actors)
            ]
            async with self._acond:
                for actor in self.order:
                    await self._await(self._settled)
                    if actor not in self._done:
                        self._granted[actor] += 1
                        self._acond.notify_all()
                await self._await(self._settled)
                self._free = True
                self._acond.notify_all()
                unfinished = self._unfinished()
            results = list(await asyncio.gather(*tasks))
        finally:
            Interleaving.current = None
        self._check(unfinished)
        return results

    async def _await(self, ready: Callable[[], bool]) -> None:
        try:
            await asyncio.wait_for(self._acond.wait_for(ready), _STUCK_SECONDS)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"An actor is stuck; sent so far: {self.sent}"
            ) from None

    async def _agate(self, name: bytes) -> bool:
        actor = _ACTOR.get()
        if actor is None or name in _UNGATED:
            return False
        async with self._acond:
            if not self._arrive(actor, name):
                return False
            self._acond.notify_all()
            await self._await(lambda: self._may_go(actor))
            return self._went(actor, name)

    # Installing the gate.

    @staticmethod
    @contextlib.contextmanager
    def patched() -> Iterator[None]:
        sync_class = redis.connection.AbstractConnection
        async_class = redis.asyncio.connection.AbstractConnection
        sync_send, sync_read = sync_class.send_packed_command, sync_class.read_response
        async_send = async_class.send_packed_command
        async_read = async_class.read_response

        def send(self: Any, command: Any, check_health: bool = True) -> None:
            now = Interleaving.current
            lose = now is not None and now._gate(_command_name(command))
            sync_send(self, command, check_health)
            if lose:
                self._lose_reply = True

        def read(self: Any, *args: Any, **kwargs: Any) -> Any:
            response = sync_read(self, *args, **kwargs)
            if getattr(self, "_lose_reply", False):
                self._lose_reply = False
                raise redis.ConnectionError("The reply was lost (forced by the test).")
            return response

        async def asend(self: Any, command: Any, check_health: bool = True) -> None:
            now = Interleaving.current
            lose = now is not None and await now._agate(_command_name(command))
            await async_send(self, command, check_health)
            if lose:
                self._lose_reply = True

        async def aread(self: Any, *args: Any, **kwargs: Any) -> Any:
            response = await async_read(self, *args, **kwargs)
            if getattr(self, "_lose_reply", False):
                self._lose_reply = False
                raise redis.ConnectionError("The reply was lost (forced by the test).")
            return response

        patches = [
            (sync_class, "send_packed_command", send),
            (sync_class, "read_response", read),
            (async_class, "send_packed_command", asend),
            (async_class, "read_response", aread),
        ]
        originals = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
        try:
            for cls, name, function in patches:
                setattr(cls, name, function)
            yield
        finally:
            for cls, name, original in originals:
                setattr(cls, name, original)


# --- Requests of the Django backend under a forced order of their steps -------

#: The backend method of each step, sync and asyncio. ``load`` fills the
#: session's cache the way the first access in a view does.
METHODS = {
    "load": ("_get_session", "_aget_session"),
    "save": ("save", "asave"),
    "cycle_key": ("cycle_key", "acycle_key"),
    "flush": ("flush", "aflush"),
}


@dataclasses.dataclass
class Request:
    """One request: its session and its steps, ``(method, then)`` pairs:
    a backend method, and what the view does right after it."""

    name: str
    session: SessionBase
    steps: list[tuple[str, Callable[[], None] | None]]
    errors: list[str] = dataclasses.field(default_factory=list)


def request(
    name: str, key: str | None, *steps: Any, store: type[SessionBase] | None = None
) -> Request:
    """A request of ``store`` (this engine's backend by default) on ``key``."""
    session = (SessionStore if store is None else store)(key)
    pairs = [(step, None) if isinstance(step, str) else step for step in steps]
    return Request(name, session, pairs)


def position(order: list[int], requests: list[Request], name: str, step: str) -> int:
    """Where in ``order`` request ``name`` runs its ``step``."""
    wanted = next(i for i, req in enumerate(requests) if req.name == name)
    taken = 0
    for at, index in enumerate(order):
        if index == wanted:
            if requests[index].steps[taken][0] == step:
                return at
            taken += 1
    raise AssertionError(f"{name} has no {step} step.")


def play_steps(
    mode: str,
    requests: list[Request],
    order: list[int],
    lost_replies: LostReplies,
    lose_at: int | None = None,
) -> None:
    """Run the requests' steps in ``order``, sync or through the asyncio twins.

    With ``lose_at``, the first reply at or after that position is lost (a
    step that sends nothing passes the loss on). ``UpdateError`` (which the
    middleware answers with ``SessionInterrupted``) is recorded on the request.
    """
    cursors = [iter(req.steps) for req in requests]
    plan = []
    for at, index in enumerate(order):
        method, then = next(cursors[index])
        plan.append((requests[index], method, then, at == lose_at))
    if mode == "sync":
        for req, method, then, lose in plan:
            if lose:
                lost_replies.arm()
            try:
                getattr(req.session, METHODS[method][0])()
            except UpdateError:
                req.errors.append(method)
            if then is not None:
                then()
    else:

        async def play_async() -> None:
            for req, method, then, lose in plan:
                if lose:
                    lost_replies.arm()
                try:
                    await getattr(req.session, METHODS[method][1])()
                except UpdateError:
                    req.errors.append(method)
                if then is not None:
                    then()

        asyncio.run(play_async())
    lost_replies.armed = False
