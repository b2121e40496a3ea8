"""The ``SESSION_REDIS`` setting, read on every access.

Nothing here is read at import time, so ``override_settings`` works, and a
malformed value is reported by the system checks (``checks.py``) rather than by
a crash at import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.conf import settings as django_settings

SETTING_NAME = "SESSION_REDIS"

DEFAULTS: dict[str, Any] = {
    "URL": "redis://localhost:6379/0",
    "OPTIONS": {},
    "CLUSTER": False,
    "CLUSTER_NODES": [],
    "SENTINELS": [],
    "SENTINEL_SERVICE": "mymaster",
    "CLIENT": None,
    "PREFIX": "sessions:",
    "SCAN_COUNT": 1000,
    "TTL_SECONDS": 86400,
    "TOMBSTONE_SECONDS": 300,
    "DISABLE_TOUCH": False,
    "SERIALIZER": None,
    "HASH_IDS": True,
    "USER_INDEX": True,
    "USER_INDEX_METADATA": (),
    "MAX_SESSIONS_PER_USER": None,
    "CLIENT_IP": None,
    "MIGRATE_FROM": None,
    "ENCRYPTION": False,
    "ENCRYPTION_KEYS": [],
}


class Settings:
    """One property per ``SESSION_REDIS`` key, read from Django settings on access.

    Values are returned as configured; their validity is the system checks' job.
    """

    @property
    def raw(self) -> Mapping[str, Any]:
        value = getattr(django_settings, SETTING_NAME, None)
        return value if isinstance(value, Mapping) else {}

    def _get(self, name: str) -> Any:
        return self.raw.get(name, DEFAULTS[name])

    @property
    def URL(self) -> str:
        return str(self._get("URL"))

    @property
    def OPTIONS(self) -> dict[str, Any]:
        return dict(self._get("OPTIONS") or {})

    @property
    def CLUSTER(self) -> bool:
        return bool(self._get("CLUSTER"))

    @property
    def CLUSTER_NODES(self) -> list[tuple[str, int]]:
        """More nodes to learn the cluster's topology from, besides URL's."""
        return _addresses(self._get("CLUSTER_NODES"))

    @property
    def SENTINELS(self) -> list[tuple[str, int]]:
        return _addresses(self._get("SENTINELS"))

    @property
    def SENTINEL_SERVICE(self) -> str:
        return str(self._get("SENTINEL_SERVICE"))

    @property
    def CLIENT(self) -> str | None:
        value = self._get("CLIENT")
        return None if value is None else str(value)

    @property
    def PREFIX(self) -> str:
        return str(self._get("PREFIX"))

    @property
    def SCAN_COUNT(self) -> int:
        return int(self._get("SCAN_COUNT"))

    @property
    def TTL_SECONDS(self) -> int:
        # 0 or False: the store refuses data that carries no expiry of its own.
        return int(self._get("TTL_SECONDS") or 0)

    @property
    def TOMBSTONE_SECONDS(self) -> int:
        return int(self._get("TOMBSTONE_SECONDS"))

    @property
    def DISABLE_TOUCH(self) -> bool:
        return bool(self._get("DISABLE_TOUCH"))

    @property
    def SERIALIZER(self) -> str:
        value = self._get("SERIALIZER")
        return str(value) if value else str(django_settings.SESSION_SERIALIZER)

    @property
    def HASH_IDS(self) -> bool | str:
        """True, False, "prepare" or "migrate"."""
        value = self._get("HASH_IDS")
        return value if value in ("prepare", "migrate") else bool(value)

    @property
    def USER_INDEX(self) -> bool:
        return bool(self._get("USER_INDEX"))

    @property
    def USER_INDEX_METADATA(self) -> frozenset[str]:
        return frozenset(self._get("USER_INDEX_METADATA") or ())

    @property
    def MAX_SESSIONS_PER_USER(self) -> int | None:
        value = self._get("MAX_SESSIONS_PER_USER")
        return None if value is None else int(value)

    @property
    def CLIENT_IP(self) -> str | None:
        value = self._get("CLIENT_IP")
        return None if value is None else str(value)

    @property
    def MIGRATE_FROM(self) -> str | None:
        """The engine path sessions are moved from while the window is open."""
        value = self._get("MIGRATE_FROM")
        return str(value) if value else None

    @property
    def ENCRYPTION(self) -> bool | str:
        """False, True or "migrate" (plain values are still read)."""
        value = self._get("ENCRYPTION")
        return "migrate" if value == "migrate" else bool(value)

    @property
    def ENCRYPTION_KEYS(self) -> list[str | bytes]:
        """The server secrets: the first encrypts, every one decrypts."""
        keys: Sequence[str | bytes] = self._get("ENCRYPTION_KEYS") or []
        return list(keys)

    @property
    def SESSION_COOKIE_AGE(self) -> int:
        return int(django_settings.SESSION_COOKIE_AGE)


conf = Settings()


def _addresses(value: Sequence[Sequence[Any]] | None) -> list[tuple[str, int]]:
    return [(str(host), int(port)) for host, port in value or []]


def is_secret(name: str) -> bool:
    """Whether an argument or query parameter of this name may hold a password.

    Broader than redis-py's ``password``, so a misspelt one is hidden as well.
    """
    return "pass" in name.lower()


def redact_url(url: str) -> str:
    """``url`` without its password, in the user part or the query string.

    Split by hand rather than with ``urlsplit()``, which refuses some URLs (an
    unclosed "[") that an error message must still show. Everything up to the
    last "@" counts as credentials, so a password with an unescaped "/", "?"
    or "#" is hidden too.
    """
    location, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(is_secret(name) for name, _ in pairs):
        query = urlencode(
            [(name, value) for name, value in pairs if not is_secret(name)]
        )
    shown = f"{location}?{query}" if query else location
    scheme, slashes, rest = shown.partition("//")
    if not slashes:
        scheme, rest = "", shown
    userinfo, at, rest = rest.rpartition("@")
    if not at:
        return shown
    username = userinfo.partition(":")[0]
    if not username or set(username) & set("/?#@"):
        # No user name, or only the start of a mangled password.
        return f"{scheme}{slashes}{rest}"
    return f"{scheme}{slashes}{username}@{rest}"
