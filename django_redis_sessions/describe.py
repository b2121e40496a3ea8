"""Sessions as people read them: the rows of the page and of the admin panel.

A row names a session by its hashed id, ``"#" + base64url(SHA-256(key))``,
even with ``HASH_IDS`` False, where the store's id is the key itself: a key
is a login cookie, and never reaches a page. A posted id only ends a session
the same listing would show, so neither a key nor another user's id ends
anything.

Browsers are named by ``ua-parser`` (the ``ua-parser`` extra) where it is
installed, else by a short table of the common ones; places by Django's
``GeoIP2`` where ``GEOIP_PATH`` is set and the ``geoip2`` package is
installed (the ``geoip`` extra). Times are relative, in words from Django's
own translated ``naturaltime``.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.translation import gettext as _

from django_redis_sessions import get_store
from django_redis_sessions.conf import conf
from django_redis_sessions.keys import hashed_id, is_hashed_id
from django_redis_sessions.user_index import SLACK_MS, UserSession

#: How closely "last active" follows a session's requests, in minutes: the
#: index records a save only once its expiry moved this far.
LAST_ACTIVE_RESOLUTION_MINUTES = SLACK_MS // 60_000

# Without ua-parser. Checked in order: Edge, Opera and Chromium also say
# "Chrome/", Chrome also says "Safari/", and an iPhone says "like Mac OS X".
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
#: What ua-parser calls a browser or system it does not know.
_UNKNOWN = "Other"


def _from_table(user_agent: str) -> tuple[str | None, str | None]:
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    return browser, system


@functools.lru_cache(maxsize=256)
def _parsed(user_agent: str) -> tuple[str | None, str | None]:
    """(browser, system) of a ``User-Agent``, each None where unknown."""
    try:
        ua_parser: Any = importlib.import_module("ua_parser")
    except ImportError:
        return _from_table(user_agent)
    result = ua_parser.parse(user_agent)
    browser = result.user_agent.family if result.user_agent else None
    system = result.os.family if result.os else None
    return (
        None if browser == _UNKNOWN else browser,
        None if system == _UNKNOWN else system,
    )


def describe_browser(user_agent: str) -> str | None:
    """A name like "Firefox on Windows" for a ``User-Agent``; None if it has none."""
    browser, system = _parsed(user_agent)
    if browser and system:
        return _("%(browser)s on %(system)s") % {"browser": browser, "system": system}
    if system:
        return _("A browser on %(system)s") % {"system": system}
    return browser


@functools.lru_cache(maxsize=4)
def _geoip(path: str) -> Any:
    """Django's ``GeoIP2`` over the databases in ``path``; None without geoip2."""
    geoip2: Any = importlib.import_module("django.contrib.gis.geoip2")
    if not geoip2.HAS_GEOIP2:
        return None
    try:
        return geoip2.GeoIP2(path)
    except geoip2.GeoIP2Exception:
        return None


def locate(ip: str) -> str | None:
    """Where ``ip`` is, as "City, Country" (or just the country); None if unknown.

    Only with ``GEOIP_PATH`` set. A private address, one the database lacks,
    or a database that cannot be read all give None: a place is a hint on the
    page, never a reason for it to fail.
    """
    path = getattr(settings, "GEOIP_PATH", None)
    if not path or not ip:
        return None
    geoip = _geoip(str(path))
    if geoip is None:
        return None
    try:
        found = geoip.city(ip)
    except Exception:  # AddressNotFoundError, a private address, a bad file
        return None
    parts = [found.get("city"), found.get("country_name")]
    return ", ".join(part for part in parts if part) or None


@dataclass(frozen=True)
class Row:
    """One session as the page and the admin panel show it."""

    session: UserSession
    #: A hashed id whatever ``HASH_IDS`` says: what a form posts back.
    id: str
    is_current: bool
    #: Only when ``USER_INDEX_METADATA`` collects the user agent.
    browser: str | None
    #: The IP at sign-in; only when ``USER_INDEX_METADATA`` collects it.
    ip: str | None
    #: Where ``ip`` is, with ``GEOIP_PATH`` set.
    location: str | None

    @property
    def short_id(self) -> str:
        return self.id[1:9]

    @property
    def name(self) -> str:
        """The browser, or "Session abcd1234" where none is known."""
        return self.browser or _("Session %(id)s") % {"id": self.short_id}

    @property
    def signed_in(self) -> str:
        return relative(self.session.created_at)

    @property
    def last_active(self) -> str:
        # This very request is the session's latest.
        moment = timezone.now() if self.is_current else self.session.last_seen_at
        return relative(moment)

    @property
    def expires(self) -> str:
        return relative(self.session.expires_at)


def relative(moment: datetime) -> str:
    """ "3 hours ago", "in 2 weeks": Django's ``naturaltime``, translated."""
    return str(naturaltime(moment))


def page_id(session_id: str) -> str:
    """The id a listing names a session by: hashed even where the store's is not."""
    return session_id if is_hashed_id(session_id) else hashed_id(session_id)


def session_rows(user_id: object, current_key: str | None = None) -> list[Row]:
    """The user's live sessions, newest first, ``current_key``'s first of all."""
    current = hashed_id(current_key) if current_key else None
    wanted = conf.USER_INDEX_METADATA
    rows = []
    for session in get_store().user_sessions(user_id):
        row_id = page_id(session.id)
        agent = session.user_agent if "user_agent" in wanted else None
        ip = session.ip if "ip" in wanted else None
        rows.append(
            Row(
                session=session,
                id=row_id,
                is_current=row_id == current,
                browser=(describe_browser(agent) or agent) if agent else None,
                ip=ip,
                location=locate(ip) if ip else None,
            )
        )
    rows.sort(key=lambda row: not row.is_current)  # stable: newest first stays
    return rows
