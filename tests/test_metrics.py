"""OpenTelemetry metrics of the single-session operations, read back with the SDK.

The tests that read metrics need ``opentelemetry-sdk``, which only the
``otel`` tox env installs; the default env checks that without the API the
layer's methods are the plain functions, untouched.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_redis_sessions import metrics
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import Outcome


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


needs_sdk = pytest.mark.skipif(
    not importable("opentelemetry.sdk"),
    reason="needs opentelemetry-sdk, which the otel tox env installs",
)

OPERATIONS = ("read", "create", "set", "update", "touch", "destroy", "cycle")

Points = dict[tuple[str, tuple[tuple[str, Any], ...]], Any]


# --- Without the API ------------------------------------------------------------


@pytest.mark.skipif(
    importable("opentelemetry"),
    reason="opentelemetry-api is installed: the SDK tests below cover it",
)
def test_without_opentelemetry_the_layer_methods_are_the_plain_functions() -> None:
    assert metrics.instruments is None

    def operation(layer: Any, key: str) -> None:
        return None

    assert metrics.recorded("read", operation) is operation
    for name in OPERATIONS:
        assert not hasattr(getattr(RedisLayer, name), "__wrapped__")
        assert not hasattr(getattr(RedisLayer, f"a{name}"), "__wrapped__")


def test_an_import_error_of_the_api_means_no_instruments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert metrics._instruments() is None

    def method(self: Any) -> None:
        pass

    monkeypatch.setattr(metrics, "instruments", None)
    assert metrics.recorded("read", method) is method


# --- With the SDK ---------------------------------------------------------------


@pytest.fixture(scope="session")
def reader() -> Any:
    """The global meter provider, set once, read with delta temporality.

    Set after the package created its instruments, as an application would:
    the API's proxy meter hands them over.
    """
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        InMemoryMetricReader,
    )

    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(
        preferred_temporality={Counter: delta, Histogram: delta}
    )
    otel_metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


@pytest.fixture
def take(reader: Any) -> Any:
    """Call to get what was recorded since the last call (or the test's start)."""

    def points() -> Points:
        found: Points = {}
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != "django_redis_sessions":
                    continue
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = tuple(sorted(point.attributes.items()))
                        if hasattr(point, "sum") and hasattr(point, "count"):
                            value: Any = (point.count, point.sum)
                        else:
                            value = point.value
                        if value not in (0, (0, 0)):
                            found[metric.name, attributes] = value
        return found

    points()
    return points


def counted(operation: str, outcome: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    return (
        "django_redis_sessions.operations",
        (("operation", operation), ("outcome", outcome)),
    )


def sized(operation: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    return ("django_redis_sessions.payload.size", (("operation", operation),))


@needs_sdk
def test_every_single_session_operation_is_counted_by_outcome(
    store: Any, take: Any
) -> None:
    assert store.create("abcdefgh", {"n": 1}, ttl=60)  # 7 bytes
    assert not store.create("abcdefgh", {"n": 2}, ttl=60)
    assert store.get("abcdefgh") == {"n": 1}
    assert store.update("abcdefgh", {"n": 22}, ttl=60)  # 8 bytes
    assert store.touch("abcdefgh", ttl=60)
    assert store.destroy("abcdefgh")
    assert store.get("abcdefgh") is None
    assert not store.set("abcdefgh", {"n": 3}, ttl=60)
    assert not store.update("abcdefgh", {"n": 3}, ttl=0)

    assert take() == {
        counted("create", "written"): 1,
        counted("create", "exists"): 1,
        # The get, and the touch's own read of the session's user (the user
        # index is on): 7 bytes, then 8.
        counted("read", "found"): 2,
        counted("update", "written"): 1,
        counted("touch", "written"): 1,
        counted("destroy", "destroyed"): 1,
        counted("read", "missing"): 1,
        counted("set", "tombstoned"): 1,
        counted("update", "expired"): 1,
        sized("create"): (1, 7),
        sized("read"): (2, 15),
        sized("update"): (1, 8),
    }


@needs_sdk
def test_a_login_and_a_logout_of_the_backend_are_counted_once_each(
    take: Any,
) -> None:
    session = SessionStore()
    session["n"] = 1
    session.save()
    session.cycle_key()  # performs the key change
    session.save()  # the save after it, as a login's response does
    loaded = SessionStore(session.session_key)
    assert loaded["n"] == 1
    loaded.flush()

    assert take() == {
        counted("create", "written"): 1,
        counted("cycle", "written"): 1,
        counted("update", "written"): 1,
        counted("read", "found"): 1,
        counted("destroy", "destroyed"): 1,
        sized("create"): (1, 7),
        sized("cycle"): (1, 7),
        sized("update"): (1, 7),
        sized("read"): (1, 7),
    }


@needs_sdk
def test_the_asyncio_methods_are_counted_too(prefix: str, take: Any) -> None:
    layer = RedisLayer(prefix=prefix)

    async def flow() -> None:
        assert (await layer.acreate("abcdefgh", b"payload", 60)).name == "WRITTEN"
        assert await layer.aread("abcdefgh") == b"payload"
        assert (await layer.acycle("abcdefgh", "ijklmnop", b"payload!", 60)).name == (
            "WRITTEN"
        )
        assert await layer.adestroy("ijklmnop")

    asyncio.run(flow())

    assert take() == {
        counted("create", "written"): 1,
        counted("read", "found"): 1,
        counted("cycle", "written"): 1,
        counted("destroy", "destroyed"): 1,
        sized("create"): (1, 7),
        sized("read"): (1, 7),
        sized("cycle"): (1, 8),
    }


@needs_sdk
def test_a_cycle_on_cluster_counts_as_one_cycle(
    cluster_url: str, settings: Any, prefix: str, take: Any
) -> None:
    settings.SESSION_REDIS = {"URL": cluster_url, "CLUSTER": True, "PREFIX": prefix}
    layer = RedisLayer()
    layer.create("abcdefgh", b"payload", 60)
    take()

    # A destroy and a create on two slots, recorded as the one operation asked.
    assert layer.cycle("abcdefgh", "ijklmnop", b"payload", 60).name == "WRITTEN"
    assert layer.destroy("ijklmnop")

    assert take() == {
        counted("cycle", "written"): 1,
        counted("destroy", "destroyed"): 1,
        sized("cycle"): (1, 7),
    }


@needs_sdk
def test_a_failed_operation_is_counted_with_its_error_type(
    prefix: str, take: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis(
        port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    layer = RedisLayer(prefix=prefix, client=lambda: client)

    with pytest.raises(redis.ConnectionError):
        layer.read("abcdefgh")

    assert take() == {
        (
            "django_redis_sessions.operations",
            (
                ("error.type", "ConnectionError"),
                ("operation", "read"),
                ("outcome", "error"),
            ),
        ): 1
    }
    client.close()


@needs_sdk
def test_no_key_id_or_user_id_is_ever_an_attribute(store: Any, take: Any) -> None:
    key = "abcdefgh12345678abcdefgh12345678"
    assert store.create(key, {"_auth_user_id": "4242"}, ttl=60)
    assert store.get(key) == {"_auth_user_id": "4242"}
    store.destroy(key)

    values = {str(value) for _, attributes in take() for _, value in attributes}
    assert values == {"create", "read", "destroy", "written", "found", "destroyed"}


# --- The wrapper, with any meter ----------------------------------------------


class Instrument:
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, str]]] = []

    def add(self, amount: int, attributes: dict[str, str]) -> None:
        self.calls.append((amount, attributes))

    record = add


class Meter:
    def create_counter(self, name: str, **kwargs: Any) -> Instrument:
        return Instrument()

    create_histogram = create_counter


@pytest.fixture
def instruments(monkeypatch: pytest.MonkeyPatch) -> metrics.Instruments:
    """``recorded`` wrapping with instruments of a meter that keeps the calls."""
    recording = metrics.Instruments(Meter())
    monkeypatch.setattr(metrics, "instruments", recording)
    return recording


def test_the_wrapper_records_what_each_kind_of_operation_returned(
    instruments: metrics.Instruments,
) -> None:
    def read(self: Any, key: str) -> bytes | None:
        return b"abc" if key == "found" else None

    def update(self: Any, key: str, payload: bytes, ttl: float) -> Outcome:
        return Outcome.WRITTEN if key == "live" else Outcome.MISSING

    def destroy(self: Any, key: str) -> bool:
        return key == "live"

    recorded_read = metrics.recorded("read", read)
    recorded_update = metrics.recorded("update", update, payload_at=1)
    recorded_destroy = metrics.recorded("destroy", destroy)
    assert recorded_read.__doc__ == read.__doc__
    assert recorded_read(None, "found") == b"abc"
    assert recorded_read(None, "gone") is None
    assert recorded_update(None, "live", b"12345", 60) is Outcome.WRITTEN
    assert recorded_update(None, "gone", b"12345", 60) is Outcome.MISSING
    assert recorded_destroy(None, "live") is True

    assert instruments.operations.calls == [
        (1, {"operation": "read", "outcome": "found"}),
        (1, {"operation": "read", "outcome": "missing"}),
        (1, {"operation": "update", "outcome": "written"}),
        (1, {"operation": "update", "outcome": "missing"}),
        (1, {"operation": "destroy", "outcome": "destroyed"}),
    ]
    assert instruments.payload_size.calls == [
        (3, {"operation": "read"}),
        (5, {"operation": "update"}),
    ]


def test_the_asyncio_wrapper_records_outcomes_and_errors(
    instruments: metrics.Instruments,
) -> None:
    async def create(self: Any, key: str, payload: bytes, ttl: float) -> Outcome:
        if key == "down":
            raise redis.ConnectionError("Redis is down.")
        return Outcome.TOMBSTONED

    recorded_create = metrics.recorded("create", create, payload_at=1)
    assert asyncio.run(recorded_create(None, "k", b"x", 60)) is Outcome.TOMBSTONED
    with pytest.raises(redis.ConnectionError):
        asyncio.run(recorded_create(None, "down", b"x", 60))

    assert instruments.operations.calls == [
        (1, {"operation": "create", "outcome": "tombstoned"}),
        (
            1,
            {
                "operation": "create",
                "outcome": "error",
                "error.type": "ConnectionError",
            },
        ),
    ]
    assert instruments.payload_size.calls == []
