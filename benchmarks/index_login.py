"""Server time of a login's index script for a user with a huge index.

The user has ``--live`` live sessions and ``--stale`` entries of sessions long
expired; each login runs one script (``CREATE_INDEXED``) that writes the
session and its entry. SLOWLOG (threshold 0) gives each script's own server
time; INFO commandstats the mean per EVALSHA.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/index_login.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import statistics
import time

import redis

from benchmarks import common

USER = str(common.SESSION["_auth_user_id"])
BATCH = 10_000


def fill(client: redis.Redis, layer: common.RedisLayer, live: int, stale: int) -> None:
    """``live`` sessions of the user with their entries, and ``stale`` entries
    whose sessions expired long ago, written directly in pipelines."""
    index, expiry = layer.index_names(USER)
    now = int(time.time() * 1000)
    until, past = now + 86_400_000, now - 86_400_000
    for start in range(0, live + stale, BATCH):
        pipeline = client.pipeline(transaction=False)
        for n in range(start, min(start + BATCH, live + stale)):
            session_id = f"#{n:043d}"
            expires = until if n < live else past
            pipeline.hset(index, session_id, f"{expires}|{past}|{past}||")
            pipeline.zadd(expiry, {session_id: expires})
            if n < live:
                pipeline.set(layer.data_name(session_id), b"{}", px=86_400_000)
        pipeline.execute()


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--live", type=int, default=100_000, help="default 100,000")
    parser.add_argument("--stale", type=int, default=100_000, help="default 100,000")
    parser.add_argument("--logins", type=int, default=200, help="default 200")
    args = parser.parse_args()
    with common.server(args.redis_url) as url:
        common.configure(url, session_redis={"USER_INDEX": True})
        client = redis.Redis.from_url(url)
        layer = common.RedisLayer()
        fill(client, layer, args.live, args.stale)
        index, expiry = layer.index_names(USER)
        print(
            f"User index: {client.hlen(index):,} entries "
            f"({args.live:,} live, {args.stale:,} stale).",
            flush=True,
        )
        common.SessionStore().save()  # connects and loads the scripts
        saved = {
            str(name): str(value)
            for name, value in client.config_get("slowlog-*").items()
        }
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", args.logins * 4)
        client.slowlog_reset()
        client.config_resetstat()
        for _ in range(args.logins):
            session = common.SessionStore()
            session.update(common.SESSION)
            session.save()  # a new session with a user: one CREATE_INDEXED
        stats = client.info("commandstats")["cmdstat_evalsha"]
        runs = [
            entry["duration"]
            for entry in client.slowlog_get(args.logins * 4)
            if entry["command"].startswith(b"EVALSHA")
        ]
        for name, value in saved.items():
            client.config_set(name, value)
        left = client.zcard(expiry) - args.live - args.logins
        rows = [
            ["EVALSHA per login", "server time (us)"],
            ["mean (INFO commandstats)", f"{stats['usec_per_call']:.1f}"],
            ["median (SLOWLOG)", f"{statistics.median(runs):.0f}"],
            ["max (SLOWLOG)", f"{max(runs):.0f}"],
        ]
        print(f"\n{args.logins} logins\n\n{common.table(rows)}")
        print(f"\nStale entries left: {left:,} (each login prunes a batch).")


if __name__ == "__main__":
    main()
