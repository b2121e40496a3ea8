"""Staff tools: a user's live sessions on that user's admin change page.

Nothing is registered here: add the mixin to the ``ModelAdmin`` of your user
model, in front of ``UserAdmin``::

    from django.contrib import admin
    from django.contrib.auth.admin import UserAdmin
    from django.contrib.auth.models import User
    from django_redis_sessions.admin import UserSessionsAdminMixin

    admin.site.unregister(User)

    @admin.register(User)
    class SessionsUserAdmin(UserSessionsAdminMixin, UserAdmin):
        pass

Below the change form, a staff user allowed to change that user sees a
"Sessions" panel: each live session's id, device, IP, when it signed in, was
last active and expires, with "End session" per session and "End all
sessions". Both read and end through the user's index; each end is a POST
with CSRF protection, is recorded in the admin log (``LogEntry``, as a change
of the user) and sends ``session_ended`` (reason ``"destroy"`` for one,
``"logout_user"`` for all). Sessions are named by their hashed id: no session
key reaches the page. An admin's own session on this device is left alone:
that is a logout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from django_redis_sessions import get_store
from django_redis_sessions.conf import conf
from django_redis_sessions.describe import (
    LAST_ACTIVE_RESOLUTION_MINUTES,
    Row,
    session_rows,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _Base = ModelAdmin[Any]
else:
    _Base = object


class UserSessionsAdminMixin(_Base):
    """Adds the user's live sessions, and ways to end them, to the change page."""

    change_form_template = "django_redis_sessions/admin/user_change_form.html"

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        wrap = self.admin_site.admin_view
        urls: list[Any] = [
            path(
                "<path:object_id>/sessions/end/",
                wrap(self.end_session_view),
                name="{}_{}_end_session".format(*info),
            ),
            path(
                "<path:object_id>/sessions/end-all/",
                wrap(self.end_all_sessions_view),
                name="{}_{}_end_all_sessions".format(*info),
            ),
        ]
        # Before the change view's catch-all "<path:object_id>/".
        return urls + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        user = self.get_object(request, unquote(object_id))
        context["user_sessions_parent"] = self._parent_template()
        if user is not None and self.has_change_permission(request, user):
            context["user_sessions"] = self._rows(request, user)
            context["user_sessions_show_ip"] = "ip" in conf.USER_INDEX_METADATA
            context["user_sessions_resolution"] = LAST_ACTIVE_RESOLUTION_MINUTES
        return super().change_view(request, object_id, form_url, context)

    @method_decorator(require_POST)
    def end_session_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """End the session the posted id names, if it is one of the user's."""
        user = self._changeable_user(request, object_id)
        posted = request.POST.get("session", "")
        row = next((row for row in self._rows(request, user) if row.id == posted), None)
        if row is None:
            self.message_user(
                request, _("No such session of this user to end."), messages.WARNING
            )
        elif row.is_current:
            self.message_user(
                request,
                _("That is your own session on this device: log out to end it."),
                messages.WARNING,
            )
        else:
            get_store().destroy(row.session.id)
            self.log_change(request, user, _("Ended session %(id)s.") % {"id": row.id})
            self.message_user(request, _("Ended that session: it is logged out."))
        return HttpResponseRedirect(self._panel_url(user))

    @method_decorator(require_POST)
    def end_all_sessions_view(
        self, request: HttpRequest, object_id: str
    ) -> HttpResponse:
        """End every session of the user (but the admin's own on this device)."""
        user = self._changeable_user(request, object_id)
        keep = request.session.session_key if user.pk == request.user.pk else None
        ended = get_store().logout_user(user.pk, keep=keep)
        text = ngettext(
            "Ended %(count)d session.", "Ended %(count)d sessions.", ended
        ) % {"count": ended}
        if ended:
            self.log_change(request, user, text)
        self.message_user(request, text)
        return HttpResponseRedirect(self._panel_url(user))

    def _parent_template(self) -> str:
        """The change form the admin would use without the panel.

        The same search as ``ModelAdmin.render_change_form()``, so that a
        project's own ``admin/<app>/<model>/change_form.html`` still applies.
        """
        app_label, model_name = self.opts.app_label, self.opts.model_name
        names = [
            f"admin/{app_label}/{model_name}/change_form.html",
            f"admin/{app_label}/change_form.html",
        ]
        for name in names:
            try:
                get_template(name)
            except TemplateDoesNotExist:
                continue
            return name
        return "admin/change_form.html"

    def _changeable_user(self, request: HttpRequest, object_id: str) -> Any:
        user = self.get_object(request, unquote(object_id))
        if user is None:
            raise Http404(_("No such user."))
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        return user

    @staticmethod
    def _rows(request: HttpRequest, user: Any) -> list[Row]:
        # The admin's own session is marked only on the admin's own user.
        own = user.pk == request.user.pk
        return session_rows(user.pk, request.session.session_key if own else None)

    def _panel_url(self, user: Any) -> str:
        info = (self.opts.app_label, self.opts.model_name)
        url = reverse(
            "admin:{}_{}_change".format(*info),
            args=(quote(user.pk),),
            current_app=self.admin_site.name,
        )
        return f"{url}#sessions"
