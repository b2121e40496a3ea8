"""Moving sessions from another Django session engine into Redis.

Switching ``SESSION_ENGINE`` logs everyone out unless the sessions follow.
They follow in two ways, and both **move** them: once Redis answers for a
session, the source's copy is deleted, so nothing a migration does can bring
back a session that was logged out.

* ``Importer`` (``manage.py redis_sessions import``) reads the source a batch
  at a time, decodes each session with the source engine's own ``decode()``
  (so ``SECRET_KEY_FALLBACKS`` still apply), writes it under the same key with
  its remaining lifetime, create-if-absent (``RedisLayer.create_many``), and
  then deletes the batch from the source. A session Redis already holds keeps
  its data; a key a logout tombstoned stays dead; undecodable data is counted,
  logged without its key and left where it is.
* The read-through window (``SESSION_REDIS["MIGRATE_FROM"]``): a load that
  misses in Redis asks the source (``read_through``), claims the session
  found there (``Source.claim``: a delete that reports whether it removed
  what was read) and creates what it claimed in Redis under the same key
  (the one client key this engine adopts: the source vouches for it). While
  the window is open, a delete, flush or ``cycle_key`` also deletes the key
  from the source (``forget``).

A logout between the lookup and the write stays final wherever it ran: on a
process of the old engine it removed the session before the claim, which
then finds nothing; on a process of this engine, or of the handover engine
(``backends/handover.py``, what old processes run during a rolling deploy),
it also left a tombstone, which the adopting ``CREATE`` refuses atomically.

Sources (``source_for``): Django's ``db`` and ``cached_db`` (keyset pages of
the session model), ``cache`` (SCAN of a Redis cache: Django's ``RedisCache``
or django-redis), ``file`` (the session directory), ``signed_cookies`` (window
only: a valid cookie is adopted once into a fresh session), and any engine
whose ``SessionStore`` has the classmethod ``list_session_keys(after)``: every
session key in ascending order, only those greater than ``after`` when it is
not None. Any other engine works in the window (``load()`` and ``delete()``)
but cannot be imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from importlib import import_module
from time import monotonic
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends import cache, db, file, signed_cookies
from django.contrib.sessions.backends.base import SessionBase
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone

from django_redis_sessions.conf import SETTING_NAME, conf
from django_redis_sessions.keys import glob_escape, hashed_id, is_cookie_key
from django_redis_sessions.payloads import EXPIRY_KEY, Payloads, SessionData
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.scripts import Outcome
from django_redis_sessions.user_index import IndexWrite, entry_for, marked

logger = logging.getLogger(__name__)

THIS_ENGINE = "django_redis_sessions.backends.redis"
#: What old processes run during a rolling switch: the engine MIGRATE_FROM
#: names, whose endings also reach Redis (``backends/handover.py``).
HANDOVER_ENGINE = "django_redis_sessions.backends.handover"

#: The classmethod a third-party engine defines to be importable.
LIST_METHOD = "list_session_keys"


@dataclass(frozen=True)
class Found:
    """One session read from the source."""

    key: str
    #: None when the source's own decoding failed, or found nothing to keep.
    data: SessionData | None
    #: Seconds left; not positive once it expired.
    seconds: float
    #: What the source stored, as read, for a claim of exactly this version.
    stored: Any = field(default=None, compare=False, repr=False)


#: A batch of sessions and the resume token of the position after it.
Batch = tuple[list[Found], str | None]


class CannotList(Exception):
    """The source keeps its sessions where nothing can list them."""


class SourceError(Exception):
    """Reading from or deleting in the source failed; the message is a sentence."""


# --- Engines ------------------------------------------------------------------


def engine_problem(engine: object) -> str | None:
    """Why ``engine`` is not a session engine sessions can move from; None if it is."""
    if not isinstance(engine, str) or not engine:
        return "it is not a dotted module path"
    if engine == HANDOVER_ENGINE:
        # Its SessionStore is the very engine this setting names.
        return "it is the handover engine, which stands in for the engine named here"
    try:
        module = import_module(engine)
    # Importing runs the user's module, which can raise anything.
    except Exception as error:
        return f"it cannot be imported: {type(error).__name__}: {error}"
    store_class = getattr(module, "SessionStore", None)
    if not (isinstance(store_class, type) and issubclass(store_class, SessionBase)):
        return "it has no SessionStore class built on SessionBase"
    if engine == THIS_ENGINE or store_class.__module__ == THIS_ENGINE:
        return "it is this engine itself"
    return None


def source_for(engine: str) -> Source:
    """The source that reads ``engine``'s sessions; ``ImproperlyConfigured`` if none."""
    problem = engine_problem(engine)
    if problem is not None:
        raise ImproperlyConfigured(
            f"{engine!r} is not a session engine sessions can move from: {problem}."
        )
    store_class: type[SessionBase] = import_module(engine).SessionStore
    # An engine's own listing wins over what is known of the engine it extends.
    if not hasattr(store_class, LIST_METHOD):
        for base, kind in _SOURCES:
            if issubclass(store_class, base):
                return kind(engine, store_class)
    return Source(engine, store_class)


def _decoded(store: SessionBase, text: Any) -> SessionData | None:
    """``text`` decoded by the engine's own ``decode()``; None if that failed.

    Django's ``decode()`` answers ``{}`` for data it cannot read (and logs a
    bad signature itself), so an empty session counts as undecodable: there
    is nothing in it to keep either.
    """
    try:
        data = store.decode(text)
    except Exception:
        return None
    return data if isinstance(data, dict) and data else None


def _seconds_until(store: SessionBase, expiry: Any) -> float:
    """Seconds left of a session with this ``_session_expiry``, as its engine says.

    ``get_expiry_age()``, except that an expiry date keeps its fraction of a
    second, which that method drops.
    """
    if isinstance(expiry, str):
        expiry = datetime.fromisoformat(expiry)
    if isinstance(expiry, datetime):
        return (expiry - timezone.now()).total_seconds()
    return float(store.get_expiry_age(expiry=expiry))


def _token(kind: str, key: str) -> str:
    """A resume token after ``key`` that is not the key.

    A session key is a secret, so the token keeps only its first sixteenth
    (2 of Django's 32 characters): resuming after that prefix reads again at
    most the few keys that share it, which is harmless since what was moved
    is gone from the source.
    """
    return f"{kind}:{key[: len(key) // 16]}"


class Source:
    """A session engine sessions move out of.

    This base class serves any engine: in the window through its own
    ``load()`` and ``delete()`` (the remaining lifetime then comes from
    ``get_expiry_age()``: the session's own expiry, else
    ``SESSION_COOKIE_AGE``), and for ``import`` through the classmethod
    ``list_session_keys(after)`` if the engine defines it. The subclasses
    read Django's engines directly, with their exact expiry.
    """

    #: The kind of resume token it prints and takes; None: it cannot resume.
    token_kind: str | None = "keys"

    def __init__(self, engine: str, store_class: type[SessionBase]) -> None:
        self.engine = engine
        self.store_class = store_class

    # The window.

    def fetch(self, key: str) -> Found | None:
        """The live session of ``key`` in the source, or None."""
        store = self.store_class(key)
        data = store.load()
        if not data or store.session_key != key:
            return None
        return Found(key, data, _seconds_until(store, data.get(EXPIRY_KEY)))

    async def afetch(self, key: str) -> Found | None:
        """See fetch()."""
        store = self.store_class(key)
        data = await store.aload()
        if not data or store.session_key != key:
            return None
        return Found(key, data, _seconds_until(store, data.get(EXPIRY_KEY)))

    def remove(self, key: str) -> None:
        """Delete the session of ``key`` from the source, if it is there."""
        self.store_class().delete(key)

    async def aremove(self, key: str) -> None:
        """See remove()."""
        await self.store_class().adelete(key)

    def claim(self, found: Found) -> Found | None:
        """Take the session ``found`` out of the source; what was taken, or None.

        None when it is no longer there: a logout (on any process, of either
        engine) or another request's move took it first, so it must not live
        on in Redis. The read-through writes to Redis only what it claimed.
        An engine this class knows nothing of cannot say whether its
        ``delete()`` removed something, so ``exists()`` asks just before: a
        logout in between those two calls goes unseen. Django's engines and
        those built on them are claimed exactly by their subclasses.
        """
        store = self.store_class()
        if not store.exists(found.key):
            return None
        store.delete(found.key)
        return found

    async def aclaim(self, found: Found) -> Found | None:
        """See claim()."""
        store = self.store_class()
        if not await store.aexists(found.key):
            return None
        await store.adelete(found.key)
        return found

    # The import.

    def batches(self, after: str | None, size: int) -> Iterator[Batch]:
        """Every session after the position ``after``, ``size`` at a time."""
        keys = getattr(self.store_class, LIST_METHOD, None)
        if keys is None:
            raise CannotList(
                f"{self.engine!r} cannot list its sessions. Define the classmethod "
                f"SessionStore.{LIST_METHOD}(after) (every session key in "
                "ascending order, only those greater than after when it is not "
                "None), or set SESSION_REDIS['MIGRATE_FROM'] instead, which moves "
                "each session on its next request."
            )
        batch: list[Found] = []
        for key in keys(after):
            found = self.fetch(key)
            if found is not None:
                batch.append(found)
            if len(batch) == size:
                yield batch, _token("keys", batch[-1].key)
                batch = []
        if batch:
            yield batch, _token("keys", batch[-1].key)

    def position(self, token: str | None) -> str | None:
        """The ``after`` of ``batches()`` for a token the import printed."""
        if token is None:
            return None
        kind, colon, after = token.partition(":")
        if self.token_kind is None:
            raise ValueError(
                f"{self.engine!r} reads its sessions in no fixed order, so it cannot "
                "resume; run the command again without --resume-after: what was "
                "moved is gone from the source."
            )
        if not colon or kind != self.token_kind:
            raise ValueError(
                f"{token!r} is not a resume token of {self.engine!r}; use the one "
                "the import printed when it stopped."
            )
        return after

    def remove_many(self, keys: list[str]) -> None:
        """Delete the sessions of ``keys`` from the source."""
        for key in keys:
            self.remove(key)


class DatabaseSource(Source):
    """``db``, ``cached_db`` and engines built on them: the session model.

    Pages are keyset pagination on ``session_key`` (``WHERE session_key >
    last ORDER BY session_key LIMIT size``), live rows only, so memory stays
    at one page and moved rows never shift a page.
    """

    token_kind = "db"

    def _manager(self) -> Any:
        return self.store_class.get_model_class()._default_manager  # type: ignore[attr-defined]

    def _live(self) -> Any:
        return self._manager().filter(expire_date__gt=timezone.now())

    @staticmethod
    def _found(store: SessionBase, key: str, text: str, expires: datetime) -> Found:
        data = _decoded(store, text) if is_cookie_key(key) else None
        seconds = (expires - timezone.now()).total_seconds()
        return Found(key, data, seconds, (text, expires))

    def _version(self, found: Found) -> Any:
        """The row exactly as it was read: a save since then is another version."""
        text, expires = found.stored
        return self._manager().filter(
            session_key=found.key, session_data=text, expire_date=expires
        )

    def claim(self, found: Found) -> Found | None:
        # One DELETE that says whether it removed the row as it was read.
        deleted, _ = self._version(found).delete()
        self._drop_cached([found.key])
        return found if deleted else None

    async def aclaim(self, found: Found) -> Found | None:
        deleted, _ = await self._version(found).adelete()
        await self._adrop_cached(found.key)
        return found if deleted else None

    def _drop_cached(self, keys: list[str]) -> None:
        # cached_db keeps a copy in the cache as well.
        store = self.store_class()
        cache = getattr(store, "_cache", None)
        if cache is not None:
            cache.delete_many([store.cache_key_prefix + key for key in keys])  # type: ignore[attr-defined]

    async def _adrop_cached(self, key: str) -> None:
        store = self.store_class()
        cache = getattr(store, "_cache", None)
        if cache is not None:
            await cache.adelete(store.cache_key_prefix + key)  # type: ignore[attr-defined]

    def fetch(self, key: str) -> Found | None:
        # One query: the model's own load() would not say when the row expires.
        row = self._live().filter(session_key=key).values_list(*_COLUMNS[1:]).first()
        return None if row is None else self._found(self.store_class(), key, *row)

    async def afetch(self, key: str) -> Found | None:
        query = self._live().filter(session_key=key).values_list(*_COLUMNS[1:])
        row = await query.afirst()
        return None if row is None else self._found(self.store_class(), key, *row)

    def remove(self, key: str) -> None:
        self.remove_many([key])

    async def aremove(self, key: str) -> None:
        await self._manager().filter(session_key=key).adelete()
        await self._adrop_cached(key)

    def batches(self, after: str | None, size: int) -> Iterator[Batch]:
        store = self.store_class()
        while True:
            page = self._live().order_by("session_key").values_list(*_COLUMNS)
            if after is not None:
                page = page.filter(session_key__gt=after)
            rows = list(page[:size])
            if not rows:
                return
            after = rows[-1][0]
            yield [self._found(store, *row) for row in rows], _token("db", after)
            if len(rows) < size:
                return

    def remove_many(self, keys: list[str]) -> None:
        self._manager().filter(session_key__in=keys).delete()
        self._drop_cached(keys)


_COLUMNS = ("session_key", "session_data", "expire_date")


class CacheSource(Source):
    """``cache``: the sessions Django's cache backend keeps in a cache.

    Listing needs a Redis cache (Django's ``RedisCache`` or django-redis):
    SCAN for the names ``cache.make_key(cache_key_prefix + key)``, the values
    through the cache itself (its own serializer), ``PTTL`` for the remaining
    lifetime. Resume tokens are SCAN cursors, which name no session.
    """

    token_kind = "scan"

    def _store(self) -> Any:
        return self.store_class()

    def fetch(self, key: str) -> Found | None:
        store = self._store()
        try:
            data = store._cache.get(store.cache_key_prefix + key)
        except Exception:
            # As the engine's own load(): memcached refuses some keys.
            return None
        if not isinstance(data, dict) or not data:
            return None
        client = redis_client_of(store._cache)
        seconds = None
        if client is not None:
            name = store._cache.make_key(store.cache_key_prefix + key)
            seconds = _seconds_left(client.pttl(name))
        if seconds is None:
            seconds = _seconds_until(store, data.get(EXPIRY_KEY))
        return Found(key, data, seconds)

    async def afetch(self, key: str) -> Found | None:
        # Neither Redis cache has asyncio clients: their own async methods
        # run the sync ones in a thread too.
        return await sync_to_async(self.fetch)(key)

    def claim(self, found: Found) -> Found | None:
        # A cache's delete() says whether it removed the entry. What was read
        # just before is what is moved: a save by a process of the old engine
        # in between is lost (the session stays, one change older).
        store = self._store()
        return (
            found if store._cache.delete(store.cache_key_prefix + found.key) else None
        )

    async def aclaim(self, found: Found) -> Found | None:
        return await sync_to_async(self.claim)(found)

    def batches(self, after: str | None, size: int) -> Iterator[Batch]:
        store = self._store()
        cache = store._cache
        client = redis_client_of(cache)
        if client is None:
            raise CannotList(
                f"The cache {settings.SESSION_CACHE_ALIAS!r} "
                f"({type(cache).__module__}.{type(cache).__qualname__}) cannot "
                "list its keys: only a Redis cache (Django's RedisCache or "
                "django-redis) can be scanned. Set SESSION_REDIS['MIGRATE_FROM'] "
                "instead, which moves each session on its next request."
            )
        before, after_key = _around_key(cache, store.cache_key_prefix)
        pattern = glob_escape(before) + "*" + glob_escape(after_key)
        cursor = 0 if after is None else int(after)
        while True:
            cursor, names = client.scan(cursor, match=pattern, count=size)
            keys = [_key_in(name, before, after_key) for name in names]
            found = self._read(store, client, keys)
            yield found, f"scan:{cursor}" if cursor else None
            if not cursor:
                return

    @staticmethod
    def _read(store: Any, client: Any, keys: list[str]) -> list[Found]:
        """The sessions of ``keys``: one MGET through the cache, one PTTL pipeline."""
        # cached_db's entries share the prefix (".cache" + "d_db..."): no keys.
        keys = [key for key in keys if is_cookie_key(key)]
        if not keys:
            return []
        prefix = store.cache_key_prefix
        values = store._cache.get_many([prefix + key for key in keys])
        present = [key for key in keys if prefix + key in values]
        pipeline = client.pipeline(transaction=False)
        for key in present:
            pipeline.pttl(store._cache.make_key(prefix + key))
        found = []
        for key, pttl in zip(present, pipeline.execute(), strict=True):
            seconds = _seconds_left(pttl)
            data = values[prefix + key]
            if not isinstance(data, dict) or not data:
                data = None
            elif seconds is None:
                seconds = _seconds_until(store, data.get(EXPIRY_KEY))
            # A name gone since the MGET (-2) has expired.
            found.append(Found(key, data, 0.0 if seconds is None else seconds))
        return found

    def position(self, token: str | None) -> str | None:
        after = super().position(token)
        if after is not None and not (after.isascii() and after.isdecimal()):
            raise ValueError(
                f"{token!r} is not a resume token of {self.engine!r}; use the one "
                "the import printed when it stopped."
            )
        return after

    def remove_many(self, keys: list[str]) -> None:
        store = self._store()
        store._cache.delete_many([store.cache_key_prefix + key for key in keys])


def _key_in(name: bytes | str, before: str, after: str) -> str:
    """The session key inside a cache name SCAN found."""
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    return text[len(before) : len(text) - len(after)]


def _seconds_left(pttl: int) -> float | None:
    # -1: the name has no expiry; -2: it is gone.
    if pttl == -1:
        return None
    return max(pttl, 0) / 1000


def redis_client_of(cache: Any) -> redis.Redis | None:
    """The redis-py client of a Redis cache (the primary), or None for others."""
    try:
        if isinstance(cache, RedisCache):
            client = cache._cache.get_client(write=True)
        elif type(cache).__module__.startswith("django_redis."):
            # django-redis's sharded client has no single client to return.
            client = cache.client.get_client(write=True)
        else:
            return None
    except NotImplementedError:
        return None
    return client if isinstance(client, redis.Redis) else None


def _around_key(cache: Any, prefix: str) -> tuple[str, str]:
    """What ``cache.make_key()`` puts before and after ``prefix`` + a session key."""
    probe = "\x00probe\x00"
    name = str(cache.make_key(prefix + probe))
    before, found, after = name.partition(probe)
    if not found:
        raise CannotList(
            "The cache's KEY_FUNCTION does not keep the session key in the "
            "name it stores it under, so its sessions cannot be listed. Set "
            "SESSION_REDIS['MIGRATE_FROM'] instead, which moves each session on "
            "its next request."
        )
    return before, after


class FileSource(Source):
    """``file``: one file per session in ``SESSION_FILE_PATH`` (or the temp dir).

    The lifetime is what the engine computes: the session's own expiry, else
    the file's modification time + ``SESSION_COOKIE_AGE``. The directory is
    read in no particular order, so an import cannot resume at a position;
    it need not, since every file moved is gone.
    """

    token_kind = None

    def _read(self, store: Any, key: str, path: str) -> Found | None:
        try:
            modified = os.stat(path).st_mtime
            with open(path, encoding="ascii") as session_file:
                text = session_file.read()
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # unreadable, or not ASCII
            text = ""
        data = _decoded(store, text) if text else None
        when = datetime.fromtimestamp(
            modified, tz=dt_timezone.utc if settings.USE_TZ else None
        )
        expiry = (data or {}).get(EXPIRY_KEY) or (
            when + timedelta(seconds=store.get_session_cookie_age())
        )
        return Found(key, data, _seconds_until(store, expiry))

    def fetch(self, key: str) -> Found | None:
        store = self.store_class()
        path = os.path.join(store.storage_path, store.file_prefix + key)  # type: ignore[attr-defined]
        found = self._read(store, key, path)
        return None if found is None or found.seconds <= 0 else found

    async def afetch(self, key: str) -> Found | None:
        return await sync_to_async(self.fetch)(key)

    def claim(self, found: Found) -> Found | None:
        # Renamed away at once, then read: what was taken is exactly what the
        # file held, whatever a process of the old engine wrote meanwhile.
        # The private name is no session key, so nothing else reads it.
        store: Any = self.store_class()
        path = os.path.join(store.storage_path, store.file_prefix + found.key)
        taken = f"{path}_claimed_{secrets.token_hex(8)}"
        try:
            os.rename(path, taken)
        except FileNotFoundError:
            return None
        try:
            claimed = self._read(store, found.key, taken)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(taken)
        return None if claimed is None or claimed.seconds <= 0 else claimed

    async def aclaim(self, found: Found) -> Found | None:
        return await sync_to_async(self.claim)(found)

    def batches(self, after: str | None, size: int) -> Iterator[Batch]:
        store: Any = self.store_class()
        batch: list[Found] = []
        with os.scandir(store.storage_path) as entries:
            for entry in entries:
                key = entry.name.removeprefix(store.file_prefix)
                # Other files, and the engine's temporary "<prefix>_out_...".
                if key == entry.name or not is_cookie_key(key):
                    continue
                found = self._read(store, key, entry.path)
                if found is not None:
                    batch.append(found)
                if len(batch) == size:
                    yield batch, None
                    batch = []
        if batch:
            yield batch, None


class SignedCookieSource(Source):
    """``signed_cookies``: each session is the client's cookie itself.

    Nothing on the server lists them, and a cookie is no key this engine can
    store: in the window a valid cookie is adopted once into a fresh session
    with a new random key (``adopt_cookie``).
    """

    token_kind = None

    def fetch(self, key: str) -> Found | None:
        return None

    async def afetch(self, key: str) -> Found | None:
        return None

    def remove(self, key: str) -> None:
        return None

    async def aremove(self, key: str) -> None:
        return None

    def claim(self, found: Found) -> Found | None:
        # Never reached: fetch() finds nothing; adopt_cookie() claims a
        # cookie with its tombstone instead.
        return None

    async def aclaim(self, found: Found) -> Found | None:
        return None

    def batches(self, after: str | None, size: int) -> Iterator[Batch]:
        raise CannotList(
            f"{self.engine!r} keeps each session in the browser's cookie, which "
            "nothing on the server can list. Set SESSION_REDIS['MIGRATE_FROM'] "
            f"= {self.engine!r} instead: each cookie is moved into a new session "
            "on its next request."
        )

    def cookie_data(self, cookie: str) -> SessionData | None:
        """The session a signed cookie holds, if its signature and age are valid."""
        data = self.store_class(cookie).load()
        return data if isinstance(data, dict) and data else None

    def max_age(self) -> int:
        """The longest a signed cookie is accepted: its engine checks no more."""
        return self.store_class().get_session_cookie_age()


#: Django's engines and what reads each; cached_db is a db engine.
_SOURCES: list[tuple[type[SessionBase], type[Source]]] = [
    (signed_cookies.SessionStore, SignedCookieSource),
    (db.SessionStore, DatabaseSource),
    (cache.SessionStore, CacheSource),
    (file.SessionStore, FileSource),
]


# --- The read-through window -------------------------------------------------

_window: Source | None = None


def window() -> Source | None:
    """The source of ``MIGRATE_FROM``, or None when the window is closed."""
    global _window
    engine = conf.MIGRATE_FROM
    if engine is None:
        return None
    if _window is None or _window.engine != engine:
        _window = source_for(engine)
    return _window


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        global _window
        _window = None


def _adoptable(
    found: Found | None, payloads: Payloads
) -> tuple[bytes, IndexWrite | None] | None:
    """The payload and index entry to create for a session found in the source."""
    if found is None or found.data is None:
        return None
    index = entry_for(found.data, found.seconds)
    try:
        return payloads.dumps(marked(found.data, index), found.key), index
    except Exception:
        logger.warning(
            "A session of %r could not be serialized with this engine's "
            "serializer; it was left in the source.",
            conf.MIGRATE_FROM,
        )
        return None


#: Reads of a session that changed in the source between its read and its
#: claim (a save by a process of the old engine) before the move gives up.
CLAIM_ATTEMPTS = 3


def read_through(layer: RedisLayer, key: str, payloads: Payloads) -> bytes | None:
    """The payload of ``key`` moved from ``MIGRATE_FROM``; None if it has none.

    Called on a load that missed in Redis. The session is claimed from the
    source first (a delete that reports whether it removed what was read,
    ``Source.claim``) and only what this call claimed is created in Redis:
    a logout on any process, of either engine, between the lookup and the
    write leaves nothing to claim, or leaves a tombstone the create obeys.
    A failure between the claim and the create logs the visitor out; it
    never logs anyone back in. Round trips: one source lookup and one claim,
    then one ``CREATE``.
    """
    source = window()
    if source is None:
        return None
    for _ in range(CLAIM_ATTEMPTS):
        found = source.fetch(key)
        adoptable = _adoptable(found, payloads)
        if found is None or adoptable is None:
            return None
        started = monotonic()
        claimed = source.claim(found)
        if claimed is not None:
            if claimed is not found:  # a file read again as it was taken
                adoptable = _adoptable(claimed, payloads)
            if adoptable is None or _too_late(layer, started):
                return None
            payload, index = adoptable
            outcome = layer.create(key, payload, claimed.seconds, index)
            if outcome is Outcome.EXISTS:
                # Redis holds the key already (an import wrote it meanwhile):
                # what it holds is the session.
                return layer.read(key)
            return payload if outcome is Outcome.WRITTEN else None
    return None


async def aread_through(
    layer: RedisLayer, key: str, payloads: Payloads
) -> bytes | None:
    """See read_through()."""
    source = window()
    if source is None:
        return None
    for _ in range(CLAIM_ATTEMPTS):
        found = await source.afetch(key)
        adoptable = _adoptable(found, payloads)
        if found is None or adoptable is None:
            return None
        started = monotonic()
        claimed = await source.aclaim(found)
        if claimed is not None:
            if claimed is not found:  # a file read again as it was taken
                adoptable = _adoptable(claimed, payloads)
            if adoptable is None or _too_late(layer, started):
                return None
            payload, index = adoptable
            outcome = await layer.acreate(key, payload, claimed.seconds, index)
            if outcome is Outcome.EXISTS:
                return await layer.aread(key)
            return payload if outcome is Outcome.WRITTEN else None
    return None


def _too_late(layer: RedisLayer, started: float) -> bool:
    """Whether a claim that started at ``started`` may no longer be written.

    A logout after the claim removed the session from the source leaves only
    a tombstone in Redis, and the create obeys it while it lives: a write
    later than that (a process stalled for ``TOMBSTONE_SECONDS``) is dropped,
    which logs the visitor out rather than risk bringing a logout back.
    """
    return monotonic() - started >= layer.tombstone_seconds


def forget(key: str) -> None:
    """Delete ``key`` from ``MIGRATE_FROM`` too, before a logout or a cycle ends it.

    Before, not after: if the source fails, Redis still holds the session
    and the logout fails visibly; the other order would leave a copy that a
    lookup could move back once the tombstone lapsed.
    """
    source = window() if is_cookie_key(key) else None
    if source is not None:
        source.remove(key)


async def aforget(key: str) -> None:
    """See forget()."""
    source = window() if is_cookie_key(key) else None
    if source is not None:
        await source.aremove(key)


def adopt_cookie(layer: RedisLayer, cookie: str | None) -> SessionData | None:
    """The data of a valid ``signed_cookies`` cookie, the first time it is seen.

    The cookie leaves a tombstone under its hash for as long as its engine
    would accept it, so a cookie copied before a logout cannot be adopted
    again. The caller saves the data under a new random key.
    """
    source = window() if cookie else None
    if cookie is None or not isinstance(source, SignedCookieSource):
        return None
    data = source.cookie_data(cookie)
    if data is None or not layer.leave_tombstone(hashed_id(cookie), source.max_age()):
        return None
    return data


async def aadopt_cookie(layer: RedisLayer, cookie: str | None) -> SessionData | None:
    """See adopt_cookie()."""
    source = window() if cookie else None
    if cookie is None or not isinstance(source, SignedCookieSource):
        return None
    data = source.cookie_data(cookie)
    if data is None:
        return None
    if not await layer.aleave_tombstone(hashed_id(cookie), source.max_age()):
        return None
    return data


# --- The import ---------------------------------------------------------------


@dataclass
class Report:
    """What an import did, session by session."""

    created: int = 0
    #: Redis already held the key: its data, maybe newer, was kept.
    present: int = 0
    #: A logout tombstoned the key: it stays logged out.
    tombstoned: int = 0
    expired: int = 0
    #: The source's decode() could not read it (or it was empty): left there.
    undecodable: int = 0

    @property
    def read(self) -> int:
        return (
            self.created
            + self.present
            + self.tombstoned
            + self.expired
            + self.undecodable
        )

    def count(self, outcome: Outcome) -> None:
        if outcome is Outcome.WRITTEN:
            self.created += 1
        elif outcome is Outcome.TOMBSTONED:
            self.tombstoned += 1
        elif outcome is Outcome.EXPIRED:
            self.expired += 1
        else:
            self.present += 1


class Importer:
    """Moves every session of a source into Redis, one batch at a time.

    After each batch, ``resume_token`` names the position after it (None when
    the source cannot resume or nothing was done). ``dry_run`` reads and
    decodes the source and writes nothing anywhere; its ``created`` counts
    the sessions it would create.
    """

    def __init__(
        self,
        source: Source,
        layer: RedisLayer,
        *,
        batch_size: int = 1000,
        dry_run: bool = False,
        payloads: Payloads | None = None,
    ) -> None:
        self.source = source
        self.layer = layer
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.payloads = Payloads() if payloads is None else payloads
        self.report = Report()
        self.resume_token: str | None = None

    def run(
        self,
        after: str | None = None,
        on_batch: Callable[[int], object] | None = None,
    ) -> Report:
        """Move everything after the position ``after``; see ``Source.position()``.

        Raises ``CannotList``, ``SourceError`` for a failure of the source,
        and redis-py's errors for one of Redis; everything before the failing
        batch has been moved.
        """
        batches = self.source.batches(after, self.batch_size)
        while True:
            with self._source_errors("read sessions from"):
                batch = next(batches, None)
            if batch is None:
                return self.report
            found, token = batch
            self._move(found)
            self.resume_token = token
            if on_batch is not None:
                on_batch(len(found))

    def _move(self, found: list[Found]) -> None:
        items = []
        undecodable = 0
        for session in found:
            payload, index = self._payload(session)
            if payload is None:
                undecodable += 1
            elif self.dry_run:
                self.report.count(
                    Outcome.WRITTEN if session.seconds > 0 else Outcome.EXPIRED
                )
            else:
                items.append((session.key, payload, session.seconds, index))
        if undecodable:
            self.report.undecodable += undecodable
            logger.warning(
                "%d sessions of %r could not be decoded; they were left in the source.",
                undecodable,
                self.source.engine,
            )
        if not items:
            return
        for outcome in self.layer.create_many(items):
            self.report.count(outcome)
        # Redis now answers for each of them, created, kept, logged out or
        # expired: the source's copy goes, so nothing can bring it back.
        keys = [item[0] for item in items]
        with self._source_errors("delete moved sessions from", keys):
            self.source.remove_many(keys)

    def _payload(self, session: Found) -> tuple[bytes | None, IndexWrite | None]:
        """The payload to write and its user's index entry; no payload if bad."""
        if session.data is None:
            return None, None
        index = entry_for(session.data, session.seconds)
        try:
            return self.payloads.dumps(marked(session.data, index), session.key), index
        except Exception:
            return None, None

    @contextmanager
    def _source_errors(self, doing: str, keys: Sequence[str] = ()) -> Iterator[None]:
        """Turn a failure of the source into one ``SourceError``, no key in it."""
        try:
            yield
        except (CannotList, SourceError):
            raise
        except Exception as error:
            # A database error may quote the statement and its parameters.
            text = f"{type(error).__name__}: {error}".rstrip(".")
            for key in keys:
                text = text.replace(key, "<session key>")
            raise SourceError(
                f"Could not {doing} {self.source.engine!r}: {text}."
            ) from error
