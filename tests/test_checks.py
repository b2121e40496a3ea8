from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core import checks
from django.test import override_settings
from django.urls import URLPattern, URLResolver

from django_redis_sessions.checks import check_settings
from django_redis_sessions.conf import DEFAULTS

# Lets test_check_is_registered run every check without tests/urls.py.
urlpatterns: list[URLPattern | URLResolver] = []

NOT_CALLABLE = 42


def make_client(*, asynchronous: bool = False) -> Any:
    return None


VALID_CONFIG: dict[str, Any] = {
    "URL": "rediss://user:secret@redis.example.com:6380/2",
    "OPTIONS": {"socket_timeout": 1.5},
    "CLUSTER": False,
    "SENTINELS": [("sentinel-1", 26379), ["sentinel-2", 26380]],
    "SENTINEL_SERVICE": "sessions",
    "CLIENT": "tests.test_checks.make_client",
    "PREFIX": "app*:",
    "SCAN_COUNT": 1000,
    "TTL_SECONDS": 0,
    "TOMBSTONE_SECONDS": 1,
    "DISABLE_TOUCH": True,
    "SERIALIZER": "django.core.signing.JSONSerializer",
}


def run(config: Any) -> list[checks.CheckMessage]:
    with override_settings(SESSION_REDIS=config):
        return check_settings(None)


def ids(config: Any) -> list[str | None]:
    return [message.id for message in run(config)]


def test_absent_setting_is_valid() -> None:
    with override_settings():
        del settings.SESSION_REDIS
        assert check_settings(None) == []


def test_empty_dict_is_valid() -> None:
    assert run({}) == []


def test_defaults_spelled_out_are_valid() -> None:
    assert run(dict(DEFAULTS)) == []


def test_config_with_every_key_is_valid() -> None:
    assert set(VALID_CONFIG) == set(DEFAULTS)
    assert run(VALID_CONFIG) == []


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
    assert run({"URL": url}) == []


def test_every_key_is_checked_and_every_error_has_a_hint() -> None:
    bad = {key: object() for key in DEFAULTS} | {"BOGUS": 1}
    messages = run(bad)
    assert len(messages) == len(bad)
    assert all(isinstance(message, checks.Error) for message in messages)
    assert all(message.hint for message in messages)


def test_not_a_dict_is_e001_alone() -> None:
    assert ids([("URL", "redis://localhost")]) == ["django_redis_sessions.E001"]


def test_none_is_e001() -> None:
    messages = run(None)
    assert [m.id for m in messages] == ["django_redis_sessions.E001"]
    assert messages[0].msg == "SESSION_REDIS must be a dict, not None."


def test_unknown_keys_are_one_e002_naming_them_sorted() -> None:
    messages = run({"TTL": 5, "URL": "redis://localhost", "HOST": "x"})
    assert [m.id for m in messages] == ["django_redis_sessions.E002"]
    assert messages[0].msg == "SESSION_REDIS has unknown keys: 'HOST', 'TTL'."
    assert messages[0].hint == (
        "Valid keys are CLIENT, CLUSTER, DISABLE_TOUCH, OPTIONS, PREFIX, "
        "SCAN_COUNT, SENTINELS, SENTINEL_SERVICE, SERIALIZER, TOMBSTONE_SECONDS, "
        "TTL_SECONDS, URL."
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
    (message,) = run({"URL": "http://localhost"})
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
    (message,) = run({"CLIENT": "tests.test_checks.NOT_CALLABLE"})
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
    assert run({"PREFIX": valid_prefix}) == []


@pytest.mark.parametrize("scan_count", [None, 1.5, "100", True, -1])
def test_bad_scan_count_is_e010(scan_count: Any) -> None:
    assert ids({"SCAN_COUNT": scan_count}) == ["django_redis_sessions.E010"]


def test_scan_count_zero_is_e010() -> None:
    messages = run({"SCAN_COUNT": 0})
    assert [m.id for m in messages] == ["django_redis_sessions.E010"]
    assert messages[0].msg == (
        "SESSION_REDIS['SCAN_COUNT'] must be a positive integer, not 0."
    )


@pytest.mark.parametrize("ttl", [None, True, -1, 1.5, "86400"])
def test_bad_ttl_seconds_is_e011(ttl: Any) -> None:
    assert ids({"TTL_SECONDS": ttl}) == ["django_redis_sessions.E011"]


@pytest.mark.parametrize("ttl", [0, False, 1, 86400])
def test_ttl_seconds_zero_false_or_positive_is_valid(ttl: Any) -> None:
    assert run({"TTL_SECONDS": ttl}) == []


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
    assert run({"CLUSTER": True, "SENTINELS": []}) == []


def test_sentinels_without_cluster_is_valid() -> None:
    assert run({"CLUSTER": False, "SENTINELS": [("sentinel", 26379)]}) == []


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:7000/1",
        "rediss://localhost:7000/15",
        "redis://localhost:7000/0?db=2",
        "unix:///run/redis.sock?db=1",
    ],
)
def test_cluster_with_database_other_than_0_is_e016(url: str) -> None:
    assert ids({"CLUSTER": True, "URL": url}) == ["django_redis_sessions.E016"]


@pytest.mark.parametrize(
    "url", ["redis://localhost:7000", "redis://localhost:7000/0", "redis://h/0?db=0"]
)
def test_cluster_with_database_0_is_valid(url: str) -> None:
    assert run({"CLUSTER": True, "URL": url}) == []


def test_database_other_than_0_without_cluster_is_valid() -> None:
    assert run({"CLUSTER": False, "URL": "redis://localhost:6379/3"}) == []


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
