"""Session keys, the ids stored for them, and the Redis names that hold them.

A session key is the secret in the user's cookie. With ``HASH_IDS`` on (the
default) Redis never sees it: each session is stored under its **id**,
``"#" + base64url(SHA-256(key))`` without padding, so reading Redis (a
replica, a backup, ``MONITOR``) yields no usable cookie. ``#`` is outside
Django's key alphabet, so an id can never be mistaken for a key. With
``HASH_IDS`` False the id is the key itself.

Layout (one Redis Cluster slot per session, the id is the hash tag)::

    <PREFIX>{<id>}              the serialized session
    <PREFIX>{<id>}:tombstone    for TOMBSTONE_SECONDS after a destroy

A data name always ends in ``}`` and a tombstone never does, so ``SCAN MATCH
<PREFIX>{*}`` finds sessions and skips tombstones without reading a value.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

from django.contrib.sessions.backends.base import VALID_KEY_CHARS

TOMBSTONE_SUFFIX = ":tombstone"

#: The cookies looked up at all: what SessionBase generates (32 characters of
#: its alphabet), with room for keys of other engines moved here.
KEY_ALPHABET = frozenset(VALID_KEY_CHARS)
MIN_KEY_LENGTH = 8
MAX_KEY_LENGTH = 64

#: An id: "#" and 43 base64url characters, the unpadded SHA-256 of a key.
_ID = re.compile(r"#[A-Za-z0-9_-]{43}")


@functools.lru_cache(maxsize=256)
def hashed_id(key: str) -> str:
    """The id stored for ``key`` when ids are hashed.

    Plain SHA-256, not an HMAC of ``SECRET_KEY``: rotating the secret must not
    log anyone out, and a 32-character random key is beyond guessing anyway.
    Memoized for the sessions in use (a request hashes its key at the load
    and again at the save); a few hundred, so that a bulk job's memory stays
    flat.
    """
    digest = hashlib.sha256(key.encode()).digest()
    return "#" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def is_hashed_id(text: str) -> bool:
    return text[:1] == "#" and _ID.fullmatch(text) is not None


def are_hashed_ids(texts: list[str]) -> bool:
    """Whether every text is an id, checked in one loop of C (a bulk batch)."""
    return all(map(_ID.fullmatch, texts))


def is_cookie_key(key: object) -> bool:
    """Whether the backend looks ``key`` up at all: a key SessionBase could make.

    Never an id ("#..." is outside the alphabet), so a leaked id is no cookie.
    Every request asks, so the alphabet (``VALID_KEY_CHARS``: a-z and 0-9) is
    checked with three C loops over the string instead of a set of its
    characters, a tenth of the cost; a test holds the two to agree.
    """
    return (
        isinstance(key, str)
        and MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH
        and key.isascii()
        and key.isalnum()
        # No upper case letter: lower case ones only, or no letter at all.
        and (key.islower() or key.isdigit())
    )


def is_valid_key(key: object) -> bool:
    """Whether ``key`` can name a session: a non-empty, UTF-8 encodable string.

    A key starting with ``}`` would leave the hash tag empty, so Redis Cluster
    would hash the data and the tombstone to different slots.
    """
    if not isinstance(key, str) or not key or key.startswith("}"):
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` can name a session."""
    if not is_valid_key(key):
        raise ValueError(
            f"{key!r} cannot name a session: a session key is a non-empty, "
            "UTF-8 encodable string that does not start with '}'."
        )


def data_key(prefix: str, key: str) -> str:
    return f"{prefix}{{{key}}}"


def tombstone_key(prefix: str, key: str) -> str:
    return f"{prefix}{{{key}}}{TOMBSTONE_SUFFIX}"


def session_key_from(prefix: str, name: bytes) -> str:
    """The session key inside a data name found by SCAN."""
    return name.decode()[len(prefix) + 1 : -1]


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def scan_pattern(prefix: str) -> str:
    """What ``SCAN MATCH`` finds every data name of ``prefix`` with."""
    return glob_escape(prefix) + "{*}"


def session_names(names: list[bytes]) -> list[bytes]:
    """``names`` without those that are not UTF-8, which no session has.

    Joined with NUL, the batch decodes in one C call exactly when every name
    does (a NUL can neither end nor continue a multi-byte character).
    """
    try:
        b"\x00".join(names).decode()
    except UnicodeDecodeError:
        return [name for name in names if _is_utf8(name)]
    return names


def _is_utf8(name: bytes) -> bool:
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True


def user_index_key(prefix: str, user_id: str) -> str:
    """The name of the index of ``user_id``'s sessions.

    The user id is base64url-encoded inside the hash tag, so any id (with
    braces, colons, anything) makes a valid tag, one slot per user. The name
    ends in ``:sessions``, so the session pattern ``PREFIX{*}`` never sees it.
    """
    encoded = base64.urlsafe_b64encode(user_id.encode()).rstrip(b"=").decode()
    return f"{prefix}{{u:{encoded}}}:sessions"


def user_index_pattern(prefix: str) -> str:
    """What ``SCAN MATCH`` finds every user's index of ``prefix`` with.

    By name, not by type: whatever Redis type an index has, one name per user
    ends in ``:sessions``, and no session id holds a ``:`` to look like one.
    """
    return glob_escape(prefix) + "{u:*}:sessions"
