"""The store on a real three-primary Redis Cluster: one slot per session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis.cluster

from django_redis_sessions.client import clients
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.store import RedisSessionStore
from tests.conftest import PLAIN
from tests.twins import AsyncTwins, no_sync_client
from tests.utils import data_name, tombstone_name


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
        yield AsyncTwins(store, plain=PLAIN)
    keys = list(cluster_client.scan_iter(match=prefix + "*"))
    for key in keys:
        cluster_client.unlink(key)
    clients.close()


def test_single_session_operations_run_on_one_slot(cluster_store: Any) -> None:
    assert cluster_store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert cluster_store.update("abcdefgh", {"v": 2}, ttl=60) is True
    assert cluster_store.touch("abcdefgh", 60) is True
    assert cluster_store.get("abcdefgh") == {"v": 2}
    assert cluster_store.destroy("abcdefgh") is True
    assert cluster_store.set("abcdefgh", {"v": 3}, ttl=60) is False
    assert cluster_store.exists("abcdefgh") is False


def layer_like(store: Any) -> Any:
    """The Redis layer configured like ``store``, in the same mode."""
    if isinstance(store, AsyncTwins):
        return AsyncTwins(RedisLayer(client=no_sync_client), plain=PLAIN)
    return RedisLayer()


def test_cycle_moves_a_session_across_slots(
    cluster_store: Any, cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    cluster_store.create("oldsession1", {"v": 1}, ttl=60)
    layer = layer_like(cluster_store)
    outcome = layer.cycle("oldsession1", "newsession2", b'{"v":1}', 60)
    assert outcome.name == "WRITTEN"
    assert cluster_store.get("newsession2") == {"v": 1}
    assert cluster_client.exists(tombstone_name(prefix, "oldsession1")) == 1


def test_bulk_operations_scan_every_primary(
    cluster_store: Any, cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    keys = [f"session{n:04d}" for n in range(60)]
    for key in keys:
        cluster_store.create(key, {"n": key}, ttl=60)
    cluster_store.destroy(keys[0])
    # The keys really are spread over the three primaries.
    names = [data_name(prefix, key) for key in keys]
    slots = {cluster_client.keyslot(name) for name in names}
    owners = {cluster_client.get_node_from_key(name).name for name in names}
    assert len(slots) > 30
    assert len(owners) == 3
    assert cluster_store.count() == 59
    assert dict(cluster_store.all()) == {
        cluster_store.session_id(key): {"n": key} for key in keys[1:]
    }
    assert cluster_store.clear() == 59
    assert cluster_store.count() == 0


def test_cycle_of_a_session_ended_elsewhere_creates_nothing(
    cluster_store: Any, cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    cluster_store.create("oldsession1", {"v": 1}, ttl=60)
    cluster_store.destroy("oldsession1")
    layer = layer_like(cluster_store)
    outcome = layer.cycle("oldsession1", "newsession2", b'{"v":1}', 60)
    assert outcome.name == "MISSING"
    assert cluster_client.exists(data_name(prefix, "newsession2")) == 0
