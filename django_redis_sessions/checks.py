"""System checks for the ``SESSION_REDIS`` setting.

The raw setting is validated here rather than through ``conf.Settings``, whose
properties coerce values and so assume they are valid. Every problem is one
``Error`` with a stable id (``django_redis_sessions.E001`` ...) and a hint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from django_redis_sessions.conf import DEFAULTS, SETTING_NAME

_ID_PREFIX = "django_redis_sessions."
_URL_SCHEMES = ("redis", "rediss", "unix")
_GLOB_CHARACTERS = frozenset("*?[]")


def check_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    config = getattr(settings, SETTING_NAME, {})
    if not isinstance(config, dict):
        return [
            _error(
                "E001",
                f"{SETTING_NAME} must be a dict, not {config!r}.",
                f"Set {SETTING_NAME} to a dict such as "
                "{'URL': 'redis://localhost:6379/0'}, or remove it to use the "
                "defaults.",
            )
        ]

    errors: list[checks.CheckMessage] = []
    unknown = sorted(repr(key) for key in config if key not in DEFAULTS)
    if unknown:
        errors.append(
            _error(
                "E002",
                f"{SETTING_NAME} has unknown keys: {', '.join(unknown)}.",
                f"Valid keys are {', '.join(sorted(DEFAULTS))}.",
            )
        )

    # Cross-key checks see the default in place of a value already reported as
    # invalid, so one mistake is never reported twice.
    effective = dict(DEFAULTS)
    for key, rule in _RULES.items():
        if key not in config:
            continue
        value = config[key]
        reason = rule.problem(value)
        if reason is None:
            effective[key] = value
        else:
            errors.append(rule.error(key, value, reason))
    errors.extend(_check_cluster(effective))
    return errors


@dataclass(frozen=True)
class _Rule:
    """How one key is validated and how a bad value is reported."""

    id: str
    # Completes "SESSION_REDIS['KEY'] must be ...".
    expected: str
    hint: str
    # None when the value is valid; otherwise why not ("" when ``expected`` says
    # it all).
    problem: Callable[[Any], str | None]

    def error(self, key: str, value: Any, reason: str) -> checks.Error:
        because = f" ({reason})" if reason else ""
        return _error(
            self.id,
            f"{_name(key)} must be {self.expected}, not {value!r}{because}.",
            self.hint,
        )


def _error(code: str, msg: str, hint: str) -> checks.Error:
    return checks.Error(msg, hint=hint, id=_ID_PREFIX + code)


def _name(key: str) -> str:
    return f"{SETTING_NAME}[{key!r}]"


def _unless(is_valid: Callable[[Any], bool]) -> Callable[[Any], str | None]:
    """A ``_Rule.problem`` for a check that needs no explanation."""
    return lambda value: None if is_valid(value) else ""


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True is never a meaningful count or TTL.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: Any) -> bool:
    return _is_int(value) and 0 < value < 65536


def _is_sentinel(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0] != ""
        and _is_port(value[1])
    )


def _url_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return ""
    try:
        _url_database(value)
    except ValueError as exc:
        return str(exc)
    return None


def _url_database(url: str) -> int:
    """Return the database number a Redis URL selects (0 unless it names one).

    Raise ``ValueError``, with the reason as its message, for a URL that
    redis-py would refuse or silently misread.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" around an IPv6 host
        raise ValueError(f"it does not parse: {exc}") from None
    if parts.scheme not in _URL_SCHEMES:
        raise ValueError(
            f"the scheme must be redis, rediss or unix, not {parts.scheme!r}"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the path of the socket")
        path_database = None
    else:
        _check_host_and_port(parts)
        path_database = _parse_database(
            unquote(parts.path).strip("/"), "the database in its path"
        )
    # As in redis-py, "?db=" wins over the path.
    query_values = parse_qs(parts.query).get("db")
    query_database = (
        _parse_database(query_values[0], "its db parameter") if query_values else None
    )
    if query_database is not None:
        return query_database
    return 0 if path_database is None else path_database


def _check_host_and_port(parts: SplitResult) -> None:
    if not parts.hostname:
        raise ValueError("it has no host")
    try:
        # redis-py ignores a port of 0 and silently connects to 6379.
        valid_port = parts.port != 0
    except ValueError:  # not a number, or above 65535
        valid_port = False
    if not valid_port:
        raise ValueError("the port must be an integer from 1 to 65535")


def _parse_database(text: str, what: str) -> int | None:
    if not text:
        return None
    # str.isdecimal() alone would accept non-ASCII digits.
    if not (text.isascii() and text.isdecimal()):
        raise ValueError(f"{what} must be an integer")
    return int(text)


def _importable_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return ""
    try:
        target = import_string(value)
    # Importing runs the user's module, which can raise anything; a system
    # check should report it, not crash.
    except Exception as exc:
        return f"it cannot be imported: {type(exc).__name__}: {exc}"
    if not callable(target):
        return f"it imports {target!r}, which is not callable"
    return None


def _prefix_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return ""
    if set(value) <= _GLOB_CHARACTERS:
        return "it is made only of glob characters, so it would match every key"
    if "{" in value or "}" in value:
        return "braces would change the Redis Cluster hash tag of every session key"
    return None


_RULES: dict[str, _Rule] = {
    "URL": _Rule(
        "E003",
        "a redis://, rediss:// or unix:// URL",
        "Use a URL like 'redis://localhost:6379/0', "
        "'rediss://user:password@example.com:6380/0' or "
        "'unix:///run/redis.sock?db=0'.",
        _url_problem,
    ),
    "OPTIONS": _Rule(
        "E004",
        "a dict with string keys",
        "Set OPTIONS to a dict of keyword arguments for the redis-py client, "
        "e.g. {'socket_timeout': 5}.",
        _unless(
            lambda value: (
                isinstance(value, dict) and all(isinstance(key, str) for key in value)
            )
        ),
    ),
    "CLUSTER": _Rule(
        "E005",
        "True or False",
        "Set CLUSTER to True to use Redis Cluster, or False.",
        _unless(lambda value: isinstance(value, bool)),
    ),
    "SENTINELS": _Rule(
        "E006",
        "a list of (host, port) pairs",
        "Set SENTINELS to a list of (host, port) pairs with a string host and "
        "an integer port, e.g. [('sentinel-1', 26379)], or to [] to not use "
        "Sentinel.",
        _unless(
            lambda value: (
                isinstance(value, (list, tuple))
                and all(_is_sentinel(sentinel) for sentinel in value)
            )
        ),
    ),
    "SENTINEL_SERVICE": _Rule(
        "E007",
        "a non-empty string",
        "Set SENTINEL_SERVICE to the name Sentinel monitors the primary under, "
        "e.g. 'mymaster'.",
        _unless(lambda value: isinstance(value, str) and value != ""),
    ),
    "CLIENT": _Rule(
        "E008",
        "None or the dotted path of a callable",
        "Set CLIENT to the dotted path of a callable that returns a ready "
        "redis-py client when called as factory(asynchronous=False) or "
        "factory(asynchronous=True), or to None.",
        _importable_problem,
    ),
    "PREFIX": _Rule(
        "E009",
        "a non-empty string",
        "Use a prefix without '{' or '}' that has a character other than "
        "'*', '?', '[' and ']', e.g. 'sessions:'.",
        _prefix_problem,
    ),
    "SCAN_COUNT": _Rule(
        "E010",
        "a positive integer",
        "Set SCAN_COUNT to how many keys each SCAN call should ask for, e.g. 100.",
        _unless(lambda value: _is_int(value) and value >= 1),
    ),
    "TTL_SECONDS": _Rule(
        "E011",
        "an integer of 0 or more, or False",
        "Set TTL_SECONDS to a number of seconds, e.g. 86400, or to 0 or False "
        "for no fallback TTL.",
        _unless(lambda value: value is False or (_is_int(value) and value >= 0)),
    ),
    "TOMBSTONE_SECONDS": _Rule(
        "E012",
        "a positive integer",
        "Set TOMBSTONE_SECONDS to how long a destroyed session key stays "
        "blocked, e.g. 300.",
        _unless(lambda value: _is_int(value) and value >= 1),
    ),
    "DISABLE_TOUCH": _Rule(
        "E013",
        "True or False",
        "Set DISABLE_TOUCH to True to skip refreshing the expiry of unmodified "
        "sessions, or False.",
        _unless(lambda value: isinstance(value, bool)),
    ),
    "SERIALIZER": _Rule(
        "E014",
        "None or the dotted path of a serializer class",
        "Set SERIALIZER to the dotted path of a serializer class, e.g. "
        "'django.core.signing.JSONSerializer', or to None to use "
        "SESSION_SERIALIZER.",
        _importable_problem,
    ),
}


def _check_cluster(config: dict[str, Any]) -> list[checks.CheckMessage]:
    """Check the keys that contradict ``CLUSTER = True``."""
    if config["CLUSTER"] is not True:
        return []
    errors: list[checks.CheckMessage] = []
    sentinels = config["SENTINELS"]
    if sentinels:
        errors.append(
            _error(
                "E015",
                f"{_name('SENTINELS')} must be empty when {_name('CLUSTER')} is "
                f"True, not {sentinels!r} (Redis Cluster and Sentinel are "
                "exclusive).",
                "Use either CLUSTER or SENTINELS, not both.",
            )
        )
    url = config["URL"]
    database = _url_database(url)
    if database != 0:
        errors.append(
            _error(
                "E016",
                f"{_name('URL')} must select database 0 when {_name('CLUSTER')} "
                f"is True, not {url!r} (it selects database {database}, and "
                "Redis Cluster only has database 0).",
                "Remove the database from URL, or make it 0, e.g. "
                "'redis://localhost:7000/0'.",
            )
        )
    return errors
