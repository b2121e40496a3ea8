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

COUNTER = "counter"
#: How much of a session key the pages show. The full key is the login
#: cookie, so a page listing everyone's sessions must not print it.
SHORT = 8


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
        "short_key": key[:SHORT] if key else None,
        "expires_at": _expiry_dates([key])[0] if key else None,
    }
    return render(request, "demo/index.html", context)


def sessions(request: HttpRequest) -> HttpResponse:
    """Every live session under the demo's prefix, read with ``get_store().all()``.

    A real site would show this to staff only; the demo shows it to anyone.
    """
    current_key, _ = _live_session(request)
    live = list(get_store().all())
    expiry_dates = _expiry_dates([key for key, _ in live])
    rows = [
        {
            "short_key": key[:SHORT],
            "user_id": data.get(USER_ID_KEY),
            "counter": data.get(COUNTER, 0),
            "expires_at": expires_at,
            "is_current": key == current_key,
        }
        for (key, data), expires_at in zip(live, expiry_dates, strict=True)
    ]
    rows.sort(key=lambda row: (not row["is_current"], row["short_key"]))
    # len(rows), not store.count(): the page has already scanned every session.
    context = {"rows": rows, "total": len(rows)}
    return render(request, "demo/sessions.html", context)


@require_POST
def end_session(request: HttpRequest) -> HttpResponse:
    """Destroy the session whose key starts with the posted characters.

    The form posts only the shortened key the page shows, so the full key is
    looked up among the live sessions here.
    """
    current_key, _ = _live_session(request)
    short_key = request.POST.get("key", "")
    store = get_store()
    matches = [
        key
        for key, _ in store.all()
        if len(short_key) == SHORT and key.startswith(short_key)
    ]
    if len(matches) == 1 and store.destroy(matches[0]):
        if matches[0] == current_key:
            messages.success(
                request,
                f"Ended your own session {short_key}: you are anonymous now, and "
                "no later request can bring that session back.",
            )
        else:
            messages.success(request, f"Ended session {short_key}.")
    else:
        messages.warning(request, f"No live session {short_key} to end.")
    return redirect("sessions")
