"""A session engine that keeps sessions in a dict of the worker process.

Not for use: it shares nothing between processes and loses everything on a
restart. ``http_load.py`` runs its app with it to measure the ceiling: the
throughput the app reaches when storing a session costs nothing, which no
engine over a network can pass. A client keeps one connection, which one
gunicorn worker serves, so each client finds its session in that worker.
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
)
from django.utils.crypto import get_random_string

_SESSIONS: dict[str, dict[str, Any]] = {}


class SessionStore(SessionBase):
    def load(self) -> dict[str, Any]:
        data = _SESSIONS.get(self._session_key or "")
        if data is None:
            self._session_key = None
            return {}
        return dict(data)

    def exists(self, session_key: str | None) -> bool:
        return session_key in _SESSIONS

    def create(self) -> None:
        """A new key, stored empty; the data follows at the save."""
        while True:
            key = get_random_string(32, VALID_KEY_CHARS)
            empty: dict[str, Any] = {}
            if _SESSIONS.setdefault(key, empty) is empty:  # one step: a new key
                self._session_key, self.modified = key, True
                return

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            self.create()
        elif must_create and self.session_key in _SESSIONS:
            raise CreateError
        _SESSIONS[self.session_key or ""] = dict(self.items())

    def delete(self, session_key: str | None = None) -> None:
        _SESSIONS.pop(session_key or self.session_key or "", None)

    @classmethod
    def clear_expired(cls) -> None:
        pass
