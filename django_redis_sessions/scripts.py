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
from typing import Any, NamedTuple

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
    #: a versioned update: another request saved the session since this one
    #: loaded it, so nothing was written (see ``Conflict``).
    CONFLICT = 6


class Conflict(NamedTuple):
    """A versioned update that found another version: nothing was written."""

    #: What the session holds now, for the caller to merge into.
    current: bytes


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

# The save of a loaded session: an update (never a create) that writes only
# over the bytes the request loaded, so that a save of another request since
# is merged into, not overwritten (``merge.py``). No lock and no extra round
# trip: when nobody else wrote, this is the request's one save.
# KEYS[1] data name
# ARGV[1] payload, ARGV[2] TTL in milliseconds (> 0), ARGV[3] SHA1 (hex) of
# the payload the request loaded
# returns {WRITTEN}, {MISSING} (no live session: a logout ended it) or
# {CONFLICT, the current payload}. A value already equal to this payload is
# this very save run again by the client's retry after a lost reply, or a
# save of the same data: written either way.
UPDATE_VERSIONED = """
local current = redis.call('GET', KEYS[1])
if not current then return {4} end
if current ~= ARGV[1] and redis.sha1hex(current) ~= ARGV[3] then
  return {6, current}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1}
"""

# KEYS: pairs of (data name, tombstone name), all forms one session may be
# stored under (its id, and in "migrate" mode its plain key)
# ARGV[1] tombstone lifetime in milliseconds (> 0), ARGV[2] a token unique to
# this call, stored as the tombstones' value
# returns the number of live forms removed (0: none was live); every tombstone
# is set either way, so a write racing a logout of an already expired session
# stays refused. A first tombstone holding this call's own token means the
# call already ran and its reply was lost: the retry reports what that run
# did, which the token records ("+": it removed a live form, "-": none).
DESTROY = """
local mark = redis.call('GET', KEYS[2])
if mark == ARGV[2] .. '+' then return 1 end
if mark == ARGV[2] .. '-' then return 0 end
local removed = 0
for i = 1, #KEYS, 2 do removed = removed + redis.call('DEL', KEYS[i]) end
mark = ARGV[2] .. (removed > 0 and '+' or '-')
for i = 2, #KEYS, 2 do
  -- A destroy that ended nothing keeps the tombstone's token: the call that
  -- did end the session may be waiting for its retry.
  if removed > 0 or redis.call('PEXPIRE', KEYS[i], ARGV[1]) == 0 then
    redis.call('SET', KEYS[i], mark, 'PX', ARGV[1])
  end
end
return removed
"""

# The login path (``cycle_key``) in one round trip: the data moves to a fresh
# key and the old session is destroyed, so a request still holding the old key
# can never write it back. Only for clients where all keys may meet in one
# script (not Redis Cluster, where two sessions live on different slots).
# KEYS[1] new data name, KEYS[2] new tombstone name, then pairs of (data name,
# tombstone name) of every form the old session may be stored under
# ARGV[1] payload, ARGV[2] TTL in milliseconds (> 0),
# ARGV[3] tombstone lifetime in milliseconds (> 0), ARGV[4] a token unique to
# this call, stored as the old session's tombstones
# returns WRITTEN, or MISSING (the old session is no longer live: a logout, a
# clear or another cycle ended it, so its data must not live on under a new
# key), or TOMBSTONED or EXISTS (the new key is unusable); nothing changes
# unless WRITTEN. The first line recognizes this very call run again by the
# client's retry after a lost reply (only this call knows its token).
CYCLE = """
if redis.call('GET', KEYS[4]) == ARGV[4] then return 1 end
local live = 0
for i = 3, #KEYS, 2 do live = live + redis.call('EXISTS', KEYS[i]) end
if live == 0 then return 4 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 2 end
for i = 3, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], ARGV[4], 'PX', ARGV[3])
end
return 1
"""

# HASH_IDS "migrate", one server: the load of a session that may still be
# stored under its plain key, in one round trip. A plain session is moved to
# its id with its remaining lifetime and its plain form is destroyed, so it is
# found under the id from now on and can never be read twice.
# KEYS[1] id data name, KEYS[2] id tombstone name,
# KEYS[3] plain data name, KEYS[4] plain tombstone name
# ARGV[1] tombstone lifetime in milliseconds (> 0)
# returns the payload, or false
READ_OR_MOVE = """
local payload = redis.call('GET', KEYS[1])
if payload then return payload end
payload = redis.call('GET', KEYS[3])
if not payload then return false end
local ttl = redis.call('PTTL', KEYS[3])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
if ttl > 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], payload, 'PX', ttl, 'NX')
  return payload
end
return false
"""

# HASH_IDS "prepare", Redis Cluster: the end of a session a process on
# "migrate" moved to its id, once this process (plain layout) found no plain
# form. It cannot serve the session, and the visitor's browser drops the
# cookie on this very response; ended, the key also stops working on the
# processes that read ids, so a logout here is final there too.
# KEYS[1] id data name, KEYS[2] id tombstone name
# ARGV[1] tombstone lifetime in milliseconds (> 0)
# returns 1 if a session was ended, else 0; a key nobody holds writes nothing
END_MOVED = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return 1
end
return 0
"""

# HASH_IDS "prepare", one server: the load of a session under its plain key,
# and if there is none, END_MOVED of its id form, in one round trip.
# KEYS[1] plain data name, KEYS[2] plain tombstone name (unused, for the
# slot), KEYS[3] id data name, KEYS[4] id tombstone name
# ARGV[1] tombstone lifetime in milliseconds (> 0)
# returns the payload, or false
READ_OR_END = """
local payload = redis.call('GET', KEYS[1])
if payload then return payload end
if redis.call('DEL', KEYS[3]) == 1 then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
end
return false
"""

# ``redis_sessions rehash``, one server: move one session from its plain name
# to its id, as READ_OR_MOVE does on a load.
# KEYS[1] plain data name, KEYS[2] plain tombstone name,
# KEYS[3] id data name, KEYS[4] id tombstone name
# ARGV[1] tombstone lifetime in milliseconds (> 0)
# returns 1 if the session now lives under its id, else 0 (gone meanwhile, or
# its id was logged out or taken: the plain form is ended all the same)
MOVE = """
local payload = redis.call('GET', KEYS[1])
if not payload then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
if ttl <= 0 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('SET', KEYS[3], payload, 'PX', ttl, 'NX') then return 1 end
return 0
"""

# HASH_IDS "migrate" on Redis Cluster, where the two forms live on different
# slots: the first half of a move, taking the plain form (read and destroyed
# at once); the caller then creates the id form.
# KEYS[1] plain data name, KEYS[2] plain tombstone name
# ARGV[1] tombstone lifetime in milliseconds (> 0)
# returns {payload, remaining milliseconds}, or false
TAKE = """
local payload = redis.call('GET', KEYS[1])
if not payload then return false end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return {payload, ttl}
"""

# ``redis_sessions stats``: one SCAN batch measured on the server that holds
# it. Sending STRLEN and PTTL back in a pipeline costs the client a reply to
# parse per command, which made a pipelined stats 3x to 7x slower than
# ``count``; here the batch comes back as one reply, its figures as bucket
# numbers: floor(100 * ln(value + 1)), 1 % wide, exact below 100. A bucket
# number goes as two bytes, little-endian (they stay below 4000: 2^63 ms is
# bucket 3675), because Lua turns a number into text with sprintf, which
# cost more than STRLEN and PTTL together. The names
# come joined with "\n" into one string, which the client splits in one C
# call instead of parsing a reply per name (that parsing is most of what
# ``count`` costs); a name may itself hold a "\n", which the client sees as
# more parts than names, and then asks for the same batch again as a list.
# KEYS: none. The names come from SCAN on the server running the script,
# which on Cluster is the primary that owns them, so no name is ever
# another node's (a script without declared keys runs where it is sent).
# ARGV[1] SCAN cursor, ARGV[2] MATCH pattern, ARGV[3] COUNT, ARGV[4] "1" to
# send the names joined, "0" to send them as a list, ARGV[5] "1" to tell the
# encrypted sessions (their first byte is the version byte, 1: GETRANGE reads
# that byte alone)
# returns {next cursor, every name found (sessions, tombstones, others), the
# size buckets and the TTL buckets of the session names (those ending in "}")
# in order, two bytes each (TTL in whole seconds rounded up; 65535: no TTL),
# the largest size in bytes, the longest TTL in milliseconds, the number of
# tombstones, the number of names, one byte per session name: "1" if it is
# encrypted, else "0" (empty without ARGV[5])}
MEASURE = """
local page = redis.call(
  'SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', 'string')
local call, byte, char, sub = redis.call, string.byte, string.char, string.sub
local log, floor, ceil = math.log, math.floor, math.ceil
local function two_bytes(value)
  local bucket = floor(100 * log(value + 1))
  return char(bucket % 256, floor(bucket / 256))
end
local sizes, ttls, n, largest, longest, tombstones = {}, {}, 0, 0, 0, 0
local sealed, tell_sealed = {}, ARGV[5] == '1'
for _, name in ipairs(page[2]) do
  if byte(name, -1) ~= 125 then
    if sub(name, -11) == '}:tombstone' then tombstones = tombstones + 1 end
  else
    n = n + 1
    local size = call('STRLEN', name)
    local ttl = call('PTTL', name)
    sizes[n] = two_bytes(size)
    if tell_sealed then
      sealed[n] = call('GETRANGE', name, 0, 0) == '\\1' and '1' or '0'
    end
    if size > largest then largest = size end
    if ttl < 0 then
      ttls[n] = '\\255\\255'
    else
      ttls[n] = two_bytes(ceil(ttl / 1000))
      if ttl > longest then longest = ttl end
    end
  end
end
local names = page[2]
if ARGV[4] == '1' then names = table.concat(names, '\\n') end
return {
  page[1], names, table.concat(sizes), table.concat(ttls),
  largest, longest, tombstones, #page[2], table.concat(sealed)}
"""


# --- The per-user index ----------------------------------------------------
#
# Two keys per user, both under the user's hash tag (one Cluster slot):
# ``PREFIX{u:<base64url(user id)>}:sessions``, a hash of session id ->
# "expires|created|seen|ip|user agent" (times in milliseconds since the epoch;
# "expires" lags the session's real expiry by at most the slack, see
# ``user_index.py``; "seen" is when the entry was written), and
# ``PREFIX{u:...}:expiry``, a sorted set of the same ids scored by "expires".
# Every write costs O(log n) in the number of entries: nothing here reads the
# whole index. What the scripts keep:
#
# * An entry is written with its session (one server: the same script) or
#   before it (Cluster), never after, so a live session is never unlisted.
# * A write prunes at most PRUNE_BATCH entries whose "expires" plus the slack
#   has passed: their sessions have expired for certain. Other dead entries
#   (a session ended without its user known) are pruned by the reads, which
#   check each session, once the entry is older than the slack.
# * A script never unlists a session it did not end itself: beyond
#   MAX_SESSIONS_PER_USER it only reports the excess; the client checks which
#   sessions are live, ends the oldest live ones (destroy, then unlist) and
#   prunes dead entries, so a dead entry never counts and a retried script
#   changes nothing twice.
#: How many expired entries one index write removes at most.
PRUNE_BATCH = 64

_INDEX_FUNCTIONS = """
local unpack = unpack or table.unpack
local PRUNE_BATCH = PRUNE_BATCH_SIZE
local function over_cap(exp, cap)
  cap = tonumber(cap)
  if cap > 0 and redis.call('ZCARD', exp) > cap then return 1 end
  return 0
end
-- ARGV from ``at``: id, expires, now, slack, cap, ip, ua, "1" to unlist the
-- fields that follow (else "0"), then the fields the entry inherits its
-- creation time (and ip and user agent, when not given) from, the first found.
local function index_write(idx, exp, at)
  local id, expires, now, slack = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local ip, ua = ARGV[at + 5], ARGV[at + 6]
  local created = now
  local source = redis.call('HGET', idx, id)
  for i = at + 8, #ARGV do
    if source then break end
    source = redis.call('HGET', idx, ARGV[i])
  end
  if source then
    local c, old_ip, old_ua = string.match(
      source, '^%d+|(%d+)|%d+|([^|]*)|(.*)$')
    if c then
      created = c
      if ip == '' then ip = old_ip end
      if ua == '' then ua = old_ua end
    end
  end
  if ARGV[at + 7] == '1' then
    for i = at + 8, #ARGV do
      if ARGV[i] ~= id then
        redis.call('HDEL', idx, ARGV[i])
        redis.call('ZREM', exp, ARGV[i])
      end
    end
  end
  redis.call('HSET', idx, id,
    expires .. '|' .. created .. '|' .. now .. '|' .. ip .. '|' .. ua)
  redis.call('ZADD', exp, expires, id)
  now, slack = tonumber(now), tonumber(slack)
  local cutoff = string.format('(%d', now - slack)
  local stale = redis.call(
    'ZRANGEBYSCORE', exp, '-inf', cutoff, 'LIMIT', 0, PRUNE_BATCH)
  if #stale > 0 then
    redis.call('HDEL', idx, unpack(stale))
    redis.call('ZREM', exp, unpack(stale))
  end
  -- Both keys live as long as the latest entry, never shorter than they
  -- already do (an index written before the sorted set existed).
  local last = redis.call('ZRANGE', exp, -1, -1, 'WITHSCORES')
  local keep = tonumber(last[2]) + slack - now
  for _, name in ipairs({idx, exp}) do
    if redis.call('PTTL', name) < keep then
      redis.call('PEXPIRE', name, string.format('%d', keep))
    end
  end
  return over_cap(exp, ARGV[at + 4])
end
""".replace("PRUNE_BATCH_SIZE", str(PRUNE_BATCH))

# The index entry alone, on the user's slot (Redis Cluster, and ``store.set``).
# KEYS[1] index hash, KEYS[2] expiry set; ARGV: the index arguments (see
# index_write)
# returns 1 if the user has more entries than the cap, else 0
INDEX_WRITE = (
    _INDEX_FUNCTIONS
    + """
return index_write(KEYS[1], KEYS[2], 1)
"""
)

# CREATE and the index entry. KEYS[1] data name, KEYS[2] tombstone name,
# KEYS[3] index hash, KEYS[4] expiry set; ARGV[1] payload, ARGV[2] TTL in
# milliseconds, ARGV[3..] the index arguments
# returns {outcome, 1 if over the cap else 0}
CREATE_INDEXED = (
    _INDEX_FUNCTIONS
    + """
local outcome = 2
if redis.call('EXISTS', KEYS[2]) == 1 then
  outcome = 3
elseif redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  outcome = 1
elseif redis.call('GET', KEYS[1]) == ARGV[1] then
  outcome = 1
end
if outcome ~= 1 then return {outcome, 0} end
return {1, index_write(KEYS[3], KEYS[4], 3)}
"""
)

# An update (SET XX: never creates, never revives) and the index entry.
# KEYS[1] data name, KEYS[2] index hash, KEYS[3] expiry set; ARGV[1] payload,
# ARGV[2] TTL in milliseconds, ARGV[3..] the index arguments
# returns {WRITTEN, 1 if over the cap else 0} or {MISSING, 0}
UPDATE_INDEXED = (
    _INDEX_FUNCTIONS
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX') then return {4, 0} end
return {1, index_write(KEYS[2], KEYS[3], 3)}
"""
)

# UPDATE_VERSIONED and the index entry, on one server. KEYS[1] data name,
# KEYS[2] index hash, KEYS[3] expiry set; ARGV[1] payload, ARGV[2] TTL in
# milliseconds, ARGV[3] SHA1 (hex) of the payload the request loaded,
# ARGV[4..] the index arguments
# returns {WRITTEN, 1 if over the cap else 0}, {MISSING, 0} or
# {CONFLICT, the current payload}: nothing is written then, the entry neither
UPDATE_INDEXED_VERSIONED = (
    _INDEX_FUNCTIONS
    + """
local current = redis.call('GET', KEYS[1])
if not current then return {4, 0} end
if current ~= ARGV[1] and redis.sha1hex(current) ~= ARGV[3] then
  return {6, current}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, index_write(KEYS[2], KEYS[3], 4)}
"""
)

# CYCLE, moving the index entry from the old id to the new one. KEYS as
# CYCLE's, then the index hash and the expiry set; ARGV[1..4] as CYCLE's,
# ARGV[5..] the index arguments (the fields inherited: the old session's)
# returns {outcome, 1 if over the cap else 0}
CYCLE_INDEXED = (
    _INDEX_FUNCTIONS
    + """
local idx, exp = KEYS[#KEYS - 1], KEYS[#KEYS]
if redis.call('GET', KEYS[4]) == ARGV[4] then return {1, over_cap(exp, ARGV[9])} end
local live = 0
for i = 3, #KEYS - 2, 2 do live = live + redis.call('EXISTS', KEYS[i]) end
if live == 0 then return {4, 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {3, 0} end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return {2, 0} end
for i = 3, #KEYS - 2, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], ARGV[4], 'PX', ARGV[3])
end
return {1, index_write(idx, exp, 5)}
"""
)

# DESTROY, and the session's entry out of its user's index in the same
# script: the session is dead before it is unlisted, never the other way.
# KEYS as DESTROY's, then the index hash and the expiry set; ARGV[1..2] as
# DESTROY's, ARGV[3..] the fields of the session (its id; in "migrate" mode
# its plain key too)
DESTROY_INDEXED = """
for i = 3, #ARGV do
  redis.call('HDEL', KEYS[#KEYS - 1], ARGV[i])
  redis.call('ZREM', KEYS[#KEYS], ARGV[i])
end
local mark = redis.call('GET', KEYS[2])
if mark == ARGV[2] .. '+' then return 1 end
if mark == ARGV[2] .. '-' then return 0 end
local removed = 0
for i = 1, #KEYS - 2, 2 do removed = removed + redis.call('DEL', KEYS[i]) end
mark = ARGV[2] .. (removed > 0 and '+' or '-')
for i = 2, #KEYS - 2, 2 do
  if removed > 0 or redis.call('PEXPIRE', KEYS[i], ARGV[1]) == 0 then
    redis.call('SET', KEYS[i], mark, 'PX', ARGV[1])
  end
end
return removed
"""

# Entries out of an index, for a session already ended (Redis Cluster, after
# DESTROY on the session's slot) or no longer the user's.
# KEYS[1] index hash, KEYS[2] expiry set; ARGV the fields
INDEX_FORGET = """
local unpack = unpack or table.unpack
redis.call('HDEL', KEYS[1], unpack(ARGV))
redis.call('ZREM', KEYS[2], unpack(ARGV))
return 0
"""

# A read's pruning of entries whose sessions it found dead: each only if it
# still holds what the read saw, so an entry rewritten meanwhile (its session
# being written right now) stays.
# KEYS[1] index hash, KEYS[2] expiry set; ARGV pairs of (field, entry)
# returns how many entries were removed
INDEX_PRUNE = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""

# HASH_IDS "migrate" or True: entries written under a plain key (HASH_IDS
# False) move to the session's id, so no index keeps a cookie. An entry the
# id already has is newer and stays; the later expiry wins.
# KEYS[1] index hash, KEYS[2] expiry set; ARGV pairs of (plain key, id)
# returns how many plain fields were rewritten
INDEX_REKEY = """
local moved = 0
for i = 1, #ARGV, 2 do
  local plain, id = ARGV[i], ARGV[i + 1]
  local entry = redis.call('HGET', KEYS[1], plain)
  if entry then
    redis.call('HSETNX', KEYS[1], id, entry)
    local score = redis.call('ZSCORE', KEYS[2], plain)
    if not score then score = string.match(entry, '^(%d+)|') or '0' end
    local mine = redis.call('ZSCORE', KEYS[2], id)
    if not mine or tonumber(mine) < tonumber(score) then
      redis.call('ZADD', KEYS[2], score, id)
    end
    redis.call('HDEL', KEYS[1], plain)
    redis.call('ZREM', KEYS[2], plain)
    moved = moved + 1
  end
end
return moved
"""

# ``redis_sessions rehash``, once no plain form is left: the tombstones that
# "migrate" mode kept without expiry (an id ended while its plain form could
# not be named) get their usual lifetime back.
# KEYS: none; the names come from SCAN on the node the script runs on, which
# on Cluster is the primary that owns them.
# ARGV[1] SCAN cursor, ARGV[2] MATCH pattern, ARGV[3] COUNT,
# ARGV[4] tombstone lifetime in milliseconds (> 0)
# returns {next cursor, how many tombstones it settled}
SETTLE_BATCH = """
local page = redis.call(
  'SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', 'string')
local settled = 0
for _, name in ipairs(page[2]) do
  if redis.call('PTTL', name) == -1 then
    redis.call('PEXPIRE', name, ARGV[4])
    settled = settled + 1
  end
end
return {page[1], settled}
"""

# --- Clearing one node of a Redis Cluster ---------------------------------------
#
# KEYS: none; the names come from SCAN on the node the script runs on (TYPE
# string: what clear() deletes are the sessions, see RedisLayer.clear_batches).
# ARGV: cursor, MATCH pattern, COUNT, "1" to send the names back (else "0").
# Returns {next cursor, how many names existed and were unlinked, names or {}}.
# One UNLINK per name: on Redis Cluster no command may span two slots, and a
# script without flags may touch every slot of its own node. Run here, a batch
# costs the client one small reply instead of a pipeline of an UNLINK per
# slot, about a thousand commands to pack and replies to parse, which kept
# concurrent walks of several primaries from running at once.
CLEAR_BATCH = """
local page = redis.call(
  'SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', 'string')
local unlink, deleted = redis.call, 0
for _, name in ipairs(page[2]) do
  deleted = deleted + unlink('UNLINK', name)
end
if ARGV[4] == '1' then return {page[1], deleted, page[2]} end
return {page[1], deleted, {}}
"""

ALL = (
    CREATE,
    SET_UNLESS_TOMBSTONED,
    UPDATE_VERSIONED,
    DESTROY,
    CYCLE,
    READ_OR_MOVE,
    READ_OR_END,
    END_MOVED,
    MOVE,
    TAKE,
    INDEX_WRITE,
    CREATE_INDEXED,
    UPDATE_INDEXED,
    UPDATE_INDEXED_VERSIONED,
    CYCLE_INDEXED,
    DESTROY_INDEXED,
    INDEX_FORGET,
    INDEX_PRUNE,
    INDEX_REKEY,
    MEASURE,
    SETTLE_BATCH,
    CLEAR_BATCH,
)

#: Each script's SHA1, what ``EVALSHA`` names it by.
_SHAS = {text: hashlib.sha1(text.encode()).hexdigest() for text in ALL}


def run(client: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` with ``EVALSHA``, loading it once if the server lacks it.

    The server forgets scripts on a restart or ``SCRIPT FLUSH``; the reload is
    one extra round trip, after which ``EVALSHA`` serves again. ``client`` is
    anything with ``execute_command`` (a client, a Cluster, an asyncio
    ``ClusterNode``, which has no ``script_load``), as ``script_load`` sends
    the same command.
    """
    sha = _SHAS[script]
    try:
        return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    except NoScriptError:
        client.execute_command("SCRIPT LOAD", script)
        return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)


async def arun(
    client: Any, script: str, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """See run()."""
    sha = _SHAS[script]
    try:
        return await client.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    except NoScriptError:
        await client.execute_command("SCRIPT LOAD", script)
        return await client.execute_command("EVALSHA", sha, len(keys), *keys, *args)


def sha(script: str) -> str:
    """The SHA1 ``EVALSHA`` names ``script`` by."""
    return _SHAS[script]


def load(client: Any, script: str) -> None:
    """Make sure the server has ``script``, for a pipeline of ``EVALSHA``."""
    if not client.script_exists(_SHAS[script])[0]:
        client.script_load(script)
