"""``logout_user()`` against concurrent logins and key changes, forced.

The real ``logout_user`` runs; between any two of its round trips (and before
and after it) the steps of two other requests of the same user run in a
chosen order: a password change of a session live when the logout started
(load, ``cycle_key``, save) and a login of an anonymous visitor (load,
``cycle_key``, save with the user). Invariant I2: every session live when the
logout was called ends, including one a ``cycle_key`` moved meanwhile; a
session created meanwhile ends or is listed; each ending sends one
``session_ended`` with reason ``"logout_user"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.base import UpdateError
from django.dispatch import receiver
from django.test import Client

from django_redis_sessions import get_store, signals
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.keys import glob_escape
from django_redis_sessions.redis_layer import get_layer
from django_redis_sessions.store import RedisSessionStore
from tests.utils import needs_async_backend

USER = "7"

#: Schedules per mode and server (a seeded sample of every placement).
SCHEDULES = 500


def placements(steps: int, boundaries: int) -> list[tuple[str, ...]]:
    """Every merge of the two requests' steps, cut at logout's round trips.

    A placement lists, for each boundary (before the logout, after each of
    its round trips, after it returned), which requests step there, in
    order: "p" (the password change) or "l" (the login), or "|" to move on
    to the next boundary.
    """
    merges = {
        tuple("p" if i in chosen else "l" for i in range(2 * steps))
        for chosen in itertools.combinations(range(2 * steps), steps)
    }
    found = []
    for merge in sorted(merges):
        for cuts in itertools.combinations_with_replacement(
            range(2 * steps + 1), boundaries - 1
        ):
            plan: list[str] = []
            at = 0
            for cut in cuts:
                plan += [*merge[at:cut], "|"]
                at = cut
            found.append((*plan, *merge[at:]))
    return found


def sample(seed: int) -> list[tuple[str, ...]]:
    every = placements(3, 5)
    return sorted(random.Random(seed).sample(every, SCHEDULES))


class Requests:
    """The two concurrent requests, stepping through the backend's methods."""

    def __init__(self, mode: str, password_key: str, login_key: str) -> None:
        self.mode = mode
        self.password = SessionStore(password_key)
        self.login = SessionStore(login_key)
        self.done = {"p": 0, "l": 0}

    def _steps(self, who: str) -> list[tuple[str, Callable[[], None] | None]]:
        session = self.password if who == "p" else self.login
        if who == "p":  # update_session_auth_hash()

            def then() -> None:
                session["_auth_user_hash"] = "new"
        else:  # login()

            def then() -> None:
                session["_auth_user_id"] = USER

        return [("_get_session", None), ("cycle_key", then), ("save", None)]

    def step(self, who: str) -> None:
        method, then = self._steps(who)[self.done[who]]
        self.done[who] += 1
        with contextlib.suppress(UpdateError):  # SessionInterrupted: logged out
            getattr(self.password if who == "p" else self.login, method)()
        if then is not None:
            then()

    async def astep(self, who: str) -> None:
        method, then = self._steps(who)[self.done[who]]
        self.done[who] += 1
        session = self.password if who == "p" else self.login
        name = "_aget_session" if method == "_get_session" else "a" + method
        with contextlib.suppress(UpdateError):
            await getattr(session, name)()
        if then is not None:
            then()


def boundaries_of(plan: tuple[str, ...]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for item in plan:
        if item == "|":
            groups.append([])
        else:
            groups[-1].append(item)
    return groups


def saved(**data: Any) -> str:
    session = SessionStore()
    session.update(data)
    session.save()
    return str(session.session_key)


def live_sessions(client: Any, prefix: str) -> dict[bytes, dict[str, Any]]:
    found = {}
    for name in client.scan_iter(match=glob_escape(prefix) + "*"):
        if name.endswith(b"}") and b"{u:" not in name:
            payload = client.get(name)
            if payload is not None:
                found[name] = json.loads(payload)
    return found


def arrange(
    plan: tuple[str, ...], mode: str
) -> tuple[Requests, Iterator[list[str]], RedisSessionStore]:
    """The user's sessions and the two requests of one schedule."""
    password_key = saved(_auth_user_id=USER, secret="P")
    saved(_auth_user_id=USER, secret="B")  # an idle device of the user
    login_key = saved(secret="L")
    return (
        Requests(mode, password_key, login_key),
        iter(boundaries_of(plan)),
        RedisSessionStore(),
    )


@contextlib.contextmanager
def logout_signals() -> Iterator[list[str]]:
    """The ids ``session_ended`` names with reason "logout_user", in order."""
    sent: list[str] = []

    @receiver(signals.session_ended, weak=False)
    def ended(sender: type, session_id: str, reason: str, **kwargs: Any) -> None:
        if reason == "logout_user":  # the requests' key changes send "cycle"
            sent.append(session_id)

    try:
        yield sent
    finally:
        signals.session_ended.disconnect(ended)


def play(
    plan: tuple[str, ...], client: Any, prefix: str
) -> tuple[int, list[str], dict[bytes, dict[str, Any]]]:
    """One schedule; (logout_user's answer, the ended ids sent, live sessions)."""
    requests, groups, store = arrange(plan, "sync")
    layer = store._layer
    with logout_signals() as sent:
        for method in ("index_fields", "destroy"):
            setattr(layer, method, _then(getattr(layer, method), groups, requests))
        for who in next(groups):
            requests.step(who)
        answer = store.logout_user(USER)
        for group in groups:
            for who in group:
                requests.step(who)
    return answer, sent, live_sessions(client, prefix)


async def aplay(
    plan: tuple[str, ...], client: Any, prefix: str
) -> tuple[int, list[str], dict[bytes, dict[str, Any]]]:
    """``play`` through the asyncio methods, on the running loop."""
    requests, groups, store = arrange(plan, "async")
    layer = store._layer
    with logout_signals() as sent:
        for method in ("aindex_fields", "adestroy"):
            setattr(layer, method, _athen(getattr(layer, method), groups, requests))
        for who in next(groups):
            await requests.astep(who)
        answer = await store.alogout_user(USER)
        for group in groups:
            for who in group:
                await requests.astep(who)
    return answer, sent, live_sessions(client, prefix)


def play_all(mode: str, plans: list[tuple[str, ...]], client: Any, prefix: str) -> None:
    """Play and check every schedule; the asyncio ones share one event loop,
    as the requests of an ASGI server do."""
    if mode == "sync":
        for plan in plans:
            check(plan, *play(plan, client, prefix))
            clean(client, prefix)
        return

    async def every() -> None:
        for plan in plans:
            check(plan, *await aplay(plan, client, prefix))
            clean(client, prefix)

    asyncio.run(every())


def _then(method: Any, groups: Iterator[list[str]], requests: Requests) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        for who in next(groups, []):
            requests.step(who)
        return result

    return wrapped


def _athen(method: Any, groups: Iterator[list[str]], requests: Requests) -> Any:
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = await method(*args, **kwargs)
        for who in next(groups, []):
            await requests.astep(who)
        return result

    return wrapped


def check(
    plan: tuple[str, ...],
    answer: int,
    sent: list[str],
    live: dict[bytes, dict[str, Any]],
) -> None:
    # I2: nothing of a session live at the call survives, moved or not; the
    # login's session is one of them when it was saved before the call.
    before = boundaries_of(plan)[0]
    ended = {"P", "B", "L"} if before.count("l") == 3 else {"P", "B"}
    assert not [data for data in live.values() if data.get("secret") in ended], live
    # A login during the call: ended, or live and listed.
    listed = {session.id for session in RedisSessionStore().user_sessions(USER)}
    logged_in = [name for name, data in live.items() if data.get("_auth_user_id")]
    assert len(logged_in) == len(listed) <= 1, (live, listed)
    # One signal per session ended, and the answer counts them.
    assert len(sent) == len(set(sent)) == answer >= 1


def clean(client: Any, prefix: str) -> None:
    for name in client.scan_iter(match=glob_escape(prefix) + "*"):
        client.delete(name)


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_logout_user_ends_every_session_live_at_the_call_under_any_interleaving(
    mode: str, raw_redis: redis.Redis, prefix: str
) -> None:
    plans = sample(seed=19)
    play_all(mode, plans, raw_redis, prefix)
    assert len(plans) == SCHEDULES


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_logout_user_on_cluster_ends_every_session_live_at_the_call(
    mode: str, cluster: Any, prefix: str
) -> None:
    plans = sample(seed=20)
    play_all(mode, plans, cluster, prefix)
    assert len(plans) == SCHEDULES


def test_the_placements_cover_every_boundary() -> None:
    every = placements(3, 5)
    # 20 merges of two 3-step requests, cut by 4 boundaries among 7 places.
    assert len(every) == 20 * 210
    assert ("|", "|", "|", "|", "p", "p", "p", "l", "l", "l") in every
    assert ("p", "l", "p", "l", "p", "l", "|", "|", "|", "|") in every


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_logout_user_inside_a_cluster_key_change_ends_the_new_session(
    mode: str, cluster: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole logout runs between the key change's destroy and its create.

    On Redis Cluster a key change is several round trips: the new id's entry
    must be in the index before the old session ends, so the logout that
    finds the old one already gone reads the index again and ends the new id
    before its session can be created.
    """
    key = saved(_auth_user_id=USER, secret="P")
    request = SessionStore(key)
    layer = get_layer()
    store = RedisSessionStore()
    answers = []
    if mode == "sync":
        destroy = layer.destroy

        def destroy_then_logout(*args: Any, **kwargs: Any) -> bool:
            ended = destroy(*args, **kwargs)
            answers.append(store.logout_user(USER))
            return ended

        monkeypatch.setattr(layer, "destroy", destroy_then_logout)
        request.load()
        request.cycle_key()
    else:
        adestroy = layer.adestroy

        async def adestroy_then_logout(*args: Any, **kwargs: Any) -> bool:
            ended = await adestroy(*args, **kwargs)
            answers.append(await store.alogout_user(USER))
            return ended

        monkeypatch.setattr(layer, "adestroy", adestroy_then_logout)

        async def flow() -> None:
            await request.aload()
            await request.acycle_key()

        asyncio.run(flow())
    assert len(answers) == 1
    assert not [data for data in live_sessions(cluster, prefix).values() if data]
    assert RedisSessionStore().user_sessions(USER) == []


# --- Every ending is signalled -------------------------------------------------


@pytest.fixture
def ended_signals() -> Iterator[list[tuple[str, str]]]:
    received: list[tuple[str, str]] = []

    def ended(sender: type, session_id: str, reason: str, **kwargs: Any) -> None:
        received.append((session_id, reason))

    signals.session_ended.connect(ended)
    yield received
    signals.session_ended.disconnect(ended)


@pytest.mark.django_db
def test_end_all_other_sessions_on_the_page_sends_logout_user_for_each(
    ended_signals: list[tuple[str, str]],
) -> None:
    from django.contrib.auth.models import User

    alice = User.objects.create_user("alice", password="x")
    devices = [Client() for _ in range(3)]
    for device in devices:
        assert device.get(f"/login/?id={alice.pk}").status_code == 200
    ids = [get_store().session_id(d.cookies["sessionid"].value) for d in devices]
    ended_signals.clear()
    response = devices[0].post("/account/sessions/end-others/")
    assert response.status_code == 302
    assert sorted(ended_signals) == sorted(
        (session_id, "logout_user") for session_id in ids[1:]
    )


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_logout_user_sends_logout_user_once_per_live_session_it_ended(
    mode: str, ended_signals: list[tuple[str, str]]
) -> None:
    keys = [saved(_auth_user_id=USER) for _ in range(3)]
    store = RedisSessionStore()
    assert store.destroy(keys[2])  # ended already: its entry stays, stale
    ended_signals.clear()
    if mode == "sync":
        assert store.logout_user(USER, keep=keys[0]) == 1
    else:
        assert asyncio.run(store.alogout_user(USER, keep=keys[0])) == 1
    assert ended_signals == [(store.session_id(keys[1]), "logout_user")]
    assert [s.id for s in store.user_sessions(USER)] == [store.session_id(keys[0])]


@pytest.mark.parametrize(
    "mode", ["sync", pytest.param("async", marks=needs_async_backend)]
)
def test_a_login_beyond_the_cap_sends_evicted_for_the_session_it_ends(
    mode: str, session_redis: dict[str, Any], ended_signals: list[tuple[str, str]]
) -> None:
    session_redis["MAX_SESSIONS_PER_USER"] = 1
    oldest = saved(_auth_user_id=USER)
    ended_signals.clear()
    newest = SessionStore()
    newest["_auth_user_id"] = USER
    if mode == "sync":
        newest.save()
    else:
        asyncio.run(newest.asave())
    store = RedisSessionStore()
    assert ended_signals == [(store.session_id(oldest), "evicted")]
    assert store.exists(oldest) is False
    assert [s.id for s in store.user_sessions(USER)] == [
        store.session_id(str(newest.session_key))
    ]
