"""The asyncio side: twins for every method, one client per event loop."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import weakref
from typing import Any

import django
import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application
from django.test import AsyncClient

from django_redis_sessions import client as client_module
from django_redis_sessions.backends.redis import SessionStore
from django_redis_sessions.store import RedisSessionStore, get_store
from tests.utils import needs_async_backend


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and callable(value)
    }


#: Store methods without I/O, so without a twin.
NO_IO = {"session_id"}


def is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def test_every_store_method_has_an_asyncio_twin_and_back() -> None:
    methods = public_methods(RedisSessionStore) - NO_IO
    asynchronous = {n for n in methods if is_async(getattr(RedisSessionStore, n))}
    synchronous = methods - asynchronous
    assert {f"a{name}" for name in synchronous} == asynchronous
    assert "aall" in asynchronous
    assert "get" in synchronous


@needs_async_backend
def test_every_backend_io_method_is_native_asyncio() -> None:
    for name in ["load", "exists", "create", "save", "delete", "cycle_key"]:
        twin = getattr(SessionStore, f"a{name}")
        assert inspect.iscoroutinefunction(twin), name
        # Defined here, not inherited: the base class would use sync_to_async.
        assert f"a{name}" in vars(SessionStore), name


@pytest.mark.skipif(django.VERSION >= (5, 1), reason="only Django 4.2 and 5.0")
def test_no_asyncio_methods_are_added_where_the_base_class_has_none() -> None:
    assert not [name for name in vars(SessionStore) if name.startswith("a")]


def test_each_event_loop_gets_its_own_client_closed_with_the_loop() -> None:
    store = get_store()
    seen: list[Any] = []

    async def use() -> None:
        await store.aset("abcdefgh", {"v": 1}, ttl=60)
        seen.append(client_module.clients.for_running_loop())

    asyncio.run(use())
    asyncio.run(use())
    first, second = seen
    assert first is not second
    for client in seen:
        pool = client.connection_pool
        connections = pool._available_connections + list(pool._in_use_connections)
        assert connections  # it was used...
        assert not any(c.is_connected for c in connections)  # ...and closed


def test_async_to_sync_runs_work_in_a_fresh_loop_without_leaks() -> None:
    store = get_store()
    async_to_sync(store.aset)("abcdefgh", {"v": 1}, ttl=60)
    assert async_to_sync(store.aget)("abcdefgh") == {"v": 1}


def test_a_client_from_a_closed_loop_is_never_reused() -> None:
    store = get_store()
    asyncio.run(store.aset("abcdefgh", {"v": 1}, ttl=60))
    # A second loop would fail with "attached to a different loop" otherwise.
    assert asyncio.run(store.aget("abcdefgh")) == {"v": 1}


@needs_async_backend
def test_the_async_test_client_keeps_the_session_across_requests() -> None:
    async def visit() -> list[bytes]:
        client = AsyncClient()
        return [(await client.get("/async-write/")).content for _ in range(3)]

    assert asyncio.run(visit()) == [b"1", b"2", b"3"]


@needs_async_backend
def test_the_asgi_application_serves_a_session() -> None:
    app = get_asgi_application()

    async def request(cookie: bytes | None) -> tuple[bytes, bytes | None]:
        headers = [(b"host", b"testserver")]
        if cookie:
            headers.append((b"cookie", cookie))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/async-write/",
            "raw_path": b"/async-write/",
            "query_string": b"",
            "headers": headers,
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 12345),
        }
        communicator = ApplicationCommunicator(app, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(5)
        body = await communicator.receive_output(5)
        await communicator.wait(5)
        set_cookie = dict(start["headers"]).get(b"Set-Cookie")
        return body["body"], set_cookie

    async def two_requests() -> list[bytes]:
        first, set_cookie = await request(None)
        assert set_cookie is not None
        cookie = set_cookie.split(b";")[0]
        second, _ = await request(cookie)
        return [first, second]

    assert asyncio.run(two_requests()) == [b"1", b"2"]


def test_finished_event_loops_and_their_clients_are_not_kept_alive() -> None:
    store = get_store()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    clients: list[weakref.ref[Any]] = []

    async def use() -> None:
        await store.acreate("abcdefgh", {"v": 1}, ttl=60)  # a script, too
        await store.aget("abcdefgh")
        loops.append(weakref.ref(asyncio.get_running_loop()))
        clients.append(weakref.ref(client_module.clients.for_running_loop()))

    for _ in range(5):
        asyncio.run(use())
    gc.collect()
    assert client_module.clients.loops == 0
    assert [ref() for ref in loops] == [None] * 5
    assert [ref() for ref in clients] == [None] * 5


def test_the_suite_drops_only_asyncio_slow_callback_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tox's debug mode must not put machine load into the records tests check."""
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.0  # every callback counts as slow
    try:
        with caplog.at_level(logging.WARNING, "asyncio"):
            loop.run_until_complete(asyncio.sleep(0))
            logging.getLogger("asyncio").warning("a warning that stays")
    finally:
        loop.close()
    assert [r.getMessage() for r in caplog.records] == ["a warning that stays"]
