"""The "Your sessions" page (``django_redis_sessions.urls``) with the test client.

The test project mounts it at ``/account/sessions/``; ``/login/?id=`` logs a
client in as that user. Each ``Client`` plays one browser.
"""

from __future__ import annotations

import importlib
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client

from django_redis_sessions import describe, get_store
from django_redis_sessions.describe import describe_browser
from django_redis_sessions.keys import hashed_id
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
    by_id = rows(html)
    assert "Log out</button>" in by_id[page_id(second)]
    for other in (first, third):
        assert "End session</button>" in by_id[page_id(other)]
    assert html.count('name="id"') == 3
    assert f'href="{END_OTHERS}">End all other sessions</a>' in html
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
def test_this_device_logs_out_from_the_list(browsers: Browsers, alice: User) -> None:
    mine, other = browsers.log_in(alice), browsers.log_in(alice)
    key = mine.cookies["sessionid"].value

    response = mine.post(END, {"id": page_id(mine)})

    assert response.status_code == 302
    assert response["Location"] == "/login/"  # LOGIN_URL: no LOGOUT_REDIRECT_URL
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "You are logged out on this device."
    ]
    assert not get_store().exists(key)
    assert not is_logged_in(mine)
    assert is_logged_in(other)


@pytest.mark.django_db
def test_this_device_logs_out_to_logout_redirect_url_where_set(
    settings: Any, browsers: Browsers, alice: User
) -> None:
    settings.LOGOUT_REDIRECT_URL = "whoami"  # a URL name, as Django allows
    mine = browsers.log_in(alice)

    response = mine.post(END, {"id": page_id(mine)})

    assert response["Location"] == "/whoami/"


@pytest.mark.django_db
def test_end_refuses_sessions_that_are_not_the_users(
    browsers: Browsers, alice: User, bob: User
) -> None:
    mine, other = browsers.log_in(alice), browsers.log_in(alice)
    bobs = browsers.log_in(bob)
    other_key = other.cookies["sessionid"].value

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
def test_end_all_other_sessions_asks_first_on_a_page_that_needs_no_javascript(
    browsers: Browsers, alice: User, bob: User
) -> None:
    mine, second, third = (browsers.log_in(alice) for _ in range(3))
    browsers.log_in(bob)

    html = browsers.page(mine, mine.get(END_OTHERS))

    assert "End all other sessions?" in html
    assert "2 other sessions will be logged out at once:" in html
    assert html.count("<li>") == 2
    assert "This device stays logged in." in html
    form = re.search(r'<form method="post" class="actions">(.*?)</form>', html, re.S)
    assert form is not None  # posts to this very URL
    assert 'name="csrfmiddlewaretoken"' in form.group(1)
    assert '<button type="submit" class="danger">Yes, end them</button>' in form[1]
    assert f'<a class="button" href="{PAGE}">Cancel</a>' in form[1]
    assert "<script" not in html
    # Asking ends nothing.
    assert is_logged_in(second)
    assert is_logged_in(third)


@pytest.mark.django_db
def test_end_all_other_sessions_asks_nothing_when_there_is_nothing_to_end(
    browsers: Browsers, alice: User
) -> None:
    mine = browsers.log_in(alice)

    html = browsers.page(mine, mine.get(END_OTHERS))

    assert "You are logged in on this device only." in html
    assert "Yes, end them" not in html


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
    assert mine.get(END_OTHERS).status_code == 200  # the confirmation page
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

    assert '<th scope="col">IP address at sign-in</th>' in html
    assert "The IP address is the one the session signed in from." in html
    by_id = rows(html)
    assert "Firefox on Windows" in by_id[page_id(laptop)]
    assert "203.0.113.7" in by_id[page_id(laptop)]
    assert "Chrome Mobile on Android" in by_id[page_id(phone)]
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


IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"
)
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/156.0.0.0 Safari/537.36"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (FIREFOX_ON_WINDOWS, "Firefox on Windows"),
        (CHROME_ON_ANDROID, "Chrome Mobile on Android"),
        (HEADLESS, "HeadlessChrome on Linux"),
        (EDGE, "Edge on Windows"),
        (IPHONE, "Mobile Safari on iOS"),
        (MAC_SAFARI, "Safari on Mac OS X"),
        ("Mozilla/5.0 (X11; Linux x86_64)", "A browser on Linux"),
        ("curl/8.5.0", "curl"),
        ("", None),
    ],
)
def test_ua_parser_names_the_browser(user_agent: str, shown: str | None) -> None:
    assert describe_browser(user_agent) == shown


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (FIREFOX_ON_WINDOWS, "Firefox on Windows"),
        (CHROME_ON_ANDROID, "Chrome on Android"),
        (HEADLESS, "Chrome on Linux"),
        (EDGE, "Edge on Windows"),
        (IPHONE, "Safari on iOS"),
        (MAC_SAFARI, "Safari on macOS"),
        ("Mozilla/5.0 (X11; Linux x86_64)", "A browser on Linux"),
        ("curl/8.5.0", None),
    ],
)
def test_without_ua_parser_a_short_table_names_the_browser(
    without_ua_parser: None, user_agent: str, shown: str | None
) -> None:
    assert describe_browser(user_agent) == shown


@pytest.fixture
def without_ua_parser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if the ``ua-parser`` extra were not installed."""
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> Any:
        if name == "ua_parser":
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    describe._parsed.cache_clear()
    yield
    describe._parsed.cache_clear()


class FakeGeoIP2:
    """Django's ``GeoIP2`` as the page uses it, over a two-address "database"."""

    opened: list[str] = []

    def __init__(self, path: str) -> None:
        self.opened.append(path)

    def city(self, ip: str) -> dict[str, Any]:
        places: dict[str, dict[str, Any]] = {
            "203.0.113.7": {"city": "Lyon", "country_name": "France"},
            "198.51.100.4": {"city": None, "country_name": "Brazil"},
        }
        if ip not in places:
            raise ValueError(f"{ip} is not in the database")
        return places[ip]


@pytest.fixture
def fake_geoip(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeGeoIP2]]:
    geoip2 = importlib.import_module("django.contrib.gis.geoip2")
    monkeypatch.setattr(geoip2, "HAS_GEOIP2", True)
    monkeypatch.setattr(geoip2, "GeoIP2", FakeGeoIP2, raising=False)
    FakeGeoIP2.opened = []
    describe._geoip.cache_clear()
    yield FakeGeoIP2
    describe._geoip.cache_clear()


@pytest.mark.django_db
def test_with_geoip_path_each_ip_shows_where_it_is(
    settings: Any,
    session_redis: dict[str, Any],
    fake_geoip: type[FakeGeoIP2],
    browsers: Browsers,
    alice: User,
) -> None:
    settings.GEOIP_PATH = "/srv/geoip"
    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    laptop = browsers.log_in(alice, REMOTE_ADDR="203.0.113.7")
    phone = browsers.log_in(alice, REMOTE_ADDR="198.51.100.4")
    unknown = browsers.log_in(alice, REMOTE_ADDR="10.0.0.1")

    by_id = rows(browsers.page(laptop))

    assert '<span class="place muted">Lyon, France</span>' in by_id[page_id(laptop)]
    assert '<span class="place muted">Brazil</span>' in by_id[page_id(phone)]
    assert "10.0.0.1" in by_id[page_id(unknown)]
    assert "place" not in by_id[page_id(unknown)]
    assert fake_geoip.opened == ["/srv/geoip"]  # opened once, not per row


@pytest.mark.django_db
def test_without_geoip_path_no_place_is_looked_up(
    session_redis: dict[str, Any],
    fake_geoip: type[FakeGeoIP2],
    browsers: Browsers,
    alice: User,
) -> None:
    session_redis["USER_INDEX_METADATA"] = ("ip",)
    laptop = browsers.log_in(alice, REMOTE_ADDR="203.0.113.7")

    html = browsers.page(laptop)

    assert "203.0.113.7" in html
    assert "Lyon" not in html
    assert fake_geoip.opened == []


@pytest.mark.django_db
def test_one_column_is_overridden_without_copying_the_template(
    settings: Any,
    session_redis: dict[str, Any],
    tmp_path: Path,
    browsers: Browsers,
    alice: User,
) -> None:
    session_redis["USER_INDEX_METADATA"] = ("ip",)
    template = tmp_path / "django_redis_sessions" / "sessions.html"
    template.parent.mkdir()
    # The project's template extends the app's of the same name, as Django
    # allows, and replaces two blocks.
    template.write_text(
        '{% extends "django_redis_sessions/sessions.html" %}'
        "{% block ip_heading %}Network{% endblock %}"
        "{% block ip %}<b>{{ row.ip }}</b>{% endblock %}"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    laptop = browsers.log_in(alice, REMOTE_ADDR="203.0.113.7")

    html = browsers.page(laptop)

    assert '<th scope="col">Network</th>' in html
    assert "<b>203.0.113.7</b>" in html
    # Every other column as the app's template has it.
    assert '<th scope="col">Last active</th>' in html
    assert "This device" in html
    assert "Log out</button>" in html
