from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from django.core import checks
from django.test import override_settings
from django.urls import URLPattern, URLResolver
from redis.backoff import NoBackoff

from django_redis_sessions.checks import MAX_EXPIRY_SECONDS, check_settings
from django_redis_sessions.conf import DEFAULTS
from django_redis_sessions.store import RedisSessionStore

# Lets test_check_is_registered run every check without tests/urls.py.
urlpatterns: list[URLPattern | URLResolver] = []

NOT_CALLABLE = 42


def make_client(*, asynchronous: bool = False) -> Any:
    return None


def make_client_without_asynchronous() -> Any:
    return None


class SerializerNeedingAKey:
    def __init__(self, key: str) -> None:
        self.key = key

    def dumps(self, obj: Any) -> bytes:
        return b""

    def loads(self, data: bytes) -> Any:
        return None


class SerializerWithoutLoads:
    def dumps(self, obj: Any) -> bytes:
        return b""


class SerializerWithDataForMethods:
    dumps = b"{}"
    loads = None


class SerializerThatRaises:
    def __init__(self) -> None:
        raise RuntimeError("no configuration")


class TaggedConnection(redis.Connection):
    """A connection class of a project's own, with an argument of its own."""

    def __init__(self, *, tag: str = "", **kwargs: Any) -> None:
        self.tag = tag
        super().__init__(**kwargs)


VALID_CONFIG: dict[str, Any] = {
    "URL": "rediss://user:secret@redis.example.com:6380/2",
    "OPTIONS": {"socket_timeout": 1.5},
    "CLUSTER": False,
    "CLUSTER_NODES": [],
    "SENTINELS": [("sentinel-1", 26379), ["sentinel-2", 26380]],
    "SENTINEL_SERVICE": "sessions",
    "CLIENT": None,
    "PREFIX": "app*:",
    "SCAN_COUNT": 1000,
    "TTL_SECONDS": 0,
    "TOMBSTONE_SECONDS": 1,
    "DISABLE_TOUCH": True,
    "SERIALIZER": "django.core.signing.JSONSerializer",
    "HASH_IDS": "migrate",
    "USER_INDEX": False,
    "USER_INDEX_METADATA": ("ip", "user_agent"),
    "MAX_SESSIONS_PER_USER": 5,
    "CLIENT_IP": "django_redis_sessions.middleware.remote_addr",
    "MIGRATE_FROM": "django.contrib.sessions.backends.db",
    "ENCRYPTION": "migrate",
    "ENCRYPTION_KEYS": [
        "a-server-secret-of-32-characters",
        b"another one, of 32 bytes or more",
    ],
}


def check(config: Any) -> list[checks.CheckMessage]:
    with override_settings(SESSION_REDIS=config):
        return check_settings(None)


def ids(config: Any) -> list[str | None]:
    return [message.id for message in check(config)]


def errors(config: Any) -> list[str | None]:
    return [message.id for message in check(config) if message.is_serious()]


def test_absent_setting_is_valid() -> None:
    with override_settings():
        del settings.SESSION_REDIS
        assert check_settings(None) == []


def test_empty_dict_is_valid() -> None:
    assert check({}) == []


def test_defaults_spelled_out_are_valid() -> None:
    assert check(dict(DEFAULTS)) == []


def test_config_with_every_key_is_valid() -> None:
    assert set(VALID_CONFIG) == set(DEFAULTS)
    assert check(VALID_CONFIG) == []


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://localhost:6379",
        "redis://localhost:6379/",
        "redis://localhost:6379/15",
        "redis://:secret@localhost/1",
        "redis://[::1]:6379/0",
        "redis://localhost/0?db=3&socket_timeout=2",
        "rediss://user:secret@example.com:6380/0",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_valid_url_passes(url: str) -> None:
    assert check({"URL": url}) == []


def test_every_key_is_checked_and_every_error_has_a_hint() -> None:
    bad = {key: object() for key in DEFAULTS} | {"BOGUS": 1}
    messages = check(bad)
    assert len(messages) == len(bad)
    assert all(isinstance(message, checks.Error) for message in messages)
    assert all(message.hint for message in messages)


def test_not_a_dict_is_e001_alone() -> None:
    assert ids([("URL", "redis://localhost")]) == ["django_redis_sessions.E001"]


def test_none_is_e001() -> None:
    messages = check(None)
    assert [m.id for m in messages] == ["django_redis_sessions.E001"]
    assert messages[0].msg == "SESSION_REDIS must be a dict, not None."


def test_unknown_keys_are_one_e002_naming_them_sorted() -> None:
    messages = check({"TTL": 5, "URL": "redis://localhost", "HOST": "x"})
    assert [m.id for m in messages] == ["django_redis_sessions.E002"]
    assert messages[0].msg == "SESSION_REDIS has unknown keys: 'HOST', 'TTL'."
    assert messages[0].hint == (
        "Valid keys are CLIENT, CLIENT_IP, CLUSTER, CLUSTER_NODES, DISABLE_TOUCH, "
        "ENCRYPTION, ENCRYPTION_KEYS, HASH_IDS, MAX_SESSIONS_PER_USER, "
        "MIGRATE_FROM, OPTIONS, PREFIX, SCAN_COUNT, SENTINELS, SENTINEL_SERVICE, "
        "SERIALIZER, TOMBSTONE_SECONDS, TTL_SECONDS, URL, USER_INDEX, "
        "USER_INDEX_METADATA."
    )


def test_non_string_unknown_key_is_e002() -> None:
    assert ids({1: "x"}) == ["django_redis_sessions.E002"]


@pytest.mark.parametrize(
    "url",
    [
        None,
        b"redis://localhost",
        "",
        "localhost:6379",
        "http://localhost:6379/0",
        "redis://",
        "redis://:6379/0",
        "redis://localhost:port/0",
        "redis://localhost:70000/0",
        "redis://localhost:0/0",
        "redis://[::1/0",
        "redis://localhost:6379/one",
        "redis://localhost:6379/-1",
        "redis://localhost:6379/1/2",
        "redis://localhost:6379/0?db=x",
        "unix://",
        "unix://redis.sock",
        "unix:///run/redis.sock?db=one",
    ],
)
def test_bad_url_is_e003(url: Any) -> None:
    assert ids({"URL": url}) == ["django_redis_sessions.E003"]


def test_e003_says_why() -> None:
    (message,) = check({"URL": "http://localhost"})
    assert message.msg == (
        "SESSION_REDIS['URL'] must be a redis://, rediss:// or unix:// URL, not "
        "'http://localhost' (the scheme must be redis, rediss or unix, not 'http')."
    )


@pytest.mark.parametrize("options", [None, [], "socket_timeout=1", {1: "x"}])
def test_bad_options_is_e004(options: Any) -> None:
    assert ids({"OPTIONS": options}) == ["django_redis_sessions.E004"]


@pytest.mark.parametrize("cluster", [None, 0, 1, "True"])
def test_non_bool_cluster_is_e005(cluster: Any) -> None:
    assert ids({"CLUSTER": cluster}) == ["django_redis_sessions.E005"]


@pytest.mark.parametrize(
    "sentinels",
    [
        None,
        "sentinel:26379",
        ("sentinel", 26379),
        [("sentinel",)],
        [("sentinel", 26379, 0)],
        [("sentinel", "26379")],
        [("sentinel", True)],
        [("sentinel", 0)],
        [("sentinel", 65536)],
        [("", 26379)],
        [(None, 26379)],
        [{"host": "sentinel", "port": 26379}],
    ],
)
def test_bad_sentinels_is_e006(sentinels: Any) -> None:
    assert ids({"SENTINELS": sentinels}) == ["django_redis_sessions.E006"]


@pytest.mark.parametrize("service", [None, "", 1, ["mymaster"]])
def test_bad_sentinel_service_is_e007(service: Any) -> None:
    assert ids({"SENTINEL_SERVICE": service}) == ["django_redis_sessions.E007"]


@pytest.mark.parametrize(
    "client",
    [
        "",
        1,
        make_client,
        "make_client",
        "tests.no_such_module.make_client",
        "tests.test_checks.no_such_function",
        "tests.test_checks.NOT_CALLABLE",
    ],
)
def test_bad_client_is_e008(client: Any) -> None:
    assert ids({"CLIENT": client}) == ["django_redis_sessions.E008"]


def test_e008_says_why() -> None:
    (message,) = check({"CLIENT": "tests.test_checks.NOT_CALLABLE"})
    assert message.msg == (
        "SESSION_REDIS['CLIENT'] must be None or the dotted path of a callable, not "
        "'tests.test_checks.NOT_CALLABLE' (it imports 42, which is not callable)."
    )


@pytest.mark.parametrize(
    "bad_prefix", [None, 1, b"sessions:", "", "*", "**", "?", "[*]", "{s}:", "s}", "{"]
)
def test_bad_prefix_is_e009(bad_prefix: Any) -> None:
    assert ids({"PREFIX": bad_prefix}) == ["django_redis_sessions.E009"]


@pytest.mark.parametrize("valid_prefix", ["app*:", "[a]", "?:", "s", "sessions:v2:"])
def test_prefix_with_glob_characters_among_others_is_valid(valid_prefix: str) -> None:
    assert check({"PREFIX": valid_prefix}) == []


@pytest.mark.parametrize("scan_count", [None, 1.5, "100", True, -1])
def test_bad_scan_count_is_e010(scan_count: Any) -> None:
    assert ids({"SCAN_COUNT": scan_count}) == ["django_redis_sessions.E010"]


def test_scan_count_zero_is_e010() -> None:
    messages = check({"SCAN_COUNT": 0})
    assert [m.id for m in messages] == ["django_redis_sessions.E010"]
    assert messages[0].msg == (
        "SESSION_REDIS['SCAN_COUNT'] must be a positive integer, not 0."
    )


@pytest.mark.parametrize("ttl", [None, True, -1, 1.5, "86400"])
def test_bad_ttl_seconds_is_e011(ttl: Any) -> None:
    assert ids({"TTL_SECONDS": ttl}) == ["django_redis_sessions.E011"]


@pytest.mark.parametrize("ttl", [0, False, 1, 86400])
def test_ttl_seconds_zero_false_or_positive_is_valid(ttl: Any) -> None:
    assert check({"TTL_SECONDS": ttl}) == []


@pytest.mark.parametrize("tombstone", [None, 0, -1, True, 1.5, "300"])
def test_bad_tombstone_seconds_is_e012(tombstone: Any) -> None:
    assert ids({"TOMBSTONE_SECONDS": tombstone}) == ["django_redis_sessions.E012"]


@pytest.mark.parametrize("disable_touch", [None, 0, 1, "False"])
def test_non_bool_disable_touch_is_e013(disable_touch: Any) -> None:
    assert ids({"DISABLE_TOUCH": disable_touch}) == ["django_redis_sessions.E013"]


@pytest.mark.parametrize(
    "serializer",
    [
        "",
        1,
        "JSONSerializer",
        "django.core.signing.NoSuchSerializer",
        "no_such_package.Serializer",
        "django.VERSION",
    ],
)
def test_bad_serializer_is_e014(serializer: Any) -> None:
    assert ids({"SERIALIZER": serializer}) == ["django_redis_sessions.E014"]


def test_cluster_with_sentinels_is_e015() -> None:
    config = {"CLUSTER": True, "SENTINELS": [("sentinel", 26379)]}
    assert ids(config) == ["django_redis_sessions.E015"]


def test_cluster_with_empty_sentinels_is_valid() -> None:
    assert check({"CLUSTER": True, "SENTINELS": []}) == []


def test_sentinels_without_cluster_is_valid() -> None:
    assert check({"CLUSTER": False, "SENTINELS": [("sentinel", 26379)]}) == []


@pytest.mark.parametrize(
    "nodes",
    [
        [("redis-2", 7000), ["redis-3", 7001]],
        (("redis-2", 7000),),
        [],
    ],
)
def test_cluster_nodes_as_host_port_pairs_are_valid(nodes: Any) -> None:
    assert check({"CLUSTER": True, "CLUSTER_NODES": nodes}) == []


@pytest.mark.parametrize(
    "nodes",
    [
        None,
        "redis-2:7000",
        ["redis://redis-2:7000"],
        ("redis-2", 7000),
        [("redis-2",)],
        [("redis-2", "7000")],
        [("redis-2", True)],
        [("redis-2", 0)],
        [("", 7000)],
    ],
)
def test_bad_cluster_nodes_is_e029(nodes: Any) -> None:
    assert ids({"CLUSTER": True, "CLUSTER_NODES": nodes}) == [
        "django_redis_sessions.E029"
    ]


def test_e029_says_what_cluster_nodes_must_be() -> None:
    (message,) = check({"CLUSTER": True, "CLUSTER_NODES": ["redis-2:7000"]})
    assert message.msg == (
        "SESSION_REDIS['CLUSTER_NODES'] must be a list of (host, port) pairs, "
        "not ['redis-2:7000']."
    )
    assert message.hint == (
        "Set CLUSTER_NODES to a list of (host, port) pairs with a string host "
        "and an integer port, e.g. [('redis-2', 7000), ('redis-3', 7000)]: more "
        "nodes of the cluster to connect through while the node in URL is down."
    )


def test_cluster_nodes_without_cluster_is_e030() -> None:
    (message,) = check({"CLUSTER_NODES": [("redis-2", 7000)]})
    assert message.id == "django_redis_sessions.E030"
    assert message.msg == (
        "SESSION_REDIS['CLUSTER_NODES'] must be empty when SESSION_REDIS['CLUSTER'] "
        "is not True, not [('redis-2', 7000)] (only a Redis Cluster client "
        "connects through more than one node)."
    )
    assert message.hint == (
        "Set CLUSTER to True if URL names a node of a Redis Cluster, or remove "
        "CLUSTER_NODES."
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:7000/1",
        "rediss://localhost:7000/15",
        "redis://localhost:7000/0?db=2",
    ],
)
def test_cluster_with_database_other_than_0_is_e016(url: str) -> None:
    assert ids({"CLUSTER": True, "URL": url}) == ["django_redis_sessions.E016"]


@pytest.mark.parametrize(
    "url", ["redis://localhost:7000", "redis://localhost:7000/0", "redis://h/0?db=0"]
)
def test_cluster_with_database_0_is_valid(url: str) -> None:
    assert check({"CLUSTER": True, "URL": url}) == []


def test_database_other_than_0_without_cluster_is_valid() -> None:
    assert check({"CLUSTER": False, "URL": "redis://localhost:6379/3"}) == []


def test_cluster_with_both_conflicts_is_e015_and_e016() -> None:
    config = {
        "CLUSTER": True,
        "SENTINELS": [("sentinel", 26379)],
        "URL": "redis://localhost/1",
    }
    assert ids(config) == ["django_redis_sessions.E015", "django_redis_sessions.E016"]


def test_invalid_values_are_not_reported_again_by_cross_checks() -> None:
    config = {"CLUSTER": True, "SENTINELS": [("sentinel",)], "URL": "redis://h/x"}
    assert ids(config) == ["django_redis_sessions.E003", "django_redis_sessions.E006"]


def test_each_problem_is_reported_once_in_key_order() -> None:
    config = {"SCAN_COUNT": 0, "BOGUS": 1, "URL": "redis://", "PREFIX": "*"}
    assert ids(config) == [
        "django_redis_sessions.E002",
        "django_redis_sessions.E003",
        "django_redis_sessions.E009",
        "django_redis_sessions.E010",
    ]


@override_settings(SESSION_REDIS={"SCAN_COUNT": 0}, ROOT_URLCONF=__name__)
def test_check_is_registered() -> None:
    messages = checks.run_checks()
    assert "django_redis_sessions.E010" in [message.id for message in messages]


# URL query parameters (E017) and OPTIONS (E018, E019): what redis-py accepts.


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0?socket_timeout=abc",
        "redis://h/0?socket_timeout=0",
        "redis://h/0?socket_timeout=-1",
        "redis://h/0?socket_connect_timeout=inf",
        "redis://h/0?health_check_interval=x",
        "redis://h/0?health_check_interval=1.5",
        "redis://h/0?max_connections=0",
        "redis://h/0?socket_read_size=many",
        "rediss://h/0?ssl_cert_reqs=bogus",
        "rediss://h/0?ssl_cert_reqs=REQUIRED",
        "rediss://h/0?ssl_include_verify_flags=NO_SUCH_FLAG",
    ],
)
def test_url_query_parameter_with_a_value_redis_py_cannot_use_is_e017(
    url: str,
) -> None:
    assert ids({"URL": url}) == ["django_redis_sessions.E017"]


def received_by_redis_py(url: str, name: str) -> list[Any]:
    """What the connections redis-py builds from ``url`` receive as ``name``.

    One value per client, sync and asyncio, that takes the argument at all.
    Nothing connects: a connection object is only built.
    """
    values = []
    for client_class in (redis.Redis, redis.asyncio.Redis):
        pool = client_class.from_url(url).connection_pool
        try:
            pool.make_connection()
        except TypeError:  # this client's connection class has no such argument
            continue
        values.append(pool.connection_kwargs[name])
    return values


def is_exception_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, type) and issubclass(item, Exception) for item in value
    )


@pytest.mark.parametrize(
    ("url", "name", "usable"),
    [
        # redis-py 8.2 reads these as booleans; 5.0 passes the string on, which
        # is true, so "false" would turn OCSP validation on.
        (
            "rediss://h/0?ssl_validate_ocsp=false",
            "ssl_validate_ocsp",
            lambda value: isinstance(value, bool),
        ),
        (
            "rediss://h/0?ssl_validate_ocsp_stapled=no",
            "ssl_validate_ocsp_stapled",
            lambda value: isinstance(value, bool),
        ),
        (
            "rediss://h/0?ssl_check_hostname=false",
            "ssl_check_hostname",
            lambda value: isinstance(value, bool),
        ),
        # 5.0 splits the text into characters; 8.2 looks the names up.
        (
            "redis://h/0?retry_on_error=TimeoutError",
            "retry_on_error",
            is_exception_list,
        ),
    ],
)
def test_url_query_parameter_is_e017_exactly_when_redis_py_misreads_it(
    url: str, name: str, usable: Callable[[Any], bool]
) -> None:
    received = received_by_redis_py(url, name)
    expected = (
        []
        if received and all(map(usable, received))
        else ["django_redis_sessions.E017"]
    )
    assert errors({"URL": url}) == expected


def clients_taking(url: str) -> list[str]:
    """Which of redis-py's clients build a connection from ``url``."""
    taking = []
    for side, client_class in (("sync", redis.Redis), ("asyncio", redis.asyncio.Redis)):
        try:
            client_class.from_url(url).connection_pool.make_connection()
        except TypeError:  # this client's connection class has no such argument
            continue
        taking.append(side)
    return taking


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("rediss://h/0?ssl_validate_ocsp=false", "ssl_validate_ocsp"),
        ("rediss://h/0?ssl_validate_ocsp_stapled=no", "ssl_validate_ocsp_stapled"),
        ("rediss://h/0?ssl_check_hostname=false", "ssl_check_hostname"),
        ("redis://h/0?socket_timeout=2", "socket_timeout"),
    ],
)
def test_an_argument_one_client_refuses_is_w001_naming_the_other(
    url: str, name: str
) -> None:
    taking = clients_taking(url)
    assert taking, "neither client takes it"
    base = url.partition("?")[0]
    for config, where in (
        ({"URL": url}, "URL'] query parameter"),
        ({"URL": base, "OPTIONS": {name: False}}, "OPTIONS'] argument"),
    ):
        warnings = [m for m in check(config) if m.id == "django_redis_sessions.W001"]
        if len(taking) == 2:
            assert warnings == []
        else:
            [warning] = warnings
            assert f"{where} {name!r}" in warning.msg
            assert f"redis-py's {taking[0]} client only" in warning.msg
            other = "asyncio" if taking == ["sync"] else "sync"
            assert f"through the {other} API fails" in str(warning.hint)


@pytest.mark.parametrize("url", ["REDIS://h/0", "Rediss://h:6380/0"])
def test_url_scheme_in_capitals_is_e003_exactly_when_redis_py_refuses_it(
    url: str,
) -> None:
    try:
        for client_class in (redis.Redis, redis.asyncio.Redis):
            client_class.from_url(url)
    except ValueError:
        expected = ["django_redis_sessions.E003"]
    else:
        expected = []
    assert ids({"URL": url}) == expected


@pytest.mark.parametrize(
    "config",
    [
        {"URL": "redis://h/0?bogus=1"},
        {"URL": "redis://h/0?socket_timout=1"},
        {"URL": "redis://h/0?ssl_cert_reqs=none"},
        {"URL": "unix:///run/redis.sock?ssl_cert_reqs=none"},
        {"URL": "redis://h:7000?bogus=1", "CLUSTER": True},
        {"URL": "redis://h/0?bogus=1", "SENTINELS": [("sentinel", 26379)]},
    ],
)
def test_url_query_parameter_redis_py_does_not_accept_is_e017(
    config: dict[str, Any],
) -> None:
    assert ids(config) == ["django_redis_sessions.E017"]


@pytest.mark.parametrize(
    "url",
    [
        "rediss://h/0?ssl_cert_reqs=none",
        "rediss://h/0?ssl_cert_reqs=optional",
        "rediss://h/0?ssl_cert_reqs=required&ssl_check_hostname=no",
        "redis://h/0?socket_keepalive=yes&retry_on_timeout=False",
        "redis://h/0?socket_timeout=0.5&socket_connect_timeout=2&max_connections=9",
        "redis://h/0?health_check_interval=30&client_name=web&password=pw",
        "unix:///run/redis.sock?db=2&socket_timeout=1",
    ],
)
def test_url_query_parameters_redis_py_accepts_are_valid(url: str) -> None:
    assert check({"URL": url}) == []


def test_e017_names_the_parameter_and_never_the_password() -> None:
    (message,) = check({"URL": "redis://user:s3cret@h/0?socket_timeout=abc"})
    assert message.msg == (
        "SESSION_REDIS['URL'] query parameter 'socket_timeout' must be a number, "
        "not 'abc'."
    )
    (message,) = check({"URL": "redis://h/0?password=s3cret&socket_timout=1"})
    assert message.msg == (
        "SESSION_REDIS['URL'] has the query parameter 'socket_timout', which "
        "redis-py does not accept for a redis:// URL."
    )
    assert message.hint == (
        "Remove 'socket_timout' from URL, or correct its name. Did you mean "
        "'socket_timeout'?"
    )


@pytest.mark.parametrize(
    "config",
    [
        {"OPTIONS": {"bogus": 1}},
        {"OPTIONS": {"ssl_cert_reqs": "none"}},
        {"OPTIONS": {"ssl": True}},
        {"OPTIONS": {"connection_pool": None}},
        {"OPTIONS": {"connection_class": TaggedConnection, "colour": "red"}},
        {"OPTIONS": {"bogus": 1}, "CLUSTER": True},
        {"OPTIONS": {"bogus": 1}, "SENTINELS": [("sentinel", 26379)]},
    ],
)
def test_option_redis_py_does_not_accept_is_e018(config: dict[str, Any]) -> None:
    assert ids(config) == ["django_redis_sessions.E018"]


def test_e018_names_the_client_and_suggests_the_closest_name() -> None:
    (message,) = check({"OPTIONS": {"ssl_cert_req": "none"}})
    assert message.msg == (
        "SESSION_REDIS['OPTIONS'] has the argument 'ssl_cert_req', which redis-py "
        "does not accept for a redis:// URL."
    )
    assert message.hint == (
        "Remove 'ssl_cert_req' from OPTIONS, or correct its name. TLS arguments "
        "need a rediss:// URL."
    )


@pytest.mark.parametrize(
    "config",
    [
        {"OPTIONS": {"client_name": "web", "single_connection_client": True}},
        {"OPTIONS": {"socket_timeout": None, "socket_connect_timeout": 0.5}},
        {"OPTIONS": {"max_connections": None, "health_check_interval": 0}},
        {"OPTIONS": {"max_connections": 50, "health_check_interval": 2.5}},
        {"OPTIONS": {"retry": redis.retry.Retry(NoBackoff(), 2)}},
        {"OPTIONS": {"retry": redis.asyncio.retry.Retry(NoBackoff(), 2)}},
        {"OPTIONS": {"retry_on_error": [redis.ConnectionError, redis.TimeoutError]}},
        {"OPTIONS": {"connection_class": redis.Connection, "db": 3}},
        {"OPTIONS": {"connection_class": TaggedConnection, "tag": "sessions"}},
        {"URL": "rediss://h/0", "OPTIONS": {"ssl_cert_reqs": None}},
        {"URL": "rediss://h/0", "OPTIONS": {"ssl_cert_reqs": "optional"}},
        {"URL": "rediss://h/0", "OPTIONS": {"ssl_cert_reqs": ssl.CERT_REQUIRED}},
        {"URL": "rediss://h/0", "OPTIONS": {"ssl_ca_certs": "/etc/ca.pem"}},
        {"OPTIONS": {"read_from_replicas": True}, "CLUSTER": True},
        {"OPTIONS": {"check_connection": True}, "SENTINELS": [("s", 26379)]},
        {"OPTIONS": {"decode_responses": False}},
    ],
)
def test_options_redis_py_accepts_are_valid(config: dict[str, Any]) -> None:
    assert check(config) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("socket_timeout", "5"),
        ("socket_timeout", 0),
        ("socket_timeout", -1.5),
        ("socket_timeout", float("inf")),
        ("socket_timeout", True),
        ("socket_connect_timeout", "2"),
        ("max_connections", 0),
        ("max_connections", "5"),
        ("max_connections", 1.5),
        ("health_check_interval", -1),
        ("health_check_interval", "30"),
        ("socket_read_size", 0),
        ("db", -1),
        ("retry", 3),
        ("retry", NoBackoff()),
        ("retry_on_error", ["ConnectionError"]),
        ("retry_on_error", redis.ConnectionError),
        ("connection_class", "redis.Connection"),
        ("socket_keepalive", 1),
        ("retry_on_timeout", "no"),
        ("ssl_cert_reqs", "bogus"),
        ("ssl_cert_reqs", "REQUIRED"),
        ("ssl_cert_reqs", True),
        ("ssl_cert_reqs", 7),
    ],
)
def test_option_of_the_wrong_type_is_e019(name: str, value: Any) -> None:
    config = {"URL": "rediss://h/0", "OPTIONS": {name: value}}
    assert ids(config) == ["django_redis_sessions.E019"]


def test_e019_says_what_the_option_must_be() -> None:
    (message,) = check({"OPTIONS": {"socket_timeout": "5"}})
    assert message.msg == (
        "SESSION_REDIS['OPTIONS']['socket_timeout'] must be a number greater "
        "than 0, not '5'."
    )


# Expiry and SCAN bounds: what Redis accepts.


@pytest.mark.parametrize("ttl", [MAX_EXPIRY_SECONDS + 1, 10**17])
def test_ttl_seconds_above_100_years_is_e011(ttl: int) -> None:
    assert ids({"TTL_SECONDS": ttl}) == ["django_redis_sessions.E011"]


@pytest.mark.parametrize("tombstone", [MAX_EXPIRY_SECONDS + 1, 10**17])
def test_tombstone_seconds_above_100_years_is_e012(tombstone: int) -> None:
    assert ids({"TOMBSTONE_SECONDS": tombstone}) == ["django_redis_sessions.E012"]


def test_the_longest_expiry_the_checks_allow_is_accepted_by_redis(
    settings: Any, session_redis: dict[str, Any]
) -> None:
    config = {
        **session_redis,
        "TTL_SECONDS": MAX_EXPIRY_SECONDS,
        "TOMBSTONE_SECONDS": MAX_EXPIRY_SECONDS,
        "SCAN_COUNT": 2**63 - 1,
    }
    assert check(config) == []
    settings.SESSION_REDIS = config
    assert survives_a_request()


def test_scan_count_above_what_redis_accepts_is_e010() -> None:
    assert ids({"SCAN_COUNT": 2**63}) == ["django_redis_sessions.E010"]


# SERIALIZER: a class the store can instantiate and use.


@pytest.mark.parametrize(
    "serializer",
    [
        "json.dumps",
        "tests.test_checks.SerializerNeedingAKey",
        "tests.test_checks.SerializerWithoutLoads",
        "tests.test_checks.SerializerWithDataForMethods",
        "tests.test_checks.SerializerThatRaises",
    ],
)
def test_serializer_that_is_not_a_usable_class_is_e014(serializer: str) -> None:
    assert ids({"SERIALIZER": serializer}) == ["django_redis_sessions.E014"]


def test_e014_says_what_the_serializer_lacks() -> None:
    (message,) = check({"SERIALIZER": "tests.test_checks.SerializerWithoutLoads"})
    assert message.msg == (
        "SESSION_REDIS['SERIALIZER'] must be None or the dotted path of a "
        "serializer class, not 'tests.test_checks.SerializerWithoutLoads' (its "
        "instances have no callable loads)."
    )


def test_the_signed_serializer_is_valid() -> None:
    serializer = "django_redis_sessions.serializers.SignedJSONSerializer"
    assert check({"SERIALIZER": serializer}) == []


# decode_responses (E020): sessions are bytes read back exactly.


@pytest.mark.parametrize("decode", [True, 1, "false"])
def test_decode_responses_in_options_is_e020(decode: Any) -> None:
    config = {"OPTIONS": {"decode_responses": decode}}
    assert ids(config) == ["django_redis_sessions.E020"]


@pytest.mark.parametrize("decode", ["true", "false", "0"])
def test_decode_responses_in_the_url_is_e020_whatever_it_says(decode: str) -> None:
    config = {"URL": f"redis://h/0?decode_responses={decode}"}
    assert ids(config) == ["django_redis_sessions.E020"]


# Mappings other than dict.


def test_a_mapping_that_is_not_a_dict_is_a_valid_setting() -> None:
    config = MappingProxyType(
        {"URL": "redis://h/0", "OPTIONS": MappingProxyType({"socket_timeout": 1})}
    )
    assert check(config) == []


def test_options_in_a_mapping_that_is_not_a_dict_are_checked() -> None:
    config = {"OPTIONS": MappingProxyType({"bogus": 1, "socket_timeout": "1"})}
    assert ids(config) == ["django_redis_sessions.E018", "django_redis_sessions.E019"]


# Other settings that used to pass the checks and fail at the first request.


@pytest.mark.parametrize(
    "client", ["redis.Redis", "tests.test_checks.make_client_without_asynchronous"]
)
def test_client_that_cannot_be_called_as_a_factory_is_e008(client: str) -> None:
    assert ids({"CLIENT": client}) == ["django_redis_sessions.E008"]


def test_prefix_that_cannot_be_encoded_is_e009() -> None:
    assert ids({"PREFIX": "sessions\udc80:"}) == ["django_redis_sessions.E009"]


def test_cluster_with_a_unix_socket_url_is_e021() -> None:
    config = {"CLUSTER": True, "URL": "unix:///run/redis.sock"}
    assert ids(config) == ["django_redis_sessions.E021"]


def test_cluster_with_a_database_in_options_is_e016() -> None:
    config = {"CLUSTER": True, "URL": "redis://h:7000", "OPTIONS": {"db": 1}}
    assert ids(config) == ["django_redis_sessions.E016"]


def test_cluster_ignores_the_database_in_options_when_the_url_names_one() -> None:
    config = {"CLUSTER": True, "URL": "redis://h:7000/0", "OPTIONS": {"db": 1}}
    assert check(config) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("URL", "redis://elsewhere:6379/0"),
        ("OPTIONS", {"socket_timeout": 1}),
        ("CLUSTER", True),
        ("CLUSTER_NODES", [("redis-2", 7000)]),
        ("SENTINELS", [("sentinel", 26379)]),
    ],
)
def test_key_a_client_factory_would_ignore_is_e022(key: str, value: Any) -> None:
    config = {"CLIENT": "tests.test_checks.make_client", key: value}
    assert ids(config) == ["django_redis_sessions.E022"]


def test_keys_a_client_factory_would_ignore_are_not_checked_further() -> None:
    config = {
        "CLIENT": "tests.test_checks.make_client",
        "CLUSTER": True,
        "URL": "unix:///run/redis.sock?bogus=1",
    }
    assert ids(config) == ["django_redis_sessions.E022"] * 2


def test_client_with_the_keys_it_replaces_at_their_defaults_is_valid() -> None:
    client = "tests.test_checks.make_client"
    assert check({**DEFAULTS, "CLIENT": client}) == []
    # Empty is unset, whatever the type.
    assert (
        check({"CLIENT": client, "SENTINELS": (), "OPTIONS": MappingProxyType({})})
        == []
    )


@pytest.mark.parametrize(
    "config",
    [
        [("URL", "redis://:s3cret@h/0")],
        {"URL": "redis://user:s3cret@[::1/0"},
        {"URL": "user:s3cret@localhost:6379"},
        {"URL": "redis://:s3cret@h:7000/1", "CLUSTER": True},
        {"URL": "unix://:s3cret@/run/redis.sock", "CLUSTER": True},
        {"URL": "http://h/0?password=s3cret"},
        {"OPTIONS": {1: "x", "password": "s3cret"}},
        {"OPTIONS": {"password": "s3cret"}, "CLIENT": "tests.test_checks.make_client"},
    ],
)
def test_no_message_shows_a_password(config: Any) -> None:
    messages = check(config)
    assert messages
    for message in messages:
        assert "s3cret" not in f"{message.msg} {message.hint}"


# Each setting the checks reject does fail at request time.


def survives_a_request() -> bool:
    """Whether a store write, read, count and destroy work as they should."""
    key = uuid.uuid4().hex
    try:
        store = RedisSessionStore()
        return (
            store.set(key, {"v": 1}) is True
            and store.get(key) == {"v": 1}
            and store.count() == 1
            and store.destroy(key) is True
        )
    except (redis.RedisError, TypeError, ValueError, UnicodeError):
        return False


def test_the_test_server_settings_survive_a_request(
    session_redis: dict[str, Any],
) -> None:
    assert check(session_redis) == []
    assert survives_a_request()


@pytest.mark.parametrize(
    ("query", "overrides", "check_id"),
    [
        ("?socket_timeout=abc", {}, "E017"),
        ("?health_check_interval=x", {}, "E017"),
        ("?bogus=1", {}, "E017"),
        ("?ssl_cert_reqs=none", {}, "E017"),
        ("", {"OPTIONS": {"bogus": 1}}, "E018"),
        ("", {"OPTIONS": {"max_connections": -1}}, "E019"),
        ("", {"OPTIONS": {"decode_responses": True}}, "E020"),
        ("?decode_responses=false", {}, "E020"),
        ("", {"TTL_SECONDS": 10**17}, "E011"),
        ("", {"TOMBSTONE_SECONDS": 10**17}, "E012"),
        ("", {"SCAN_COUNT": 2**63}, "E010"),
        ("", {"PREFIX": "sessions\udc80:"}, "E009"),
        ("", {"SERIALIZER": "json.dumps"}, "E014"),
    ],
)
def test_a_setting_the_checks_reject_fails_at_request_time(
    settings: Any,
    session_redis: dict[str, Any],
    query: str,
    overrides: dict[str, Any],
    check_id: str,
) -> None:
    config = {**session_redis, "URL": session_redis["URL"] + query, **overrides}
    assert ids(config) == [f"django_redis_sessions.{check_id}"]
    settings.SESSION_REDIS = config
    assert not survives_a_request()


@pytest.mark.parametrize("value", [None, 1, "yes", "Migrate"])
def test_hash_ids_other_than_true_false_or_migrate_is_e023(value: Any) -> None:
    assert ids({"HASH_IDS": value}) == ["django_redis_sessions.E023"]


@pytest.mark.parametrize(
    "value",
    [
        "django.contrib.sessions.backends.cached_db",
        "django.contrib.sessions.backends.signed_cookies",
    ],
)
def test_migrate_from_another_session_engine_is_valid(value: str) -> None:
    assert check({"MIGRATE_FROM": value}) == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "it is not a dotted module path"),
        (1, "it is not a dotted module path"),
        ("no.such.engine", "it cannot be imported: ModuleNotFoundError"),
        ("django.contrib.sessions.models", "it has no SessionStore class"),
        ("django_redis_sessions.backends.redis", "it is this engine itself"),
    ],
)
def test_migrate_from_that_is_no_other_session_engine_is_e024(
    value: Any, reason: str
) -> None:
    [error] = check({"MIGRATE_FROM": value})
    assert error.id == "django_redis_sessions.E024"
    assert reason in error.msg
    assert "MIGRATE_FROM" in str(error.hint)
