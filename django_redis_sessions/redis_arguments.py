"""What redis-py accepts as client arguments, told without connecting.

For the system checks: the names the sync and asyncio clients that
``client.build_client()`` makes would accept, from ``URL``'s query string or
from ``OPTIONS``, read from the signatures of the redis-py classes involved;
what each client makes of ``URL``, read from redis-py's own ``parse_url()``;
and what redis-py expects of the values people set most.

Nothing here lists what a given redis-py release converts or accepts: each
release changes that (8.2 reads ``ssl_validate_ocsp=false`` as False, 5.0
passes the string "false" on), so it is asked of the installed one.
"""

from __future__ import annotations

import inspect
import math
import ssl
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.retry
import redis.sentinel


def is_int(value: Any) -> bool:
    # bool is an int subclass, but True is never a meaningful count or TTL.
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    # A float that is not finite breaks socket timeouts and interval arithmetic.
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True)
class _Api:
    """The redis-py classes ``client.build_client()`` uses, sync or asyncio."""

    # How from_url() reads a URL into keyword arguments.
    parse_url: Callable[[str], Mapping[str, Any]]
    # How parse_url() converts query values, by name; others stay strings.
    query_parsers: Mapping[str, Any]
    pool: type
    connections: Mapping[str, type]  # by URL scheme
    master_for: Callable[..., Any]
    sentinel_pool: type
    sentinel_connections: Mapping[bool, type]  # by TLS or not
    cluster: type
    # The sync RedisCluster hands these to the client of each node and drops
    # any other name silently; the asyncio one refuses other names.
    cluster_node_arguments: Collection[str]


_APIS = (
    _Api(
        redis.connection.parse_url,
        redis.connection.URL_QUERY_ARGUMENT_PARSERS,
        redis.ConnectionPool,
        {
            "redis": redis.Connection,
            "rediss": redis.SSLConnection,
            "unix": redis.UnixDomainSocketConnection,
        },
        redis.sentinel.Sentinel.master_for,
        redis.sentinel.SentinelConnectionPool,
        {
            False: redis.sentinel.SentinelManagedConnection,
            True: redis.sentinel.SentinelManagedSSLConnection,
        },
        redis.cluster.RedisCluster,
        redis.cluster.REDIS_ALLOWED_KEYS,
    ),
    _Api(
        redis.asyncio.connection.parse_url,
        redis.asyncio.connection.URL_QUERY_ARGUMENT_PARSERS,
        redis.asyncio.ConnectionPool,
        {
            "redis": redis.asyncio.Connection,
            "rediss": redis.asyncio.SSLConnection,
            "unix": redis.asyncio.UnixDomainSocketConnection,
        },
        redis.asyncio.sentinel.Sentinel.master_for,
        redis.asyncio.sentinel.SentinelConnectionPool,
        {
            False: redis.asyncio.sentinel.SentinelManagedConnection,
            True: redis.asyncio.sentinel.SentinelManagedSSLConnection,
        },
        redis.asyncio.cluster.RedisCluster,
        (),
    ),
)

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _keywords(function: Callable[..., Any]) -> set[str]:
    """The names ``function`` takes as keyword arguments."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name for p in parameters if p.kind in _NAMED} - {"self"}


def _init_keywords(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts.

    ``**kwargs`` is followed up the MRO, as redis-py's connection classes pass
    it on to ``super().__init__()``.
    """
    names: set[str] = set()
    for base in cls.__mro__:
        init = vars(base).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind in _NAMED}
        if all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}


def _accepted_by(api: _Api, config: dict[str, Any]) -> set[str]:
    """The names redis-py accepts from URL's query string and from OPTIONS."""
    custom = config["OPTIONS"].get("connection_class")
    custom_class = custom if isinstance(custom, type) else None
    scheme = urlsplit(config["URL"]).scheme
    if config["SENTINELS"]:
        # Sentinel.master_for() hands what it does not take to its pool, which
        # pops "ssl" (to choose its connection class) and "check_connection"
        # and hands the rest on.
        connection = custom_class or api.sentinel_connections[scheme == "rediss"]
        return (
            _keywords(api.master_for)
            | _keywords(api.sentinel_pool)
            | _keywords(api.pool)
            | {"ssl", "check_connection"}
            | _init_keywords(connection)
        )
    if config["CLUSTER"]:
        return _init_keywords(api.cluster) | set(api.cluster_node_arguments)
    # Redis.from_url() takes single_connection_client itself and hands the rest
    # to its pool, which hands what it does not take to each connection.
    connection = custom_class or api.connections[scheme]
    return (
        {"single_connection_client"} | _keywords(api.pool) | _init_keywords(connection)
    )


class Accepted(NamedTuple):
    """The names redis-py's sync and asyncio clients accept, for one config."""

    sync: frozenset[str]
    asynchronous: frozenset[str]

    @property
    def either(self) -> frozenset[str]:
        """What the sync or the asyncio client accepts."""
        return self.sync | self.asynchronous

    def only_one(self) -> dict[str, str]:
        """The names only one client accepts, each with that client ("sync"
        or "asyncio"). The engine builds both from the same URL and OPTIONS,
        so such a name breaks every request through the other one."""
        return {
            **dict.fromkeys(self.sync - self.asynchronous, "sync"),
            **dict.fromkeys(self.asynchronous - self.sync, "asyncio"),
        }


def accepted_arguments(config: dict[str, Any]) -> Accepted | None:
    """What each client accepts; None if it cannot be told."""
    try:
        sync, asynchronous = (frozenset(_accepted_by(api, config)) for api in _APIS)
    except (TypeError, ValueError):  # a connection_class without a signature
        return None
    return Accepted(sync, asynchronous)


def url_problem(url: str) -> str | None:
    """Why the sync or the asyncio client's ``from_url()`` refuses ``url``.

    Only the location is read: the query string is judged parameter by
    parameter (``query_values()``).
    """
    location = url.partition("?")[0]
    for api in _APIS:
        try:
            api.parse_url(location)
        except ValueError as exc:
            return f"redis-py refuses it: {exc}"
    return None


def query_values(config: dict[str, Any], name: str, text: str) -> list[Any]:
    """What each client that accepts ``name`` receives for ``?name=text`` in URL.

    Raise ``ValueError`` if redis-py refuses ``text``. A value redis-py does
    not convert is received as the string itself.
    """
    # Alone in a URL of its own, so that a refusal is this parameter's.
    # Encoded once, so parse_url() reads it as it reads URL (5.x unquotes a
    # second time, here as there).
    url = f"redis://localhost/?{urlencode({name: text})}"
    values = []
    for api in _APIS:
        try:
            accepted = _accepted_by(api, config)
        except (TypeError, ValueError):  # as in accepted_arguments()
            accepted = None
        if accepted is None or name in accepted:
            values.append(api.parse_url(url).get(name, text))
    return values


def query_expects(name: str) -> str | None:
    """What redis-py's URL parser for ``name`` reads, for a message; None if unsaid."""
    for api in _APIS:
        described = _PARSER_EXPECTS.get(api.query_parsers.get(name))
        if described is not None:
            return described
    return None


_PARSER_EXPECTS: dict[Any, str] = {int: "an integer", float: "a number"}


def describe_client(config: dict[str, Any]) -> str:
    if config["SENTINELS"]:
        described = "a client from Sentinel"
    elif config["CLUSTER"]:
        described = "a Redis Cluster client"
    else:
        described = f"a {urlsplit(config['URL']).scheme}:// URL"
    custom = config["OPTIONS"].get("connection_class")
    if isinstance(custom, type):
        described += f" with connection_class {custom.__qualname__}"
    return described


def _is_cert_reqs(value: Any) -> bool:
    # The names are SSLConnection's own table, which redis-py does not export;
    # anything else reaches ssl.SSLContext.verify_mode, which takes a
    # VerifyMode or its integer value.
    if isinstance(value, str):
        return value in {"none", "optional", "required"}
    return value is None or (is_int(value) and value in set(ssl.VerifyMode))


_TIMEOUT = (
    "a number greater than 0",
    lambda value: value is None or (is_number(value) and value > 0),
)
_BOOLEAN = ("True or False", lambda value: isinstance(value, bool))

#: What redis-py expects of the arguments people set most, as a description
#: (completing "must be ...") and a test. A bad value is shown in the message,
#: so no name here may hold a password.
ARGUMENT_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "socket_timeout": _TIMEOUT,
    "socket_connect_timeout": _TIMEOUT,
    "health_check_interval": (
        "a number of 0 or more",
        lambda value: is_number(value) and value >= 0,
    ),
    "max_connections": (
        "a positive integer",
        lambda value: value is None or (is_int(value) and value >= 1),
    ),
    "socket_read_size": (
        "a positive integer",
        lambda value: is_int(value) and value >= 1,
    ),
    "db": ("an integer of 0 or more", lambda value: is_int(value) and value >= 0),
    "ssl_cert_reqs": (
        "'none', 'optional', 'required', None or an ssl.VerifyMode",
        _is_cert_reqs,
    ),
    "retry": (
        "a redis.retry.Retry",
        lambda value: (
            value is None
            or isinstance(value, (redis.retry.Retry, redis.asyncio.retry.Retry))
        ),
    ),
    "connection_class": ("a class", lambda value: isinstance(value, type)),
    "retry_on_error": (
        "a list of exception classes",
        lambda value: (
            value is None
            or (
                isinstance(value, (list, tuple))
                and all(
                    isinstance(error, type) and issubclass(error, Exception)
                    for error in value
                )
            )
        ),
    ),
    "socket_keepalive": _BOOLEAN,
    "retry_on_timeout": _BOOLEAN,
    "ssl_check_hostname": _BOOLEAN,
    "ssl_validate_ocsp": _BOOLEAN,
    "ssl_validate_ocsp_stapled": _BOOLEAN,
    "single_connection_client": _BOOLEAN,
    "read_from_replicas": _BOOLEAN,
    "require_full_coverage": _BOOLEAN,
}
