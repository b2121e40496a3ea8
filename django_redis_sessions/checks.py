"""System checks for the ``SESSION_REDIS`` setting.

The raw setting is validated here rather than through ``conf.Settings``, whose
properties coerce values and so assume they are valid. Every problem is one
``Error`` with a stable id (``django_redis_sessions.E001`` ...) and a hint.

Nothing here connects anywhere: redis-py's own URL parsers and the signatures
of the classes ``client.build_client()`` would use tell what redis-py would
refuse at the first request. No message shows a password: URLs are redacted,
and a value under a name that may hold one is never shown.
"""

from __future__ import annotations

import difflib
import hmac
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from django_redis_sessions.conf import DEFAULTS, SETTING_NAME, is_secret, redact_url
from django_redis_sessions.encryption import (
    MIN_SECRET_LENGTH,
    cryptography_missing,
    secret_bytes,
)
from django_redis_sessions.migration import engine_problem
from django_redis_sessions.redis_arguments import (
    ARGUMENT_TYPES,
    accepted_arguments,
    describe_client,
    is_int,
    query_expects,
    query_values,
    url_problem,
)

_ID_PREFIX = "django_redis_sessions."
_URL_SCHEMES = ("redis", "rediss", "unix")
_GLOB_CHARACTERS = frozenset("*?[]")
_HIDDEN = "********"

#: The longest TTL or tombstone lifetime accepted, in seconds: 100 years of
#: 365.25 days. Redis refuses ("invalid expire time") an expiry whose absolute
#: time in milliseconds overflows a signed 64-bit integer; where exactly that
#: happens depends on the server's clock, and no session needs to come close.
MAX_EXPIRY_SECONDS = 3_155_760_000
#: The largest integer Redis reads as an argument, such as SCAN's COUNT.
_MAX_REDIS_INTEGER = 2**63 - 1


def check_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    config = getattr(settings, SETTING_NAME, {})
    # Any mapping, as conf.Settings reads any mapping.
    if not isinstance(config, Mapping):
        return [
            _error(
                "E001",
                f"{SETTING_NAME} must be a dict, not {_shown(config)}.",
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
    errors.extend(_check_client(effective))
    errors.extend(_check_cluster(effective))
    errors.extend(_check_connection_arguments(effective))
    errors.extend(_check_encryption(config))
    return errors


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, with every password it may hold hidden."""
    return repr(_redacted(value))


def _shown_url(value: Any) -> str:
    """As ``_shown()``, for a URL that may not even have a scheme."""
    return repr(redact_url(value) if isinstance(value, str) else value)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {
            key: _HIDDEN if isinstance(key, str) and is_secret(key) else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        items = [_redacted(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


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
    # How a bad value appears in the message.
    show: Callable[[Any], str] = _shown

    def error(self, key: str, value: Any, reason: str) -> checks.Error:
        because = f" ({reason})" if reason else ""
        return _error(
            self.id,
            f"{_name(key)} must be {self.expected}, not {self.show(value)}{because}.",
            self.hint,
        )


def _error(code: str, msg: str, hint: str) -> checks.Error:
    return checks.Error(msg, hint=hint, id=_ID_PREFIX + code)


def _name(key: str) -> str:
    return f"{SETTING_NAME}[{key!r}]"


#: The values of HASH_IDS besides True and False.
_HASH_MODES = ("prepare", "migrate")


def _unless(is_valid: Callable[[Any], bool]) -> Callable[[Any], str | None]:
    """A ``_Rule.problem`` for a check that needs no explanation."""
    return lambda value: None if is_valid(value) else ""


def _at_most(
    maximum: int, why: str, is_valid: Callable[[Any], bool]
) -> Callable[[Any], str | None]:
    """A ``_Rule.problem`` for an integer that Redis refuses above ``maximum``."""

    def problem(value: Any) -> str | None:
        if not is_valid(value):
            return ""
        return why if is_int(value) and value > maximum else None

    return problem


def _is_port(value: Any) -> bool:
    return is_int(value) and 0 < value < 65536


def _is_address(value: Any) -> bool:
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
    # Whatever else the installed redis-py refuses, such as an upper-case
    # scheme, which older releases refuse and newer ones accept.
    return url_problem(value)


def _url_database(url: str) -> int | None:
    """Return the database number a Redis URL selects, None if it names none.

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
    return path_database if query_database is None else query_database


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


def _imported(value: Any) -> tuple[Any, str | None]:
    """What a dotted path imports, or why it cannot be imported."""
    if not isinstance(value, str):
        return None, ""
    try:
        return import_string(value), None
    # Importing runs the user's module, which can raise anything; a system
    # check should report it, not crash.
    except Exception as exc:
        return None, f"it cannot be imported: {type(exc).__name__}: {exc}"


def _client_problem(value: Any) -> str | None:
    if value is None:
        return None
    factory, problem = _imported(value)
    if problem is not None:
        return problem
    if not callable(factory):
        return f"it imports {factory!r}, which is not callable"
    try:
        inspect.signature(factory).bind(asynchronous=False)
    except ValueError:  # no signature to inspect, as for some builtins
        return None
    except TypeError as exc:
        return f"it cannot be called as factory(asynchronous=False): {exc}"
    return None


def _callable_problem(value: Any) -> str | None:
    if value is None:
        return None
    target, problem = _imported(value)
    if problem is not None:
        return problem
    if not callable(target):
        return f"it imports {target!r}, which is not callable"
    return None


def _serializer_problem(value: Any) -> str | None:
    if value is None:
        return None
    serializer_class, problem = _imported(value)
    if problem is not None:
        return problem
    if not isinstance(serializer_class, type):
        return f"it imports {serializer_class!r}, which is not a class"
    # The store instantiates it with no arguments; a function such as
    # json.dumps would only fail there, at the first request.
    try:
        serializer = serializer_class()
    except Exception as exc:
        name = serializer_class.__qualname__
        return f"{name}() raises {type(exc).__name__}: {exc}"
    missing = [
        method
        for method in ("dumps", "loads")
        if not callable(getattr(serializer, method, None))
    ]
    if missing:
        return f"its instances have no callable {' and '.join(missing)}"
    return None


def _prefix_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return ""
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, e.g. from os.fsdecode()
        return "it cannot be encoded as UTF-8, so no key could be sent to Redis"
    if set(value) <= _GLOB_CHARACTERS:
        return "it is made only of glob characters, so it would match every key"
    if "{" in value or "}" in value:
        return "braces would change the Redis Cluster hash tag of every session key"
    return None


_TOO_FAR = (
    f"it is more than 100 years ({MAX_EXPIRY_SECONDS} seconds), and Redis refuses "
    "an expiry too far ahead"
)

_RULES: dict[str, _Rule] = {
    "URL": _Rule(
        "E003",
        "a redis://, rediss:// or unix:// URL",
        "Use a URL like 'redis://localhost:6379/0', "
        "'rediss://user:password@example.com:6380/0' or "
        "'unix:///run/redis.sock?db=0'.",
        _url_problem,
        _shown_url,
    ),
    "OPTIONS": _Rule(
        "E004",
        "a dict with string keys",
        "Set OPTIONS to a dict of keyword arguments for the redis-py client, "
        "e.g. {'socket_timeout': 5}.",
        _unless(
            lambda value: (
                isinstance(value, Mapping)
                and all(isinstance(key, str) for key in value)
            )
        ),
    ),
    "CLUSTER": _Rule(
        "E005",
        "True or False",
        "Set CLUSTER to True to use Redis Cluster, or False.",
        _unless(lambda value: isinstance(value, bool)),
    ),
    "CLUSTER_NODES": _Rule(
        "E029",
        "a list of (host, port) pairs",
        "Set CLUSTER_NODES to a list of (host, port) pairs with a string host "
        "and an integer port, e.g. [('redis-2', 7000), ('redis-3', 7000)]: "
        "more nodes of the cluster to connect through while the node in URL "
        "is down.",
        _unless(
            lambda value: (
                isinstance(value, (list, tuple))
                and all(_is_address(node) for node in value)
            )
        ),
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
                and all(_is_address(sentinel) for sentinel in value)
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
        _client_problem,
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
        _at_most(
            _MAX_REDIS_INTEGER,
            f"it is more than {_MAX_REDIS_INTEGER}, the largest COUNT Redis accepts",
            lambda value: is_int(value) and value >= 1,
        ),
    ),
    "TTL_SECONDS": _Rule(
        "E011",
        "an integer of 0 or more, or False",
        "Set TTL_SECONDS to a number of seconds up to 100 years, e.g. 86400, or "
        "to 0 or False for no fallback TTL.",
        _at_most(
            MAX_EXPIRY_SECONDS,
            _TOO_FAR,
            lambda value: value is False or (is_int(value) and value >= 0),
        ),
    ),
    "TOMBSTONE_SECONDS": _Rule(
        "E012",
        "a positive integer",
        "Set TOMBSTONE_SECONDS to how long a destroyed session key stays "
        "blocked, up to 100 years, e.g. 300.",
        _at_most(
            MAX_EXPIRY_SECONDS, _TOO_FAR, lambda value: is_int(value) and value >= 1
        ),
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
        "Set SERIALIZER to the dotted path of a class that takes no arguments "
        "and has dumps(obj) -> bytes and loads(bytes) -> object, e.g. "
        "'django.core.signing.JSONSerializer', or to None to use "
        "SESSION_SERIALIZER.",
        _serializer_problem,
    ),
    "HASH_IDS": _Rule(
        "E023",
        'True, False, "prepare" or "migrate"',
        "Set HASH_IDS to True to keep sessions under ids that no cookie can "
        'name, to "migrate" while sessions written under plain keys still '
        'live, to "prepare" for the first step of a rollout to "migrate", or '
        "to False for the plain layout.",
        _unless(lambda value: value is True or value is False or value in _HASH_MODES),
    ),
    "USER_INDEX": _Rule(
        "E025",
        "True or False",
        "Set USER_INDEX to True to keep an index of each user's sessions, or False.",
        _unless(lambda value: isinstance(value, bool)),
    ),
    "USER_INDEX_METADATA": _Rule(
        "E026",
        'a tuple of "ip" and "user_agent" (either, both or neither)',
        'Set USER_INDEX_METADATA to (), ("ip",), ("user_agent",) or '
        '("ip", "user_agent").',
        _unless(
            lambda value: (
                isinstance(value, (list, tuple, set, frozenset))
                and set(value) <= {"ip", "user_agent"}
            )
        ),
    ),
    "MAX_SESSIONS_PER_USER": _Rule(
        "E027",
        "None or a positive integer",
        "Set MAX_SESSIONS_PER_USER to how many sessions a user may have at "
        "once, e.g. 10, or to None for no limit.",
        _unless(lambda value: value is None or (is_int(value) and value >= 1)),
    ),
    "CLIENT_IP": _Rule(
        "E028",
        "None or the dotted path of a callable",
        "Set CLIENT_IP to the dotted path of a callable that takes the request "
        "and returns the client's IP address as a string (behind a proxy, "
        "from the header your proxy sets), or to None for REMOTE_ADDR.",
        _callable_problem,
    ),
    "MIGRATE_FROM": _Rule(
        "E024",
        "None or the dotted path of another session engine",
        "Set MIGRATE_FROM to the SESSION_ENGINE sessions are moved from, e.g. "
        "'django.contrib.sessions.backends.db', while switching to this engine, "
        "or to None.",
        lambda value: None if value is None else engine_problem(value),
    ),
}


#: The keys a ``CLIENT`` factory makes meaningless: it builds the client itself.
_REPLACED_BY_CLIENT = ("URL", "OPTIONS", "CLUSTER", "CLUSTER_NODES", "SENTINELS")


def _check_client(config: dict[str, Any]) -> list[checks.CheckMessage]:
    """Check the keys a ``CLIENT`` factory would silently replace."""
    if config["CLIENT"] is None:
        return []
    return [
        _error(
            "E022",
            f"{_name(key)} must be left at its default when {_name('CLIENT')} "
            f"is set, not {_shown(config[key])} (the client factory builds the "
            f"client, so {key} would be ignored).",
            f"Remove {key}, and configure the client in the factory that CLIENT names.",
        )
        for key in _REPLACED_BY_CLIENT
        if not _is_default(key, config[key])
    ]


def _is_default(key: str, value: Any) -> bool:
    default = DEFAULTS[key]
    # () and an empty mapping are as unset as the defaults [] and {}.
    return not value if isinstance(default, (list, dict)) else bool(value == default)


def _check_cluster(config: dict[str, Any]) -> list[checks.CheckMessage]:
    """Check the keys that contradict ``CLUSTER = True``, or need it."""
    if config["CLIENT"] is not None:
        return []  # _check_client() reports CLUSTER and CLUSTER_NODES itself.
    if config["CLUSTER"] is not True:
        if not config["CLUSTER_NODES"]:
            return []
        return [
            _error(
                "E030",
                f"{_name('CLUSTER_NODES')} must be empty when {_name('CLUSTER')} "
                f"is not True, not {_shown(config['CLUSTER_NODES'])} (only a "
                "Redis Cluster client connects through more than one node).",
                "Set CLUSTER to True if URL names a node of a Redis Cluster, or "
                "remove CLUSTER_NODES.",
            )
        ]
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
    if urlsplit(url).scheme == "unix":
        errors.append(
            _error(
                "E021",
                f"{_name('URL')} must be a redis:// or rediss:// URL when "
                f"{_name('CLUSTER')} is True, not {_shown(url)} (redis-py's "
                "cluster clients do not connect over unix sockets).",
                "Give the host and port of any node of the cluster, e.g. "
                "'redis://localhost:7000/0'.",
            )
        )
        return errors
    # redis-py takes the database from URL and, only when URL names none,
    # from OPTIONS.
    database = _url_database(url)
    option = config["OPTIONS"].get("db", 0)
    if database is None and is_int(option) and option != 0:
        errors.append(
            _error(
                "E016",
                f"{_name('OPTIONS')}['db'] must be 0 when {_name('CLUSTER')} is "
                f"True, not {option!r} (Redis Cluster only has database 0).",
                "Remove db from OPTIONS.",
            )
        )
    elif database:
        errors.append(
            _error(
                "E016",
                f"{_name('URL')} must select database 0 when {_name('CLUSTER')} "
                f"is True, not {_shown(url)} (it selects database {database}, "
                "and Redis Cluster only has database 0).",
                "Remove the database from URL, or make it 0, e.g. "
                "'redis://localhost:7000/0'.",
            )
        )
    return errors


_DECODING = (
    "a client that decodes responses returns str instead of the bytes stored, "
    "so every session would be lost on load"
)


def _check_connection_arguments(
    config: dict[str, Any],
) -> list[checks.CheckMessage]:
    """Check what redis-py will receive from URL's query string and OPTIONS."""
    if config["CLIENT"] is not None:
        return []  # _check_client() reports them.
    accepted = accepted_arguments(config)
    arguments = _Arguments(
        config,
        None if accepted is None else accepted.either,
        describe_client(config),
        tls=urlsplit(config["URL"]).scheme == "rediss",
    )
    query = {
        # As redis-py reads them: the first value, empty ones dropped.
        name: values[0]
        for name, values in parse_qs(urlsplit(config["URL"]).query).items()
    }
    errors = [arguments.query_error(name, text) for name, text in query.items()]
    errors += [
        arguments.option_error(name, value) for name, value in config["OPTIONS"].items()
    ]
    found: list[checks.CheckMessage] = [error for error in errors if error is not None]
    one_sided = {} if accepted is None else accepted.only_one()
    for where, names in (
        (f"{_name('URL')} query parameter", query),
        (f"{_name('OPTIONS')} argument", config["OPTIONS"]),
    ):
        found += [
            _one_client_warning(where, name, one_sided[name])
            for name in names
            if name in one_sided
        ]
    return found


def _one_client_warning(where: str, name: str, side: str) -> checks.Warning:
    other = "asyncio" if side == "sync" else "sync"
    return _warning(
        "W001",
        f"{where} {name!r} is accepted by the installed redis-py's {side} client only.",
        f"The engine builds its sync and its asyncio client from the same "
        f"settings, and the {other} one does not take it: it refuses it, so "
        f"every session read or written through the {other} API fails (a sync "
        f"Cluster client ignores it instead). Remove it, unless the site uses "
        f"only the {side} API.",
    )


@dataclass(frozen=True)
class _Arguments:
    """Judges each argument redis-py would receive for one configuration."""

    config: dict[str, Any]
    # None when the accepted names cannot be told.
    accepted: frozenset[str] | None
    # Completes "redis-py does not accept it for ...".
    client: str
    tls: bool

    def query_error(self, name: str, text: str) -> checks.Error | None:
        where = f"{_name('URL')} query parameter {name!r}"
        if name == "decode_responses":
            return _error(
                "E020",
                f"{where} must be left out, not {text!r} (redis-py passes it on "
                f"as a non-empty string, which turns decoding on; {_DECODING}).",
                "Remove decode_responses from URL: the engine decodes session "
                "data itself.",
            )
        if self.accepted is not None and name not in self.accepted:
            return self._unknown(
                "E017", f"{_name('URL')} has the query parameter {name!r}", name, "URL"
            )
        try:
            values = query_values(self.config, name, text)
        except ValueError as exc:
            expected = query_expects(name) or ARGUMENT_TYPES.get(name, ("",))[0]
            # parse_url() replaces its parser's reason with a generic one.
            reason = exc.__context__ if exc.__context__ is not None else exc
            because = "" if expected else f" ({reason})"
            return self._bad_query_value(
                where, expected or "a value redis-py can read", text, because
            )
        expected, is_valid = ARGUMENT_TYPES.get(name, ("", _anything))
        if not all(is_valid(value) for value in values):
            return self._bad_query_value(where, expected, text, "")
        return None

    def option_error(self, name: str, value: Any) -> checks.Error | None:
        if name == "decode_responses":
            if value is False or value is None:
                return None
            return _error(
                "E020",
                f"{_name('OPTIONS')}['decode_responses'] must be False, not "
                f"{value!r} ({_DECODING}).",
                "Remove decode_responses from OPTIONS: the engine decodes "
                "session data itself.",
            )
        if self.accepted is not None and name not in self.accepted:
            return self._unknown(
                "E018", f"{_name('OPTIONS')} has the argument {name!r}", name, "OPTIONS"
            )
        expected, is_valid = ARGUMENT_TYPES.get(name, ("", _anything))
        if is_valid(value):
            return None
        return _error(
            "E019",
            f"{_name('OPTIONS')}[{name!r}] must be {expected}, not {_shown(value)}.",
            "OPTIONS reach redis-py unchanged, so each value must already have "
            "the type redis-py expects: convert a value read from the "
            "environment first.",
        )

    def _unknown(self, code: str, start: str, name: str, key: str) -> checks.Error:
        hint = f"Remove {name!r} from {key}, or correct its name."
        close = difflib.get_close_matches(name, sorted(self.accepted or ()), n=1)
        if close:
            hint += f" Did you mean {close[0]!r}?"
        if name.startswith("ssl") and not self.tls:
            hint += " TLS arguments need a rediss:// URL."
        return _error(
            code,
            f"{start}, which redis-py does not accept for {self.client}.",
            hint,
        )

    @staticmethod
    def _bad_query_value(
        where: str, expected: str, text: str, because: str
    ) -> checks.Error:
        return _error(
            "E017",
            f"{where} must be {expected}, not {text!r}{because}.",
            "Correct the value in URL. redis-py passes a parameter it does not "
            "convert on as a string, so one that needs another type belongs in "
            "OPTIONS.",
        )


def _anything(value: Any) -> bool:
    return True


# --- The page's setup: middleware, app, LOGIN_URL (warnings W101...) -----------

_SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_METADATA_MIDDLEWARE = "django_redis_sessions.middleware.SessionMetadataMiddleware"
_HUMANIZE = "django.contrib.humanize"


def _warning(code: str, msg: str, hint: str) -> checks.Warning:
    return checks.Warning(msg, hint=hint, id=_ID_PREFIX + code)


def check_metadata_middleware(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Warn where ``USER_INDEX_METADATA`` asks for what no middleware hands over."""
    config = getattr(settings, SETTING_NAME, {})
    wanted = config.get("USER_INDEX_METADATA") if isinstance(config, Mapping) else None
    if not wanted or not isinstance(wanted, (list, tuple, set, frozenset)):
        return []
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if _METADATA_MIDDLEWARE not in middleware:
        return [
            _warning(
                "W101",
                f"{_name('USER_INDEX_METADATA')} asks for {tuple(wanted)!r}, but "
                f"{_METADATA_MIDDLEWARE!r} is not in MIDDLEWARE, so nothing is "
                "collected.",
                f"Add {_METADATA_MIDDLEWARE!r} to MIDDLEWARE right after "
                f"{_SESSION_MIDDLEWARE!r}, or set USER_INDEX_METADATA to ().",
            )
        ]
    position = middleware.index(_METADATA_MIDDLEWARE)
    found: list[checks.CheckMessage] = []
    if _SESSION_MIDDLEWARE in middleware[position:]:
        found.append(
            _warning(
                "W102",
                f"{_METADATA_MIDDLEWARE!r} comes before {_SESSION_MIDDLEWARE!r} "
                "in MIDDLEWARE: it runs before the request has a session, so "
                "nothing is collected.",
                f"Move it right after {_SESSION_MIDDLEWARE!r}.",
            )
        )
    # A login made by a middleware below AuthenticationMiddleware (such as
    # RemoteUserMiddleware) writes its index entry at once, before a metadata
    # middleware further down could hand anything over.
    elif _AUTH_MIDDLEWARE in middleware[:position]:
        found.append(
            _warning(
                "W103",
                f"{_METADATA_MIDDLEWARE!r} comes after {_AUTH_MIDDLEWARE!r} in "
                "MIDDLEWARE: a login made by a middleware between them (such as "
                "RemoteUserMiddleware) is recorded without its IP and browser.",
                f"Move it right after {_SESSION_MIDDLEWARE!r}, before "
                f"{_AUTH_MIDDLEWARE!r}.",
            )
        )
    return found


def check_page_setup() -> list[checks.CheckMessage]:
    """What the "Your sessions" page needs; run by its URL pattern's check.

    So these warnings come only from a project that includes the page's URLs.
    """
    from django.apps import apps

    found: list[checks.CheckMessage] = []
    if not apps.is_installed("django_redis_sessions"):
        found.append(
            _warning(
                "W104",
                "The URLs of the 'Your sessions' page (django_redis_sessions.urls) "
                "are included, but 'django_redis_sessions' is not in "
                "INSTALLED_APPS, so its templates and translations are not found.",
                "Add 'django_redis_sessions' to INSTALLED_APPS.",
            )
        )
    if getattr(settings, "USE_I18N", True) and not apps.is_installed(_HUMANIZE):
        found.append(
            _warning(
                "W106",
                "The 'Your sessions' page says when each session signed in and "
                f"expires in words from {_HUMANIZE!r}, which is not in "
                "INSTALLED_APPS, so they are not translated.",
                f"Add {_HUMANIZE!r} to INSTALLED_APPS.",
            )
        )
    problem = _login_url_problem(getattr(settings, "LOGIN_URL", None))
    if problem is not None:
        found.append(
            _warning(
                "W105",
                f"LOGIN_URL {settings.LOGIN_URL!r} {problem}, so the 'Your "
                "sessions' page cannot send an anonymous visitor to log in.",
                "Set LOGIN_URL to the path or URL name of your login view, e.g. "
                "'login' with path('accounts/', include('django.contrib.auth.urls')).",
            )
        )
    return found


def _login_url_problem(login_url: Any) -> str | None:
    """Why ``LOGIN_URL`` leads nowhere on this site; None if it leads somewhere."""
    from django.urls import NoReverseMatch, Resolver404, resolve, reverse

    if not isinstance(login_url, str) or not login_url:
        return "is not set"
    if "://" in login_url or login_url.startswith("//"):
        return None  # another site's login: nothing here to check
    if "/" not in login_url and "." not in login_url:
        try:
            reverse(login_url)
        except NoReverseMatch:
            return "names no URL pattern"
        return None
    script_name = getattr(settings, "FORCE_SCRIPT_NAME", None) or ""
    path = login_url.split("?", 1)[0]
    if script_name and path.startswith(script_name.rstrip("/") + "/"):
        path = path[len(script_name.rstrip("/")) :]
    try:
        resolve(path)
    except Resolver404:
        return "matches no URL pattern"
    return None


# --- Encryption at rest (ENCRYPTION, ENCRYPTION_KEYS) ----------------------------


def _check_encryption(config: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """Encryption that would fail, or protect nothing, at the first request.

    The keys are checked even while encryption is off, so that turning it on
    is never the moment a bad key shows. No message shows a secret of
    ``ENCRYPTION_KEYS``, only its position.
    """
    errors: list[checks.CheckMessage] = []
    mode = config.get("ENCRYPTION", DEFAULTS["ENCRYPTION"])
    if not (mode is True or mode is False or mode == "migrate"):
        errors.append(
            _error(
                "E101",
                f'{_name("ENCRYPTION")} must be False, True or "migrate", not '
                f"{_shown(mode)}.",
                'Set ENCRYPTION to True, or to "migrate" while sessions written '
                "before it was on are still stored unencrypted.",
            )
        )
        mode = False
    keys = config.get("ENCRYPTION_KEYS", DEFAULTS["ENCRYPTION_KEYS"])
    listed = isinstance(keys, (list, tuple))
    if not listed:
        errors.append(
            _error(
                "E103",
                f"{_name('ENCRYPTION_KEYS')} must be a list of secrets, not a "
                f"{type(keys).__name__}.",
                _KEYS_HINT,
            )
        )
        keys = []
    for position, key in enumerate(keys):
        if not isinstance(key, (str, bytes)) or len(key) < MIN_SECRET_LENGTH:
            what = (
                f"{len(key)} long"
                if isinstance(key, (str, bytes))
                else f"a {type(key).__name__}"
            )
            errors.append(
                _error(
                    "E104",
                    f"{_name('ENCRYPTION_KEYS')}[{position}] must be a str or bytes "
                    f"of at least {MIN_SECRET_LENGTH} characters; it is {what}.",
                    "Use secrets.token_urlsafe(32) or longer.",
                )
            )
        elif _is_secret_key(key):
            errors.append(
                _error(
                    "E105",
                    f"{_name('ENCRYPTION_KEYS')}[{position}] is SECRET_KEY (or one "
                    "of SECRET_KEY_FALLBACKS).",
                    "Use a secret of its own: rotating SECRET_KEY must not make "
                    "every session unreadable, and a leak of one must not open "
                    "the other's data.",
                )
            )
    if mode is False:
        return errors
    if listed and not keys:
        errors.append(
            _error(
                "E103",
                f"{_name('ENCRYPTION_KEYS')} is empty while ENCRYPTION is on.",
                _KEYS_HINT,
            )
        )
    if (missing := cryptography_missing()) is not None:
        errors.append(
            _error(
                "E102",
                f"{_name('ENCRYPTION')} is on but the cryptography package cannot "
                f"be imported ({missing}).",
                "Install it with the extra: pip install "
                "'django-redis-session-engine[encryption]'.",
            )
        )
    if config.get("HASH_IDS", DEFAULTS["HASH_IDS"]) is False:
        errors.append(
            _error(
                "E106",
                f"{_name('ENCRYPTION')} is on but {_name('HASH_IDS')} is False.",
                'Set HASH_IDS to True (or "migrate"): with plain ids every '
                "session's key is in Redis, and the key is what opens its data.",
            )
        )
    return errors


_KEYS_HINT = (
    f"List one random secret of at least {MIN_SECRET_LENGTH} characters, e.g. "
    "secrets.token_urlsafe(32), read from the environment; the first encrypts, "
    "every one decrypts."
)


def _is_secret_key(key: str | bytes) -> bool:
    candidates = [getattr(settings, "SECRET_KEY", None)]
    candidates += list(getattr(settings, "SECRET_KEY_FALLBACKS", None) or [])
    key_bytes = secret_bytes(key)
    return any(
        isinstance(candidate, (str, bytes))
        and hmac.compare_digest(secret_bytes(candidate), key_bytes)
        for candidate in candidates
    )
