"""Views showing what the Redis session engine does.

``index`` keeps a counter in the visitor's session. ``sessions`` lists every
session in Redis through ``get_store()``, the API for code outside a request,
and ``end_session`` destroys one of them: its owner is anonymous on the next
request, and the tombstone left behind keeps a late save from reviving it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth import SESSION_KEY as USER_ID_KEY
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from django_redis_sessions import get_store
from django_redis_sessions.keys import is_hashed_id

COUNTER = "counter"
#: How much of a session id the pages show ("#" and 8 characters).
SHORT = 9


def _live_session(request: HttpRequest) -> tuple[str | None, int]:
    """The request's session key and counter.

    The counter is read first: reading loads the session, and loading drops a
    cookie's key that Redis no longer has (the key is None until a write then).
    """
    counter = int(request.session.get(COUNTER, 0))
    return request.session.session_key, counter


def _expiry_dates(keys: list[str]) -> list[datetime | None]:
    """When Redis will drop each session, from the store's TTL of each.

    Django's ``get_expiry_date()`` would assume the session was saved just now;
    the TTL is what Redis will really do, without any cleanup job.
    """
    store = get_store()
    now = timezone.now()
    seconds_left = [store.ttl(key) for key in keys]
    return [
        None if seconds is None else now + timedelta(seconds=seconds)
        for seconds in seconds_left
    ]


@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """The counter: POST adds one (and redirects, so a reload does not)."""
    key, counter = _live_session(request)
    if request.method == "POST":
        # The first write creates the session: a visitor who never presses
        # the button costs Redis nothing.
        request.session[COUNTER] = counter + 1
        return redirect("index")
    context = {
        "counter": counter,
        "session_key": key,
        "short_id": get_store().session_id(key)[:SHORT] if key else None,
        "expires_at": _expiry_dates([key])[0] if key else None,
    }
    return render(request, "demo/index.html", context)


def sessions(request: HttpRequest) -> HttpResponse:
    """Every live session under the demo's prefix, read with ``get_store().all()``.

    The store lists sessions by id, never by key: the key is the login cookie,
    and with ``HASH_IDS`` (the default) Redis never sees it. A real site would
    show this to staff only; the demo shows it to anyone.
    """
    current_key, _ = _live_session(request)
    store = get_store()
    current_id = store.session_id(current_key) if current_key else None
    live = list(store.all())
    expiry_dates = _expiry_dates([session_id for session_id, _ in live])
    rows = [
        {
            "id": session_id,
            "short_id": session_id[:SHORT],
            "user_id": data.get(USER_ID_KEY),
            "counter": data.get(COUNTER, 0),
            "expires_at": expires_at,
            "is_current": session_id == current_id,
        }
        for (session_id, data), expires_at in zip(live, expiry_dates, strict=True)
    ]
    rows.sort(key=lambda row: (not row["is_current"], row["id"]))
    # len(rows), not store.count(): the page has already scanned every session.
    context = {"rows": rows, "total": len(rows)}
    return render(request, "demo/sessions.html", context)


@require_POST
def end_session(request: HttpRequest) -> HttpResponse:
    """Destroy the session whose id is posted: one round trip, no lookup."""
    current_key, _ = _live_session(request)
    store = get_store()
    session_id = request.POST.get("id", "")
    short_id = session_id[:SHORT]
    if not is_hashed_id(session_id):
        # Never echoed: what was posted might be a key, that is a cookie.
        messages.warning(request, "That is not a session id.")
    elif not store.destroy(session_id):
        messages.warning(request, f"No live session {short_id} to end.")
    elif current_key and store.session_id(current_key) == session_id:
        messages.success(
            request,
            f"Ended your own session {short_id}: you are anonymous now, and "
            "no later request can bring that session back.",
        )
    else:
        messages.success(request, f"Ended session {short_id}.")
    return redirect("sessions")
