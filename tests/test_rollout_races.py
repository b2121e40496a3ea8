"""Rollouts under forced interleavings: old and new processes side by side.

During a rolling deploy, requests of one visitor land on processes of both
settings. Each request here is a list of round trips of the Django backend
(``load``, ``save``, ``cycle_key``, ``flush``) on a process of one setting;
each scenario plays at least ``SCHEDULES`` orders of all their round trips,
sync and through the asyncio twins, and checks after each that the logout is
final on every process: the key it ended has no live form anywhere, and no
session carries its data unless a key change reached Redis before it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import redis.asyncio.retry
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
)
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.contrib.sessions.models import Session
from django.utils.crypto import get_random_string
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_redis_sessions.backends import handover
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.keys import data_key, glob_escape, hashed_id
from django_redis_sessions.redis_layer import RedisLayer
from tests.utils import (
    SCHEDULES,
    LostReplies,
    Request,
    interleavings,
    needs_async_backend,
    play_steps,
    position,
    request,
)

DB = "django.contrib.sessions.backends.db"


class Player:
    """Plays one order of the requests' steps, sync or asyncio."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.lost_replies = LostReplies()
        self.played = 0

    def options(self) -> dict[str, Any]:
        """``OPTIONS`` whose connections can lose a reply, with one retry."""
        if self.mode == "sync":
            return {
                "connection_class": self.lost_replies.connection_class,
                "retry": Retry(NoBackoff(), 1),
            }
        return {
            "connection_class": self.lost_replies.async_connection_class,
            "retry": redis.asyncio.retry.Retry(NoBackoff(), 1),
        }

    def play(
        self, requests: list[Request], order: list[int], lose_at: int | None = None
    ) -> None:
        """Run the steps in ``order``; with ``lose_at``, lose the first reply
        at or after that position (a step that sends nothing passes it on)."""
        play_steps(self.mode, requests, order, self.lost_replies, lose_at)
        self.played += 1


@pytest.fixture(params=["sync", pytest.param("async", marks=needs_async_backend)])
def player(
    request: pytest.FixtureRequest, settings: Any, session_redis: dict[str, Any]
) -> Player:
    player = Player(str(request.param))
    settings.SESSION_REDIS = {**session_redis, "OPTIONS": player.options()}
    return player


def live_sessions(raw: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """Every live session under ``prefix`` by name; then everything is removed."""
    names = list(raw.scan_iter(match=glob_escape(prefix) + "*"))
    sessions = [name for name in names if not name.endswith(b":tombstone")]
    values = raw.mget(sessions) if sessions else []
    if names:
        raw.unlink(*names)
    return {
        name.decode(): json.loads(value)
        for name, value in zip(sessions, values, strict=True)
        if value is not None
    }


def random_key() -> str:
    return get_random_string(32, VALID_KEY_CHARS)


# --- HASH_IDS: processes on "prepare" and on "migrate" ----------------------------


def process(mode: str) -> type[SessionStore]:
    """The backend of a process running with ``HASH_IDS = mode``."""
    layer = RedisLayer(hash_ids=mode)

    class Process(SessionStore):
        @property
        def _layer(self) -> RedisLayer:
            return layer

    return Process


def hash_ids_rollout(key: str) -> list[Request]:
    """A login on a new process, a logout on an old one, and two more requests.

    ``move`` and ``login`` run on "migrate" (each load moves the session to
    its id), ``logout`` and ``plain`` on "prepare" (the plain layout).
    """
    new, old = process("migrate"), process("prepare")
    move = request("move", key, "load", "save", store=new)
    move.steps[0] = ("load", lambda: move.session.update({"move": 1}))
    login = request("login", key, "load", "cycle_key", "save", store=new)
    login.steps[1] = ("cycle_key", lambda: login.session.update({"by": "login"}))
    logout = request("logout", key, "load", "flush", store=old)
    plain = request("plain", key, "load", "save", store=old)
    plain.steps[0] = ("load", lambda: plain.session.update({"plain": 1}))
    return [move, login, logout, plain]


def check_logout_final(
    live: dict[str, dict[str, Any]],
    requests: list[Request],
    order: list[int],
    prefix: str,
    key: str,
) -> None:
    # The key the logout ended has no live form, plain or hashed.
    assert data_key(prefix, key) not in live, live
    assert data_key(prefix, hashed_id(key)) not in live, live
    carrying = [name for name, data in live.items() if data.get("secret") == "S"]
    assert len(carrying) <= 1, live
    # Only a key change (cycle_key, which ends the old key at once) that
    # reached Redis before the logout carries the data on, under the new key
    # the login's response gave the browser.
    if position(order, requests, "logout", "flush") < position(
        order, requests, "login", "cycle_key"
    ):
        assert carrying == [], live
    # No orphan: every live session is one a request holds.
    held = set()
    for req in requests:
        if (held_key := req.session.session_key) is not None:
            held |= {data_key(prefix, held_key), data_key(prefix, hashed_id(held_key))}
    assert set(live) <= held, live


def plain_session(raw: redis.Redis, prefix: str) -> str:
    """A live session under its plain key, as the plain layout writes it."""
    key = random_key()
    raw.set(data_key(prefix, key), json.dumps({"secret": "S"}), px=60_000)
    return key


def test_a_logout_on_a_prepare_process_is_final_in_every_order(
    player: Player, raw_redis: redis.Redis, prefix: str
) -> None:
    orders = interleavings([2, 3, 2, 2], seed=11)
    for order in orders:
        key = plain_session(raw_redis, prefix)
        requests = hash_ids_rollout(key)
        player.play(requests, order)
        live = live_sessions(raw_redis, prefix)
        check_logout_final(live, requests, order, prefix, key)
    assert player.played >= SCHEDULES


def test_a_logout_on_a_prepare_process_is_final_with_a_reply_lost_anywhere(
    player: Player, raw_redis: redis.Redis, prefix: str
) -> None:
    orders = interleavings([2, 3, 2, 2], seed=12)
    for n, order in enumerate(orders):
        # Each order loses a reply at another of its steps, in turn; a step
        # that sent nothing passes the loss on to the next one, and an order
        # that lost none is played again from its next step.
        for shift in range(len(order)):
            key = plain_session(raw_redis, prefix)
            requests = hash_ids_rollout(key)
            lost = player.lost_replies.lost
            player.play(requests, order, (n + shift) % len(order))
            live = live_sessions(raw_redis, prefix)
            check_logout_final(live, requests, order, prefix, key)
            if player.lost_replies.lost > lost:
                break
    assert player.lost_replies.lost == len(orders) >= SCHEDULES


# --- MIGRATE_FROM: processes on the handover engine and on this one ------------------


def engine_rollout(key: str) -> list[Request]:
    """Two requests on new processes (``MIGRATE_FROM`` the db engine), two on
    old ones (the handover engine over it), one of them a logout."""
    old = handover.store_class(DB)
    move = request("move", key, "load", "save", store=SessionStore)
    move.steps[0] = ("load", lambda: move.session.update({"move": 1}))
    again = request("again", key, "load", "save", store=SessionStore)
    again.steps[0] = ("load", lambda: again.session.update({"again": 1}))
    logout = request("logout", key, "load", "flush", store=old)
    stay = request("stay", key, "load", "save", store=old)
    stay.steps[0] = ("load", lambda: stay.session.update({"stay": 1}))
    return [move, again, logout, stay]


def database_session() -> str:
    """A live session of the db engine, as an old process saved it."""
    session = DatabaseStore()
    session["secret"] = "S"
    session.create()
    return str(session.session_key)


def check_engine_logout_final(raw: redis.Redis, prefix: str, key: str) -> None:
    live = live_sessions(raw, prefix)
    rows = {row.pk: row.get_decoded() for row in Session.objects.all()}
    Session.objects.all().delete()
    # The logged out key lives nowhere, and nothing carries its data.
    assert data_key(prefix, RedisLayer().session_id(key)) not in live, live
    assert key not in rows, rows
    assert [data for data in live.values() if "secret" in data] == [], live
    assert [data for data in rows.values() if "secret" in data] == [], rows


@pytest.fixture
def window(settings: Any) -> None:
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "MIGRATE_FROM": DB}


@pytest.mark.django_db(transaction=True)
def test_a_logout_on_an_old_engine_process_is_final_in_every_order(
    player: Player, window: None, raw_redis: redis.Redis, prefix: str
) -> None:
    for order in interleavings([2, 2, 2, 2], seed=13):
        key = database_session()
        player.play(engine_rollout(key), order)
        check_engine_logout_final(raw_redis, prefix, key)
    assert player.played >= SCHEDULES


@pytest.mark.django_db(transaction=True)
def test_a_logout_on_an_old_engine_process_is_final_with_a_reply_lost_anywhere(
    player: Player, window: None, raw_redis: redis.Redis, prefix: str
) -> None:
    orders = interleavings([2, 2, 2, 2], seed=14)
    for n, order in enumerate(orders):
        # As above: a step of an old process sends nothing to Redis unless
        # it ends a key, and passes the loss on.
        for shift in range(len(order)):
            key = database_session()
            lost = player.lost_replies.lost
            player.play(engine_rollout(key), order, (n + shift) % len(order))
            check_engine_logout_final(raw_redis, prefix, key)
            if player.lost_replies.lost > lost:
                break
    assert player.lost_replies.lost == len(orders) >= SCHEDULES
