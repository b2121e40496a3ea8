"""Session data encrypted at rest (``SESSION_REDIS["ENCRYPTION"]``).

Hashed ids keep the cookie out of Redis; this keeps the data out too. Each
session has its own key, derived from its session key (the cookie, which Redis
never sees) and a server secret (``ENCRYPTION_KEYS``, which Redis never sees
either), so a full copy of Redis opens nothing, and neither does a leaked
secret without the cookie of the session::

    key   = HKDF-SHA256(ikm=session key, salt=server secret, info=INFO)
    value = VERSION (1) | fingerprint (4) | nonce (12) | AES-256-GCM(data) | tag (16)

The associated data is the header (version and fingerprint) and the session's
id, ``"#" + base64url(SHA-256(key))`` whatever ``HASH_IDS`` says, so a value
copied under another session, or given another header, does not open; the id
of a session does not change when ``rehash`` moves it. The fingerprint names
the server secret that sealed the value: the first of ``ENCRYPTION_KEYS``
seals, every one of them opens (rotation).

Nothing here sends a command or logs; ``payloads.py`` wires it into the codec
and turns a value that does not open into a corrupt session.
"""

from __future__ import annotations

import enum
import functools
import hmac
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from django.core.exceptions import ImproperlyConfigured

from django_redis_sessions.conf import conf
from django_redis_sessions.keys import hashed_id, is_hashed_id

#: The first byte of every encrypted value. No serializer's output starts with
#: it (JSON starts with "{", Django's signed values with a base64 character or
#: ".", pickle with 0x80), so in "migrate" mode it tells the two apart.
VERSION = b"\x01"
FINGERPRINT_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(VERSION) + FINGERPRINT_BYTES
#: Bytes an encrypted value has beyond its plain data.
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES

#: HKDF's info: keys for other purposes from the same inputs differ.
INFO = b"django_redis_sessions session key v1"
_FINGERPRINT_INFO = b"django_redis_sessions key fingerprint v1"

#: The shortest server secret accepted, in characters (or bytes).
MIN_SECRET_LENGTH = 32


class Opening(enum.Enum):
    """What became of a stored value on its way back to plain bytes."""

    #: Decrypted and authenticated.
    OPENED = "opened"
    #: Stored before encryption was turned on, read as is in "migrate" mode:
    #: the caller writes it again, encrypted.
    PLAIN = "plain"
    #: Stored unencrypted while ``ENCRYPTION`` is True: nothing vouches for it.
    NOT_ENCRYPTED = "not encrypted"
    #: Sealed with a server secret no longer in ``ENCRYPTION_KEYS``.
    UNKNOWN_KEY = "sealed with an unknown server key"
    #: Tampered with, truncated, copied from another session, or sealed
    #: under another session key: the tag does not match.
    FORGED = "does not authenticate"


class Opened(NamedTuple):
    """The outcome of ``Encryption.open()``; ``plaintext`` only if it opened."""

    state: Opening
    plaintext: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.plaintext is not None


class SessionKeyRequired(ValueError):
    """An encrypted session was asked for by its id, which cannot open it."""


def secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def fingerprint(secret: str | bytes) -> bytes:
    """Four bytes naming a server secret; they reveal nothing of it."""
    digest = hmac.digest(secret_bytes(secret), _FINGERPRINT_INFO, "sha256")
    return digest[:FINGERPRINT_BYTES]


def require_key(key: str) -> None:
    """Raise ``SessionKeyRequired`` if ``key`` is an id rather than a session key."""
    if is_hashed_id(key):
        raise SessionKeyRequired(
            f"The session {key!r} is encrypted with its session key "
            "(SESSION_REDIS['ENCRYPTION'] is on), and an id cannot encrypt or "
            "decrypt it: pass the session key, or use the methods that need no "
            "data (exists, ttl, touch, destroy, count, user_sessions)."
        )


def cryptography_missing() -> str | None:
    """Why the ``cryptography`` package cannot be used; None if it can."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: F401
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: F401
    except ImportError as error:
        return f"{type(error).__name__}: {error}"
    return None


class Encryption:
    """Seals and opens session values with the given server secrets.

    ``keys``: the server secrets, the first seals, all open. ``migrate``:
    values stored unencrypted are read (``Opening.PLAIN``) rather than
    refused. Thread-safe: besides the secrets it keeps only a cache of
    derived keys, and an ``AESGCM`` object may be shared.
    """

    def __init__(self, keys: Sequence[str | bytes], *, migrate: bool = False) -> None:
        if not keys:
            raise ImproperlyConfigured(
                "SESSION_REDIS['ENCRYPTION'] is on but SESSION_REDIS"
                "['ENCRYPTION_KEYS'] is empty; list at least one secret of "
                f"{MIN_SECRET_LENGTH} characters or more."
            )
        if (missing := cryptography_missing()) is not None:
            raise ImproperlyConfigured(
                "SESSION_REDIS['ENCRYPTION'] is on but the cryptography package "
                f"cannot be imported ({missing}); install "
                "django-redis-session-engine[encryption]."
            )
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        self._invalid_tag = InvalidTag
        self._sha256 = hashes.SHA256()
        self._hkdf = HKDF
        self._aesgcm = AESGCM
        self.migrate = migrate
        # A request derives its session's key at the load and again at the
        # save; HKDF was most of the cost. A few hundred sessions, so that a
        # bulk job's memory stays flat; the process holds the secrets and
        # sees the cookies anyway.
        self._cipher = functools.lru_cache(maxsize=256)(self._derive)
        secrets = [secret_bytes(secret) for secret in keys]
        self._header = VERSION + fingerprint(secrets[0])
        self._sealing = secrets[0]
        # Several secrets may share a fingerprint (one chance in 2**32 per
        # pair): each of them is tried.
        self._by_fingerprint: dict[bytes, list[bytes]] = {}
        for secret in secrets:
            self._by_fingerprint.setdefault(fingerprint(secret), []).append(secret)

    def _derive(self, session_key: str, secret: bytes) -> Any:
        derived = self._hkdf(
            algorithm=self._sha256, length=32, salt=secret, info=INFO
        ).derive(session_key.encode())
        return self._aesgcm(derived)

    def seal(self, plaintext: bytes, session_key: str) -> bytes:
        """``plaintext`` encrypted for the session of ``session_key``.

        A fresh random nonce each time, so the same data never seals to the
        same bytes twice. Raises ``SessionKeyRequired`` for an id.
        """
        require_key(session_key)
        nonce = os.urandom(NONCE_BYTES)
        header = self._header
        associated = header + hashed_id(session_key).encode()
        sealed = self._cipher(session_key, self._sealing).encrypt(
            nonce, plaintext, associated
        )
        return b"".join((header, nonce, sealed))

    def open(self, value: bytes, session_key: str) -> Opened:
        """The plain bytes sealed in ``value`` for ``session_key``, if they open.

        Never raises for a bad value: the outcome says what was wrong with it.
        Raises ``SessionKeyRequired`` for an id.
        """
        require_key(session_key)
        if value[:1] != VERSION:
            if self.migrate:
                return Opened(Opening.PLAIN, value)
            return Opened(Opening.NOT_ENCRYPTED)
        header = value[:HEADER_BYTES]
        secrets = self._by_fingerprint.get(header[len(VERSION) :])
        if not secrets:
            return Opened(Opening.UNKNOWN_KEY)
        if len(value) < OVERHEAD:
            return Opened(Opening.FORGED)
        nonce = value[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
        sealed = value[HEADER_BYTES + NONCE_BYTES :]
        associated = header + hashed_id(session_key).encode()
        for secret in secrets:
            try:
                plaintext = self._cipher(session_key, secret).decrypt(
                    nonce, sealed, associated
                )
            except self._invalid_tag:
                continue
            return Opened(Opening.OPENED, plaintext)
        return Opened(Opening.FORGED)

    @staticmethod
    def is_sealed(value: bytes) -> bool:
        """Whether ``value`` is encrypted (not whether it opens)."""
        return value[:1] == VERSION


def from_settings() -> Encryption | None:
    """The ``Encryption`` that ``SESSION_REDIS`` asks for; None when it is off."""
    mode = conf.ENCRYPTION
    if mode is False:
        return None
    return Encryption(conf.ENCRYPTION_KEYS, migrate=mode == "migrate")
