"""Redis memory per session (MEMORY USAGE): this engine, with ids hashed or
not, against Django's cache sessions over django-redis."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/memory.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from typing import Any

import redis
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.cache import SessionStore as CacheStore
from django.core.cache import caches
from django.test.utils import override_settings

from benchmarks import common

#: How many sessions one user has when their index is measured.
SESSIONS_PER_USER = (1, 5, 20)


def logged_in(engine: type[SessionBase], user: str | None = None) -> SessionBase:
    """A new session of the harness's logged-in visitor (or of ``user``)."""
    session = engine()
    session.update(common.SESSION)
    if user is not None:
        session["_auth_user_id"] = user
    session.save()
    return session


def usage(client: redis.Redis, name: str) -> tuple[int, int]:
    """MEMORY USAGE of ``name`` (every element counted) and its value's length."""
    value_bytes = client.strlen(name) if client.type(name) == b"string" else 0
    return int(client.memory_usage(name, samples=0) or 0), int(value_bytes)


def index_usage(client: redis.Redis, layer: Any, user: str) -> int:
    """MEMORY USAGE of a user's index: its hash and its expiry set."""
    return sum(usage(client, name)[0] for name in layer.index_names(user))


def this_engine(client: redis.Redis, hash_ids: bool) -> dict[str, str]:
    config = {**settings.SESSION_REDIS, "HASH_IDS": hash_ids}
    with override_settings(SESSION_REDIS=config):
        layer = common.RedisLayer()
        session = logged_in(common.SessionStore)
        key = str(session.session_key)
        memory, length = usage(client, layer.data_name(key))
        session.flush()  # a logout
        tombstone, _ = usage(client, layer.tombstone_name(key))
        found = {"session": f"{memory:,}", "of which value (STRLEN)": f"{length:,}"}
        found["tombstone (after a logout)"] = f"{tombstone:,}"
        for count in SESSIONS_PER_USER:
            user = f"{hash_ids}-{count}"  # a user of ``count`` sessions
            for _ in range(count):
                logged_in(common.SessionStore, user)
            index = index_usage(client, layer, user)
            found[f"index, per session, {count} of one user"] = f"{index / count:,.0f}"
        first = index_usage(client, layer, f"{hash_ids}-1")
        found["a logged-in session: session + index"] = f"{memory + first:,}"
    return found


def peer(client: redis.Redis) -> dict[str, str]:
    session = logged_in(CacheStore)
    memory, length = usage(client, caches["default"].make_key(session.cache_key))  # type: ignore[attr-defined]
    found = {"session": f"{memory:,}", "of which value (STRLEN)": f"{length:,}"}
    found["a logged-in session: session + index"] = f"{memory:,}"
    return found


def main() -> None:
    args = common.parser(__doc__).parse_args()
    with common.server(args.redis_url) as url:
        cache = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"{common.NAMESPACE}django-redis",
        }
        common.configure(url, session_redis={}, CACHES={"default": cache})
        with redis.Redis.from_url(url) as client:
            columns = {
                "HASH_IDS True": this_engine(client, True),
                "HASH_IDS False": this_engine(client, False),
                "django-redis cache": peer(client),
            }
    rows: list[list[Any]] = [["bytes (MEMORY USAGE)", *columns]]
    for label in columns["HASH_IDS True"]:
        rows.append([label, *(column.get(label, "-") for column in columns.values())])
    print(f"\n{common.table(rows)}")


if __name__ == "__main__":
    main()
