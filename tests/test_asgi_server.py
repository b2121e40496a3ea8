"""Sessions under a real ASGI server (uvicorn) in its own process."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import django
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_name(prefix: str) -> str:
    return "uvicorn-" + prefix.rstrip(":")


def connections(raw_redis: redis.Redis, name: str) -> int:
    """Connections the server holds for clients named ``name``."""
    return sum(1 for client in raw_redis.client_list() if client["name"] == name)


@contextmanager
def uvicorn(redis_url: str, prefix: str) -> Iterator[tuple[int, list[str]]]:
    """uvicorn serving the test project; its output is in the list once it stops."""
    port = free_port()
    env = {
        **os.environ,
        "TEST_SESSION_REDIS_URL": redis_url,
        "TEST_SESSION_REDIS_PREFIX": prefix,
        "TEST_SESSION_REDIS_CLIENT_NAME": client_name(prefix),
        "PYTHONPATH": str(ROOT),
        "PYTHONDEVMODE": "1",  # ResourceWarnings are printed
    }
    log: list[str] = []
    command = [sys.executable, "-m", "uvicorn", "tests.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # polled readiness, not a fixed sleep
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert process.poll() is None, "uvicorn exited during startup"
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
        yield port, log
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        log.append(output.decode(errors="replace"))


def get(port: int, path: str, cookie: str | None) -> tuple[bytes, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        set_cookie = response.getheader("Set-Cookie")
        return response.read(), set_cookie.split(";")[0] if set_cookie else None
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/write/",
        pytest.param(
            "/async-write/",
            marks=pytest.mark.skipif(
                django.VERSION < (5, 1), reason="async session methods need 5.1"
            ),
        ),
    ],
)
def test_uvicorn_keeps_the_session_and_shuts_down_without_leaks(
    redis_url: str, prefix: str, path: str, raw_redis: redis.Redis
) -> None:
    with uvicorn(redis_url, prefix) as (port, log):
        first, cookie = get(port, path, None)
        assert cookie is not None
        bodies = [first] + [get(port, path, cookie)[0] for _ in range(4)]
        opened = connections(raw_redis, client_name(prefix))
        bodies += [get(port, path, cookie)[0] for _ in range(20)]
        # Clients are reused across requests: no connection per request.
        assert 1 <= opened <= 2
        assert connections(raw_redis, client_name(prefix)) == opened
    assert bodies == [str(n).encode() for n in range(1, 26)]
    output = "".join(log)
    assert "Traceback" not in output, output
    assert "ResourceWarning" not in output, output
    assert "Finished server process" in output, output
