"""Staff tools: a user's sessions on the user's admin change page.

The test project registers ``UserSessionsAdminMixin`` on Django's
``UserAdmin`` (``tests/urls.py``), as the README says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_redis_sessions import get_store
from django_redis_sessions.keys import hashed_id
from django_redis_sessions.signals import session_ended

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db: None) -> User:
    user: User = User.objects.create_user("alice", password="x")
    return user


@pytest.fixture
def admin_client(db: None) -> Client:
    admin = User.objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def ended() -> Iterator[list[tuple[str, str]]]:
    """(session id, reason) of every ``session_ended`` sent."""
    received: list[tuple[str, str]] = []

    def receiver(sender: type, session_id: str, reason: str, **kwargs: Any) -> None:
        received.append((session_id, reason))

    session_ended.connect(receiver)
    yield received
    session_ended.disconnect(receiver)


def logged_in(user: User, **headers: Any) -> Client:
    client = Client(**headers)
    assert client.get(f"/login/?id={user.pk}").content == b"in"
    return client


def key(client: Client) -> str:
    return str(client.cookies["sessionid"].value)


def change_url(user: User) -> str:
    return f"/admin/auth/user/{user.pk}/change/"


def end_url(user: User) -> str:
    return f"/admin/auth/user/{user.pk}/sessions/end/"


def end_all_url(user: User) -> str:
    return f"/admin/auth/user/{user.pk}/sessions/end-all/"


def panel(html: str) -> str:
    found = re.search(r'<div class="module" id="sessions".*?\n</div>', html, re.S)
    assert found is not None, "no sessions panel"
    return found.group(0)


def panel_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-session="([^"]+)">', panel(html))


@pytest.mark.parametrize("hash_ids", [True, False])
def test_the_change_page_lists_the_users_sessions_by_id_never_by_key(
    hash_ids: bool, session_redis: dict[str, Any], alice: User
) -> None:
    session_redis["HASH_IDS"] = hash_ids
    session_redis["USER_INDEX_METADATA"] = ("ip", "user_agent")
    admin_client = Client()
    admin_client.force_login(User.objects.create_superuser("root", password="x"))
    laptop = logged_in(alice, REMOTE_ADDR="203.0.113.7")
    phone = logged_in(alice, HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64)")

    html = admin_client.get(change_url(alice)).content.decode()

    section = panel(html)
    assert sorted(panel_ids(html)) == sorted(
        [hashed_id(key(laptop)), hashed_id(key(phone))]
    )
    for column in ("ID", "Device", "IP address at sign-in", "Signed in"):
        assert f'<th scope="col">{column}</th>' in section
    for column in ("Last active", "Expires"):
        assert f'<th scope="col">{column}</th>' in section
    assert "203.0.113.7" in section
    assert "A browser on Linux" in section
    assert section.count('value="End session"') == 2
    assert 'value="End all sessions"' in section
    for cookie in (key(laptop), key(phone), key(admin_client)):
        assert cookie not in html
        assert cookie[:12] not in html


def test_a_user_without_sessions_says_so(admin_client: Client, alice: User) -> None:
    html = admin_client.get(change_url(alice)).content.decode()

    assert "This user has no live session." in panel(html)


def test_ending_one_session_logs_it_and_sends_session_ended(
    admin_client: Client, alice: User, ended: list[tuple[str, str]]
) -> None:
    laptop, phone = logged_in(alice), logged_in(alice)
    phone_id = hashed_id(key(phone))

    response = admin_client.post(end_url(alice), {"session": phone_id})

    assert response.status_code == 302
    assert response["Location"] == change_url(alice) + "#sessions"
    assert not get_store().exists(key(phone))
    assert get_store().exists(key(laptop))
    assert ended == [(get_store().session_id(key(phone)), "destroy")]
    [entry] = LogEntry.objects.all()
    assert entry.action_flag == CHANGE
    assert entry.object_id == str(alice.pk)
    assert entry.user.username == "root"
    assert entry.change_message == f"Ended session {phone_id}."
    html = admin_client.get(change_url(alice)).content.decode()
    assert panel_ids(html) == [hashed_id(key(laptop))]
    assert "Ended that session: it is logged out." in html


def test_ending_all_sessions_logs_it_and_sends_session_ended_for_each(
    admin_client: Client, alice: User, ended: list[tuple[str, str]]
) -> None:
    clients = [logged_in(alice) for _ in range(3)]
    bob = User.objects.create_user("bob", password="x")
    bobs = logged_in(bob)

    response = admin_client.post(end_all_url(alice))

    assert response.status_code == 302
    assert not any(get_store().exists(key(client)) for client in clients)
    assert get_store().exists(key(bobs))
    store = get_store()
    assert sorted(ended) == sorted(
        (store.session_id(key(client)), "logout_user") for client in clients
    )
    [entry] = LogEntry.objects.all()
    assert entry.change_message == "Ended 3 sessions."
    assert "This user has no live session." in panel(
        admin_client.get(change_url(alice)).content.decode()
    )


def test_on_their_own_page_an_admin_keeps_the_session_of_this_device(
    admin_client: Client,
) -> None:
    admin = User.objects.get(username="root")
    other = logged_in(admin)
    own_id = hashed_id(key(admin_client))

    html = admin_client.get(change_url(admin)).content.decode()
    assert "(this device)" in panel(html)
    assert panel(html).count('value="End session"') == 1  # the other one's

    response = admin_client.post(end_url(admin), {"session": own_id}, follow=True)
    assert "That is your own session on this device" in response.content.decode()
    response = admin_client.post(end_all_url(admin), follow=True)
    assert "Ended 1 session." in response.content.decode()
    assert not get_store().exists(key(other))
    assert get_store().exists(key(admin_client))


def test_a_posted_key_or_another_users_id_ends_nothing(
    admin_client: Client, alice: User
) -> None:
    phone = logged_in(alice)
    bob = User.objects.create_user("bob", password="x")
    bobs = logged_in(bob)

    for posted in (key(phone), hashed_id(key(bobs)), ""):
        response = admin_client.post(end_url(alice), {"session": posted}, follow=True)
        assert "No such session of this user to end." in response.content.decode()

    assert get_store().exists(key(phone))
    assert get_store().exists(key(bobs))
    assert not LogEntry.objects.exists()


def test_staff_who_may_only_view_users_see_no_panel_and_end_nothing(
    alice: User,
) -> None:
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_user"))
    client = Client()
    client.force_login(viewer)
    phone = logged_in(alice)

    response = client.get(change_url(alice))
    assert response.status_code == 200
    assert 'id="sessions"' not in response.content.decode()
    assert (
        client.post(end_url(alice), {"session": hashed_id(key(phone))}).status_code
        == 403
    )
    assert client.post(end_all_url(alice)).status_code == 403
    assert get_store().exists(key(phone))


def test_the_actions_are_post_only_with_csrf(alice: User) -> None:
    admin = User.objects.create_superuser("root", password="x")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    phone = logged_in(alice)

    assert client.get(end_url(alice)).status_code == 405
    assert client.get(end_all_url(alice)).status_code == 405
    assert (
        client.post(end_url(alice), {"session": hashed_id(key(phone))}).status_code
        == 403
    )
    assert client.post(end_all_url(alice)).status_code == 403
    assert get_store().exists(key(phone))


def test_an_anonymous_visitor_is_sent_to_the_admin_login(alice: User) -> None:
    phone = logged_in(alice)

    response = Client().post(end_all_url(alice))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert get_store().exists(key(phone))
