"""Servers and stores for the test suite.

A throwaway ``redis-server`` (see ``django_redis_sessions.testing``) is started
once per run unless ``REDIS_URL`` names an existing server. Every test gets its
own key prefix and every key under it is removed afterwards, so the suite never
touches keys it did not create, even on a shared server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import django
import fakeredis
import pytest
import redis
import redis.cluster
import trustme

from django_redis_sessions.client import clients
from django_redis_sessions.keys import glob_escape
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import RedisServer, ServerNotFound, TLSFiles
from tests.twins import AsyncTwins, no_sync_client
from tests.utils import Server, load_scripts, needs_async_backend

# Django is set up here rather than from the pytest configuration: under tox the
# checkout is only appended to sys.path (the package under test is the built
# wheel), so ``tests.settings`` cannot be imported when pytest-django reads its
# options. Nothing imported above reads settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()


class QuietSlowCallbacks(logging.Filter):
    """Drop asyncio's "Executing <handle> took 0.134 seconds" warnings.

    tox runs the suite with ``PYTHONDEVMODE``, which turns on asyncio's debug
    mode, which logs every callback slower than 0.1 s. On a loaded machine that
    is any callback, and the warning then lands among the records that a test
    asserts on. It says how busy the machine was, nothing about the code, so
    it is dropped where asyncio logs it; every other asyncio record stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Executing %s took %.3f seconds"


logging.getLogger("asyncio").addFilter(QuietSlowCallbacks())


@pytest.fixture(scope="session", autouse=True)
def _tox_tests_the_built_wheel() -> None:
    import django_redis_sessions

    env = os.environ.get("TOX_ENV_NAME", "")
    if env.startswith("py"):
        assert "site-packages" in django_redis_sessions.__file__, (
            "tox must test the installed wheel, not the checkout."
        )
        # A dependency that needs a newer Django would upgrade it silently.
        wanted = env.partition("-django")[2]
        installed = f"{django.VERSION[0]}{django.VERSION[1]}"
        assert wanted in ("", installed), (
            f"{env} runs on Django {django.get_version()}, not its own series."
        )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test server, for arranging and asserting."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


#: The layout every test runs with: ``TEST_HASH_IDS=0`` runs the whole suite
#: with the session key as the stored id. The rollout modes ("prepare",
#: "migrate") are transient states whose layout differs by design (two
#: tombstones per logout, a script per load): their own tests run them
#: beside the steady states (``test_hashed_ids.py``, ``test_rollouts.py``),
#: where the exact keys and round trips of every other test do not apply.
_TEST_HASH_IDS = os.environ.get("TEST_HASH_IDS", "")
if _TEST_HASH_IDS not in ("", "0", "1"):
    raise pytest.UsageError(
        f"TEST_HASH_IDS={_TEST_HASH_IDS!r}: use 0 (plain keys) or 1 (ids, the "
        "default); the rollout modes have tests of their own."
    )
HASH_IDS: bool = _TEST_HASH_IDS != "0"


def pytest_report_header() -> list[str]:
    import django_redis_sessions

    return [
        f"django_redis_sessions: {os.path.dirname(django_redis_sessions.__file__)}",
        f"HASH_IDS: {HASH_IDS!r}",
    ]


@pytest.fixture(autouse=True)
def session_redis(
    redis_url: str, prefix: str, raw_redis: redis.Redis, settings: Any
) -> Iterator[dict[str, Any]]:
    """``SESSION_REDIS`` for this test: the test server and a unique prefix.

    Set through pytest-django's ``settings``, so the engine's clients and
    caches are dropped before and after, as ``override_settings`` does. The
    dict may be changed before the engine first uses it.
    """
    config: dict[str, Any] = {"URL": redis_url, "PREFIX": prefix}
    config["HASH_IDS"] = HASH_IDS
    settings.SESSION_REDIS = config
    yield config
    keys = list(raw_redis.scan_iter(match=glob_escape(prefix) + "*", count=1000))
    if keys:
        raw_redis.unlink(*keys)


def keys_under(client: redis.Redis, prefix: str) -> set[str]:
    """Every key under ``prefix``, decoded, for exact assertions."""
    return {key.decode() for key in client.scan_iter(match=glob_escape(prefix) + "*")}


@pytest.fixture
def redis_keys(raw_redis: redis.Redis, prefix: str) -> Any:
    """A callable returning the exact set of keys this test left in Redis."""
    return lambda: keys_under(raw_redis, prefix)


class FakeClients:
    """fakeredis clients sharing one fake server, the asyncio one per loop."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.sync = fakeredis.FakeRedis(server=self.server)
        self._async: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop not in self._async:
            self._async[loop] = fakeredis.FakeAsyncRedis(server=self.server)
        return self._async[loop]


@pytest.fixture(params=["redis", "fakeredis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def api_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_raw(backend_name: str, raw_redis: redis.Redis) -> Iterator[Any]:
    """A plain sync client on the server the ``store`` fixture writes to."""
    if backend_name == "redis":
        yield raw_redis
        return
    fake = FakeClients()
    yield fake
    fake.sync.close()


@pytest.fixture
def make_store(
    backend_name: str, api_mode: str, prefix: str, store_raw: Any
) -> Callable[..., Any]:
    """Build a store on the real server or on fakeredis, sync or through twins.

    Through the twins, the store has no sync client at all, so an asyncio
    method that fell back to blocking I/O fails loudly.
    """

    def make(kind: type[Any] = RedisSessionStore, **kwargs: Any) -> Any:
        kwargs.setdefault("prefix", prefix)
        if backend_name == "fakeredis":
            kwargs.setdefault("client", lambda: store_raw.sync)
            kwargs.setdefault("async_client", store_raw.async_client)
        if api_mode == "async":
            kwargs["client"] = no_sync_client
            return AsyncTwins(kind(**kwargs), plain=PLAIN)
        return kind(**kwargs)

    return make


#: Attributes that are not I/O and have no asyncio twin.
PLAIN = frozenset({"prefix", "scan_count", "session_id", "data_name", "tombstone_name"})


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    return make_store()


@pytest.fixture
def layer(make_store: Callable[..., Any]) -> Any:
    """The Redis layer under ``store``, sync or through its twins."""
    return make_store(RedisLayer)


@pytest.fixture
def raw(store_raw: Any) -> redis.Redis:
    """A plain sync client on the store's server."""
    return store_raw.sync if isinstance(store_raw, FakeClients) else store_raw


@pytest.fixture
def store_keys(raw: redis.Redis, prefix: str) -> Callable[[], set[str]]:
    """The exact set of keys under this test's prefix on the store's server."""
    return lambda: keys_under(raw, prefix)


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A three-primary Redis Cluster, started on first use."""
    from django_redis_sessions.testing import RedisClusterServers

    with RedisClusterServers() as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A new certificate authority and a certificate for 127.0.0.1 it signed."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    files = TLSFiles(
        cert_file=str(directory / "server.pem"),
        key_file=str(directory / "server.key"),
        ca_file=str(directory / "ca.pem"),
    )
    for index, pem in enumerate(server_cert.cert_chain_pems):
        pem.write_to_path(files.cert_file, append=index > 0)
    server_cert.private_key_pem.write_to_path(files.key_file)
    ca.cert_pem.write_to_path(files.ca_file)
    return files


@pytest.fixture(scope="session")
def tls_server(tls_files: TLSFiles) -> Iterator[RedisServer]:
    """A server speaking only TLS, on the first server binary built with it.

    Skipped only when no such binary exists (the embedded Valkey has no TLS);
    any other failure to start fails the tests.
    """
    server = RedisServer(tls=tls_files)
    try:
        server.start()
    except ServerNotFound as error:
        pytest.skip(str(error))
    with server:
        yield server


@pytest.fixture
def cluster(
    cluster_url: str, settings: Any, prefix: str
) -> Iterator[redis.cluster.RedisCluster]:
    """``SESSION_REDIS`` on the cluster with this test's prefix, and a client on it.

    The dict may be changed before the engine first uses it (``HASH_IDS``...).
    """
    settings.SESSION_REDIS = {"URL": cluster_url, "CLUSTER": True, "PREFIX": prefix}
    client = redis.cluster.RedisCluster.from_url(cluster_url)
    yield client
    for name in client.scan_iter(match=glob_escape(prefix) + "*"):
        client.unlink(name)
    client.disconnect_connection_pools()
    client.close()
    clients.close()


@pytest.fixture(params=["one server", "cluster"])
def server(request: pytest.FixtureRequest, raw_redis: redis.Redis) -> Server:
    """One server or a Redis Cluster under ``SESSION_REDIS``, every script loaded."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("cluster")
        load_scripts(cluster)
        return Server(cluster, True)
    load_scripts(raw_redis)
    return Server(raw_redis, False)


@pytest.fixture(params=["sync", pytest.param("async", marks=needs_async_backend)])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``call(session, "save")`` runs ``save()``, or ``asyncio.run(asave())``."""

    def sync(target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(target, name)(*args, **kwargs)

    def asynchronous(target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(getattr(target, "a" + name)(*args, **kwargs))

    return sync if request.param == "sync" else asynchronous
