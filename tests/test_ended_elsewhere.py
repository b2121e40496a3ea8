"""A device whose session was ended elsewhere learns why, on its next request.

``SessionMetadataMiddleware`` asks the session to report a load that misses
because a tombstone holds the key; the message goes through
``django.contrib.messages``. A live session costs no extra round trip.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.http import HttpRequest
from django.test import AsyncClient, Client

from django_redis_sessions import get_store
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.keys import hashed_id
from django_redis_sessions.testing import CommandLog
from tests.utils import needs_async_backend

pytestmark = pytest.mark.django_db

NOTICE = (
    "You were logged out: your session was ended from another device or by an "
    "administrator."
)
METADATA_MIDDLEWARE = "django_redis_sessions.middleware.SessionMetadataMiddleware"
#: The one command a load sends.
READ = "GET"
#: What a load that missed sends next: a read of the key's tombstone.
ASK = "GET"


@pytest.fixture
def alice(db: None) -> User:
    user: User = User.objects.create_user("alice", password="x")
    return user


@pytest.fixture
def log(session_redis: dict[str, Any]) -> CommandLog:
    """Every command the engine sends, from now on."""
    commands = CommandLog()
    session_redis["OPTIONS"] = {"connection_class": commands.connection_class}
    return commands


def logged_in(user: User) -> Client:
    client = Client()
    assert client.get(f"/login/?id={user.pk}").content == b"in"
    return client


def told(request: HttpRequest) -> list[str]:
    return [str(message) for message in get_messages(request)]


def test_a_device_ended_from_the_page_of_another_is_told_why_once(
    alice: User,
) -> None:
    laptop, phone = logged_in(alice), logged_in(alice)
    phone_id = hashed_id(phone.cookies["sessionid"].value)
    laptop.post("/account/sessions/end/", {"id": phone_id})

    response = phone.get("/account/sessions/")

    assert response.status_code == 302  # anonymous now: sent to log in
    assert told(response.wsgi_request) == [NOTICE]
    # Told once: the response deleted the cookie naming the ended session.
    assert phone.cookies["sessionid"].value == ""


def test_a_device_an_admin_logged_out_is_told_why(alice: User) -> None:
    phone = logged_in(alice)
    assert get_store().logout_user(alice.pk) == 1

    response = phone.get("/whoami/")

    assert response.content == b"anonymous"
    assert told(response.wsgi_request) == [NOTICE]


def test_a_live_session_costs_no_extra_round_trip(alice: User, log: CommandLog) -> None:
    phone = logged_in(alice)
    log.take()

    response = phone.get("/whoami/")

    assert response.content == str(alice.pk).encode()
    assert log.take() == [READ]
    assert told(response.wsgi_request) == []


def test_only_a_load_that_misses_asks_whether_a_tombstone_holds_the_key(
    alice: User, log: CommandLog
) -> None:
    phone = logged_in(alice)
    get_store().logout_user(alice.pk)
    log.take()

    response = phone.get("/whoami/")

    assert log.take() == [READ, ASK]
    assert told(response.wsgi_request) == [NOTICE]


def test_a_request_in_flight_during_a_login_is_not_told_it_was_logged_out(
    alice: User,
) -> None:
    """A key change leaves a tombstone too; it does not count as an ending."""
    browser = Client()
    assert browser.get("/write/").content == b"1"  # an anonymous session
    old_key = browser.cookies["sessionid"].value
    # One tab of the browser logs in: the key changes.
    assert browser.get(f"/login/?id={alice.pk}").content == b"in"
    assert browser.cookies["sessionid"].value != old_key
    in_flight = Client()
    in_flight.cookies["sessionid"] = old_key

    response = in_flight.get("/whoami/")

    assert response.content == b"anonymous"
    assert told(response.wsgi_request) == []
    # Ended after the move, the old key stays moved: still nothing to tell.
    get_store().logout_user(alice.pk)
    assert told(in_flight.get("/whoami/").wsgi_request) == []


def test_a_cookie_no_session_ever_had_is_told_nothing(log: CommandLog) -> None:
    client = Client()
    client.cookies["sessionid"] = "a" * 32
    get_store().exists("b" * 32)  # connects
    log.take()

    response = client.get("/whoami/")

    assert response.content == b"anonymous"
    assert log.take() == [READ, ASK]
    assert told(response.wsgi_request) == []


def test_a_session_that_expired_is_told_nothing(alice: User, raw_redis: Any) -> None:
    phone = logged_in(alice)
    key = phone.cookies["sessionid"].value
    # Expired: Redis dropped the name, and no tombstone was left.
    assert raw_redis.delete(get_store()._layer.data_name(key)) == 1

    response = phone.get("/whoami/")

    assert response.content == b"anonymous"
    assert told(response.wsgi_request) == []


def test_a_device_logged_out_by_itself_is_told_nothing(alice: User) -> None:
    phone = logged_in(alice)

    assert phone.get("/logout/").content == b"out"
    response = phone.get("/whoami/")

    assert told(response.wsgi_request) == []


def test_without_the_middleware_nothing_is_asked_or_told(
    settings: Any, alice: User, log: CommandLog
) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != METADATA_MIDDLEWARE]
    phone = logged_in(alice)
    get_store().logout_user(alice.pk)
    log.take()

    response = phone.get("/whoami/")

    assert log.take() == [READ]
    assert told(response.wsgi_request) == []


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_an_asyncio_request_is_told_why_too(alice: User) -> None:
    async def visit() -> Any:
        phone = AsyncClient()
        await phone.get(f"/async-login/?id={alice.pk}")
        await get_store().alogout_user(alice.pk)
        return await phone.get("/async-whoami/")

    response = asyncio.run(visit())

    assert response.content == b"anonymous"
    assert told(response.asgi_request) == [NOTICE]


@needs_async_backend
def test_an_asyncio_load_asks_only_when_it_misses(
    session_redis: dict[str, Any],
) -> None:
    log = CommandLog()
    session_redis["OPTIONS"] = {"connection_class": log.async_connection_class}

    async def load_each() -> tuple[dict[str, list[str]], list[str]]:
        live, ended = SessionStore(), SessionStore()
        for session in (live, ended):
            await session.aset("a", 1)
            await session.asave()
        ended_key = ended.session_key
        await get_store().adestroy(str(ended_key))
        reported: list[str] = []
        sent = {}
        for name, key in [
            ("live", live.session_key),
            ("ended", ended_key),
            ("unknown", "c" * 32),
        ]:
            session = SessionStore(key)
            session.on_ended_elsewhere = lambda name=name: reported.append(name)
            log.take()
            await session.aload()
            sent[name] = log.take()
        return sent, reported

    sent, reported = asyncio.run(load_each())

    assert sent == {
        "live": [READ],
        "ended": [READ, ASK],
        "unknown": [READ, ASK],
    }
    assert reported == ["ended"]


@pytest.mark.parametrize(
    "asynchronous", [False, pytest.param(True, marks=needs_async_backend)]
)
def test_on_cluster_a_load_that_misses_learns_of_the_tombstone(
    cluster: Any, asynchronous: bool
) -> None:
    ended, live, moved = SessionStore(), SessionStore(), SessionStore()
    for session in (ended, live, moved):
        session["a"] = 1
        session.save()
    assert get_store().destroy(str(ended.session_key))
    old_key = moved.session_key
    # On Cluster a key change is a destroy of the old key, then a create.
    if asynchronous:
        asyncio.run(moved.acycle_key())
    else:
        moved.cycle_key()
    reported: list[str | None] = []

    def load(key: str | None) -> None:
        session = SessionStore(key)
        session.on_ended_elsewhere = lambda: reported.append(key)
        if asynchronous:
            asyncio.run(session.aload())
        else:
            session.load()

    for key in (ended.session_key, live.session_key, "d" * 32, old_key):
        load(key)

    assert reported == [ended.session_key]
