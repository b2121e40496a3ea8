"""The demo site in ``example/``: its pages on the suite's Redis, and ``run.py``.

The page tests run the demo's own URLconf, apps, middleware and templates
(taken from ``example/demo/settings.py``) but keep the suite's database and the
per-test ``SESSION_REDIS`` from ``conftest.py``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from django_redis_sessions import get_store
from django_redis_sessions.keys import hashed_id
from tests.utils import CHROME_ON_ANDROID, FIREFOX_ON_WINDOWS, data_name

ROOT = Path(__file__).resolve().parent.parent
#: What the demo adds to the suite's settings; SESSION_REDIS stays the suite's.
DEMO_SETTINGS = [
    "INSTALLED_APPS",
    "MIDDLEWARE",
    "TEMPLATES",
    "MESSAGE_STORAGE",
    "ROOT_URLCONF",
    "LOGIN_URL",
    "LOGIN_REDIRECT_URL",
    "LOGOUT_REDIRECT_URL",
]


@pytest.fixture
def demo(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, session_redis: dict[str, Any]
) -> Iterator[None]:
    # The demo shows sessions by id: it runs with ids hashed, whatever the suite.
    session_redis["HASH_IDS"] = True
    # The demo's settings module reads SESSION_REDIS_URL when first imported.
    monkeypatch.setenv("SESSION_REDIS_URL", redis_url)
    module = importlib.import_module("example.demo.settings")
    metadata = module.SESSION_REDIS["USER_INDEX_METADATA"]
    session_redis["USER_INDEX_METADATA"] = metadata
    with override_settings(**{name: getattr(module, name) for name in DEMO_SETTINGS}):
        yield


def session_key(client: Client) -> str:
    return client.cookies["sessionid"].value


def press(client: Client, times: int = 1) -> None:
    for _ in range(times):
        response = client.post("/")
        assert response.status_code == 302
        assert response["Location"] == "/"


def logged_in_client(username: str, **defaults: Any) -> tuple[Client, User]:
    user = User.objects.filter(username=username).first()
    if user is None:
        user = User.objects.create_user(username=username, password="secret")
    client = Client(**defaults)
    response = client.post("/login/", {"username": username, "password": "secret"})
    assert response.status_code == 302
    return client, user


def rows_by_key(response: Any) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in response.context["rows"]}


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_counter_counts_in_one_session(prefix: str, redis_keys: Any) -> None:
    client = Client()
    response = client.get("/")
    assert response.context["counter"] == 0
    assert response.context["session_key"] is None  # nothing written yet
    assert redis_keys() == set()

    press(client)
    key = session_key(client)
    press(client, 2)

    assert session_key(client) == key
    response = client.get("/")
    assert response.context["counter"] == 3
    assert response.context["short_id"] == get_store().session_id(key)[:9]
    assert response.context["expires_at"] is not None
    assert b"Counter: 3" in response.content
    assert get_store().get(key) == {"counter": 3}
    # The suite's per-test prefix, not the demo's "demo-sessions:".
    assert redis_keys() == {data_name(prefix, key)}


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_login_moves_the_session_and_logout_ends_it() -> None:
    user = User.objects.create_user(username="alice", password="secret")
    client = Client()
    press(client)
    anonymous_key = session_key(client)
    assert b"demo" in client.get("/login/").content  # the hint

    response = client.post("/login/", {"username": "alice", "password": "secret"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    key = session_key(client)
    assert key != anonymous_key
    assert not get_store().exists(anonymous_key)
    assert get_store().get(key) == {
        "counter": 1,
        "_auth_user_id": str(user.pk),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": user.get_session_auth_hash(),
    }
    response = client.get("/")
    assert response.context["user"] == user
    assert response.context["counter"] == 1

    if django.VERSION >= (5, 0):  # Django 4.2 still logs out on GET
        assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")
    assert response.status_code == 302
    assert not get_store().exists(key)
    assert client.get("/").context["user"].is_anonymous


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_sessions_page_lists_every_session() -> None:
    alice, user = logged_in_client("alice")
    press(alice)
    visitor = Client()
    press(visitor, 3)
    alice_key, visitor_key = session_key(alice), session_key(visitor)
    alice_id = get_store().session_id(alice_key)
    visitor_id = get_store().session_id(visitor_key)

    response = visitor.get("/sessions/")

    assert response.context["total"] == 2 == get_store().count()
    rows = rows_by_key(response)
    assert set(rows) == {alice_id, visitor_id}
    assert rows[alice_id]["user_id"] == str(user.pk)
    assert rows[alice_id]["counter"] == 1
    assert not rows[alice_id]["is_current"]
    assert rows[visitor_id]["user_id"] is None
    assert rows[visitor_id]["counter"] == 3
    assert rows[visitor_id]["is_current"]
    assert all(row["expires_at"] is not None for row in rows.values())
    # Ids reach the page, never keys: a key is a login cookie.
    assert alice_id.encode() in response.content
    for key in (alice_key, visitor_key):
        assert key.encode() not in response.content
        assert key[:8].encode() not in response.content


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_ending_a_session_logs_its_owner_out() -> None:
    alice, _ = logged_in_client("alice")
    press(alice, 2)
    key = session_key(alice)
    session_id = get_store().session_id(key)
    admin = Client()

    response = admin.post("/sessions/end/", {"id": session_id}, follow=True)

    assert response.redirect_chain == [("/sessions/", 302)]
    assert f"Ended session {session_id[:9]}." in [
        str(m) for m in response.context["messages"]
    ]
    assert not get_store().exists(key)
    assert get_store().count() == 0
    # Alice's browser still sends the old cookie: she is anonymous, her data is
    # gone, and the dead key is dropped (the cookie is deleted).
    response = alice.get("/")
    assert response.context["user"].is_anonymous
    assert response.context["counter"] == 0
    assert response.context["session_key"] is None
    assert response.cookies["sessionid"].value == ""
    press(alice)
    assert session_key(alice) != key
    assert get_store().get(session_key(alice)) == {"counter": 1}


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_ending_your_own_session() -> None:
    alice, _ = logged_in_client("alice")
    key = session_key(alice)
    session_id = get_store().session_id(key)

    response = alice.post("/sessions/end/", {"id": session_id}, follow=True)

    assert not get_store().exists(key)
    assert response.context["user"].is_anonymous
    assert response.context["total"] == 0
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"Ended your own session {session_id[:9]}: you are anonymous now, and no later "
        "request can bring that session back.",
        # The redirect still carried the ended session's cookie.
        "You were logged out: your session was ended from another device or by "
        "an administrator.",
    ]
    response = alice.post("/sessions/end/", {"id": session_id}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        f"No live session {session_id[:9]} to end."
    ]
    # A session key posted as an id is not an id: nothing is looked up.
    response = alice.post("/sessions/end/", {"id": key}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "That is not a session id."
    ]


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_every_form_needs_its_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/")
    assert b"csrfmiddlewaretoken" in page.content
    for url in [
        "/",
        "/login/",
        "/logout/",
        "/sessions/end/",
        "/account/sessions/end/",
        "/account/sessions/end-others/",
    ]:
        assert client.post(url).status_code == 403, url
    token = client.cookies["csrftoken"].value
    assert client.post("/", {"csrfmiddlewaretoken": token}).status_code == 302


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_your_sessions_is_linked_once_logged_in() -> None:
    visitor = Client()
    assert b'href="/account/sessions/"' not in visitor.get("/sessions/").content
    response = visitor.get("/account/sessions/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/account/sessions/"

    alice, _ = logged_in_client("alice")
    assert b'<a href="/account/sessions/">Your sessions</a>' in alice.get("/").content


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
def test_your_sessions_in_two_browsers_end_the_other_one() -> None:
    laptop, _ = logged_in_client(
        "alice", HTTP_USER_AGENT=FIREFOX_ON_WINDOWS, REMOTE_ADDR="203.0.113.7"
    )
    phone, _ = logged_in_client(
        "alice", HTTP_USER_AGENT=CHROME_ON_ANDROID, REMOTE_ADDR="198.51.100.4"
    )
    press(phone, 2)
    phone_id = hashed_id(session_key(phone))

    response = laptop.get("/account/sessions/")

    html = response.content.decode()
    # The package's page in the demo's layout: its nav, its title.
    assert "<strong>django-redis-sessions demo</strong>" in html
    assert "<title>Your sessions · django-redis-sessions demo</title>" in html
    assert [row.id for row in response.context["rows"]] == [
        hashed_id(session_key(laptop)),
        phone_id,
    ]
    for shown in ("Firefox on Windows", "203.0.113.7", "Chrome Mobile on Android"):
        assert shown in html
    assert "198.51.100.4" in html
    for key in (session_key(laptop), session_key(phone)):
        assert key not in html

    response = laptop.post("/account/sessions/end/", {"id": phone_id}, follow=True)

    assert response.redirect_chain == [("/account/sessions/", 302)]
    assert "Ended that session: it is logged out." in response.content.decode()
    assert len(response.context["rows"]) == 1
    response = phone.get("/")
    assert response.context["user"].is_anonymous
    assert response.context["counter"] == 0


def test_run_py_check_starts_and_stops_its_own_redis() -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"SESSION_REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    result = subprocess.run(
        [sys.executable, "example/run.py", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # This interpreter has the dependencies, so no virtualenv was set up first.
    assert lines[0].startswith("Checking the demo with a throwaway "), lines
    assert lines[-1].startswith("Demo check passed"), lines
