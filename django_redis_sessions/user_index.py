"""The per-user index of live sessions: its entries and what the store returns.

Each user with a session has a Redis hash (``keys.user_index_key``) of session
id -> ``"expires|created|seen|ip|user agent"`` (times in milliseconds since
the epoch) and, on the same slot, a sorted set of the ids by "expires"
(``scripts.py`` describes both). An index may hold stale entries; it never
misses a live session. Its invariants, each kept where it says:

* **Listed once saved.** Every live session saved with a user id is listed
  by ``user_sessions()`` once its save returned: the entry is written by the
  same script as the session on one server, before it on Redis Cluster
  (``RedisLayer.create``, ``update``, ``cycle``), and removed only once its
  session is known dead: by the write that ended it, by a write once its
  expiry plus ``SLACK_MS`` passed, or by a read that found the session gone
  and the entry older than ``SLACK_MS`` (a younger one may belong to a
  session being written), and then only if the entry is still what the read
  saw (``scripts.INDEX_PRUNE``).
* **The cap ends live sessions only.** Beyond ``MAX_SESSIONS_PER_USER`` the
  script only reports the excess; ``RedisLayer`` lists the live sessions,
  keeps the one being written and the newest others, ends the rest (destroy,
  then unlist) and reports the ids it ended. A dead entry never counts, and
  a retried script unlists nothing.
* **No cookie in an index.** With ``HASH_IDS`` "migrate" or True, an entry
  written under a plain key (``HASH_IDS`` False) is read by its id, moved to
  it (``scripts.INDEX_REKEY``) by the next read or by ``rehash``, and a
  session still under its plain name is moved to its id first, so it is
  listed, and ended, by its id.
* **O(log n) per write.** No write reads the whole index; a write prunes at
  most a small batch of expired entries, so a user with 100,000 entries costs
  a login well under a millisecond of server time.

An entry is refreshed only when the session's expiry has moved more than
``SLACK_MS`` past the one recorded, so a request that saves costs nothing more
most of the time; the session's data carries the expiry last recorded (under
``INDEX_MARK``, hidden from the session's dict) so the backend knows when, with
no extra read. An entry is therefore stale once its expiry plus the slack has
passed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django_redis_sessions.conf import conf

#: How far a session's expiry may move past its entry's before the entry is
#: rewritten; also the resolution of ``last_seen_at``.
SLACK_MS = 5 * 60 * 1000

#: Where the session's data keeps the expiry its entry records (milliseconds).
INDEX_MARK = "_redis_index_until"

#: Where ``django.contrib.auth`` keeps the logged-in user's id in the session
#: (``django.contrib.auth.SESSION_KEY``, not imported: no auth app needed).
USER_ID_KEY = "_auth_user_id"


@dataclass(frozen=True)
class UserSession:
    """One live session of a user, as ``store.user_sessions()`` lists it."""

    id: str
    created_at: datetime
    #: The last save or touch, to within a few minutes.
    last_seen_at: datetime
    expires_at: datetime
    #: Only when ``USER_INDEX_METADATA`` collects them, else None.
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class IndexWrite:
    """What a session write tells the index: whose session, until when."""

    user_id: str
    expires_ms: int
    ip: str = ""
    user_agent: str = ""

    def script_args(self, session_id: str, now_ms: int, cap: int) -> list[object]:
        """The index arguments of the scripts: id, expires, now, slack, cap, ip, ua."""
        return [
            session_id,
            self.expires_ms,
            now_ms,
            SLACK_MS,
            cap,
            self.ip,
            self.user_agent,
        ]


def seen_ms(entry: str) -> int:
    """When an entry was written (its "seen" field); 0 if it is malformed."""
    parts = entry.split("|", 3)
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else 0


def created_ms(entry: str) -> int:
    """When an entry's session was created; 0 if it is malformed."""
    parts = entry.split("|", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def now_ms() -> int:
    """Milliseconds since the epoch, as index entries record them."""
    return time.time_ns() // 1_000_000


def entry_for(data: dict[str, Any], ttl: float) -> IndexWrite | None:
    """The entry to write with a session holding ``data`` for ``ttl`` seconds.

    None for an anonymous session, or with ``USER_INDEX`` off. For writes
    outside the backend (the store, an import), which always write one.
    """
    user = data.get(USER_ID_KEY)
    if not conf.USER_INDEX or user is None:
        return None
    return IndexWrite(str(user), now_ms() + max(0, math.ceil(ttl * 1000)))


def marked(data: dict[str, Any], index: IndexWrite | None) -> dict[str, Any]:
    """``data`` with the expiry its entry records, as stored (see INDEX_MARK)."""
    return data if index is None else {**data, INDEX_MARK: index.expires_ms}


def parse_entry(
    session_id: str, entry: str, expires_ms: int | None
) -> UserSession | None:
    """The ``UserSession`` of an index entry; None if it is malformed.

    ``expires_ms`` is the session's real expiry, read from Redis; the entry's
    own may lag it by the slack.
    """
    parts = entry.split("|", 4)
    if len(parts) != 5 or not all(part.isdigit() for part in parts[:3]):
        return None
    recorded, created, seen, ip, user_agent = parts
    return UserSession(
        id=session_id,
        created_at=_datetime(int(created)),
        last_seen_at=_datetime(int(seen)),
        expires_at=_datetime(int(recorded) if expires_ms is None else expires_ms),
        ip=ip or None,
        user_agent=user_agent or None,
    )


def _datetime(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc)
