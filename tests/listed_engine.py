"""A third-party session engine that the import can list: the protocol's example.

Django's cache engine (over the suite's local-memory cache, which cannot be
scanned), plus a registry of its keys and the classmethod the importer calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.sessions.backends import cache


class SessionStore(cache.SessionStore):
    #: Every key saved and not deleted, as the engine's own index would be.
    registry: set[str] = set()

    def save(self, must_create: bool = False) -> None:
        super().save(must_create)
        self.registry.add(str(self.session_key))

    def delete(self, session_key: str | None = None) -> None:
        key = self.session_key if session_key is None else session_key
        super().delete(session_key)
        self.registry.discard(str(key))

    @classmethod
    def list_session_keys(cls, after: str | None) -> Iterable[str]:
        """Every session key in ascending order, those after ``after`` only."""
        return sorted(key for key in cls.registry if after is None or key > after)
