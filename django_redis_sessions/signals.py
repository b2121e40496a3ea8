"""Signals about the life of sessions, sent with ids, never with session keys.

``session_created(sender, session_id, previous_session_id)``
    A session was written for the first time: a backend ``create()`` (or
    ``save(must_create=True)``), a store ``create()``, or ``cycle_key()``,
    whose new session carries ``previous_session_id`` (the id it replaces;
    None otherwise).
``session_ended(sender, session_id, reason)``
    The engine ended a live session. ``reason``: ``"logout"`` (the backend's
    ``delete()``, hence ``flush()`` and Django's ``logout()``), ``"destroy"``
    (the store's ``destroy()``), ``"clear"`` (``clear()``, one signal per
    session), ``"cycle"`` (``cycle_key()`` moved it to a new id),
    ``"expired"`` (a write found its expiry already past and deleted the
    session instead; also sent when another request ended it a moment
    before), ``"logout_user"`` (``logout_user()``, ``logout_other_sessions()``
    and the page's "End all other sessions", one signal per session) and
    ``"evicted"`` (``MAX_SESSIONS_PER_USER`` ended it at a login; sent by
    ``RedisLayer``, the code that ended it, whichever API wrote the login).
``session_write_refused(sender, session_id, operation, reason)``
    A write was stopped: the races the engine exists to stop, made visible.
    ``reason`` is ``"tombstoned"`` (the session was destroyed moments ago)
    or ``"missing"`` (the backend saved, touched or cycled a session that
    another request ended since this one loaded it); ``operation`` is
    ``"create"``, ``"set"``, ``"update"``, ``"touch"`` or ``"cycle"``.

``sender`` is the class that sent the signal: the backend's
``SessionStore`` (or your subclass) or ``RedisSessionStore`` (also for the
management command's ``clear``).

Cost: with no receiver connected, one truth test of three lists per
operation and no id computed. The asyncio methods send with ``asend()``
(Django 5.0 and later) so that a synchronous receiver runs in a thread, where
the ORM may be used, and an asynchronous one runs on the loop; before 5.0,
where signals know no coroutines, with ``send()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import django
from django.dispatch import Signal

from django_redis_sessions.scripts import Outcome

session_created = Signal()
session_ended = Signal()
session_write_refused = Signal()

#: ``Signal.asend`` exists from Django 5.0.
HAS_ASEND = django.VERSION >= (5, 0)


def listening() -> bool:
    """Whether any receiver is connected: the only cost without one."""
    return bool(
        session_created.receivers
        or session_ended.receivers
        or session_write_refused.receivers
    )


class Event(NamedTuple):
    """A signal to send about the session of ``key``, once its id is known."""

    signal: Signal
    key: str
    arguments: dict[str, Any]
    #: For ``cycle_key``: the key whose id goes in ``previous_session_id``.
    previous_key: str | None = None


#: The operations whose MISSING means "ended meanwhile" in the backend, where
#: the session was loaded (or created) by the same request.
_UPDATES = frozenset({"update", "touch", "cycle"})


def after_write(
    operation: str,
    outcome: Outcome,
    key: str,
    *,
    old_key: str | None = None,
    refused_if_missing: bool = False,
) -> list[Event]:
    """The signals a write's outcome calls for.

    ``key`` is the session written (the new one of a cycle, whose old one is
    ``old_key``). ``refused_if_missing``: a MISSING outcome is a refused
    write (the backend), not just an unknown key (the store).
    """
    if outcome is Outcome.WRITTEN:
        if operation == "create" or (operation == "cycle" and old_key is None):
            return [Event(session_created, key, {}, None)]
        if operation == "cycle" and old_key is not None:
            return [
                Event(session_created, key, {}, old_key),
                Event(session_ended, old_key, {"reason": "cycle"}),
            ]
        return []
    refused = {"operation": operation}
    ended_key = key if old_key is None else old_key
    if outcome is Outcome.TOMBSTONED:
        return [Event(session_write_refused, key, refused | {"reason": "tombstoned"})]
    if outcome is Outcome.MISSING and refused_if_missing and operation in _UPDATES:
        return [
            Event(session_write_refused, ended_key, refused | {"reason": "missing"})
        ]
    if outcome is Outcome.EXPIRED and operation != "create":
        return [Event(session_ended, ended_key, {"reason": "expired"})]
    return []


def ended(key: str, reason: str) -> list[Event]:
    return [Event(session_ended, key, {"reason": reason})]


def send(
    sender: type, events: Iterable[Event], session_id: Callable[[str], str]
) -> None:
    """Send ``events``, computing each id only for a signal someone receives."""
    for signal, key, arguments, previous in events:
        if signal.receivers:
            kwargs = _arguments(signal, key, arguments, previous, session_id)
            signal.send(sender, **kwargs)


async def asend(
    sender: type, events: Iterable[Event], session_id: Callable[[str], str]
) -> None:
    """See send(); from asyncio code."""
    for signal, key, arguments, previous in events:
        if signal.receivers:
            kwargs = _arguments(signal, key, arguments, previous, session_id)
            if HAS_ASEND:
                await signal.asend(sender, **kwargs)
            else:
                signal.send(sender, **kwargs)


def send_ended_ids(sender: type, ids: Iterable[str], reason: str) -> None:
    """``session_ended`` for sessions known by id (``clear``)."""
    for session_id in ids:
        session_ended.send(sender, session_id=session_id, reason=reason)


async def asend_ended_ids(sender: type, ids: Iterable[str], reason: str) -> None:
    """See send_ended_ids()."""
    for session_id in ids:
        if HAS_ASEND:
            await session_ended.asend(sender, session_id=session_id, reason=reason)
        else:
            session_ended.send(sender, session_id=session_id, reason=reason)


def _arguments(
    signal: Signal,
    key: str,
    arguments: dict[str, Any],
    previous: str | None,
    session_id: Callable[[str], str],
) -> dict[str, Any]:
    kwargs = {"session_id": session_id(key), **arguments}
    if signal is session_created:
        kwargs["previous_session_id"] = (
            None if previous is None else session_id(previous)
        )
    return kwargs
