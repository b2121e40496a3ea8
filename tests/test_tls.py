"""TLS for real: the engine over ``rediss://`` against a server that speaks only TLS.

The certificate authority and the server's certificate are made for each run
(see ``tls_files`` in ``conftest.py``); the client trusts that authority
through ``SESSION_REDIS["OPTIONS"]["ssl_ca_certs"]``, as a project would.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import trustme
from django.test import Client

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import RedisServer, TLSFiles
from tests.conftest import PLAIN
from tests.twins import AsyncTwins, no_sync_client
from tests.utils import Keys, data_name, saved_session, tombstone_name


@pytest.fixture
def tls_keys(
    settings: Any, tls_server: RedisServer, tls_files: TLSFiles, prefix: str
) -> Iterator[Keys]:
    """``SESSION_REDIS`` on the TLS server; a callable returning its exact keys."""
    settings.SESSION_REDIS = {
        "URL": tls_server.url,
        "PREFIX": prefix,
        "OPTIONS": {"ssl_ca_certs": tls_files.ca_file},
    }
    with redis.Redis.from_url(tls_server.url, ssl_ca_certs=tls_files.ca_file) as raw:
        yield lambda: {key.decode() for key in raw.scan_iter()}
        raw.flushdb()  # the suite's own server: nothing else lives there


@pytest.fixture(scope="module")
def unrelated_ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An authority that signed nothing the server presents."""
    path = tmp_path_factory.mktemp("unrelated-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_the_session_backend_saves_loads_cycles_and_deletes_over_tls(
    tls_keys: Keys, prefix: str
) -> None:
    session = saved_session(user=1)
    old_key = str(session.session_key)
    assert SessionStore(old_key).load() == {"user": 1}

    session.cycle_key()
    session.save()
    new_key = str(session.session_key)
    assert new_key != old_key
    assert SessionStore(new_key).load() == {"user": 1}
    assert SessionStore(old_key).load() == {}
    assert tls_keys() == {data_name(prefix, new_key), tombstone_name(prefix, old_key)}

    session.delete()
    assert SessionStore(new_key).load() == {}
    assert tls_keys() == {
        tombstone_name(prefix, new_key),
        tombstone_name(prefix, old_key),
    }


@pytest.mark.parametrize("api", ["sync", "asyncio"])
def test_the_store_and_its_asyncio_twins_work_over_tls(
    api: str, tls_keys: Keys, prefix: str
) -> None:
    store: Any = (
        RedisSessionStore()
        if api == "sync"
        # Every call on a fresh loop, and no sync client to fall back on.
        else AsyncTwins(RedisSessionStore(client=no_sync_client), plain=PLAIN)
    )
    assert store.create("abcdefgh", {"v": 1}, ttl=60) is True
    assert store.get("abcdefgh") == {"v": 1}
    assert store.update("abcdefgh", {"v": 2}, ttl=60) is True
    assert store.touch("abcdefgh", 120) is True
    assert store.exists("abcdefgh") is True
    assert store.count() == 1
    assert list(store.all()) == [(store.session_id("abcdefgh"), {"v": 2})]
    assert store.destroy("abcdefgh") is True
    assert store.get("abcdefgh") is None
    assert tls_keys() == {tombstone_name(prefix, "abcdefgh")}


def assert_certificate_not_verified(error: BaseException) -> None:
    """The error a user gets for a server certificate the CA did not sign."""
    assert type(error) is redis.ConnectionError
    # redis-py raises its error while handling the one from ssl.
    assert isinstance(error.__context__, ssl.SSLCertVerificationError)
    assert "certificate verify failed" in str(error)


def test_a_server_certificate_from_another_ca_fails_with_a_clear_error(
    settings: Any, tls_server: RedisServer, unrelated_ca_file: str, prefix: str
) -> None:
    settings.SESSION_REDIS = {
        "URL": tls_server.url,
        "PREFIX": prefix,
        "OPTIONS": {"ssl_ca_certs": unrelated_ca_file},
    }
    key = "k" * 32

    # Not an empty session (the user would be logged out) but the error.
    with pytest.raises(redis.ConnectionError) as loaded:
        SessionStore(key).load()
    assert_certificate_not_verified(loaded.value)
    assert key not in str(loaded.value)

    session = SessionStore()
    session["user"] = 1
    with pytest.raises(redis.ConnectionError) as saved:
        session.save()
    assert_certificate_not_verified(saved.value)

    with pytest.raises(redis.ConnectionError) as fetched:
        asyncio.run(RedisSessionStore().aget(key))
    assert_certificate_not_verified(fetched.value)


def test_a_request_with_an_untrusted_server_certificate_is_a_server_error(
    settings: Any,
    tls_server: RedisServer,
    unrelated_ca_file: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.SESSION_REDIS = {
        "URL": tls_server.url,
        "PREFIX": prefix,
        "OPTIONS": {"ssl_ca_certs": unrelated_ca_file},
    }
    client = Client(raise_request_exception=False)
    client.cookies[settings.SESSION_COOKIE_NAME] = "k" * 32

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get("/write/")

    # A 500 that keeps the cookie: once the CA is fixed the session is back.
    assert response.status_code == 500
    assert settings.SESSION_COOKIE_NAME not in response.cookies
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is not None
    assert_certificate_not_verified(record.exc_info[1])  # type: ignore[arg-type]
