"""The "Your sessions" page (``django_redis_sessions.urls``) with the test client.

The test project mounts it at ``/account/sessions/``; ``/login/?id=`` logs a
client in as that user. Each ``Client`` plays one browser.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_redis_sessions import get_store
from django_redis_sessions.keys import hashed_id
from django_redis_sessions.views import describe_browser
from tests.utils import CHROME_ON_ANDROID, FIREFOX_ON_WINDOWS

PAGE = "/account/sessions/"
END = "/account/sessions/end/"
END_OTHERS = "/account/sessions/end-others/"


class Browsers:
    """Test clients, one per browser, and every cookie value any was given."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.cookie_values: set[str] = set()

    def log_in(self, user: User, **defaults: Any) -> Client:
        client = Client(**defaults)
        self.clients.append(client)
        assert client.get(f"/login/?id={user.pk}").status_code == 200
        self.note_cookies()
        return client

    def note_cookies(self) -> None:
        for client in self.clients:
            self.cookie_values |= {m.value for m in client.cookies.values() if m.value}

    def page(self, client: Client, response: Any = None) -> str:
        """The page as ``client`` sees it; never a cookie value in it."""
        response = response or client.get(PAGE)
        assert response.status_code == 200
        self.note_cookies()
        html: str = response.content.decode()
        assert self.cookie_values  # the check below has something to check
        for value in self.cookie_values:
            assert value not in html
        return html


@pytest.fixture
def browsers() -> Browsers:
    return Browsers()


@pytest.fixture
def alice(db: None) -> User:
    user: User = User.objects.create_user("alice", password="x")
    return user


@pytest.fixture
def bob(db: None) -> User:
    user: User = User.objects.create_user("bob", password="x")
    return user


@pytest.fixture
def one_login_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each index write a second after the last: "newest first" is unambiguous."""
    seconds = itertools.count()
    monkeypatch.setattr(
        "django_redis_sessions.redis_layer.now_ms",
        lambda: int(time.time() * 1000) + 1000 * next(seconds),
    )


def page_id(client: Client) -> str:
    """The id the page names ``client``'s session by: always a hashed one."""
    return hashed_id(client.cookies["sessionid"].value)


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr[^>]* data-session="([^"]+)"', html)


def current_ids(html: str) -> list[str]:
    return re.findall(r'<tr class="current" data-session="([^"]+)"', html)


def rows(html: str) -> dict[str, str]:
    """Each row's HTML by the id it names."""
    found = re.findall(r'<tr[^>]* data-session="([^"]+)">(.*?)</tr>', html, re.S)
    return dict(found)


def is_logged_in(client: Client) -> bool:
    response = client.get(PAGE)
    if response.status_code == 302:
        assert response["Location"] == f"/login/?next={PAGE}"
        return False
    assert response.status_code == 200
    return True


def test_an_anonymous_visitor_is_sent_to_the_login_page() -> None:
    client = Client()
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/account/sessions/"
    for url in (END, END_OTHERS):
        response = client.post(url, {"id": "#" + "a" * 43})
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={url}"


@pytest.mark.django_db
@pytest.mark.usefixtures("one_login_per_second")
def test_the_page_lists_only_the_users_own_sessions_newest_first_this_device_first(
    browsers: Browsers, alice: User, bob: User
) -> None:
    first, second, third = (browsers.log_in(alice) for _ in range(3))
    other_user = browsers.log_in(bob)

    html = browsers.page(second)

    assert row_ids(html) == [page_id(second), page_id(third), page_id(first)]
    assert current_ids(html) == [page_id(second)]
    assert html.count("This device") == 1
    assert "This device" in rows(html)[page_id(second)]
    assert page_id(other_user) not in html
    assert html.count('name="id"') == 2  # an End button for each other session
    assert "End all other sessions" in html
    assert row_ids(browsers.page(other_user)) == [page_id(other_user)]


@pytest.mark.django_db
@pytest.mark.parametrize("hash_ids", [True, False, "migrate"])
def test_no_session_key_ever_reaches_the_page_whatever_hash_ids_says(
    hash_ids: bool | str,
    session_redis: dict[str, Any],
    browsers: Browsers,
    alice: User,
) -> None:
    session_redis["HASH_IDS"] = hash_ids
    mine, other = browsers.log_in(alice), browsers.log_in(alice)
    other_key = other.cookies["sessionid"].value

    html = browsers.page(mine)  # asserts no cookie value is in it

    assert sorted(row_ids(html)) == sorted([page_id(mine), page_id(other)])
    assert other_key[:8] not in html
    response = mine.post(END, {"id": page_id(other)}, follow=True)
    html = browsers.page(mine, response)
    assert "Ended that session: it is logged out." in html
    assert not is_logged_in(other)


@pytest.mark.django_db
def test_end_ends_another_session_which_is_anonymous_on_its_next_request(
    browsers: Browsers, alice: User
) -> None:
    mine, other = browsers.log_in(alice), browsers.log_in(alice)

    response = mine.post(END, {"id": page_id(other)})

    assert response.status_code == 302
    assert response["Location"] == PAGE
    html = browsers.page(mine)
    assert "Ended that session: it is logged out." in html
    assert row_ids(html) == [page_id(mine)]
    assert "You are logged in on this device only." in html
    assert not is_logged_in(other)
    assert is_logged_in(mine)


@pytest.mark.django_db
def test_end_refuses_this_devices_session_and_sessions_that_are_not_the_users(
    browsers: Browsers, alice: User, bob: User
) -> None:
    mine, other = browsers.log_in(alice), browsers.log_in(alice)
    bobs = browsers.log_in(bob)
    other_key = other.cookies["sessionid"].value

    response = mine.post(END, {"id": page_id(mine)}, follow=True)
    assert "That is the session of this device: log out to end it." in (
        browsers.page(mine, response)
    )
    refused = [
        page_id(bobs),  # another user's
        other_key,  # a key, not an id
        hashed_id("a" * 32),  # nobody's
        "",
    ]
    for posted in refused:
        response = mine.post(END, {"id": posted}, follow=True)
        html = browsers.page(mine, response)
        assert "No such session of yours to end." in html, posted
    assert is_logged_in(mine)
    assert is_logged_in(other)
    assert is_logged_in(bobs)


@pytest.mark.django_db
def test_end_all_other_sessions_ends_every_session_of_the_user_but_this_one(
    browsers: Browsers, alice: User, bob: User
) -> None:
    mine, second, third = (browsers.log_in(alice) for _ in range(3))
    bobs = browsers.log_in(bob)

    response = mine.post(END_OTHERS, follow=True)

    html = browsers.page(mine, response)
    assert "Ended 2 other sessions: they are logged out." in html
    assert row_ids(html) == [page_id(mine)]
    assert "End all other sessions" not in html
    assert not is_logged_in(second)
    assert not is_logged_in(third)
    assert is_logged_in(mine)
    assert is_logged_in(bobs)


@pytest.mark.django_db
def test_the_readmes_password_change_ends_every_other_session_at_once(
    browsers: Browsers, alice: User
) -> None:
    mine, second, third = (browsers.log_in(alice) for _ in range(3))
    others = [client.cookies["sessionid"].value for client in (second, third)]
    new_password = {"new_password1": "n3w-pass", "new_password2": "n3w-pass"}

    response = mine.post("/password/", {"old_password": "x", **new_password})

    assert response.status_code == 302
    assert response["Location"] == "/read/"
    # Gone from Redis now, not only refused at their next request by Django's
    # check of the password hash.
    assert not any(get_store().exists(key) for key in others)
    assert row_ids(browsers.page(mine)) == [page_id(mine)]
    assert not is_logged_in(second)


@pytest.mark.django_db
def test_every_action_is_post_only(browsers: Browsers, alice: User) -> None:
    mine, other = browsers.log_in(alice), browsers.log_in(alice)

    assert mine.get(END, {"id": page_id(other)}).status_code == 405
    assert mine.get(END_OTHERS).status_code == 405
    assert mine.post(PAGE).status_code == 405

    assert is_logged_in(other)


@pytest.mark.django_db
def test_every_action_needs_its_csrf_token(browsers: Browsers, alice: User) -> None:
    mine = browsers.log_in(alice, enforce_csrf_checks=True)
    other = browsers.log_in(alice)

    assert mine.post(END, {"id": page_id(other)}).status_code == 403
    assert mine.post(END_OTHERS).status_code == 403
    assert is_logged_in(other)

    html = browsers.page(mine)
    tokens = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert len(tokens) == 2  # the End form and the End all form
    response = mine.post(END, {"id": page_id(other), "csrfmiddlewaretoken": tokens[0]})
    assert response.status_code == 302
    assert not is_logged_in(other)


@pytest.mark.django_db
def test_a_project_overrides_the_templates_as_any_apps(
    settings: Any, tmp_path: Path, browsers: Browsers, alice: User
) -> None:
    template = tmp_path / "django_redis_sessions" / "sessions.html"
    template.parent.mkdir()
    template.write_text(
        '{% extends "django_redis_sessions/base.html" %}{% block content %}'
        "<p>Ours: {{ rows|length }} sessions, {{ others }} others</p>"
        "{% for row in rows %}<p>{{ row.id }} {{ row.is_current }}</p>{% endfor %}"
        "{% endblock %}"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    mine, other = browsers.log_in(alice), browsers.log_in(alice)

    html = browsers.page(mine)

    assert "<p>Ours: 2 sessions, 1 others</p>" in html
    assert f"<p>{page_id(mine)} True</p>" in html
    assert f"<p>{page_id(other)} False</p>" in html
    assert "End all other sessions" not in html


@pytest.mark.django_db
def test_with_metadata_each_session_shows_its_ip_and_browser(
    session_redis: dict[str, Any], browsers: Browsers, alice: User
) -> None:
    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    laptop = browsers.log_in(
        alice, HTTP_USER_AGENT=FIREFOX_ON_WINDOWS, REMOTE_ADDR="203.0.113.7"
    )
    phone = browsers.log_in(
        alice, HTTP_USER_AGENT=CHROME_ON_ANDROID, REMOTE_ADDR="198.51.100.4"
    )

    html = browsers.page(laptop)

    assert '<th scope="col">IP address</th>' in html
    by_id = rows(html)
    assert "Firefox on Windows" in by_id[page_id(laptop)]
    assert "203.0.113.7" in by_id[page_id(laptop)]
    assert "Chrome on Android" in by_id[page_id(phone)]
    assert "198.51.100.4" in by_id[page_id(phone)]
    # The whole User-Agent is there for who wants it, as a tooltip.
    assert f'title="{FIREFOX_ON_WINDOWS}"' in by_id[page_id(laptop)]


@pytest.mark.django_db
def test_without_metadata_no_ip_or_browser_is_shown(
    browsers: Browsers, alice: User
) -> None:
    laptop = browsers.log_in(
        alice, HTTP_USER_AGENT=FIREFOX_ON_WINDOWS, REMOTE_ADDR="203.0.113.7"
    )
    phone = browsers.log_in(
        alice, HTTP_USER_AGENT=CHROME_ON_ANDROID, REMOTE_ADDR="198.51.100.4"
    )

    html = browsers.page(laptop)

    for shown_only_with_metadata in ("IP address", "203.0.113.7", "Firefox", "Chrome"):
        assert shown_only_with_metadata not in html
    by_id = rows(html)
    assert f"Session {page_id(laptop)[1:9]}" in by_id[page_id(laptop)]
    assert f"Session {page_id(phone)[1:9]}" in by_id[page_id(phone)]


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (FIREFOX_ON_WINDOWS, "Firefox on Windows"),
        (CHROME_ON_ANDROID, "Chrome on Android"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/156.0.0.0 Safari/537.36",
            "Chrome on Linux",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
            "like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
            "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 "
            "Safari/604.1",
            "Safari on iOS",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64)", "A browser on Linux"),
        ("curl/8.5.0", None),
    ],
)
def test_the_browser_is_named_from_its_user_agent(
    user_agent: str, shown: str | None
) -> None:
    assert describe_browser(user_agent) == shown
