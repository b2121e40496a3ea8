"""The "Your sessions" page: where the logged-in user is logged in.

``path("account/sessions/", include("django_redis_sessions.urls"))`` gives a
list of the user's sessions (this device marked), an "End" button per other
session and "End all other sessions". Every action is a POST with Django's CSRF
protection; sessions are named by id, never by key. The templates live under
``django_redis_sessions/`` and are overridden as any app's are.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from django_redis_sessions import get_store, logout_other_sessions


class SessionListView(LoginRequiredMixin, TemplateView):
    """The user's live sessions, newest first; this device first of all."""

    template_name = "django_redis_sessions/sessions.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        store = get_store()
        key = self.request.session.session_key
        current = store.session_id(key) if key else None
        sessions = store.user_sessions(self.request.user.pk)
        rows = [
            {"session": session, "is_current": session.id == current}
            for session in sessions
        ]
        rows.sort(key=lambda row: not row["is_current"])
        context["rows"] = rows
        context["others"] = sum(not row["is_current"] for row in rows)
        return context


class EndSessionView(LoginRequiredMixin, View):
    """End one of the user's other sessions, named by its id."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        store = get_store()
        session_id = request.POST.get("id", "")
        key = request.session.session_key
        current = store.session_id(key) if key else None
        # Only the user's own sessions, and not this one (that is a logout).
        own = {session.id for session in store.user_sessions(request.user.pk)}
        if session_id in own and session_id != current:
            # Its index entry goes when the list is next read.
            store.destroy(session_id)
            _tell(request, "Ended that session: it is logged out.")
        else:
            _tell(request, "No such session of yours to end.", messages.WARNING)
        return HttpResponseRedirect(reverse("django_redis_sessions:sessions"))


class EndOtherSessionsView(LoginRequiredMixin, View):
    """End every session of the user but this one."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        ended = logout_other_sessions(request)
        plural = "session" if ended == 1 else "sessions"
        _tell(request, f"Ended {ended} other {plural}.")
        return HttpResponseRedirect(reverse("django_redis_sessions:sessions"))


def _tell(request: HttpRequest, message: str, level: int = messages.SUCCESS) -> None:
    # Shown where the project uses django.contrib.messages; silent elsewhere.
    messages.add_message(request, level, message, fail_silently=True)
