"""Session data and the bytes stored for it: serializing, expiry, corrupt data.

Nothing here sends a command. ``Payloads`` wraps the configured serializer;
``expiry_seconds`` turns Django's ``_session_expiry`` into a TTL the way
``SessionBase.get_expiry_age()`` does.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, NamedTuple

from django.core import signing
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string

from django_redis_sessions.conf import conf
from django_redis_sessions.encryption import Encryption, Opening, from_settings

SessionData = dict[str, Any]

EXPIRY_KEY = "_session_expiry"

#: ``Payloads``' default: encryption as ``SESSION_REDIS`` configures it.
_SETTINGS: Any = object()

security_logger = logging.getLogger("django.security.SuspiciousSession")


def expiry_seconds(
    data: SessionData, *, cookie_age: int, now: datetime | None = None
) -> float | None:
    """Seconds left according to the data's ``_session_expiry``, like Django.

    None when the data carries no expiry; ``0`` (expire at browser close)
    keeps the session for ``SESSION_COOKIE_AGE`` on the server. A date whose
    awareness differs from ``USE_TZ`` (written before the project switched it,
    or given to the store) is read as Django's ``DateTimeField`` reads one: a
    naive date is wall time in ``TIME_ZONE``, whatever time zone is active.
    """
    expiry = data.get(EXPIRY_KEY)
    if expiry is None:
        return None
    if not expiry:
        return float(cookie_age)
    if isinstance(expiry, str):
        expires_at = datetime.fromisoformat(expiry)
        if now is None:
            now = timezone.now()
        if timezone.is_naive(expires_at) != timezone.is_naive(now):
            expires_at, now = _aware(expires_at), _aware(now)
        return (expires_at - now).total_seconds()
    return float(expiry)


def _aware(moment: datetime) -> datetime:
    # Not the current time zone: a request may activate the user's, while a
    # naive expiry is TIME_ZONE wall time (timezone.now() without USE_TZ).
    if timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment, timezone.get_default_timezone())


def is_expired(data: SessionData, now: datetime | None = None) -> bool:
    """Whether an absolute ``_session_expiry`` has passed.

    Redis's TTL should have removed such a key already; if it did not (a TTL
    set by another writer, clock drift), the session is still over.
    """
    if not isinstance(data.get(EXPIRY_KEY), str):
        return False
    try:
        seconds = expiry_seconds(data, cookie_age=0, now=now)
    except ValueError:
        return True
    return seconds is not None and seconds <= 0


def log_corrupt(reason: str) -> None:
    # Django's own backends log tampered data on this logger; a payload this
    # store did not write is as suspicious.
    security_logger.warning("Session data corrupted: %s; treated as empty.", reason)


class CompactJSON:
    """Django's ``JSONSerializer``, byte for byte, with its encoder built once.

    ``json.dumps()`` with ``separators`` builds a new ``JSONEncoder`` on every
    call, which was a third of a save's own Python. The encoder keeps no state
    between calls, so one serves every thread. Loading goes straight to the
    decoder's scanner when the payload is one JSON document and nothing else,
    as every payload this store writes is; anything else (whitespace around
    it, extra data, an error) gets ``json.loads()``'s own answer.
    """

    _encode = json.JSONEncoder(separators=(",", ":")).encode
    _raw_decode = json.JSONDecoder().raw_decode

    def dumps(self, obj: Any) -> bytes:
        return self._encode(obj).encode("latin-1")

    def loads(self, data: bytes) -> Any:
        text = data.decode("latin-1")
        try:
            value, end = self._raw_decode(text)
            if end == len(text):
                return value
        except ValueError:
            pass
        return json.loads(text)


class Loaded(NamedTuple):
    """A session read back: its data and what a save compares it with."""

    data: SessionData
    #: The serialized data (decrypted): a save of data serializing to the
    #: same bytes only refreshes the TTL. Compared in plain, because an
    #: encrypted value never seals to the same bytes twice.
    plain: bytes
    #: Stored unencrypted while ``ENCRYPTION`` is "migrate": write it again.
    unencrypted: bool = False


class Payloads:
    """Session data to stored bytes and back: the serializer, then encryption.

    With ``SESSION_REDIS["ENCRYPTION"]`` on, each value is sealed for its
    session key (``encryption.py``), so every method that handles a value
    takes that key; given an id instead, they raise ``SessionKeyRequired``.
    Round trip: ``loads(dumps(data, key), key) == data``.
    """

    def __init__(self, serializer: Any = None, encryption: Any = _SETTINGS) -> None:
        if serializer is None:
            serializer_class = import_string(conf.SERIALIZER)
            if serializer_class is signing.JSONSerializer:
                serializer_class = CompactJSON
            serializer = serializer_class()
        self.serializer = serializer
        self.encryption: Encryption | None = (
            from_settings() if encryption is _SETTINGS else encryption
        )

    def serialize(self, data: SessionData) -> bytes:
        """The plain bytes of ``data``, before any encryption."""
        payload: bytes = self.serializer.dumps(data)
        return payload

    def seal(self, plain: bytes, key: str) -> bytes:
        """What to store for ``plain`` under the session key ``key``."""
        if self.encryption is None:
            return plain
        return self.encryption.seal(plain, key)

    def dumps(self, data: SessionData, key: str) -> bytes:
        """What to store for ``data`` under the session key ``key``."""
        plain: bytes = self.serializer.dumps(data)
        if self.encryption is None:
            return plain
        return self.encryption.seal(plain, key)

    def resealed(self, payload: bytes, key: str) -> bytes:
        """``payload`` encrypted for ``key`` if "migrate" mode still reads it plain.

        Anything else stays as it is: an encrypted value, and a plain value
        while ``ENCRYPTION`` is True, which nothing vouches for (sealing it
        would make a forged value trusted).
        """
        encryption = self.encryption
        if encryption is None or not encryption.migrate:
            return payload
        if encryption.is_sealed(payload):
            return payload
        return encryption.seal(payload, key)

    def load(self, payload: bytes | None, key: str) -> Loaded | None:
        """The session stored as ``payload`` under ``key``; None if absent, corrupt,
        foreign, over, or (with encryption) a value that does not open."""
        if payload is None:
            return None
        plain = payload
        unencrypted = False
        if self.encryption is not None:
            opened = self.encryption.open(payload, key)
            if opened.plaintext is None:
                log_corrupt(f"a stored session {opened.state.value}")
                return None
            plain = opened.plaintext
            unencrypted = opened.state is Opening.PLAIN
        data = self._decoded(plain)
        return None if data is None else Loaded(data, plain, unencrypted)

    def loads(self, payload: bytes | None, key: str) -> SessionData | None:
        """See load(): the data alone."""
        loaded = self.load(payload, key)
        return None if loaded is None else loaded.data

    def loads_without_key(self, payload: bytes | None) -> SessionData | None:
        """What can be read of a value without its session key (``all()``).

        Without encryption, ``loads()``. With it, an encrypted value is
        ``{}``: it cannot be opened, but the session is live. A plain value
        is read in "migrate" mode and refused otherwise, as ``load()`` does.
        """
        if payload is None:
            return None
        if self.encryption is None:
            return self._decoded(payload)
        if self.encryption.is_sealed(payload):
            return {}
        if not self.encryption.migrate:
            log_corrupt(f"a stored session {Opening.NOT_ENCRYPTED.value}")
            return None
        return self._decoded(payload)

    def _decoded(self, plain: bytes) -> SessionData | None:
        try:
            data = self.serializer.loads(plain)
        except Exception:
            data = None
        if not isinstance(data, dict):
            log_corrupt("a stored session could not be decoded")
            return None
        # Most sessions have no absolute expiry, and all() reads millions: for
        # them the check is skipped rather than called.
        if EXPIRY_KEY in data and is_expired(data):
            return None
        return data


_payloads: Payloads | None = None


def get_payloads() -> Payloads:
    """``Payloads`` with the configured serializer, shared by the process."""
    global _payloads
    if _payloads is None:
        _payloads = Payloads()
    return _payloads


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in {"SESSION_REDIS", "SESSION_SERIALIZER"}:
        global _payloads
        _payloads = None
