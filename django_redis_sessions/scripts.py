"""Every Lua script the store runs, and their outcomes.

Each script touches only the keys it is given in ``KEYS``, and every key of one
session shares the session's hash tag, so a script runs on a single Redis
Cluster slot. ``run`` and ``arun`` send ``EVALSHA`` through the client the
caller holds and load the script on ``NOSCRIPT`` (after a restart or a
``SCRIPT FLUSH``), so the steady state is one round trip. The sync and the
asyncio paths run the same text.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


class Outcome(enum.IntEnum):
    """What a write did; the scripts return these numbers."""

    WRITTEN = 1
    #: create: a live session already holds the key.
    EXISTS = 2
    #: a tombstone blocks the key: the session was destroyed recently.
    TOMBSTONED = 3
    #: update/touch: no live session holds the key; cycle: the old session
    #: is no longer live, so its data was not carried to the new key.
    MISSING = 4
    #: the TTL was not positive, so the session was destroyed instead.
    EXPIRED = 5


# KEYS[1] data key, KEYS[2] tombstone key
# ARGV[1] payload, ARGV[2] TTL in milliseconds (> 0)
# returns TOMBSTONED, EXISTS or WRITTEN. A key already holding exactly this
# payload reports WRITTEN: that is this very create, run again by the client's
# retry after its reply was lost, and answering EXISTS would make the backend
# create a second session while the first stays alive, unseen by logout.
CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 2
"""

# KEYS[1] data key, KEYS[2] tombstone key
# ARGV[1] payload, ARGV[2] TTL in milliseconds (> 0)
# returns TOMBSTONED or WRITTEN
SET_UNLESS_TOMBSTONED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] data key, KEYS[2] tombstone key
# ARGV[1] tombstone lifetime in milliseconds (> 0), ARGV[2] a token unique to
# this call, stored as the tombstone's value
# returns 1 if a live session was removed, else 0; the tombstone is set either
# way, so a write racing a logout of an already expired session stays refused.
# A tombstone holding this call's own token means the call already ran and its
# reply was lost: the retry reports what the first run did.
DESTROY = """
if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
local removed = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return removed
"""

# The login path (``cycle_key``) in one round trip: the data moves to a fresh
# key and the old key is destroyed, so a request still holding the old key can
# never write it back. Only for clients where all four keys may meet in one
# script (not Redis Cluster, where two sessions live on different slots).
# KEYS[1] new data key, KEYS[2] new tombstone key,
# KEYS[3] old data key, KEYS[4] old tombstone key
# ARGV[1] payload, ARGV[2] TTL in milliseconds (> 0),
# ARGV[3] tombstone lifetime in milliseconds (> 0), ARGV[4] a token unique to
# this call, stored as the old key's tombstone
# returns WRITTEN, or MISSING (the old session is no longer live: a logout, a
# clear or another cycle ended it, so its data must not live on under a new
# key), or TOMBSTONED or EXISTS (the new key is unusable); nothing changes
# unless WRITTEN. The first line recognizes this very call run again by the
# client's retry after a lost reply (only this call knows the new key).
CYCLE = """
if redis.call('GET', KEYS[4]) == ARGV[4] then return 1 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 4 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 2 end
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3])
return 1
"""

ALL = (CREATE, SET_UNLESS_TOMBSTONED, DESTROY, CYCLE)

#: Each script's SHA1, what ``EVALSHA`` names it by.
_SHAS = {text: hashlib.sha1(text.encode()).hexdigest() for text in ALL}


def run(client: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` with ``EVALSHA``, loading it once if the server lacks it.

    The server forgets scripts on a restart or ``SCRIPT FLUSH``; the reload is
    one extra round trip, after which ``EVALSHA`` serves again.
    """
    sha = _SHAS[script]
    try:
        return client.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        client.script_load(script)
        return client.evalsha(sha, len(keys), *keys, *args)


async def arun(
    client: Any, script: str, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """See run()."""
    sha = _SHAS[script]
    try:
        return await client.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        await client.script_load(script)
        return await client.evalsha(sha, len(keys), *keys, *args)
