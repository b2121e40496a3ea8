"""``session_created``, ``session_ended`` and ``session_write_refused``.

Sent with ids, never keys, by the backend and the store, from the sync and
the asyncio paths; nothing is computed for them while nobody listens.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import django
import pytest
from django.contrib.sessions.backends.base import UpdateError
from django.core.management import call_command
from django.dispatch import Signal

from django_redis_sessions import signals
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.store import RedisSessionStore
from tests.test_backend import make_session, session_mode  # noqa: F401
from tests.utils import needs_async_backend

NAMES = {
    signals.session_created: "created",
    signals.session_ended: "ended",
    signals.session_write_refused: "refused",
}

Received = list[tuple[str, type, dict[str, Any]]]


@pytest.fixture
def received() -> Iterator[Received]:
    """Every signal sent while the test runs: (name, sender, arguments)."""
    events: Received = []

    def receiver(signal: Signal, sender: type, **kwargs: Any) -> None:
        events.append((NAMES[signal], sender, kwargs))

    for signal in NAMES:
        signal.connect(receiver, weak=False, dispatch_uid="test-signals")
    yield events
    for signal in NAMES:
        signal.disconnect(dispatch_uid="test-signals")


def session_id(key: str) -> str:
    return RedisLayer().session_id(key)


# --- The backend (sync and asyncio) -----------------------------------------------


def test_a_new_session_sends_session_created_with_its_id(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()

    key = session.session_key
    assert received == [
        (
            "created",
            SessionStore,
            {"session_id": session_id(key), "previous_session_id": None},
        )
    ]


def test_a_logout_sends_session_ended_once(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()
    key = session.session_key
    received.clear()

    session.flush()
    make_session(key).delete()  # already gone: nothing ended

    assert received == [
        ("ended", SessionStore, {"session_id": session_id(key), "reason": "logout"})
    ]


def test_a_save_after_a_logout_elsewhere_sends_session_write_refused(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()
    key = session.session_key
    other = make_session(key)
    assert other["n"] == 1
    session.flush()
    received.clear()

    other["n"] = 2
    with pytest.raises(UpdateError):
        other.save()

    assert received == [
        (
            "refused",
            SessionStore,
            {"session_id": session_id(key), "operation": "update", "reason": "missing"},
        )
    ]


def test_an_unmodified_save_after_a_logout_elsewhere_is_a_refused_touch(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()
    key = session.session_key
    other = make_session(key)
    assert other["n"] == 1
    session.flush()
    received.clear()

    with pytest.raises(UpdateError):
        other.save()

    assert received == [
        (
            "refused",
            SessionStore,
            {"session_id": session_id(key), "operation": "touch", "reason": "missing"},
        )
    ]


def test_cycle_key_sends_created_for_the_new_id_and_ended_for_the_old(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()
    old_key = session.session_key
    received.clear()

    session.cycle_key()

    new_key = session.session_key
    assert received == [
        (
            "created",
            SessionStore,
            {
                "session_id": session_id(new_key),
                "previous_session_id": session_id(old_key),
            },
        ),
        ("ended", SessionStore, {"session_id": session_id(old_key), "reason": "cycle"}),
    ]


def test_cycle_key_after_a_logout_elsewhere_sends_session_write_refused(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()
    key = session.session_key
    other = make_session(key)
    assert other["n"] == 1
    session.flush()
    received.clear()

    other.cycle_key()  # continues empty, raises nothing
    assert other.session_key is None

    assert received == [
        (
            "refused",
            SessionStore,
            {"session_id": session_id(key), "operation": "cycle", "reason": "missing"},
        )
    ]


def test_a_save_past_the_expiry_sends_session_ended_expired(
    make_session: Callable[..., Any],  # noqa: F811
    received: Received,
) -> None:
    session = make_session()
    session["n"] = 1
    session.save()
    key = session.session_key
    received.clear()

    session.set_expiry(-timedelta(seconds=10))
    session.save()

    assert received == [
        ("ended", SessionStore, {"session_id": session_id(key), "reason": "expired"})
    ]


def test_the_sender_is_the_class_that_sent_it(received: Received) -> None:
    class MySessionStore(SessionStore):
        pass

    session = MySessionStore()
    session["n"] = 1
    session.save()

    assert [sender for _, sender, _ in received] == [MySessionStore]


# --- The store (sync and asyncio, Redis and fakeredis) ------------------------------


def test_the_store_sends_created_ended_and_refused(
    store: Any, received: Received
) -> None:
    assert store.create("abcdefgh", {"n": 1}, ttl=60)
    assert store.destroy("abcdefgh")
    assert not store.destroy("abcdefgh")
    assert not store.set("abcdefgh", {"n": 2}, ttl=60)
    assert not store.create("abcdefgh", {"n": 3}, ttl=60)
    assert not store.update("unknownkey", {"n": 4}, ttl=60)  # unknown: no signal

    sid = store.session_id("abcdefgh")
    assert received == [
        (
            "created",
            RedisSessionStore,
            {"session_id": sid, "previous_session_id": None},
        ),
        ("ended", RedisSessionStore, {"session_id": sid, "reason": "destroy"}),
        (
            "refused",
            RedisSessionStore,
            {"session_id": sid, "operation": "set", "reason": "tombstoned"},
        ),
        (
            "refused",
            RedisSessionStore,
            {"session_id": sid, "operation": "create", "reason": "tombstoned"},
        ),
    ]


@pytest.mark.parametrize("operation", ["set", "update", "touch"])
def test_a_store_write_with_a_ttl_of_zero_sends_session_ended_expired(
    store: Any, received: Received, operation: str
) -> None:
    assert store.create("abcdefgh", {"n": 1}, ttl=60)
    received.clear()

    if operation == "touch":
        assert not store.touch("abcdefgh", ttl=0)
    else:
        assert not getattr(store, operation)("abcdefgh", {"n": 2}, ttl=0)

    assert received == [
        (
            "ended",
            RedisSessionStore,
            {"session_id": store.session_id("abcdefgh"), "reason": "expired"},
        )
    ]


def test_clear_sends_session_ended_for_every_session(
    store: Any, received: Received
) -> None:
    keys = [f"session{number:04d}" for number in range(25)]
    for key in keys:
        assert store.create(key, {"n": key}, ttl=60)
    store.destroy(keys[0])
    received.clear()

    assert store.clear() == 24

    assert sorted(kwargs["session_id"] for _, _, kwargs in received) == sorted(
        store.session_id(key) for key in keys[1:]
    )
    assert {(name, sender, kwargs["reason"]) for name, sender, kwargs in received} == {
        ("ended", RedisSessionStore, "clear")
    }


def test_the_commands_clear_sends_session_ended_for_every_session(
    prefix: str, received: Received
) -> None:
    store = RedisSessionStore(prefix=prefix)
    for number in range(5):
        store.create(f"session{number:04d}", {"n": number}, ttl=60)
    received.clear()

    call_command("redis_sessions", "clear", "--noinput", stdout=io.StringIO())

    assert sorted(kwargs["session_id"] for _, _, kwargs in received) == sorted(
        store.session_id(f"session{number:04d}") for number in range(5)
    )


# --- Costs -------------------------------------------------------------------------


def test_without_receivers_nothing_is_computed_for_signals(
    monkeypatch: pytest.MonkeyPatch,
    make_session: Callable[..., Any],  # noqa: F811
    store: Any,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("signal work without a receiver")

    for name in ("after_write", "ended", "send", "asend", "send_ended_ids"):
        monkeypatch.setattr(signals, name, fail)
    monkeypatch.setattr(signals, "asend_ended_ids", fail)
    assert not signals.listening()

    session = make_session()
    session["n"] = 1
    session.save()
    session.cycle_key()
    session.flush()
    assert store.create("abcdefgh", {"n": 1}, ttl=60)
    assert store.destroy("abcdefgh")
    assert not store.set("abcdefgh", {"n": 1}, ttl=60)
    assert store.create("other123", {"n": 1}, ttl=60)
    assert store.clear() == 1


def test_clear_without_receivers_does_not_dedupe_or_decode_names(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(5):
        store.create(f"session{number:04d}", {"n": number}, ttl=60)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an id was computed")

    monkeypatch.setattr(RedisLayer, "id_of_name", fail)

    assert store.clear() == 5


# --- asyncio receivers ------------------------------------------------------------


@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Signal.asend and async receivers need Django 5.0"
)
def test_an_async_receiver_is_awaited_on_the_asyncio_path(prefix: str) -> None:
    awaited: list[str] = []

    async def receiver(sender: type, session_id: str, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        awaited.append(session_id)

    signals.session_created.connect(receiver, dispatch_uid="test-async-receiver")
    try:
        store = RedisSessionStore(prefix=prefix)
        assert asyncio.run(store.acreate("abcdefgh", {"n": 1}, ttl=60))
    finally:
        signals.session_created.disconnect(dispatch_uid="test-async-receiver")

    assert awaited == [store.session_id("abcdefgh")]


@needs_async_backend
def test_the_backends_asyncio_logout_sends_session_ended(
    received: Received,
) -> None:
    session = SessionStore()
    session["n"] = 1
    session.save()
    key = str(session.session_key)
    received.clear()

    asyncio.run(SessionStore(key).adelete())

    assert received == [
        ("ended", SessionStore, {"session_id": session_id(key), "reason": "logout"})
    ]
