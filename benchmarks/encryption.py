"""Encryption at rest against the plain path: load and save, 200 B to 20 KB."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/encryption.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import secrets
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.test.utils import override_settings

from benchmarks import common
from benchmarks.common import SessionStore, Variant, get_payloads, random_key

#: A server secret of the benchmark, never a real one.
SECRET = "benchmark-secret-" + "0123456789" * 4
PLAIN: dict[str, Any] = {"ENCRYPTION": False}
ENCRYPTED: dict[str, Any] = {"ENCRYPTION": True, "ENCRYPTION_KEYS": [SECRET]}
SIZES = (200, 2_000, 20_000)
#: SESSION_REDIS of the run, and a client on its server.
BASE: dict[str, Any] = {}
CLIENT: list[redis.Redis] = []
_override: list[Any] = []


def use(config: dict[str, Any]) -> None:
    """``SESSION_REDIS`` with ``config`` until the next call (in setups only:
    it drops the engine's clients)."""
    while _override:
        _override.pop().disable()
    _override.append(override_settings(SESSION_REDIS={**BASE, **config}))
    _override[0].enable()


def data_of(size: int) -> dict[str, Any]:
    """A logged-in session whose JSON is about ``size`` bytes."""
    data: dict[str, Any] = {**common.SESSION, "blob": ""}
    room = size - len(SessionStore().serializer().dumps(data))
    data["blob"] = secrets.token_urlsafe(max(room, 0))[: max(room, 0)]
    return data


def sessions(config: dict[str, Any], data: dict[str, Any]) -> Callable[[int], Any]:
    """A setup: ``n`` sessions of ``data`` written with ``config``; their keys."""

    def setup(n: int) -> list[str]:
        use(config)
        common.delete_under(CLIENT[0], common.NAMESPACE)
        keys = []
        for _ in range(n):
            session = SessionStore()
            session.update(data)
            session.save()
            assert session.session_key is not None
            keys.append(session.session_key)
        return keys

    return setup


def loaded(config: dict[str, Any], data: dict[str, Any]) -> Callable[[int], Any]:
    """A setup: ``n`` sessions loaded and changed, ready to save."""
    written = sessions(config, data)

    def setup(n: int) -> list[SessionStore]:
        stores = [SessionStore(key) for key in written(n)]
        for store in stores:
            store["n"] = store.get("n", 0) + 1
        return stores

    return setup


def load(keys: list[str]) -> None:
    for key in keys:
        SessionStore(key).load()


def save(stores: list[SessionStore]) -> None:
    for store in stores:
        store.save()


def request(keys: list[str]) -> None:
    """What a request that changes its session does: a load, then a save."""
    for key in keys:
        store = SessionStore(key)
        store["n"] = store.get("n", 0) + 1
        store.save()


def codec(data: dict[str, Any], *, encrypted: bool, n: int, rounds: int) -> float:
    """Seconds per dumps + loads of ``data`` by the payload codec alone, with
    a new session key each time (HKDF every time), fastest of the rounds:
    on a shared machine the fastest round is the one least disturbed."""
    use(ENCRYPTED if encrypted else PLAIN)
    payloads = get_payloads()
    keys = [random_key() for _ in range(n)]
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for key in keys:
            payloads.loads(payloads.dumps(data, key), key)
        best = min(best, time.process_time() - start)
        payloads = type(payloads)()  # forgets the derived keys
    return best / n


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2_000, help="default 2,000")
    parser.add_argument(
        "--codec-only", action="store_true", help="only the codec, without Redis"
    )
    options = parser.parse_args()
    with common.server(options.redis_url) as url:
        common.configure(url, session_redis={"HASH_IDS": True})
        BASE.update(settings.SESSION_REDIS)
        BASE["OPTIONS"] = {"connection_class": common.LOG.connection_class}
        CLIENT.append(redis.Redis.from_url(url))
        added: list[list[str]] = [["operation", "plain µs", "encrypted µs", "added µs"]]
        for size in () if options.codec_only else SIZES:
            data = data_of(size)
            for name, run, setup in (
                ("load", load, sessions),
                ("save", save, loaded),
                ("load + save", request, sessions),
            ):
                title = f"{name}, {size:,} B payload"
                per_op = common.compare(
                    title,
                    [
                        Variant("plain", run, setup(PLAIN, data)),
                        Variant("encrypted", run, setup(ENCRYPTED, data)),
                    ],
                    options.ops,
                    rounds=options.rounds,
                )
                plain, sealed = per_op["plain"].cpu, per_op["encrypted"].cpu
                added.append(
                    [
                        title,
                        f"{plain * 1e6:.1f}",
                        f"{sealed * 1e6:.1f}",
                        f"{(sealed - plain) * 1e6:+.1f}",
                    ]
                )
        if not options.codec_only:
            print("\nCPU per operation (median of the rounds)\n")
            print(common.table(added))
        rows = [["codec alone, dumps + loads", "plain µs", "encrypted µs", "added µs"]]
        for size in SIZES:
            data = data_of(size)
            plain = codec(data, encrypted=False, n=options.ops, rounds=20)
            sealed = codec(data, encrypted=True, n=options.ops, rounds=20)
            rows.append(
                [
                    f"{size:,} B payload",
                    f"{plain * 1e6:.1f}",
                    f"{sealed * 1e6:.1f}",
                    f"{(sealed - plain) * 1e6:+.1f}",
                ]
            )
        print("\nThe payload codec alone, CPU, fastest of 20 rounds\n")
        print(common.table(rows))
        CLIENT[0].close()


if __name__ == "__main__":
    main()
