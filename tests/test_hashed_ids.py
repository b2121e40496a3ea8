"""Session ids hashed at rest: no read of Redis yields a usable cookie."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tracemalloc
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.cluster
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.core.management.base import CommandError
from django.test import AsyncClient, Client, override_settings

from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.checks import check_settings
from django_redis_sessions.keys import data_key, glob_escape, tombstone_key
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import Outcome
from django_redis_sessions.store import RedisSessionStore
from django_redis_sessions.testing import CommandLog
from tests.utils import (
    Keys,
    Monitor,
    ReplyDroppingProxy,
    everything_in,
    needs_async_backend,
    redis_sessions,
)

KEY = "abcdefgh12345678abcdefgh12345678"


def expected_id(key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return "#" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.fixture
def hashed(session_redis: dict[str, Any]) -> dict[str, Any]:
    session_redis["HASH_IDS"] = True
    return session_redis


# --- Ids ----------------------------------------------------------------------


def test_the_id_is_a_hash_sign_and_the_unpadded_base64url_sha256_of_the_key(
    hashed: dict[str, Any],
) -> None:
    store = RedisSessionStore()
    assert store.session_id(KEY) == expected_id(KEY)
    assert len(store.session_id(KEY)) == 44
    assert store.session_id(store.session_id(KEY)) == store.session_id(KEY)
    assert RedisSessionStore(hash_ids=False).session_id(KEY) == KEY


def test_every_single_session_method_takes_a_key_or_its_id(
    hashed: dict[str, Any], redis_keys: Keys, prefix: str
) -> None:
    store = RedisSessionStore()
    session_id = store.session_id(KEY)
    assert store.create(KEY, {"v": 1}, ttl=60) is True
    assert redis_keys() == {data_key(prefix, session_id)}
    assert store.get(session_id) == {"v": 1}
    assert store.update(session_id, {"v": 2}, ttl=60) is True
    assert store.touch(session_id, 60) is True
    assert store.exists(session_id) is True
    assert 0 < (store.ttl(session_id) or 0) <= 60
    assert list(store.all()) == [(session_id, {"v": 2})]
    assert store.destroy(session_id) is True
    assert store.get(KEY) is None
    assert redis_keys() == {tombstone_key(prefix, session_id)}


# --- The cookie never reaches Redis -------------------------------------------


def assert_nowhere(secrets: set[str], raw: redis.Redis, monitor: Monitor) -> None:
    assert secrets, "the test saw no cookie"
    stored = everything_in(raw)
    for secret in secrets:
        assert not [item for item in stored if secret.encode() in item]
        assert not [line for line in monitor.commands if secret in line]
    # The monitor saw the requests: an empty log would prove nothing.
    assert any("EVALSHA" in line for line in monitor.commands)


@pytest.mark.django_db
def test_a_login_and_a_logout_leave_the_cookie_nowhere_in_redis(
    hashed: dict[str, Any], redis_url: str, raw_redis: redis.Redis
) -> None:
    user = get_user_model().objects.create_user("alice", password="x")
    client = Client()
    cookies: set[str] = set()
    with Monitor(redis_url) as monitor:
        assert client.get("/write/").content == b"1"
        cookies.add(client.cookies["sessionid"].value)
        assert client.get(f"/login/?id={user.pk}").content == b"in"
        cookies.add(client.cookies["sessionid"].value)
        assert client.get("/write/").content == b"2"
        assert client.get("/read/").content == b"2"
        assert client.get("/logout/").content == b"out"
    assert len(cookies) == 2
    assert_nowhere(cookies, raw_redis, monitor)


@needs_async_backend
@pytest.mark.django_db(transaction=True)
def test_the_asyncio_path_leaves_the_cookie_nowhere_in_redis(
    hashed: dict[str, Any], redis_url: str, raw_redis: redis.Redis
) -> None:
    user = get_user_model().objects.create_user("bob", password="x")
    cookies: set[str] = set()

    async def visit() -> None:
        client = AsyncClient()
        assert (await client.get("/async-write/")).content == b"1"
        cookies.add(client.cookies["sessionid"].value)
        assert (await client.get(f"/async-login/?id={user.pk}")).content == b"in"
        cookies.add(client.cookies["sessionid"].value)
        assert (await client.get("/async-write/")).content == b"2"
        assert (await client.get("/async-logout/")).content == b"out"

    with Monitor(redis_url) as monitor:
        asyncio.run(visit())
    assert len(cookies) == 2
    assert_nowhere(cookies, raw_redis, monitor)


@pytest.mark.parametrize(
    "cookie",
    [
        expected_id(KEY),  # a leaked id
        expected_id(KEY)[1:],  # its digest: 43 characters, "-" and "_" among them
        "#" + "a" * 43,
        "short",
        "k" * 65,
        "clé-de-session-1",
        "abc def ghi jkl",
    ],
    ids=["id", "digest", "id-shaped", "short", "long", "non-ascii", "spaces"],
)
def test_a_cookie_no_session_key_could_be_is_never_looked_up(
    hashed: dict[str, Any],
    session_redis: dict[str, Any],
    redis_keys: Keys,
    cookie: str,
) -> None:
    log = CommandLog()
    session_redis["OPTIONS"] = {"connection_class": log.connection_class}
    RedisSessionStore().create(KEY, {"_auth_user_id": "1"}, ttl=60)
    before = redis_keys()
    log.take()
    client = Client()
    client.cookies["sessionid"] = cookie
    assert client.get("/read/").content == b"0"
    assert log.take() == []  # not even a GET
    assert redis_keys() == before


# --- HASH_IDS "migrate" -------------------------------------------------------


def plain_sessions(prefix: str, count: int, **data: Any) -> list[str]:
    """Sessions as the previous release wrote them: under their plain key."""
    layer = RedisLayer(hash_ids=False, prefix=prefix)
    keys = [f"plain{number:027d}" for number in range(count)]
    for key in keys:
        payload = json.dumps({"n": key, **data}, separators=(",", ":")).encode()
        assert layer.create(key, payload, 3600) is Outcome.WRITTEN
    return keys


@pytest.fixture
def migrating(session_redis: dict[str, Any]) -> dict[str, Any]:
    session_redis["HASH_IDS"] = "migrate"
    return session_redis


def test_migrate_moves_a_plain_session_to_its_id_on_first_load(
    migrating: dict[str, Any],
    raw_redis: redis.Redis,
    redis_keys: Keys,
    prefix: str,
    call: Any,
) -> None:
    [key] = plain_sessions(prefix, 1, _auth_user_id="7")
    session_id = expected_id(key)
    session = SessionStore(key)
    assert call(session, "load") == {"n": key, "_auth_user_id": "7"}
    assert session.session_key == key  # the same cookie keeps working
    assert redis_keys() == {data_key(prefix, session_id), tombstone_key(prefix, key)}
    assert 3_590_000 < raw_redis.pttl(data_key(prefix, session_id)) <= 3_600_000
    # From now on it is found under its id; the plain name stays refused.
    assert call(SessionStore(key), "load") == {"n": key, "_auth_user_id": "7"}
    assert RedisSessionStore(hash_ids=False).set(key, {"n": "again"}, 60) is False


def test_migrate_loads_a_plain_session_in_one_round_trip(
    migrating: dict[str, Any], session_redis: dict[str, Any], prefix: str
) -> None:
    log = CommandLog()
    session_redis["OPTIONS"] = {"connection_class": log.connection_class}
    [key] = plain_sessions(prefix, 1)
    SessionStore("x" * 32).load()  # connects and loads the script
    log.take()
    assert SessionStore(key).load() == {"n": key}
    assert log.take() == ["EVALSHA"]
    assert SessionStore(key).load() == {"n": key}
    assert log.take() == ["EVALSHA"]


def test_migrate_logout_and_cycle_key_end_both_forms(
    migrating: dict[str, Any], redis_keys: Keys, prefix: str, call: Any
) -> None:
    first, second = plain_sessions(prefix, 2)
    # A logout before any load: the plain form ends too.
    call(SessionStore(first), "delete")
    assert redis_keys() >= {tombstone_key(prefix, first)}
    assert call(SessionStore(first), "load") == {}
    # A login: the data moves to a new id, both old forms end.
    session = SessionStore(second)
    call(session, "load")
    call(session, "cycle_key")
    call(session, "save")
    new_id = expected_id(str(session.session_key))
    assert redis_keys() == {
        tombstone_key(prefix, first),
        tombstone_key(prefix, expected_id(first)),
        tombstone_key(prefix, second),
        tombstone_key(prefix, expected_id(second)),
        data_key(prefix, new_id),
    }
    assert call(SessionStore(second), "load") == {}


def test_a_plain_session_logged_out_is_never_moved_back(
    migrating: dict[str, Any], redis_keys: Keys, prefix: str
) -> None:
    [key] = plain_sessions(prefix, 1)
    in_flight = SessionStore(key)
    assert in_flight["n"] == key  # loaded, and moved to its id
    SessionStore(key).flush()
    assert SessionStore(key).load() == {}
    # The request that loaded it before the logout cannot write it back.
    in_flight["n"] = "late"
    with pytest.raises(UpdateError):
        in_flight.save()
    assert not [name for name in redis_keys() if not name.endswith(":tombstone")]


def fill_plain(raw: redis.Redis, prefix: str, count: int, start: int = 0) -> None:
    pipe = raw.pipeline(transaction=False)
    for number in range(start, start + count):
        key = f"plain{number:027d}"
        pipe.set(data_key(prefix, key), b'{"n":1}', px=3_600_000)
    pipe.execute()


def test_rehash_moves_every_plain_session_exactly_once(
    migrating: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    count = 100_000
    fill_plain(raw_redis, prefix, count)
    hashed_key = "hashed00000000000000000000000000"
    RedisSessionStore().create(hashed_key, {"n": 2}, ttl=3600)

    assert redis_sessions("rehash", "--dry-run") == (
        f"Would move {count:,} sessions to their ids.\n"
    )
    assert redis_sessions("rehash") == f"Moved {count:,} sessions to their ids.\n"
    assert redis_sessions("rehash") == "Moved 0 sessions to their ids.\n"
    store = RedisSessionStore()
    assert store.count() == count + 1
    assert store.get(f"plain{1:027d}") == {"n": 1}
    assert store.get(hashed_key) == {"n": 2}
    pattern = glob_escape(prefix) + "{plain*}"
    assert list(raw_redis.scan_iter(match=pattern, count=10_000)) == []


def test_rehash_memory_does_not_grow_with_the_store(
    migrating: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    peaks: list[int] = []
    for count in (5_000, 20_000):
        fill_plain(raw_redis, prefix, count, start=len(peaks) * 100_000)
        tracemalloc.start()
        try:
            redis_sessions("rehash")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks.append(peak)
    # One SCAN batch at a time: four times the sessions, about the same peak
    # (a list of every name would grow fourfold).
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_rehash_refuses_when_ids_are_not_hashed(
    session_redis: dict[str, Any],
) -> None:
    session_redis["HASH_IDS"] = False
    with pytest.raises(CommandError, match=r"HASH_IDS'\] is False"):
        redis_sessions("rehash")


# --- Redis Cluster ------------------------------------------------------------


@pytest.fixture
def migrating_cluster(
    cluster: redis.cluster.RedisCluster, settings: Any
) -> redis.cluster.RedisCluster:
    settings.SESSION_REDIS["HASH_IDS"] = "migrate"
    return cluster


def cluster_names(client: redis.cluster.RedisCluster, prefix: str) -> set[str]:
    pattern = glob_escape(prefix) + "*"
    return {name.decode() for name in client.scan_iter(match=pattern)}


def test_migrate_on_cluster_moves_on_load_and_rehash_moves_the_rest(
    migrating_cluster: redis.cluster.RedisCluster, prefix: str, call: Any
) -> None:
    cluster = migrating_cluster
    keys = plain_sessions(prefix, 30)
    session = SessionStore(keys[0])
    assert call(session, "load") == {"n": keys[0]}
    assert data_key(prefix, expected_id(keys[0])) in cluster_names(cluster, prefix)
    assert data_key(prefix, keys[0]) not in cluster_names(cluster, prefix)
    assert redis_sessions("rehash") == "Moved 29 sessions to their ids.\n"
    assert redis_sessions("rehash") == "Moved 0 sessions to their ids.\n"
    layer = RedisLayer()
    assert {name for name in cluster_names(cluster, prefix) if name.endswith("}")} == {
        layer.data_name(key) for key in keys
    }
    call(SessionStore(keys[1]), "delete")
    assert call(SessionStore(keys[1]), "load") == {}
    assert RedisSessionStore().count() == 29


@pytest.mark.parametrize("hash_ids", [True, False])
def test_a_batch_of_names_gives_the_ids_one_name_at_a_time_gives(
    hash_ids: bool,
) -> None:
    layer = RedisLayer(prefix="p:{x}\u00e9:", hash_ids=hash_ids)
    key = "k" * 32
    keys = [key, "#" + "A" * 43, "l\u00e9gacy", "with\x00nul"]
    names = [layer.data_name(one).encode() for one in keys]
    names += [data_key(layer.prefix, key).encode()]  # awaiting rehash
    one_by_one = [layer.id_of_name(name) for name in names]
    assert layer.ids_of_names(names) == one_by_one
    assert layer.ids_of_names(names[:3]) == one_by_one[:3]  # no NUL: at once
    assert layer.ids_of_names([]) == []
    # Ids only, the usual batch, are taken as they are; one name that only
    # looks like an id (a character outside base64url) is hashed like a key.
    ids = [layer.data_name("#" + char * 43).encode() for char in "AB_-"]
    assert layer.ids_of_names(ids) == [layer.id_of_name(name) for name in ids]
    near = [*ids, data_key(layer.prefix, "#" + "A" * 42 + "$").encode()]
    assert layer.ids_of_names(near) == [layer.id_of_name(name) for name in near]
    assert key not in one_by_one if hash_ids else key in one_by_one


# --- Rollouts: processes on two settings side by side --------------------------


def as_process(settings: Any, mode: bool | str) -> None:
    """Act as a process running with ``HASH_IDS = mode`` from now on."""
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, "HASH_IDS": mode}


@pytest.fixture(params=["server", "cluster"])
def topology(request: pytest.FixtureRequest, settings: Any) -> Any:
    """One server, or a Cluster where a session's two forms live on two slots.

    A plain client of that topology, for arranging and asserting.
    """
    if request.param == "cluster":
        return request.getfixturevalue("cluster")
    return request.getfixturevalue("raw_redis")


def names_under(client: Any, prefix: str) -> set[str]:
    pattern = glob_escape(prefix) + "*"
    return {name.decode() for name in client.scan_iter(match=pattern)}


@pytest.mark.parametrize("ending", ["flush", "cycle_key"])
def test_an_ending_on_a_prepare_process_is_final_for_a_migrate_process(
    topology: Any, settings: Any, prefix: str, call: Any, ending: str
) -> None:
    as_process(settings, "prepare")
    [key] = plain_sessions(prefix, 1)
    in_flight = SessionStore(key)
    assert call(in_flight, "get", "n") == key
    # A process already on "migrate" moves the session to its id...
    as_process(settings, "migrate")
    assert call(SessionStore(key), "load") == {"n": key}
    assert data_key(prefix, expected_id(key)) in names_under(topology, prefix)
    # ...and a request on a process still on the plain layout ends the key.
    as_process(settings, "prepare")
    call(in_flight, ending)
    if ending == "cycle_key":
        call(in_flight, "save")
    as_process(settings, "migrate")
    assert call(SessionStore(key), "load") == {}
    names = names_under(topology, prefix)
    assert data_key(prefix, expected_id(key)) not in names
    assert tombstone_key(prefix, expected_id(key)) in names
    if ending == "cycle_key":
        # The login carried the data to its new key, which every process reads.
        new_key = str(in_flight.session_key)
        assert call(SessionStore(new_key), "load") == {"n": key}
    else:
        assert not [name for name in names if name.endswith("}")]


def test_a_logout_arriving_at_a_prepare_process_after_the_move_is_final(
    topology: Any, settings: Any, prefix: str, call: Any
) -> None:
    as_process(settings, "migrate")
    [key] = plain_sessions(prefix, 1)
    assert call(SessionStore(key), "load") == {"n": key}
    # Django's logout() reads the user first: this process finds no plain
    # form, forgets the key, and its flush() has no key left to end.
    as_process(settings, "prepare")
    session = SessionStore(key)
    assert call(session, "get", "n") is None
    call(session, "flush")
    as_process(settings, "migrate")
    assert call(SessionStore(key), "load") == {}
    names = names_under(topology, prefix)
    assert not [name for name in names if name.endswith("}")]
    assert tombstone_key(prefix, expected_id(key)) in names


def test_a_prepare_process_keeps_the_plain_layout_and_refuses_rehash(
    session_redis: dict[str, Any], redis_keys: Keys, prefix: str, call: Any
) -> None:
    session_redis["HASH_IDS"] = "prepare"
    session = SessionStore()
    session["v"] = 1
    call(session, "save")
    key = str(session.session_key)
    assert redis_keys() == {data_key(prefix, key)}
    assert call(SessionStore(key), "load") == {"v": 1}
    assert RedisSessionStore().session_id(key) == key
    # A cookie nobody holds (a bot's) writes nothing.
    assert call(SessionStore("x" * 32), "load") == {}
    assert redis_keys() == {data_key(prefix, key)}
    with pytest.raises(CommandError, match=r"HASH_IDS'\] is 'prepare'"):
        redis_sessions("rehash")


def test_a_prepare_logout_whose_reply_is_lost_still_ends_both_forms(
    session_redis: dict[str, Any], redis_url: str, redis_keys: Keys, prefix: str
) -> None:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None
    assert parts.port is not None
    with ReplyDroppingProxy(parts.hostname, parts.port) as proxy:
        session_redis["URL"] = proxy.url
        session_redis["HASH_IDS"] = "prepare"
        [key, warm] = plain_sessions(prefix, 2)
        store = RedisSessionStore()
        assert store.destroy(warm) is True  # connects and loads the script
        proxy.drop_next_reply("EVALSHA")
        assert store.destroy(key) is True
        assert proxy.dropped == 1
    assert redis_keys() >= {
        tombstone_key(prefix, key),
        tombstone_key(prefix, expected_id(key)),
    }
    assert not [name for name in redis_keys() if name.endswith("}")]


# --- "migrate": a session ended by its id stays ended ---------------------------


def lapse_tombstones(client: Any, prefix: str) -> None:
    """What TOMBSTONE_SECONDS later looks like: every tombstone with a TTL gone."""
    for name in names_under(client, prefix):
        if name.endswith(":tombstone") and client.pttl(name) >= 0:
            client.delete(name)


@pytest.mark.parametrize("user_id", [None, "7"], ids=["alone", "of-a-user"])
def test_a_plain_session_ended_by_its_id_never_comes_back(
    topology: Any, settings: Any, prefix: str, call: Any, user_id: str | None
) -> None:
    as_process(settings, "migrate")
    [key, other] = plain_sessions(prefix, 2, _auth_user_id="7")
    session_id = expected_id(key)
    # What admin code, the sessions page and logout_user hold: the id.
    if user_id is None:
        call(RedisSessionStore(), "destroy", session_id)
    else:
        call(RedisLayer(), "destroy", session_id, user_id)
    lapse_tombstones(topology, prefix)
    assert call(SessionStore(key), "load") == {}
    assert data_key(prefix, key) not in names_under(topology, prefix)
    assert redis_sessions("rehash") == "Moved 1 session to their ids.\n"
    lapse_tombstones(topology, prefix)
    assert call(SessionStore(key), "load") == {}
    assert call(SessionStore(other), "load") == {"n": other, "_auth_user_id": "7"}
    assert RedisSessionStore().count() == 1


def test_rehash_moves_nothing_an_id_ended_and_settles_its_tombstone(
    migrating: dict[str, Any], raw_redis: redis.Redis, prefix: str
) -> None:
    [key] = plain_sessions(prefix, 1)
    marker = tombstone_key(prefix, expected_id(key))
    RedisSessionStore().destroy(expected_id(key))
    assert raw_redis.pttl(marker) == -1  # kept while a plain form may live
    assert redis_sessions("rehash") == "Moved 0 sessions to their ids.\n"
    # No plain form left: the usual lifetime again.
    assert 0 < raw_redis.pttl(marker) <= 300_000
    assert raw_redis.exists(data_key(prefix, key)) == 0
    assert raw_redis.exists(data_key(prefix, expected_id(key))) == 0


def test_an_id_ended_whose_reply_is_lost_still_ends_the_plain_form(
    session_redis: dict[str, Any], redis_url: str, raw_redis: redis.Redis, prefix: str
) -> None:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None
    assert parts.port is not None
    with ReplyDroppingProxy(parts.hostname, parts.port) as proxy:
        session_redis["URL"] = proxy.url
        session_redis["HASH_IDS"] = "migrate"
        [key, warm] = plain_sessions(prefix, 2)
        store = RedisSessionStore()
        store.destroy(expected_id(warm))  # connects and loads the script
        for command in ("EVALSHA", "PERSIST"):
            proxy.drop_next_reply(command)
            store.destroy(expected_id(key))
        assert proxy.dropped == 2
        lapse_tombstones(raw_redis, prefix)
        assert SessionStore(key).load() == {}
    assert raw_redis.exists(data_key(prefix, key)) == 0


def test_a_prepare_process_loads_and_logs_out_in_one_round_trip_each(
    session_redis: dict[str, Any], prefix: str
) -> None:
    log = CommandLog()
    session_redis["OPTIONS"] = {"connection_class": log.connection_class}
    session_redis["HASH_IDS"] = "prepare"
    [key, moved] = plain_sessions(prefix, 2)
    RedisLayer(hash_ids="migrate", prefix=prefix).read(moved)
    SessionStore("x" * 32).load()  # connects and loads the scripts
    SessionStore("x" * 32).flush()
    log.take()
    session = SessionStore(key)
    assert session.load() == {"n": key}
    session.flush()
    assert log.take() == ["EVALSHA", "EVALSHA"]
    # Moved to its id meanwhile: the load ends it, the logout has no more to do.
    session = SessionStore(moved)
    assert session.load() == {}
    session.flush()
    assert log.take() == ["EVALSHA"]


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        (True, []),
        (False, []),
        ("migrate", []),
        ("prepare", []),
        ("Prepare", ["django_redis_sessions.E023"]),
        ("yes", ["django_redis_sessions.E023"]),
    ],
)
def test_hash_ids_takes_its_two_rollout_modes(value: Any, errors: list[str]) -> None:
    with override_settings(SESSION_REDIS={"HASH_IDS": value}):
        found = [message.id for message in check_settings(None)]
    assert found == errors
