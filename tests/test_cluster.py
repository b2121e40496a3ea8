"""The store on a real three-primary Redis Cluster: one slot per session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis.cluster

from django_redis_sessions.client import close_clients
from django_redis_sessions.store import RedisSessionStore, tombstone_key
from tests.twins import AsyncTwins, no_sync_client


@pytest.fixture
def cluster_client(cluster_url: str) -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster.from_url(cluster_url)
    yield client
    client.disconnect_connection_pools()
    client.close()


@pytest.fixture(params=["sync", "async"])
def cluster_store(
    request: pytest.FixtureRequest,
    cluster_url: str,
    settings: Any,
    prefix: str,
    cluster_client: redis.cluster.RedisCluster,
) -> Iterator[Any]:
    settings.SESSION_REDIS = {"URL": cluster_url, "CLUSTER": True, "PREFIX": prefix}
    if request.param == "sync":
        yield RedisSessionStore()
    else:
        store = RedisSessionStore(client=no_sync_client)
        yield AsyncTwins(store, plain=frozenset({"prefix"}))
    keys = list(cluster_client.scan_iter(match=prefix + "*"))
    for key in keys:
        cluster_client.unlink(key)
    close_clients()


def test_single_session_operations_run_on_one_slot(cluster_store: Any) -> None:
    assert cluster_store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert cluster_store.update("abcdefgh", {"v": 2}, ttl=60) is True
    assert cluster_store.touch("abcdefgh", 60) is True
    assert cluster_store.get("abcdefgh") == {"v": 2}
    assert cluster_store.destroy("abcdefgh") is True
    assert cluster_store.set("abcdefgh", {"v": 3}, ttl=60) is False
    assert cluster_store.exists("abcdefgh") is False


def test_cycle_moves_a_session_across_slots(
    cluster_store: Any, cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    cluster_store.create("oldsession1", {"v": 1}, ttl=60)
    outcome = cluster_store.cycle("oldsession1", "newsession2", b'{"v":1}', 60)
    assert outcome.name == "WRITTEN"
    assert cluster_store.get("newsession2") == {"v": 1}
    assert cluster_client.exists(tombstone_key(prefix, "oldsession1")) == 1


def test_bulk_operations_scan_every_primary(
    cluster_store: Any, cluster_client: redis.cluster.RedisCluster
) -> None:
    keys = [f"session{n:04d}" for n in range(60)]
    # Arranged through the sync API, and for an hour: 60 asyncio creates are
    # 60 event loops, each building a cluster client that downloads and parses
    # COMMAND. Under PYTHONDEVMODE (tox) on a loaded machine that took over a
    # minute, the first sessions expired on their 60 s TTL, and count() was
    # 56: Redis had dropped them, the scan missed nothing.
    arrange = RedisSessionStore()
    assert all(arrange.create(key, {"n": key}, ttl=3600) for key in keys)
    cluster_store.destroy(keys[0])
    # The keys really are spread over the three primaries.
    slots = {cluster_client.keyslot(f"{{{key}}}") for key in keys}
    owners = {cluster_client.get_node_from_key(f"{{{key}}}").name for key in keys}
    assert len(slots) > 30
    assert len(owners) == 3
    assert cluster_store.count() == 59
    assert dict(cluster_store.all()) == {key: {"n": key} for key in keys[1:]}
    assert cluster_store.clear() == 59
    assert cluster_store.count() == 0
