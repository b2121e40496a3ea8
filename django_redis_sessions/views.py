"""The "Your sessions" page: where the logged-in user is logged in.

``path("account/sessions/", include("django_redis_sessions.urls"))`` gives a
list of the user's sessions (this device first and marked), an "End session"
button per other session and "End all other sessions". Every action is a POST with
Django's CSRF protection.

The page names each session by its hashed id, ``"#" + base64url(SHA-256(key))``,
even with ``HASH_IDS`` False, where the store's id is the key itself: a key is
a login cookie, and never reaches a page. A posted id only ends a session that
the page would list, so neither a key nor another user's id ends anything.

The templates, ``django_redis_sessions/sessions.html`` extending
``django_redis_sessions/base.html``, are overridden as any app's are. Their
context: ``rows`` (each a ``Row``: ``id``, ``short_id``, ``is_current``,
``browser``, ``ip``, the texts ``signed_in``, ``last_active`` and ``expires``,
and ``session``, the store's ``UserSession``), ``others`` (how many rows are
not this device) and ``show_ip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.timesince import timesince, timeuntil
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from django_redis_sessions import get_store, logout_other_sessions
from django_redis_sessions.conf import conf
from django_redis_sessions.keys import hashed_id, is_hashed_id
from django_redis_sessions.user_index import UserSession

# Checked in order: Edge, Opera and Chromium also say "Chrome/", Chrome also
# says "Safari/", and an iPhone says "like Mac OS X".
_BROWSERS = [
    ("Edg", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
]
_SYSTEMS = [
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
]


def describe_browser(user_agent: str) -> str | None:
    """A name like "Firefox on Windows" for a ``User-Agent``; None if it has none."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if system:
        return f"A browser on {system}"
    return browser


@dataclass(frozen=True)
class Row:
    """One session as the page shows it."""

    session: UserSession
    #: A hashed id whatever ``HASH_IDS`` says: what the page posts back.
    id: str
    is_current: bool
    #: Only when ``USER_INDEX_METADATA`` collects them.
    browser: str | None
    ip: str | None

    @property
    def short_id(self) -> str:
        return self.id[1:9]

    @property
    def signed_in(self) -> str:
        return _ago(self.session.created_at)

    @property
    def last_active(self) -> str:
        return "Now" if self.is_current else _ago(self.session.last_seen_at)

    @property
    def expires(self) -> str:
        return f"in {timeuntil(self.session.expires_at)}"


def _ago(moment: datetime) -> str:
    # timesince() says "0 minutes" for anything under a minute.
    if (timezone.now() - moment).total_seconds() < 60:
        return "Just now"
    return f"{timesince(moment)} ago"


def own_sessions(request: HttpRequest) -> list[Row]:
    """The user's live sessions, newest first, this request's first of all."""
    key = request.session.session_key
    current = hashed_id(key) if key else None
    wanted = conf.USER_INDEX_METADATA
    rows = []
    for session in get_store().user_sessions(request.user.pk):
        page_id = session.id if is_hashed_id(session.id) else hashed_id(session.id)
        agent = session.user_agent if "user_agent" in wanted else None
        rows.append(
            Row(
                session=session,
                id=page_id,
                is_current=page_id == current,
                browser=(describe_browser(agent) or agent) if agent else None,
                ip=session.ip if "ip" in wanted else None,
            )
        )
    rows.sort(key=lambda row: not row.is_current)  # stable: newest first stays
    return rows


@method_decorator(never_cache, name="dispatch")
class SessionListView(LoginRequiredMixin, TemplateView):
    """The user's live sessions, newest first; this device first of all."""

    template_name = "django_redis_sessions/sessions.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        rows = own_sessions(self.request)
        context["rows"] = rows
        context["others"] = sum(not row.is_current for row in rows)
        context["show_ip"] = "ip" in conf.USER_INDEX_METADATA
        return context


class EndSessionView(LoginRequiredMixin, View):
    """End one of the user's other sessions, named by the page's id."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        posted = request.POST.get("id", "")
        row = next((row for row in own_sessions(request) if row.id == posted), None)
        if row is None:
            _tell(request, "No such session of yours to end.", messages.WARNING)
        elif row.is_current:
            _tell(
                request,
                "That is the session of this device: log out to end it.",
                messages.WARNING,
            )
        else:
            # Its index entry is pruned when the list is next read.
            get_store().destroy(row.session.id)
            _tell(request, "Ended that session: it is logged out.")
        return HttpResponseRedirect(reverse("django_redis_sessions:sessions"))


class EndOtherSessionsView(LoginRequiredMixin, View):
    """End every session of the user but this one."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        ended = logout_other_sessions(request)
        plural = "session" if ended == 1 else "sessions"
        _tell(request, f"Ended {ended} other {plural}: they are logged out.")
        return HttpResponseRedirect(reverse("django_redis_sessions:sessions"))


def _tell(request: HttpRequest, message: str, level: int = messages.SUCCESS) -> None:
    # Shown where the project uses django.contrib.messages; silent elsewhere.
    messages.add_message(request, level, message, fail_silently=True)
