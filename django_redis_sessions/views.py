"""The "Your sessions" page: where the logged-in user is logged in.

``path("account/sessions/", include("django_redis_sessions.urls"))`` gives a
list of the user's sessions (this device first and marked), an "End session"
button per other session, a "Log out" button for this device, and "End all
other sessions", which asks for confirmation on a page of its own (no
JavaScript needed). Every action is a POST with Django's CSRF protection.

Sessions are named by their hashed id whatever ``HASH_IDS`` says (see
``describe.py``): no session key reaches the page.

The templates, ``django_redis_sessions/sessions.html`` and
``django_redis_sessions/confirm_end_others.html`` extending
``django_redis_sessions/base.html``, are overridden as any app's are; each
column of the list is a block of its own (``device``, ``ip``, ``signed_in``,
``last_active``, ``expires``, ``actions``, each with a ``<name>_heading``
block), so a project changes one without copying the rest. Their context:
``rows`` (each a ``describe.Row``: ``id``, ``short_id``, ``name``,
``is_current``, ``browser``, ``ip``, ``location``, the texts ``signed_in``,
``last_active`` and ``expires``, and ``session``, the store's
``UserSession``), ``others`` (how many rows are not this device),
``show_ip``, ``show_browser`` and ``resolution_minutes`` (how closely "last
active" follows a session).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from django_redis_sessions import get_store, logout_other_sessions
from django_redis_sessions.conf import conf
from django_redis_sessions.describe import (
    LAST_ACTIVE_RESOLUTION_MINUTES,
    Row,
    describe_browser,
    session_rows,
)

__all__ = [
    "EndOtherSessionsView",
    "EndSessionView",
    "SessionListView",
    "describe_browser",
    "own_sessions",
]


def own_sessions(request: HttpRequest) -> list[Row]:
    """The user's live sessions, newest first, this request's first of all."""
    return session_rows(request.user.pk, request.session.session_key)


class _ListContext(LoginRequiredMixin, TemplateView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        rows = own_sessions(self.request)
        wanted = conf.USER_INDEX_METADATA
        context["rows"] = rows
        context["others"] = sum(not row.is_current for row in rows)
        context["show_ip"] = "ip" in wanted
        context["show_browser"] = "user_agent" in wanted
        context["resolution_minutes"] = LAST_ACTIVE_RESOLUTION_MINUTES
        return context


@method_decorator(never_cache, name="dispatch")
class SessionListView(_ListContext):
    """The user's live sessions, newest first; this device first of all."""

    template_name = "django_redis_sessions/sessions.html"


class EndSessionView(LoginRequiredMixin, View):
    """End one of the user's sessions, named by the page's id.

    The session of this device is ended as a logout, through
    ``django.contrib.auth.logout()``, so the usual signals and redirects apply.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        posted = request.POST.get("id", "")
        row = next((row for row in own_sessions(request) if row.id == posted), None)
        if row is None:
            _tell(request, _("No such session of yours to end."), messages.WARNING)
        elif row.is_current:
            logout(request)
            _tell(request, _("You are logged out on this device."))
            return HttpResponseRedirect(_after_logout())
        else:
            # Its index entry is pruned when the list is next read.
            get_store().destroy(row.session.id)
            _tell(request, _("Ended that session: it is logged out."))
        return HttpResponseRedirect(reverse("django_redis_sessions:sessions"))


@method_decorator(never_cache, name="dispatch")
class EndOtherSessionsView(_ListContext):
    """End every session of the user but this one, once confirmed.

    A GET shows what would end and a button to confirm; the POST of that
    button ends them. A link, not a script, leads here, so the confirmation
    works without JavaScript.
    """

    template_name = "django_redis_sessions/confirm_end_others.html"

    def post(self, request: HttpRequest) -> HttpResponse:
        ended = logout_other_sessions(request)
        text = ngettext(
            "Ended %(count)d other session: it is logged out.",
            "Ended %(count)d other sessions: they are logged out.",
            ended,
        ) % {"count": ended}
        _tell(request, text)
        return HttpResponseRedirect(reverse("django_redis_sessions:sessions"))


def _after_logout() -> str:
    """Where logging this device out leads: LOGOUT_REDIRECT_URL, else LOGIN_URL."""
    target = getattr(settings, "LOGOUT_REDIRECT_URL", None) or settings.LOGIN_URL
    return str(resolve_url(target))


def _tell(request: HttpRequest, message: str, level: int = messages.SUCCESS) -> None:
    # Shown where the project uses django.contrib.messages; silent elsewhere.
    messages.add_message(request, level, message, fail_silently=True)
