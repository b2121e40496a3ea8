"""The user index under forced interleavings of its round trips.

Each scenario runs a few layer operations of one user (logins, a key change,
a save, listings) as actors of an ``Interleaving``: every Redis command they
send waits for its turn, so a schedule plays one exact order of round trips.
Each runs under ``SCHEDULES`` schedules, sync (threads) and asyncio (tasks),
on one server and on Redis Cluster (where an entry and its session are two
round trips on two slots), and once more with the reply of one script lost
after the server ran it. After each, the invariants of ``user_index.py`` are
checked against what Redis holds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.retry
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.utils.crypto import get_random_string
from redis.backoff import NoBackoff

import django_redis_sessions.client as client_module
import django_redis_sessions.redis_layer as layer_module
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import Outcome
from django_redis_sessions.user_index import SLACK_MS, IndexWrite, now_ms
from tests.utils import (
    SCHEDULES,
    Interleaving,
    Server,
    interleavings,
    needs_async_backend,
)

#: Schedules with a lost reply: each one is played until a script's reply
#: was lost, at a position that moves from one schedule to the next.
LOST_SCHEDULES = 125
TTL = 600.0


@pytest.fixture(params=["sync", pytest.param("async", marks=needs_async_backend)])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gate() -> Iterator[None]:
    with Interleaving.patched():
        yield


@pytest.fixture
def quick_retry(
    server: Server, mode: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a lost reply tests is the resent script, not the retry budget.

    Sync on one server, the engine's one retry without its backoff (the
    asyncio schedules keep it: OPTIONS reach the sync client too, which sets
    them up). On Cluster, a lost reply makes redis-py drop the client's
    connections and learn the slots again, which on a cluster that earlier
    tests failed over may take an attempt of its own: three retries there.
    """
    if server.cluster:
        monkeypatch.setattr(client_module, "RETRIES", 3)
    elif mode == "sync":
        options = {"retry": redis.retry.Retry(NoBackoff(), 1)}
        settings.SESSION_REDIS = {**settings.SESSION_REDIS, "OPTIONS": options}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for a test's asyncio schedules; its client closes with it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def new_key() -> str:
    return get_random_string(32, VALID_KEY_CHARS)


def payload(user: str) -> bytes:
    return json.dumps({"_auth_user_id": user, "n": secrets.token_hex(4)}).encode()


def entry(user: str) -> IndexWrite:
    return IndexWrite(user, now_ms() + int(TTL * 1000))


class Scenario:
    """Layer calls as actors, played sync or asyncio under one schedule.

    The asyncio schedules of a test share one event loop, as an ASGI server
    does, so its client connects once.
    """

    def __init__(self, layer: RedisLayer, mode: str, loop: Any = None) -> None:
        self.layer = layer
        self.mode = mode
        self.loop = loop

    def call(self, name: str, *args: Any) -> Callable[[], Any]:
        """An actor: ``layer.name(*args)``, or its asyncio twin."""
        if self.mode == "sync":
            return lambda: getattr(self.layer, name)(*args)
        return lambda: getattr(self.layer, "a" + name)(*args)

    def play(
        self, order: list[int], actors: list[Callable[[], Any]], lose_at: int | None
    ) -> tuple[Interleaving, list[Any]]:
        played = Interleaving(order, lose_at)
        if self.mode == "sync":
            return played, played.run(actors)
        return played, self.loop.run_until_complete(played.arun(actors))


def listed_ids(layer: RedisLayer, user: str) -> set[str]:
    return {session_id for session_id, _, _ in layer.user_entries(user)}


def live(server: Server, layer: RedisLayer, keys: list[str]) -> set[str]:
    """The ids of the sessions among ``keys`` that Redis holds."""
    return {
        layer.session_id(key)
        for key in keys
        if server.raw.exists(layer.data_name(key)) == 1
    }


def fields(server: Server, layer: RedisLayer, user: str) -> set[str]:
    index, expiry = layer.index_names(user)
    names = {field.decode() for field in server.raw.hkeys(index)}
    assert names == {member.decode() for member in server.raw.zrange(expiry, 0, -1)}
    return names


def first_and_last(played: Interleaving, actor: int) -> tuple[int, int]:
    """Where ``actor``'s first and last commands ran in the schedule."""
    positions = [at for at, (who, _) in enumerate(played.sent) if who == actor]
    return positions[0], positions[-1]


# --- I1: every live session saved with a user id is listed ----------------


def listed_once_saved(
    server: Server, mode: str, loop: Any, seed: int, lose: bool
) -> None:
    """A login, a key change and a save race two listings.

    An old entry whose session is gone (ended without its user known) names
    the key the login creates, so a listing that read it before the login
    wrote its entry prunes it only if it is still what it read.
    """
    layer = RedisLayer()
    scenario = Scenario(layer, mode, loop)
    # Turns: one script per write on one server, an entry and a session on
    # Cluster (and the old session's end, for the key change); a listing is
    # an index read, a PTTL pipeline (one per primary on Cluster) and
    # perhaps a prune. On Cluster, one more each: the asyncio client's first
    # command of a new event loop may be redirected (MOVED) and sent again.
    turns = [3, 4, 3, 6, 6] if server.cluster else [1, 1, 1, 3, 3]
    drive(
        with_retries(turns, server, lose),
        lose,
        seed,
        lambda order, user, lose_at: once_listed(
            server, scenario, order, user, lose_at
        ),
    )


def drive(
    turns: list[int],
    lose: bool,
    seed: int,
    once: Callable[[list[int], str, int | None], Interleaving],
) -> None:
    """Play schedules until ``SCHEDULES`` distinct interleavings ran.

    Distinct in the commands as they ran: an actor that sends fewer commands
    than its turns makes several orders play the same interleaving, which
    counts once. With ``lose``, ``LOST_SCHEDULES`` of them, each played until
    a script's reply was lost (a fresh user each time).
    """
    wanted = LOST_SCHEDULES if lose else SCHEDULES
    distinct: set[tuple[tuple[int, str], ...]] = set()
    for n, order in enumerate(interleavings(turns, seed, 4 * wanted)):
        for lose_at in losses(order, n, lose):
            played = once(order, f"u{n}-{lose_at}", lose_at)
            if not lose or played.lost:
                break
        else:
            raise AssertionError(f"No reply was lost in {order}.")
        distinct.add(tuple(played.sent))
        if len(distinct) >= wanted:
            return
    raise AssertionError(f"Only {len(distinct)} distinct interleavings ran.")


def with_retries(turns: list[int], server: Server, lose: bool) -> list[int]:
    """``turns`` with room for the retry of a lost reply, and on Cluster for
    what it adds there (the client learns the slots again and may be
    redirected once more)."""
    if not lose:
        return turns
    return [n + (3 if server.cluster else 1) for n in turns]


def losses(order: list[int], n: int, lose: bool) -> list[int | None]:
    """Where to lose a reply in schedule ``n``: nowhere, or at each position
    in turn, from one that moves with ``n`` through the first half of the
    schedule (where scripts run), until a script's reply was lost."""
    if not lose:
        return [None]
    start = n % max(1, len(order) // 2)
    return [(start + shift) % len(order) for shift in range(len(order))]


def once_listed(
    server: Server, scenario: Scenario, order: list[int], user: str, lose_at: int | None
) -> Interleaving:
    """One schedule of ``listed_once_saved``, checked."""
    layer = scenario.layer
    old, kept, created, cycled = new_key(), new_key(), new_key(), new_key()
    for key in (old, kept):
        assert layer.create(key, payload(user), TTL, entry(user)) is Outcome.WRITTEN
    stale = now_ms() - 2 * SLACK_MS
    index, expiry = layer.index_names(user)
    server.raw.hset(index, layer.session_id(created), f"{now_ms()}|{stale}|{stale}||")
    server.raw.zadd(expiry, {layer.session_id(created): now_ms() + 60_000})
    actors = [
        scenario.call("create", created, payload(user), TTL, entry(user)),
        scenario.call("cycle", old, cycled, payload(user), TTL, entry(user)),
        scenario.call("update", kept, payload(user), TTL, entry(user)),
        scenario.call("user_entries", user),
        scenario.call("user_entries", user),
    ]
    played, results = scenario.play(order, actors, lose_at)
    assert results[:3] == [Outcome.WRITTEN] * 3, (order, played.sent)
    alive = live(server, layer, [old, kept, created, cycled])
    expected = {layer.session_id(key) for key in (kept, created, cycled)}
    assert alive == expected
    # Listed now, and never pruned: the index holds every live session.
    assert listed_ids(layer, user) == expected
    assert expected <= fields(server, layer, user)
    # A listing that started after a write returned lists its session.
    for reader in (3, 4):
        start, _ = first_and_last(played, reader)
        seen = {session_id for session_id, _, _ in results[reader]}
        for writer, key in enumerate((created, cycled, kept)):
            if first_and_last(played, writer)[1] < start:
                assert layer.session_id(key) in seen, (order, played.sent)
        assert seen <= expected | {layer.session_id(old)}
    return played


def test_a_live_session_is_always_listed(
    server: Server, mode: str, loop: Any, gate: None
) -> None:
    listed_once_saved(server, mode, loop, seed=11, lose=False)


def test_a_live_session_is_always_listed_when_a_reply_is_lost(
    server: Server, mode: str, loop: Any, gate: None, quick_retry: None
) -> None:
    listed_once_saved(server, mode, loop, seed=12, lose=True)


# --- I3: the cap ends live sessions only -----------------------------------


def cap_ends_live_sessions_only(
    server: Server, mode: str, loop: Any, seed: int, lose: bool
) -> None:
    """Two logins beyond the cap race a listing; a dead entry must not count.

    With a cap of 3, the user has an old live session, then one ended behind
    the index's back (its entry stays: no user was known), then a live one.
    Two logins make four live sessions: exactly the oldest live one ends,
    once, reported once; never the dead one's place taken by a live one,
    never a login's own session.
    """
    ended: list[str] = []

    async def aended(ids: list[str]) -> None:
        ended.extend(ids)

    layer = RedisLayer(on_evicted=ended.extend, aon_evicted=aended)
    assert layer._cap == 3
    scenario = Scenario(layer, mode, loop)
    # A login: its write (an entry and a session on Cluster), then, beyond
    # the cap, a listing (an index read, a PTTL pipeline per primary on
    # Cluster, perhaps a prune) and the end of the oldest session (on Cluster
    # then its unlisting); a listing.
    # On Cluster, one more each, as above.
    turns = [10, 10, 6] if server.cluster else [5, 5, 3]
    drive(
        with_retries(turns, server, lose),
        lose,
        seed,
        lambda order, user, lose_at: once_capped(
            server, scenario, order, user, lose_at, ended
        ),
    )


def once_capped(
    server: Server,
    scenario: Scenario,
    order: list[int],
    user: str,
    lose_at: int | None,
    ended: list[str],
) -> Interleaving:
    """One schedule of ``cap_ends_live_sessions_only``, checked."""
    layer = scenario.layer
    oldest, dead, recent, first, second = (new_key() for _ in range(5))
    for key in (oldest, dead, recent):
        assert layer.create(key, payload(user), TTL, entry(user)) is Outcome.WRITTEN
    assert layer.destroy(dead) is True  # no user given: the entry stays
    ended.clear()
    actors = [
        scenario.call("create", first, payload(user), TTL, entry(user)),
        scenario.call("create", second, payload(user), TTL, entry(user)),
        scenario.call("user_entries", user),
    ]
    played, results = scenario.play(order, actors, lose_at)
    assert results[:2] == [Outcome.WRITTEN] * 2, (order, played.sent)
    keys = [oldest, dead, recent, first, second]
    expected = {layer.session_id(key) for key in (recent, first, second)}
    assert live(server, layer, keys) == expected, (order, played.sent)
    assert ended == [layer.session_id(oldest)], (order, played.sent)
    assert listed_ids(layer, user) == expected
    assert layer.session_id(oldest) not in fields(server, layer, user)
    return played


@pytest.fixture
def capped(settings: Any, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "MAX_SESSIONS_PER_USER": 3}
    # Sessions created within one millisecond would tie for the oldest; a
    # clock that moves at every reading keeps their order the order of
    # their logins.
    ticks = itertools.count()
    monkeypatch.setattr(layer_module, "now_ms", lambda: now_ms() + next(ticks))


def test_the_cap_ends_only_the_oldest_live_session(
    server: Server, mode: str, loop: Any, gate: None, capped: None
) -> None:
    cap_ends_live_sessions_only(server, mode, loop, seed=21, lose=False)


def test_the_cap_ends_only_the_oldest_live_session_when_a_reply_is_lost(
    server: Server, mode: str, loop: Any, gate: None, capped: None, quick_retry: None
) -> None:
    cap_ends_live_sessions_only(server, mode, loop, seed=22, lose=True)
