"""``manage.py redis_sessions``: count, clear, rehash, user, import, stats, show.

Every subcommand goes through ``RedisLayer``, so it sees exactly what the
store sees: live sessions under the prefix, never tombstones, never keys of
another prefix that merely starts with the same characters. ``import`` moves
the sessions of another session engine into Redis; the moving itself lives in
``migration.py``, this module only parses options and reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from time import monotonic
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    OutputWrapper,
)
from redis.exceptions import RedisError

from django_redis_sessions import stats
from django_redis_sessions.client import describe_target
from django_redis_sessions.conf import conf
from django_redis_sessions.keys import is_hashed_id, is_valid_key
from django_redis_sessions.migration import (
    CannotList,
    Importer,
    Report,
    SourceError,
    source_for,
)
from django_redis_sessions.payloads import get_payloads
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.store import RedisSessionStore, cleared
from django_redis_sessions.user_index import UserSession

#: The sessions ``stats`` sizes with ``MEMORY USAGE`` unless told otherwise.
DEFAULT_SAMPLE = 1000

#: Progress is shown only for stores larger than this many SCAN batches...
PROGRESS_AFTER_BATCHES = 10
#: ...and then at most once per this many seconds.
PROGRESS_INTERVAL = 0.1


class Command(BaseCommand):
    help = (
        "Count, delete, rehash, measure or show the sessions stored in Redis "
        "under a key prefix, list or end a user's, or import the sessions of "
        "another session engine."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # Django's CommandParser.add_subparsers() makes the subparsers
        # CommandParsers too, so a bad option raises CommandError under
        # call_command() instead of exiting the process.
        subparsers = parser.add_subparsers(
            dest="subcommand",
            required=True,
            metavar="{count,clear,rehash,user,import,stats,show}",
            title="subcommands",
        )
        count = subparsers.add_parser(
            "count",
            help="Print the number of live sessions under the prefix.",
            description=(
                "Print the number of live sessions under the prefix, alone on "
                "its line; tombstones of destroyed sessions are not counted."
            ),
        )
        self._add_common_arguments(count)
        clear = subparsers.add_parser(
            "clear",
            help="Delete every live session under the prefix.",
            description=(
                "Delete every live session under the prefix, logging out "
                "everyone. Tombstones of destroyed sessions are kept."
            ),
        )
        self._add_common_arguments(clear)
        clear.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Delete without asking for confirmation.",
        )
        clear.add_argument(
            "--dry-run",
            action="store_true",
            help="Print how many sessions would be deleted, and delete nothing.",
        )

        rehash = subparsers.add_parser(
            "rehash",
            help="Move sessions still under their plain key to their id.",
            description=(
                'With HASH_IDS "migrate", move every session still stored under '
                "its plain key (the cookie) to its id, batch by batch, then give "
                "the tombstones of sessions ended by their id meanwhile their "
                "usual lifetime back. Safe to stop and run again; afterwards "
                "HASH_IDS can be True."
            ),
        )
        self._add_common_arguments(rehash)
        rehash.add_argument(
            "--dry-run",
            action="store_true",
            help="Print how many sessions would be moved, and move nothing.",
        )

        user = subparsers.add_parser(
            "user",
            help="List a user's sessions, or end them all with --logout.",
            description=(
                "List the live sessions of the user with this id, from the "
                "user index, newest first; with --logout, end every one of "
                "them, as a logout would."
            ),
        )
        self._add_common_arguments(user)
        user.add_argument("user_id", metavar="USER_ID")
        user.add_argument(
            "--logout",
            action="store_true",
            help="End every session of the user (asks first unless --noinput).",
        )
        user.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="End the sessions without asking for confirmation.",
        )

        import_ = subparsers.add_parser(
            "import",
            help="Move the sessions of another session engine into Redis.",
            description=(
                "Move every live session of another session engine (db, "
                "cached_db, cache, file, or one that defines "
                "SessionStore.list_session_keys) into Redis under the same key "
                "and with its remaining lifetime, batch by batch: a session "
                "already in Redis is kept, a logged-out one stays out, and each "
                "one moved is deleted from the source. Safe to stop and run "
                "again."
            ),
        )
        import_.add_argument(
            "--from",
            dest="source",
            metavar="ENGINE",
            help=(
                "The session engine to move from, e.g. "
                "django.contrib.sessions.backends.db "
                "(default: SESSION_REDIS['MIGRATE_FROM'])."
            ),
        )
        import_.add_argument(
            "--prefix",
            help="The key prefix of the sessions (default: SESSION_REDIS['PREFIX']).",
        )
        import_.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            metavar="N",
            help="How many sessions to read and write at a time (default: 1000).",
        )
        import_.add_argument(
            "--resume-after",
            metavar="TOKEN",
            help=(
                "Start after the position an interrupted import printed, "
                "instead of from the start (which is also correct)."
            ),
        )
        import_.add_argument(
            "--dry-run",
            action="store_true",
            help="Read and decode the source, say what would move, write nothing.",
        )

        stats_parser = subparsers.add_parser(
            "stats",
            help="Print live sessions, tombstones, sizes, lifetimes and memory.",
            description=(
                "Read every session under the prefix once (one script per SCAN "
                "batch, which holds the server for about two milliseconds per "
                "1,000 keys) and print live sessions, tombstones, the "
                "distributions of payload size and remaining lifetime, and "
                "Redis memory per session measured on a sample."
            ),
        )
        self._add_common_arguments(stats_parser)
        stats_parser.add_argument(
            "--sample",
            type=int,
            default=DEFAULT_SAMPLE,
            metavar="N",
            help=(
                "How many sessions to size with MEMORY USAGE "
                f"(default: {DEFAULT_SAMPLE:,}; 0: none)."
            ),
        )
        stats_parser.add_argument(
            "--json",
            action="store_true",
            help="Print the figures as one JSON document instead.",
        )

        show = subparsers.add_parser(
            "show",
            help="Print what Redis holds for one session.",
            description=(
                "Print the id, remaining lifetime, size, tombstone and user of "
                "one session, given by its id or its session key (hashed "
                "here, never printed). Changes nothing."
            ),
        )
        show.add_argument("key_or_id", metavar="KEY_OR_ID")
        show.add_argument(
            "--decode",
            action="store_true",
            help="Also print the session's data.",
        )
        show.add_argument(
            "--prefix",
            help="The key prefix of the sessions (default: SESSION_REDIS['PREFIX']).",
        )

    def _add_common_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prefix",
            help="The key prefix of the sessions (default: SESSION_REDIS['PREFIX']).",
        )
        parser.add_argument(
            "--scan-count",
            type=int,
            metavar="N",
            help=(
                "How many keys each SCAN call asks Redis for "
                "(default: SESSION_REDIS['SCAN_COUNT'])."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "import":
            layer = RedisLayer(prefix=self._prefix(options["prefix"]))
            self._import(layer, **options)
            return
        subcommand = options["subcommand"]
        layer = RedisLayer(
            prefix=self._prefix(options["prefix"]),
            scan_count=self._scan_count(options.get("scan_count")),
        )
        if subcommand == "count":
            self.stdout.write(str(self._count(layer, "Nothing was changed.")))
        elif subcommand == "rehash":
            self._rehash(layer, dry_run=options["dry_run"])
        elif subcommand == "stats":
            self._stats(layer, sample=options["sample"], as_json=options["json"])
        elif subcommand == "show":
            self._show(layer, options["key_or_id"], decode=options["decode"])
        elif subcommand == "user":
            self._user(
                layer,
                options["user_id"],
                logout=options["logout"],
                interactive=options.get("interactive", True),
            )
        else:
            self._clear(
                layer,
                interactive=options.get("interactive", True),
                dry_run=options.get("dry_run", False),
            )

    # Options.

    def _prefix(self, prefix: str | None) -> str:
        if prefix is None:
            prefix = conf.PREFIX
            source = "SESSION_REDIS['PREFIX']"
        else:
            source = "--prefix"
        if not prefix:
            raise CommandError(
                f"{source} is empty, which would match the sessions of every "
                "app on this Redis; give a non-empty prefix."
            )
        return prefix

    def _scan_count(self, scan_count: int | None) -> int:
        if scan_count is None:
            scan_count = conf.SCAN_COUNT
            source = "SESSION_REDIS['SCAN_COUNT']"
        else:
            source = "--scan-count"
        if scan_count < 1:
            raise CommandError(f"{source} must be at least 1, not {scan_count}.")
        return scan_count

    # Subcommands.

    def _count(self, layer: RedisLayer, unchanged: str) -> int:
        """Live sessions under the prefix; ``unchanged``: what a failure left."""
        with (
            Progress(self.stderr, "Counted", interrupted=unchanged) as progress,
            redis_errors("Could not count sessions", unchanged),
        ):
            for names in layer.scan():
                progress.add(len(names))
        return progress.count

    def _clear(self, layer: RedisLayer, *, interactive: bool, dry_run: bool) -> None:
        if dry_run or interactive:
            count = self._count(layer, "Nothing was deleted.")
            under = f"under the prefix {layer.prefix!r}"
            if dry_run:
                self.stdout.write(f"Would delete {_sessions(count)} {under}.")
                return
            if not count:
                self.stdout.write("No sessions to delete.")
                return
            question = (
                f"This will delete {_sessions(count)} {under}. Are you sure? [y/N] "
            )
            if not _confirm(question):
                self.stdout.write("Cancelled; nothing was deleted.")
                return
        deleted = self._delete(layer)
        self.stdout.write(f"Deleted {_sessions(deleted)}.")

    def _delete(self, layer: RedisLayer) -> int:
        """Delete the prefix's sessions, with progress on stderr for a large store."""
        with (
            Progress(
                self.stderr,
                "Deleted",
                interrupted="Run the command again to delete the rest.",
            ) as progress,
            redis_errors(
                "Could not delete sessions",
                "Nothing after the last completed batch was deleted; run the "
                "command again to finish.",
            ),
        ):
            for deleted in cleared(layer, RedisSessionStore):
                progress.add(deleted)
        return progress.count

    def _rehash(self, layer: RedisLayer, *, dry_run: bool) -> None:
        if conf.HASH_IDS is False or conf.HASH_IDS == "prepare":
            raise CommandError(
                f"SESSION_REDIS['HASH_IDS'] is {conf.HASH_IDS!r}, so sessions "
                'are meant to stay under their plain keys; set it to "migrate" '
                "first."
            )
        if dry_run:
            with (
                Progress(
                    self.stderr, "Counted", interrupted="Nothing was moved."
                ) as progress,
                redis_errors("Could not count sessions", "Nothing was moved."),
            ):
                for names in layer.scan():
                    progress.add(len(layer.plain_names(names)))
            self.stdout.write(f"Would move {_sessions(progress.count)} to their ids.")
            return
        with (
            Progress(
                self.stderr,
                "Moved",
                interrupted="Run the command again to move the rest.",
            ) as progress,
            redis_errors(
                "Could not move sessions",
                "Every batch before the failure was moved; run the command again "
                "to finish.",
            ),
        ):
            # Moved names vanish from the plain pattern, so a second run only
            # sees what is left: stopping at any point loses nothing.
            # A plain name is the one place a session key is still at hand:
            # a session stored unencrypted is encrypted as it moves.
            payloads = get_payloads()
            reseal = payloads.resealed if payloads.encryption is not None else None
            for names in layer.scan(remember=0):
                if plain := layer.plain_names(names):
                    progress.add(layer.move_to_ids(plain, reseal))
            # Then the user indexes: an entry written while ids were not
            # hashed has the cookie as its field; it moves to the id.
            rewritten = sum(layer.rekey_index_batches())
            # No plain form is left for an id ended meanwhile to refuse.
            layer.settle_markers()
        self.stdout.write(f"Moved {_sessions(progress.count)} to their ids.")
        if rewritten:
            entries = "entry" if rewritten == 1 else "entries"
            self.stdout.write(
                f"Rewrote {rewritten} user index {entries} to session ids."
            )

    def _user(
        self, layer: RedisLayer, user_id: str, *, logout: bool, interactive: bool
    ) -> None:
        store = RedisSessionStore(prefix=layer.prefix, scan_count=layer.scan_count)
        with redis_errors("Could not read the user's sessions"):
            sessions = store.user_sessions(user_id)
        if not sessions:
            self.stdout.write(f"User {user_id!r} has no live sessions.")
            return
        self.stdout.write(_session_table(sessions))
        if not logout:
            return
        question = (
            f"This will end {_sessions(len(sessions))} of user {user_id!r}. "
            "Are you sure? [y/N] "
        )
        if interactive and not _confirm(question):
            self.stdout.write("Cancelled; nothing was ended.")
            return
        with redis_errors(
            "Could not end the user's sessions",
            "Sessions ended before the failure stay ended; run the command "
            "again to finish.",
        ):
            ended = store.logout_user(user_id)
        self.stdout.write(f"Ended {_sessions(ended)} of user {user_id!r}.")

    def _import(
        self,
        layer: RedisLayer,
        *,
        source: str | None,
        batch_size: int,
        resume_after: str | None,
        dry_run: bool,
        **options: Any,
    ) -> None:
        engine = source or conf.MIGRATE_FROM
        if not engine:
            raise CommandError(
                "Name the session engine to import from, e.g. --from "
                "django.contrib.sessions.backends.db, or set "
                "SESSION_REDIS['MIGRATE_FROM']."
            )
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, not {batch_size}.")
        try:
            origin = source_for(engine)
            after = origin.position(resume_after)
        except (ImproperlyConfigured, ValueError) as error:
            raise CommandError(str(error)) from error
        if not dry_run and engine != conf.MIGRATE_FROM:
            self.stderr.write(
                f"SESSION_REDIS['MIGRATE_FROM'] is not {engine!r}, so a visitor "
                "who comes back before this import reaches their session is "
                "logged out."
            )
        importer = Importer(origin, layer, batch_size=batch_size, dry_run=dry_run)
        try:
            with (
                Progress(
                    self.stderr, "Read", interrupted=lambda: _resume_hint(importer)
                ) as progress,
                redis_errors(
                    "Could not write sessions", lambda: _resume_hint(importer)
                ),
            ):
                importer.run(after, on_batch=progress.add)
        except CannotList as error:
            raise CommandError(str(error)) from error
        except SourceError as error:
            raise CommandError(f"{error} {_resume_hint(importer)}") from error
        except KeyboardInterrupt:
            raise CommandError(f"Interrupted. {_resume_hint(importer)}") from None
        self.stdout.write(_import_summary(engine, importer.report, dry_run=dry_run))
        if importer.report.undecodable and not dry_run:
            self.stdout.write(
                "Undecodable sessions stay in the source: if SECRET_KEY or "
                "SESSION_SERIALIZER changed, list the old key in "
                "SECRET_KEY_FALLBACKS or restore the serializer, and run the "
                "command again."
            )

    def _stats(self, layer: RedisLayer, *, sample: int, as_json: bool) -> None:
        if sample < 0:
            raise CommandError(f"--sample must be at least 0, not {sample}.")
        with (
            Progress(
                self.stderr,
                "Measured",
                interrupted="Nothing was changed; run the command again for "
                "the figures.",
            ) as progress,
            redis_errors("Could not measure sessions", "Nothing was changed."),
        ):
            figures = stats.collect(layer, sample=sample, on_batch=progress.add)
        if as_json:
            self.stdout.write(json.dumps(figures.as_json(), indent=2))
            return
        encoding = getattr(self.stdout, "encoding", None) or "utf-8"
        unicode = encoding.lower().replace("-", "").startswith("utf")
        self.stdout.write(
            stats.render(figures, where=describe_target(), unicode=unicode)
        )

    def _show(self, layer: RedisLayer, key_or_id: str, *, decode: bool) -> None:
        # What was given may be a cookie: it is never echoed, only its id.
        if not (is_hashed_id(key_or_id) or is_valid_key(key_or_id)):
            raise CommandError(
                "KEY_OR_ID is neither a session id ('#' and 43 characters) nor "
                "a session key."
            )
        with redis_errors("Could not read the session"):
            report = stats.inspect(layer, key_or_id, get_payloads())
        if report.state == "missing":
            raise CommandError(
                f"No session and no tombstone has the id {report.id} under the "
                f"prefix {layer.prefix!r}."
            )
        for line in _show_lines(report, decode=decode):
            self.stdout.write(line)


def _show_lines(report: stats.SessionReport, *, decode: bool) -> list[str]:
    rows = [("id", report.id)]
    if report.state == "live":
        rows.append(("state", "live"))
    elif report.state == "destroyed":
        rows.append(("state", "destroyed (logged out)"))
    else:
        rows.append(("state", "not a session: the name holds another type"))
    if report.ttl is not None:
        seconds = int(report.ttl)
        rows.append(("expires in", f"{stats.format_seconds(seconds)} ({seconds:,} s)"))
    if report.size is not None:
        rows.append(("size", f"{report.size:,} bytes"))
    if report.encrypted:
        rows.append(("payload", "encrypted; only the session key opens it"))
    if report.state == "live":
        if report.data is None and report.encrypted and report.user_id is not None:
            user = f"{report.user_id} (from the index)"
        elif report.data is None and report.encrypted:
            user = "unknown (the payload is encrypted: give the session key)"
        elif report.data is None:
            user = "unknown (the payload cannot be decoded, or has expired)"
        else:
            user = "anonymous" if report.user_id is None else report.user_id
        rows.append(("user", user))
    tombstone = report.tombstone_ttl
    rows.append(
        (
            "tombstone",
            "none"
            if tombstone is None
            else f"refuses writes for {stats.format_seconds(int(tombstone))} more",
        )
    )
    if report.index is not None:
        rows += [(f"index {name}", str(value)) for name, value in report.index.items()]
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"{label + ':':<{width}}  {value}" for label, value in rows]
    if decode and report.data is not None:
        lines.append("data:")
        dumped = json.dumps(report.data, indent=2, sort_keys=True, default=str)
        lines += ["  " + line for line in dumped.splitlines()]
    return lines


def _session_table(sessions: list[UserSession]) -> str:
    """The sessions as an aligned table: ids, never keys."""
    rows = [("ID", "CREATED", "LAST SEEN", "EXPIRES", "IP", "USER AGENT")]
    for session in sessions:
        rows.append(
            (
                session.id,
                _when(session.created_at),
                _when(session.last_seen_at),
                _when(session.expires_at),
                session.ip or "-",
                (session.user_agent or "-")[:40],
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[5]
        for row in rows
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _import_summary(engine: str, report: Report, *, dry_run: bool) -> str:
    if dry_run:
        return (
            f"Would move {_sessions(report.created)} from {engine!r} "
            f"({report.expired:,} expired, {report.undecodable:,} undecodable); "
            "nothing was written."
        )
    return (
        f"Read {_sessions(report.read)} from {engine!r}: {report.created:,} "
        f"created, {report.present:,} already present, {report.tombstoned:,} "
        f"tombstoned, {report.expired:,} expired, {report.undecodable:,} "
        "undecodable."
    )


def _resume_hint(importer: Importer) -> str:
    """What an interrupted import did and how to go on; never a session key."""
    report = importer.report
    done = (
        f"It read {_sessions(report.read)} and moved every batch it read "
        f"({report.created:,} created)"
    )
    if importer.dry_run:
        done = f"It read {_sessions(report.read)} and wrote nothing"
    token = importer.resume_token
    resume = f", or with --resume-after {token} to skip what was read" if token else ""
    return f"{done}. Run the command again to finish{resume}."


class Progress:
    """A running count on one line of stderr, for long runs on a terminal.

    Shown only after ``PROGRESS_AFTER_BATCHES`` batches, at most once per
    ``PROGRESS_INTERVAL`` seconds; on leaving (also on failure or Ctrl-C) the
    line is ended with the count reached, so what follows starts on its own.

    Ctrl-C inside the block is turned into a ``CommandError`` (exit status
    130, no traceback) that says how far the run got and ``interrupted``:
    what a re-run does. Batches end before the count moves on, so the count
    is exact up to the batch that was cut short.
    """

    def __init__(
        self,
        stream: OutputWrapper,
        verb: str,
        *,
        interrupted: str | Callable[[], str] = "Run the command again to finish.",
    ) -> None:
        self._stream = stream
        self._verb = verb
        self._interrupted = interrupted
        self._enabled = stream.isatty()
        self._batches = 0
        self._shown_at: float | None = None
        self.count = 0

    def __enter__(self) -> Progress:
        return self

    def add(self, count: int) -> None:
        self.count += count
        self._batches += 1
        if self._enabled and self._batches > PROGRESS_AFTER_BATCHES:
            now = monotonic()
            if self._shown_at is None or now - self._shown_at >= PROGRESS_INTERVAL:
                self._show()
                self._shown_at = now

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        if self._shown_at is not None:
            self._show(ending="\n")
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            raise CommandError(
                f"Interrupted: {self._verb.lower()} {_sessions(self.count)} so "
                f"far. {self._next_step()}",
                returncode=130,
            ) from None

    def _next_step(self) -> str:
        # Callable when only the state at the interruption can say it.
        interrupted = self._interrupted
        return interrupted if isinstance(interrupted, str) else interrupted()

    def _show(self, ending: str = "") -> None:
        line = f"\r{self._verb} {_sessions(self.count)}..."
        self._stream.write(line, style_func=_plain, ending=ending)
        self._stream.flush()


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    except KeyboardInterrupt:
        print()  # the prompt's line is left open
        return False
    return answer.strip().lower() in {"y", "yes"}


def _sessions(count: int) -> str:
    return f"{count:,} session" if count == 1 else f"{count:,} sessions"


def _sentence(error: Exception) -> str:
    """The error's message, without its closing period (ours follows)."""
    return (str(error) or type(error).__name__).rstrip(".")


def _plain(text: str) -> str:
    return text


@contextmanager
def redis_errors(
    failed: str, consequence: str | Callable[[], str] = ""
) -> Iterator[None]:
    """Turn a Redis error into one ``CommandError``: what failed, where, what now.

    ``consequence`` may be a callable, for what is known only at the failure.
    """
    try:
        yield
    except RedisError as error:
        message = (
            f"{failed}: could not reach Redis {describe_target()}: {_sentence(error)}."
        )
        if callable(consequence):
            consequence = consequence()
        raise CommandError(f"{message} {consequence}".rstrip()) from error
