"""``manage.py redis_sessions count|clear``: sessions under a prefix, from a shell.

Both subcommands go through ``RedisSessionStore``, so they see exactly what the
store sees: live sessions under the prefix, never tombstones, never keys of
another prefix that merely starts with the same characters.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from django_redis_sessions.conf import conf, redact_url
from django_redis_sessions.store import RedisSessionStore

#: Progress is shown only for stores larger than this many SCAN batches...
PROGRESS_AFTER_BATCHES = 10
#: ...and then at most once per this many seconds.
PROGRESS_INTERVAL = 0.1


class Command(BaseCommand):
    help = "Count or delete the sessions stored in Redis under a key prefix."

    def add_arguments(self, parser: CommandParser) -> None:
        # Django's CommandParser.add_subparsers() makes the subparsers
        # CommandParsers too, so a bad option raises CommandError under
        # call_command() instead of exiting the process.
        subparsers = parser.add_subparsers(
            dest="subcommand",
            required=True,
            metavar="{count,clear}",
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
        store = RedisSessionStore(
            prefix=self._prefix(options["prefix"]),
            scan_count=self._scan_count(options["scan_count"]),
        )
        if options["subcommand"] == "count":
            self._count(store)
        else:
            self._clear(
                store,
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

    def _count(self, store: RedisSessionStore) -> None:
        try:
            count = store.count()
        except RedisError as error:
            raise CommandError(
                f"Could not count sessions: could not reach Redis {_where()}: "
                f"{_sentence(error)}."
            ) from error
        self.stdout.write(str(count))

    def _clear(
        self, store: RedisSessionStore, *, interactive: bool, dry_run: bool
    ) -> None:
        if dry_run or interactive:
            try:
                count = store.count()
            except RedisError as error:
                raise CommandError(
                    f"Could not reach Redis {_where()}: {_sentence(error)}. "
                    "Nothing was deleted."
                ) from error
            under = f"under the prefix {store.prefix!r}"
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
        deleted = self._delete(store)
        self.stdout.write(f"Deleted {_sessions(deleted)}.")

    def _delete(self, store: RedisSessionStore) -> int:
        """``store.clear()``, with progress on stderr for a large store on a tty."""
        show_progress = self.stderr.isatty()
        deleted = batches = 0
        shown_at: float | None = None
        try:
            for batch_deleted in store.clear_in_batches():
                deleted += batch_deleted
                batches += 1
                if show_progress and batches > PROGRESS_AFTER_BATCHES:
                    now = monotonic()
                    if shown_at is None or now - shown_at >= PROGRESS_INTERVAL:
                        self._progress(deleted)
                        shown_at = now
        except RedisError as error:
            raise CommandError(
                f"Could not reach Redis {_where()}: {_sentence(error)}. Nothing "
                "after the last completed batch was deleted; run the command "
                "again to finish."
            ) from error
        finally:
            # Also on failure or Ctrl-C: end the progress line with the count
            # reached, so what follows starts on a line of its own.
            if shown_at is not None:
                self._progress(deleted, ending="\n")
        return deleted

    def _progress(self, deleted: int, ending: str = "") -> None:
        self.stderr.write(
            f"\rDeleted {_sessions(deleted)}...", style_func=_plain, ending=ending
        )
        self.stderr.flush()


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def _sessions(count: int) -> str:
    return f"{count:,} session" if count == 1 else f"{count:,} sessions"


def _sentence(error: Exception) -> str:
    """The error's message, without its closing period (ours follows)."""
    return (str(error) or type(error).__name__).rstrip(".")


def _plain(text: str) -> str:
    return text


def _where() -> str:
    """Where the store's client connects, without credentials."""
    if conf.CLIENT is not None:
        return f"through the client of SESSION_REDIS['CLIENT'] ({conf.CLIENT})"
    if conf.SENTINELS:
        sentinels = ", ".join(f"{host}:{port}" for host, port in conf.SENTINELS)
        return f"through Sentinel service {conf.SENTINEL_SERVICE!r} at {sentinels}"
    return f"at {redact_url(conf.URL)}"
