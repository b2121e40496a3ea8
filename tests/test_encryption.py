"""Sessions encrypted at rest: a full copy of Redis holds no session data."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.cluster
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends import db
from django.core.management import call_command
from django.test import AsyncClient, Client
from django.utils import timezone

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.checks import check_settings
from django_redis_sessions.encryption import (
    FINGERPRINT_BYTES,
    OVERHEAD,
    VERSION,
    Encryption,
    Opening,
    SessionKeyRequired,
    fingerprint,
)
from django_redis_sessions.keys import data_key, glob_escape, hashed_id
from django_redis_sessions.payloads import Payloads
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import CommandLog
from tests.utils import (
    Monitor,
    ReplyDroppingProxy,
    everything_in,
    load_scripts,
    measure_repeating_names,
    needs_async_backend,
    redis_sessions,
)

KEY = "abcdefgh12345678abcdefgh12345678"
OTHER = "zyxwvuts87654321zyxwvuts87654321"
OLD_SECRET = "old-secret-0123456789-0123456789-0123456789"
NEW_SECRET = "new-secret-0123456789-0123456789-0123456789"
#: What the tests put in sessions, and look for where it must not be.
MARKER = "marker-5f3c1e0a-in-the-session"
CORRUPT_LOGGER = "django.security.SuspiciousSession"


def encryption_config(
    base: dict[str, Any], mode: bool | str = True, *keys: str
) -> dict[str, Any]:
    return {
        **base,
        "HASH_IDS": True,
        "ENCRYPTION": mode,
        "ENCRYPTION_KEYS": list(keys or (NEW_SECRET,)),
    }


@pytest.fixture
def encrypted(session_redis: dict[str, Any], settings: Any) -> dict[str, Any]:
    settings.SESSION_REDIS = encryption_config(session_redis)
    return dict(settings.SESSION_REDIS)


def stored(raw: Any, prefix: str, key: str) -> bytes:
    value = raw.get(data_key(prefix, hashed_id(key)))
    assert isinstance(value, bytes), "no session is stored under the key"
    return value


def saved(call: Any, **data: Any) -> str:
    session = SessionStore()
    session.update(data)
    call(session, "save")
    assert session.session_key is not None
    return session.session_key


# --- The codec ----------------------------------------------------------------


def test_a_sealed_value_opens_with_its_session_key_and_names_its_server_key() -> None:
    encryption = Encryption([NEW_SECRET, OLD_SECRET])
    sealed = encryption.seal(b'{"a":1}', KEY)
    assert sealed[:1] == VERSION
    assert sealed[1 : 1 + FINGERPRINT_BYTES] == fingerprint(NEW_SECRET)
    assert len(sealed) == len(b'{"a":1}') + OVERHEAD
    assert b'"a"' not in sealed
    assert encryption.open(sealed, KEY) == (Opening.OPENED, b'{"a":1}')


def test_the_value_is_the_documented_layout_computed_independently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    nonce = bytes(range(12))
    monkeypatch.setattr("os.urandom", lambda size: nonce[:size])
    sealed = Encryption([NEW_SECRET]).seal(b'{"a":1}', KEY)
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=NEW_SECRET.encode(),
        info=b"django_redis_sessions session key v1",
    ).derive(KEY.encode())
    header = b"\x01" + fingerprint(NEW_SECRET)
    associated = header + hashed_id(KEY).encode()
    expected = AESGCM(derived).encrypt(nonce, b'{"a":1}', associated)
    assert sealed == header + nonce + expected


def test_the_same_data_never_seals_to_the_same_bytes() -> None:
    encryption = Encryption([NEW_SECRET])
    values = {encryption.seal(b"{}", KEY) for _ in range(50)}
    assert len(values) == 50


@pytest.mark.parametrize(
    ("position", "state"),
    [
        (0, Opening.NOT_ENCRYPTED),  # the version byte
        (1, Opening.UNKNOWN_KEY),  # the fingerprint
        (5, Opening.FORGED),  # the nonce
        (17, Opening.FORGED),  # the ciphertext
        (-1, Opening.FORGED),  # the tag
    ],
    ids=["version", "fingerprint", "nonce", "ciphertext", "tag"],
)
def test_a_value_changed_anywhere_does_not_open(position: int, state: Opening) -> None:
    encryption = Encryption([NEW_SECRET])
    sealed = bytearray(encryption.seal(b'{"a":1}', KEY))
    sealed[position] ^= 0x01
    assert encryption.open(bytes(sealed), KEY) == (state, None)


@pytest.mark.parametrize("length", [0, 1, 5, 17, OVERHEAD - 1, OVERHEAD + 6])
def test_a_truncated_value_does_not_open(length: int) -> None:
    encryption = Encryption([NEW_SECRET])
    sealed = encryption.seal(b'{"a":1}', KEY)[:length]
    assert not encryption.open(sealed, KEY).ok


def test_a_value_of_one_session_does_not_open_as_another() -> None:
    encryption = Encryption([NEW_SECRET])
    sealed = encryption.seal(b'{"a":1}', KEY)
    assert encryption.open(sealed, OTHER) == (Opening.FORGED, None)


def test_a_value_sealed_with_an_unknown_server_key_does_not_open() -> None:
    sealed = Encryption([OLD_SECRET]).seal(b'{"a":1}', KEY)
    assert Encryption([NEW_SECRET]).open(sealed, KEY) == (Opening.UNKNOWN_KEY, None)


def test_plain_values_are_read_only_in_migrate_mode() -> None:
    assert Encryption([NEW_SECRET]).open(b'{"a":1}', KEY) == (
        Opening.NOT_ENCRYPTED,
        None,
    )
    migrating = Encryption([NEW_SECRET], migrate=True)
    assert migrating.open(b'{"a":1}', KEY) == (Opening.PLAIN, b'{"a":1}')


def test_an_id_cannot_seal_or_open() -> None:
    encryption = Encryption([NEW_SECRET])
    sealed = encryption.seal(b"{}", KEY)
    with pytest.raises(SessionKeyRequired, match=r"SESSION_REDIS\['ENCRYPTION'\]"):
        encryption.seal(b"{}", hashed_id(KEY))
    with pytest.raises(SessionKeyRequired):
        encryption.open(sealed, hashed_id(KEY))


def test_payloads_round_trip_through_the_serializer_and_the_cipher() -> None:
    payloads = Payloads(encryption=Encryption([NEW_SECRET]))
    data = {"a": [1, "é"], "b": {"c": None}}
    assert payloads.loads(payloads.dumps(data, KEY), KEY) == data
    assert payloads.loads(payloads.dumps(data, KEY), OTHER) is None


# --- The backend --------------------------------------------------------------


def test_a_session_is_stored_encrypted_and_loads_back(
    encrypted: dict[str, Any], raw_redis: redis.Redis, prefix: str, call: Any
) -> None:
    key = saved(call, note=MARKER, n=1)
    value = stored(raw_redis, prefix, key)
    assert value[:1] == VERSION
    assert MARKER.encode() not in value
    session = SessionStore(key)
    assert call(session, "load") == {"note": MARKER, "n": 1}


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_an_unmodified_encrypted_session_saves_as_one_pexpire(
    encrypted: dict[str, Any], settings: Any, mode: str, raw_redis: redis.Redis
) -> None:
    # Counted commands see no SCRIPT LOAD, whichever test ran first.
    load_scripts(raw_redis)
    log = CommandLog()
    connection_class: type[Any] = log.connection_class
    if mode == "async":
        connection_class = log.async_connection_class

    async def asynchronous(target: Any, name: str, *args: Any) -> Any:
        return await getattr(target, "a" + name)(*args)

    # One event loop for the whole test, so the client connects once.
    loop = asyncio.new_event_loop()

    def call(target: Any, name: str, *args: Any) -> Any:
        if mode == "sync":
            return getattr(target, name)(*args)
        return loop.run_until_complete(asynchronous(target, name, *args))

    key = saved(call, note=MARKER)
    settings.SESSION_REDIS = {
        **encrypted,
        "OPTIONS": {"connection_class": connection_class},
    }
    session = SessionStore(key)
    assert call(session, "get", "note") == MARKER
    log.take()
    call(session, "save")
    assert log.take() == ["PEXPIRE"]
    call(session, "setdefault", "other", 1)
    call(session, "save")
    assert log.take() == ["EVALSHA"]
    assert call(SessionStore(key), "load") == {"note": MARKER, "other": 1}
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.mark.parametrize(
    "damage",
    ["tamper", "swap", "truncate", "plain"],
)
def test_a_value_that_does_not_open_reads_as_an_empty_session_with_one_log_line(
    encrypted: dict[str, Any],
    raw_redis: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    key = saved(lambda target, name: getattr(target, name)(), note=MARKER)
    other = saved(lambda target, name: getattr(target, name)(), note="other")
    name = data_key(prefix, hashed_id(key))
    value = bytearray(stored(raw_redis, prefix, key))
    if damage == "tamper":
        value[-20] ^= 0x01
    elif damage == "swap":
        value = bytearray(stored(raw_redis, prefix, other))
    elif damage == "truncate":
        value = value[:20]
    else:
        value = bytearray(b'{"note":"forged"}')
    raw_redis.set(name, bytes(value), keepttl=True)
    caplog.set_level(logging.WARNING)
    session = SessionStore(key)
    assert session.load() == {}
    assert session.session_key is None
    records = [r for r in caplog.records if r.name == CORRUPT_LOGGER]
    assert len(records) == 1
    assert key not in records[0].getMessage()
    assert hashed_id(key) not in records[0].getMessage()


def test_a_request_with_a_tampered_session_gets_a_fresh_one_not_an_error(
    encrypted: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    client = Client()
    assert client.get(f"/note/?text={MARKER}").content == MARKER.encode()
    key = client.cookies["sessionid"].value
    name = data_key(prefix, hashed_id(key))
    value = bytearray(stored(raw_redis, prefix, key))
    value[-1] ^= 0x01
    raw_redis.set(name, bytes(value), keepttl=True)
    response = client.get("/read/")
    assert response.status_code == 200
    assert response.content == b"0"


def test_a_key_change_reseals_the_data_for_the_new_key(
    encrypted: dict[str, Any], raw_redis: redis.Redis, prefix: str, call: Any
) -> None:
    key = saved(call, note=MARKER)
    session = SessionStore(key)
    call(session, "load")
    call(session, "cycle_key")
    new_key = session.session_key
    assert new_key not in (None, key)
    assert call(SessionStore(new_key), "load") == {"note": MARKER}
    assert MARKER.encode() not in stored(raw_redis, prefix, new_key)


def test_rotation_old_key_reads_new_key_writes_then_the_old_key_can_go(
    session_redis: dict[str, Any],
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
    call: Any,
) -> None:
    settings.SESSION_REDIS = encryption_config(session_redis, True, OLD_SECRET)
    key = saved(call, note=MARKER)
    assert stored(raw_redis, prefix, key)[1:5] == fingerprint(OLD_SECRET)
    settings.SESSION_REDIS = encryption_config(
        session_redis, True, NEW_SECRET, OLD_SECRET
    )
    session = SessionStore(key)
    assert call(session, "load") == {"note": MARKER}
    session["n"] = 1
    call(session, "save")
    assert stored(raw_redis, prefix, key)[1:5] == fingerprint(NEW_SECRET)
    settings.SESSION_REDIS = encryption_config(session_redis, True, NEW_SECRET)
    assert call(SessionStore(key), "load") == {"note": MARKER, "n": 1}


def test_a_session_sealed_with_a_removed_key_is_logged_out(
    session_redis: dict[str, Any],
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    call: Any,
) -> None:
    settings.SESSION_REDIS = encryption_config(session_redis, True, OLD_SECRET)
    key = saved(call, note=MARKER)
    settings.SESSION_REDIS = encryption_config(session_redis, True, NEW_SECRET)
    caplog.set_level(logging.WARNING)
    assert call(SessionStore(key), "load") == {}
    assert [r.name for r in caplog.records] == [CORRUPT_LOGGER]
    assert "unknown server key" in caplog.records[0].getMessage()


def test_migrate_mode_reads_plain_sessions_and_writes_them_encrypted(
    session_redis: dict[str, Any],
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
    call: Any,
) -> None:
    settings.SESSION_REDIS = {**session_redis, "HASH_IDS": True}
    plain_key = saved(call, note=MARKER)
    assert MARKER.encode() in stored(raw_redis, prefix, plain_key)
    settings.SESSION_REDIS = encryption_config(session_redis, "migrate")
    sealed_key = saved(call, note="sealed")
    assert stored(raw_redis, prefix, sealed_key)[:1] == VERSION
    # Both kinds side by side: each loads.
    assert call(SessionStore(sealed_key), "load") == {"note": "sealed"}
    session = SessionStore(plain_key)
    assert call(session, "load") == {"note": MARKER}
    # An unmodified save writes a plain session again, encrypted.
    call(session, "save")
    value = stored(raw_redis, prefix, plain_key)
    assert value[:1] == VERSION
    assert MARKER.encode() not in value
    assert call(SessionStore(plain_key), "load") == {"note": MARKER}
    # Once every session is encrypted, ENCRYPTION True reads them all.
    settings.SESSION_REDIS = encryption_config(session_redis, True)
    assert call(SessionStore(plain_key), "load") == {"note": MARKER}


def test_with_encryption_on_a_plain_value_is_not_trusted(
    session_redis: dict[str, Any],
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    call: Any,
) -> None:
    settings.SESSION_REDIS = {**session_redis, "HASH_IDS": True}
    key = saved(call, _auth_user_id="1")
    settings.SESSION_REDIS = encryption_config(session_redis, True)
    caplog.set_level(logging.WARNING)
    assert call(SessionStore(key), "load") == {}
    assert [r.name for r in caplog.records] == [CORRUPT_LOGGER]


def test_a_session_moved_to_its_id_by_hash_ids_migrate_still_opens(
    session_redis: dict[str, Any],
    settings: Any,
    raw_redis: redis.Redis,
    prefix: str,
) -> None:
    settings.SESSION_REDIS = encryption_config(session_redis, True)
    sealed = RedisSessionStore()._payloads.dumps({"note": MARKER}, KEY)
    # As an engine that kept plain keys would have left it, already sealed.
    raw_redis.set(data_key(prefix, KEY), sealed, px=60_000)
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "HASH_IDS": "migrate"}
    assert SessionStore(KEY).load() == {"note": MARKER}
    assert raw_redis.exists(data_key(prefix, hashed_id(KEY))) == 1


@pytest.mark.django_db
def test_an_8_character_key_moved_from_another_engine_is_stored_encrypted(
    encrypted: dict[str, Any], settings: Any, raw_redis: redis.Redis, prefix: str
) -> None:
    short = "abcd1234"
    # Django's own engines make 32 characters; older ones and others made 8.
    source = db.SessionStore()
    source.get_model_class().objects.create(
        session_key=short,
        session_data=source.encode({"note": MARKER}),
        expire_date=timezone.now() + timedelta(hours=1),
    )
    settings.SESSION_REDIS = {
        **encrypted,
        "MIGRATE_FROM": "django.contrib.sessions.backends.db",
    }
    assert SessionStore(short).load() == {"note": MARKER}
    value = stored(raw_redis, prefix, short)
    assert value[:1] == VERSION
    assert MARKER.encode() not in value
    assert SessionStore(short).load() == {"note": MARKER}


@pytest.mark.django_db
def test_import_writes_encrypted_values(
    encrypted: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    source = db.SessionStore()
    source["note"] = MARKER
    source.save(must_create=True)
    key = source.session_key
    assert key is not None
    redis_sessions("import", "--from", "django.contrib.sessions.backends.db")
    value = stored(raw_redis, prefix, key)
    assert value[:1] == VERSION
    assert MARKER.encode() not in value
    assert SessionStore(key).load() == {"note": MARKER}


# --- The store ----------------------------------------------------------------


def test_the_store_needs_the_session_key_for_data_and_not_for_the_rest(
    encrypted: dict[str, Any], settings: Any, call: Any
) -> None:
    store = RedisSessionStore()
    session_id = store.session_id(KEY)
    assert call(store, "create", KEY, {"note": MARKER}, ttl=60) is True
    assert call(store, "get", KEY) == {"note": MARKER}
    for method, args in (
        ("get", ()),
        ("set", ({"a": 1},)),
        ("create", ({"a": 1},)),
        ("update", ({"a": 1},)),
        # With the user index on, a touch reads the session's user.
        ("touch", ()),
    ):
        with pytest.raises(SessionKeyRequired, match=session_id):
            call(store, method, session_id, *args, **({"ttl": 60} if args else {}))
    assert call(store, "get", KEY) == {"note": MARKER}
    assert call(store, "exists", session_id) is True
    assert call(store, "touch", KEY, 120) is True
    assert 60 < call(store, "ttl", session_id) <= 120
    settings.SESSION_REDIS = {**encrypted, "USER_INDEX": False}
    assert call(RedisSessionStore(), "touch", session_id, 180) is True
    assert 120 < call(store, "ttl", session_id) <= 180
    assert list(store.all()) == [(session_id, {})]
    assert call(store, "destroy", session_id) is True
    assert call(store, "get", KEY) is None


def test_all_yields_the_data_of_sessions_still_plain_in_migrate_mode(
    session_redis: dict[str, Any], settings: Any
) -> None:
    settings.SESSION_REDIS = {**session_redis, "HASH_IDS": True}
    RedisSessionStore().create(OTHER, {"plain": True}, ttl=60)
    settings.SESSION_REDIS = encryption_config(session_redis, "migrate")
    store = RedisSessionStore()
    store.create(KEY, {"sealed": True}, ttl=60)
    assert dict(store.all()) == {
        store.session_id(OTHER): {"plain": True},
        store.session_id(KEY): {},
    }


def test_show_says_the_payload_is_encrypted_and_decodes_only_with_the_key(
    encrypted: dict[str, Any],
) -> None:
    store = RedisSessionStore()
    store.create(KEY, {"note": MARKER, "_auth_user_id": "7"}, ttl=60)
    by_id = redis_sessions("show", store.session_id(KEY), "--decode")
    assert "  encrypted; only the session key opens it\n" in by_id
    # The user comes from the index, which lists the session under its user.
    assert re.search(r"^user: +7 \(from the index\)$", by_id, re.MULTILINE)
    assert MARKER not in by_id
    anonymous = "b" * 32
    store.create(anonymous, {"note": MARKER}, ttl=60)
    by_id = redis_sessions("show", store.session_id(anonymous))
    assert "  unknown (the payload is encrypted: give the session key)\n" in by_id
    by_key = redis_sessions("show", KEY, "--decode")
    assert MARKER in by_key
    assert re.search(r"^user: +7$", by_key, re.MULTILINE)
    assert KEY not in by_key


# --- No session data anywhere in Redis ----------------------------------------


def assert_nowhere(markers: set[str], found: list[bytes], monitor: Monitor) -> None:
    assert markers
    for marker in markers:
        assert not [item for item in found if marker.encode() in item], marker
        assert not [line for line in monitor.commands if marker in line], marker
    # The monitor saw the requests: an empty log would prove nothing.
    assert any("EVALSHA" in line for line in monitor.commands)


def session_secrets(user: Any) -> set[str]:
    """What a logged-in session holds besides the marker, as stored."""
    return {
        MARKER,
        user.get_session_auth_hash(),
        "django.contrib.auth.backends.ModelBackend",
    }


@pytest.mark.django_db
def test_logins_writes_and_logouts_leave_no_session_data_in_redis(
    encrypted: dict[str, Any], redis_url: str, raw_redis: redis.Redis
) -> None:
    user = get_user_model().objects.create_user("alice", password="x")
    with Monitor(redis_url) as monitor:
        for _ in range(2):
            client = Client()
            assert client.get(f"/note/?text={MARKER}").status_code == 200
            assert client.get(f"/login/?id={user.pk}").content == b"in"
            assert client.get("/write/").content == b"1"
            assert client.get("/read/").content == b"1"
        assert client.get("/logout/").content == b"out"
        assert client.get(f"/note/?text={MARKER}").status_code == 200
    assert_nowhere(session_secrets(user), everything_in(raw_redis), monitor)


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_the_asyncio_path_leaves_no_session_data_in_redis(
    encrypted: dict[str, Any], redis_url: str, raw_redis: redis.Redis
) -> None:
    user = get_user_model().objects.create_user("bob", password="x")

    async def visit() -> None:
        for _ in range(2):
            client = AsyncClient()
            assert (await client.get(f"/async-note/?text={MARKER}")).status_code == 200
            assert (await client.get(f"/async-login/?id={user.pk}")).content == b"in"
            assert (await client.get("/async-write/")).content == b"1"
        assert (await client.get("/async-logout/")).content == b"out"
        assert (await client.get(f"/async-note/?text={MARKER}")).status_code == 200

    with Monitor(redis_url) as monitor:
        asyncio.run(visit())
    assert_nowhere(session_secrets(user), everything_in(raw_redis), monitor)


def cluster_everything(cluster: redis.cluster.RedisCluster) -> list[bytes]:
    found: list[bytes] = []
    for node in cluster.get_primaries():
        found += everything_in(cluster.get_redis_connection(node))
    return found


@pytest.mark.django_db
def test_on_cluster_sessions_are_encrypted_and_a_login_keeps_its_data(
    cluster: redis.cluster.RedisCluster, settings: Any, prefix: str, call: Any
) -> None:
    settings.SESSION_REDIS = encryption_config(settings.SESSION_REDIS, True)
    user = get_user_model().objects.create_user("carol", password="x")
    key = saved(call, note=MARKER)
    session = SessionStore(key)
    call(session, "load")
    session["_auth_user_id"] = str(user.pk)
    call(session, "cycle_key")
    call(session, "save")
    new_key = session.session_key
    assert new_key is not None
    assert call(SessionStore(new_key), "load") == {
        "note": MARKER,
        "_auth_user_id": str(user.pk),
    }
    assert [session.id for session in RedisSessionStore().user_sessions(user.pk)] == [
        hashed_id(new_key)
    ]
    found = cluster_everything(cluster)
    assert stored(cluster, prefix, new_key)[:1] == VERSION
    assert not [item for item in found if MARKER.encode() in item]
    assert not [item for item in found if new_key.encode() in item]


# --- Checks -------------------------------------------------------------------


def check_ids(settings: Any, **config: Any) -> list[str | None]:
    settings.SESSION_REDIS = {"HASH_IDS": True, **config}
    return [error.id for error in check_settings(None)]


def test_encryption_configured_right_passes_the_checks(settings: Any) -> None:
    assert check_ids(settings) == []
    assert check_ids(settings, ENCRYPTION=False, ENCRYPTION_KEYS=[]) == []
    for mode in (True, "migrate"):
        assert check_ids(settings, ENCRYPTION=mode, ENCRYPTION_KEYS=[NEW_SECRET]) == []
    keys = [NEW_SECRET.encode(), OLD_SECRET]
    assert check_ids(settings, ENCRYPTION=True, ENCRYPTION_KEYS=keys) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"ENCRYPTION": "yes"}, ["E101"]),
        ({"ENCRYPTION": 1}, ["E101"]),
        ({"ENCRYPTION": True}, ["E103"]),
        ({"ENCRYPTION": True, "ENCRYPTION_KEYS": []}, ["E103"]),
        ({"ENCRYPTION": True, "ENCRYPTION_KEYS": NEW_SECRET}, ["E103"]),
        ({"ENCRYPTION": True, "ENCRYPTION_KEYS": ["x" * 31]}, ["E104"]),
        ({"ENCRYPTION": True, "ENCRYPTION_KEYS": [NEW_SECRET, 42]}, ["E104"]),
        # Checked while off too: turning encryption on is no time to find out.
        ({"ENCRYPTION": False, "ENCRYPTION_KEYS": ["x" * 31]}, ["E104"]),
        (
            {
                "ENCRYPTION": "migrate",
                "ENCRYPTION_KEYS": [NEW_SECRET],
                "HASH_IDS": False,
            },
            ["E106"],
        ),
    ],
    ids=[
        "mode",
        "mode-1",
        "no-keys",
        "empty",
        "a-string",
        "short",
        "not-str",
        "short-while-off",
        "plain-ids",
    ],
)
def test_encryption_misconfigured_fails_the_checks(
    settings: Any, config: dict[str, Any], expected: list[str]
) -> None:
    ids = check_ids(settings, **config)
    assert ids == [f"django_redis_sessions.{code}" for code in expected]


def test_a_secret_key_used_for_encryption_fails_the_checks(settings: Any) -> None:
    settings.SECRET_KEY = "s" * 50
    settings.SECRET_KEY_FALLBACKS = ["f" * 50]
    for secret in ("s" * 50, "f" * 50, ("s" * 50).encode()):
        ids = check_ids(settings, ENCRYPTION=True, ENCRYPTION_KEYS=[NEW_SECRET, secret])
        assert ids == ["django_redis_sessions.E105"]


def test_encryption_without_cryptography_fails_the_checks(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None
    )
    ids = check_ids(settings, ENCRYPTION=True, ENCRYPTION_KEYS=[NEW_SECRET])
    assert ids == ["django_redis_sessions.E102"]


def test_no_check_message_shows_a_secret(settings: Any) -> None:
    settings.SECRET_KEY = NEW_SECRET
    settings.SESSION_REDIS = {
        "ENCRYPTION": True,
        "ENCRYPTION_KEYS": [NEW_SECRET, "short-secret"],
        "HASH_IDS": False,
    }
    errors = check_settings(None)
    assert len(errors) == 3
    for error in errors:
        assert NEW_SECRET not in f"{error.msg} {error.hint}"
        assert "short-secret" not in f"{error.msg} {error.hint}"


def test_manage_py_check_reports_the_encryption_checks(settings: Any) -> None:
    settings.SESSION_REDIS = {"ENCRYPTION": True, "ENCRYPTION_KEYS": ["short"]}
    from django.core.management.base import SystemCheckError

    with pytest.raises(SystemCheckError, match=r"django_redis_sessions\.E104"):
        call_command("check")


def test_stats_counts_the_sessions_still_stored_unencrypted(
    session_redis: dict[str, Any], settings: Any
) -> None:
    settings.SESSION_REDIS = {**session_redis, "HASH_IDS": True}
    RedisSessionStore().create(OTHER, {"plain": True}, ttl=60)
    figures = json.loads(redis_sessions("stats", "--json"))
    assert figures["live_sessions"] == 1
    assert figures["unencrypted"] is None  # encryption off: not counted
    settings.SESSION_REDIS = encryption_config(session_redis, "migrate")
    RedisSessionStore().create(KEY, {"sealed": True}, ttl=60)
    figures = json.loads(redis_sessions("stats", "--json"))
    assert (figures["live_sessions"], figures["unencrypted"]) == (2, 1)
    assert re.search(r"Not encrypted yet: +1$", redis_sessions("stats"), re.MULTILINE)
    # Its next save encrypts it.
    session = SessionStore(OTHER)
    session["n"] = 1
    session.save()
    figures = json.loads(redis_sessions("stats", "--json"))
    assert (figures["live_sessions"], figures["unencrypted"]) == (2, 0)


def test_stats_counts_unencrypted_sessions_on_every_cluster_primary(
    cluster: redis.cluster.RedisCluster, settings: Any
) -> None:
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "HASH_IDS": True}
    plain = [f"plain{index:03d}aaaaaaaaaaaaaaaaaaaaaaa" for index in range(12)]
    for key in plain:
        RedisSessionStore().create(key, {"plain": True}, ttl=60)
    settings.SESSION_REDIS = encryption_config(settings.SESSION_REDIS, "migrate")
    for index in range(7):
        key = f"sealed{index:03d}aaaaaaaaaaaaaaaaaaaaaa"
        RedisSessionStore().create(key, {"sealed": True}, ttl=60)
    figures = json.loads(redis_sessions("stats", "--json"))
    assert (figures["live_sessions"], figures["unencrypted"]) == (19, 12)
    assert len(figures["primaries"]) == 3


def test_stats_counts_a_session_scan_repeats_once_as_encrypted_or_not(
    session_redis: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SESSION_REDIS = {**session_redis, "HASH_IDS": True}
    for index in range(5):
        RedisSessionStore().create(f"plain{index:03d}" + "a" * 24, {}, ttl=60)
    settings.SESSION_REDIS = encryption_config(session_redis, "migrate")
    for index in range(6):
        RedisSessionStore().create(f"seal{index:03d}" + "a" * 25, {}, ttl=60)
    pages = measure_repeating_names(monkeypatch)
    figures = json.loads(redis_sessions("stats", "--json", "--scan-count", "3"))
    assert pages, "no batch named a session"
    assert (figures["live_sessions"], figures["unencrypted"]) == (11, 5)


@pytest.mark.parametrize("server", ["one", "cluster"])
def test_rehash_encrypts_the_plain_sessions_it_moves_in_migrate_mode(
    server: str,
    request: pytest.FixtureRequest,
    session_redis: dict[str, Any],
    raw_redis: redis.Redis,
    settings: Any,
    prefix: str,
) -> None:
    raw: Any = raw_redis
    if server == "cluster":
        raw = request.getfixturevalue("cluster")
    base = dict(settings.SESSION_REDIS)
    keys = [f"rehash{index:03d}" + "k" * 23 for index in range(5)]
    settings.SESSION_REDIS = {**base, "HASH_IDS": False}
    for key in keys[:3]:
        RedisSessionStore().create(key, {"note": MARKER}, ttl=60)
    settings.SESSION_REDIS = encryption_config(base, "migrate", NEW_SECRET)
    settings.SESSION_REDIS["HASH_IDS"] = False
    for key in keys[3:]:  # sealed already, under their plain key
        RedisSessionStore().create(key, {"note": MARKER}, ttl=60)
    settings.SESSION_REDIS["HASH_IDS"] = "migrate"
    assert redis_sessions("rehash") == "Moved 5 sessions to their ids.\n"
    for key in keys:
        assert raw.exists(data_key(prefix, key)) == 0
        value = stored(raw, prefix, key)
        assert value[:1] == VERSION
        assert MARKER.encode() not in value
        assert SessionStore(key).load() == {"note": MARKER}


def test_only_migrate_mode_reseals_a_plain_value() -> None:
    migrating = Payloads(encryption=Encryption([NEW_SECRET], migrate=True))
    sealed = migrating.resealed(b'{"a":1}', KEY)
    assert migrating.loads(sealed, KEY) == {"a": 1}
    assert migrating.resealed(sealed, KEY) == sealed
    # With ENCRYPTION True nothing vouches for a plain value: it stays refused.
    strict = Payloads(encryption=Encryption([NEW_SECRET]))
    assert strict.resealed(b'{"a":1}', KEY) == b'{"a":1}'


@pytest.mark.parametrize("operation", ["create", "cycle_key"])
def test_a_lost_reply_and_its_retry_leave_one_encrypted_session(
    encrypted: dict[str, Any],
    settings: Any,
    redis_url: str,
    raw_redis: redis.Redis,
    prefix: str,
    call: Any,
    operation: str,
) -> None:
    # The retry resends the very bytes sealed for the first run, so the
    # script recognizes itself despite the random nonce.
    parts = urlsplit(redis_url)
    assert parts.hostname is not None
    assert parts.port is not None
    with ReplyDroppingProxy(parts.hostname, parts.port) as proxy:
        settings.SESSION_REDIS = {**encrypted, "URL": proxy.url}
        old = saved(call, note=MARKER)  # also connects and loads the scripts
        session = SessionStore(None if operation == "create" else old)
        session["note"] = MARKER
        proxy.drop_next_reply("EVALSHA")
        call(session, "save" if operation == "create" else "cycle_key")
        assert proxy.dropped == 1
        key = session.session_key
        assert key not in (None, old)
        names = {
            name.decode()
            for name in raw_redis.scan_iter(match=glob_escape(prefix) + "{*}")
        }
        expected = {data_key(prefix, hashed_id(key))}
        if operation == "create":
            expected.add(data_key(prefix, hashed_id(old)))
        assert names == expected
        assert call(SessionStore(key), "load") == {"note": MARKER}


def test_creating_the_same_data_twice_is_refused_the_second_time(
    encrypted: dict[str, Any], call: Any
) -> None:
    store = RedisSessionStore()
    assert call(store, "create", KEY, {"a": 1}, ttl=60) is True
    assert call(store, "create", KEY, {"a": 1}, ttl=60) is False
