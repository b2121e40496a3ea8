"""Concurrent requests under forced interleavings of their round trips.

A request is a list of steps, each one round trip of the Django backend
(``load``, ``save``, ``cycle_key``, ``flush``) followed by what the view does
with the session before its next round trip. A schedule is an order of all the
requests' steps; each scenario runs under at least ``SCHEDULES`` schedules
(every distinct one when there are fewer, else a seeded sample) and checks its
invariants after each, through the sync methods and through the asyncio twins.
Where a scenario says so, the reply of one step is lost after the server ran
it, and redis-py sends the command again.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import redis
import redis.asyncio.retry
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.core.signing import JSONSerializer
from django.utils.crypto import get_random_string
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_redis_sessions.keys import glob_escape, session_key_from
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.user_index import INDEX_MARK
from tests.utils import (
    SCHEDULES,
    LostReplies,
    Request,
    data_name,
    interleavings,
    needs_async_backend,
    play_steps,
    position,
    request,
)


def schedules(requests: list[Request], seed: int) -> list[list[int]]:
    """Every distinct order of the requests' steps, or ``SCHEDULES`` of them."""
    return interleavings([len(req.steps) for req in requests], seed)


class Harness:
    """Plays schedules sync or asyncio and reads back the live sessions."""

    def __init__(self, mode: str, raw: redis.Redis, prefix: str) -> None:
        self.mode = mode
        self.raw = raw
        self.prefix = prefix
        self.lost_replies = LostReplies()
        self.played = 0

    def saved(self, **data: Any) -> str:
        """A new live session holding ``data``, written behind the engine's back."""
        key = get_random_string(32, VALID_KEY_CHARS)
        payload = JSONSerializer().dumps(data)  # byte for byte what save() writes
        self.raw.set(data_name(self.prefix, key), payload, px=60_000)
        return key

    def play(
        self, requests: list[Request], order: list[int], lose_at: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Run the steps in ``order``; the live sessions afterwards, key -> data.

        With ``lose_at``, the first reply at or after that position is lost
        (a step whose session has no key sends nothing).
        """
        play_steps(self.mode, requests, order, self.lost_replies, lose_at)
        self.played += 1
        return self._live_sessions_then_clean_up()

    def _live_sessions_then_clean_up(self) -> dict[str, dict[str, Any]]:
        names = list(self.raw.scan_iter(match=glob_escape(self.prefix) + "*"))
        sessions = [name for name in names if not name.endswith(b":tombstone")]
        values = self.raw.mget(sessions) if sessions else []
        if names:
            self.raw.unlink(*names)
        return {
            session_key_from(self.prefix, name): json.loads(value)
            for name, value in zip(sessions, values, strict=True)
            if value is not None
        }


@pytest.fixture(params=["sync", pytest.param("async", marks=needs_async_backend)])
def harness(
    request: pytest.FixtureRequest,
    raw_redis: redis.Redis,
    prefix: str,
    settings: Any,
    session_redis: dict[str, Any],
) -> Harness:
    harness = Harness(str(request.param), raw_redis, prefix)
    replies = harness.lost_replies
    # The engine's one retry, without its backoff: the resend is what matters.
    if harness.mode == "sync":
        options = {
            "connection_class": replies.connection_class,
            "retry": Retry(NoBackoff(), 1),
        }
    else:
        options = {
            "connection_class": replies.async_connection_class,
            "retry": redis.asyncio.retry.Retry(NoBackoff(), 1),
        }
    settings.SESSION_REDIS = {**session_redis, "OPTIONS": options}
    return harness


def logins_and_a_logout(key: str) -> list[Request]:
    """A login and a password change cycle the key while a logout flushes it."""
    login = request("login", key, "load", "cycle_key", "save")
    login.steps[1] = ("cycle_key", lambda: login.session.update({"by": "login"}))
    password = request("password", key, "load", "cycle_key", "save")
    password.steps[1] = ("cycle_key", lambda: password.session.update({"hash": "2"}))
    logout = request("logout", key, "load", "flush")
    return [login, password, logout]


def check_no_revival(
    live: dict[str, dict[str, Any]],
    requests: list[Request],
    order: list[int],
    old: str,
) -> None:
    carrying = [key for key, data in live.items() if data.get("secret") == "S"]
    # At most one live session carries the data.
    assert len(carrying) <= 1, live
    # cycle_key() moves the data at once; once the logout ran first, no
    # cycle_key may carry the data over, and once a cycle_key ran first, one
    # session carries it (the logout then ends an old key already gone).
    flushed = position(order, requests, "logout", "flush")
    cycles = [position(order, requests, name, "cycle_key") for name in CYCLERS]
    assert len(carrying) == (0 if flushed < min(cycles) else 1), live
    session_id = RedisLayer().session_id
    assert session_id(old) not in live
    # No orphan, every live session is one a request holds.
    held = {session_id(str(req.session.session_key)) for req in requests}
    assert set(live) <= held, live
    # Nothing is refused: a cycle_key of a session ended meanwhile continues
    # empty (the session starts afresh at its save) and raises nothing.
    assert [req.errors for req in requests] == [[], [], []]


CYCLERS = ("login", "password")


def test_cycle_key_racing_a_logout_and_another_cycle_key(harness: Harness) -> None:
    """Every schedule of a login and a password change racing a logout."""
    orders = schedules(logins_and_a_logout("x" * 32), seed=1)
    for order in orders:
        old = harness.saved(secret="S", _auth_user_id="1")
        requests = logins_and_a_logout(old)
        live = harness.play(requests, order)
        check_no_revival(live, requests, order, old)
    assert harness.played >= SCHEDULES


def test_lost_replies_anywhere_create_nothing_twice(harness: Harness) -> None:
    """The same schedules, each with a reply lost at one of its steps."""
    orders = schedules(logins_and_a_logout("x" * 32), seed=3)
    for n, order in enumerate(orders):
        # Each schedule loses a reply at another of its steps, in turn; a step
        # that sent nothing (cycle_key, or a flush of a session already gone)
        # passes the loss on to the next one, and a schedule that lost none
        # is played again from its next step.
        for shift in range(len(order)):
            old = harness.saved(secret="S", _auth_user_id="1")
            requests = logins_and_a_logout(old)
            lost = harness.lost_replies.lost
            live = harness.play(requests, order, (n + shift) % len(order))
            check_no_revival(live, requests, order, old)
            if harness.lost_replies.lost > lost:
                break
    assert harness.lost_replies.lost == len(orders) >= SCHEDULES


def writers(key: str) -> list[Request]:
    """Four requests write ``sudo`` (two the value they loaded); one only reads."""
    requests = []
    for name, value in WRITES.items():
        writer = request(name, key, "load", "save")
        writer.steps[0] = ("load", partial(writer.session.update, {"sudo": value}))
        requests.append(writer)
    requests.append(request("reader", key, "load", "save"))
    return requests


WRITES = {"w1": False, "w2": True, "w3": False, "w4": True}


def test_explicit_writes_are_never_dropped(harness: Harness) -> None:
    """The last save wins, even when it writes back what it loaded."""
    orders = schedules(writers("x" * 32), seed=2)
    for order in orders:
        key = harness.saved(sudo=False)
        requests = writers(key)
        live = harness.play(requests, order)
        last = max(WRITES, key=lambda name: position(order, requests, name, "save"))
        assert live == {RedisLayer().session_id(key): {"sudo": WRITES[last]}}
        assert all(req.errors == [] for req in requests)
    assert harness.played >= SCHEDULES


def own_key_writers(key: str, logout: bool = False) -> list[Request]:
    """Four requests each add their own key; with ``logout``, a fifth logs out."""
    requests = []
    for n in range(4):
        writer = request(f"w{n}", key, "load", "save")
        writer.steps[0] = ("load", partial(writer.session.__setitem__, f"k{n}", n))
        requests.append(writer)
    if logout:
        requests.append(request("logout", key, "load", "flush"))
    return requests


@pytest.mark.parametrize("user", [None, "1"], ids=["anonymous", "logged-in"])
def test_writers_of_their_own_keys_all_land_in_any_order(
    harness: Harness, user: str | None
) -> None:
    """No lost update: every request's key is there, whatever the order.

    Logged in, each save also writes the user's index entry (the session
    carries none yet), so the versioned script with the index runs.
    """
    start: dict[str, Any] = {"secret": "S"}
    if user is not None:
        start["_auth_user_id"] = user
    orders = schedules(own_key_writers("x" * 32), seed=4)
    for order in orders:
        key = harness.saved(**start)
        requests = own_key_writers(key)
        live = harness.play(requests, order)
        expected = {**start, "k0": 0, "k1": 1, "k2": 2, "k3": 3}
        assert {
            session_id: {k: v for k, v in data.items() if k != INDEX_MARK}
            for session_id, data in live.items()
        } == {RedisLayer().session_id(key): expected}
        assert all(req.errors == [] for req in requests)
    assert harness.played >= SCHEDULES


def test_writers_and_a_logout_never_bring_the_session_back(harness: Harness) -> None:
    """A logout anywhere among the writers: the session stays ended.

    A writer that loaded before the logout and saves after it is refused
    (SessionInterrupted); one that loaded after it found nothing, and its save
    starts a new session holding only its own key.
    """
    orders = schedules(own_key_writers("x" * 32, logout=True), seed=5)
    for n, order in enumerate(orders):
        key = harness.saved(secret="S")
        requests = own_key_writers(key, logout=True)
        live = harness.play(requests, order, lose_at=n % len(order))
        assert RedisLayer().session_id(key) not in live
        assert not [data for data in live.values() if "secret" in data], live
        flushed = position(order, requests, "logout", "flush")
        for n_, writer in enumerate(requests[:4]):
            loaded = position(order, requests, writer.name, "load")
            saved = position(order, requests, writer.name, "save")
            refused = loaded < flushed < saved
            assert writer.errors == (["save"] if refused else []), order
            if loaded > flushed:
                assert {f"k{n_}": n_} in live.values()
    assert harness.played >= SCHEDULES
