"""``manage.py redis_sessions count|clear`` against the throwaway Redis server."""

from __future__ import annotations

import builtins
import io
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.management.base import CommandError

import django_redis_sessions.redis_layer as layer_module
from django_redis_sessions.conf import redact_url
from django_redis_sessions.management.commands import redis_sessions as command
from django_redis_sessions.redis_layer import RedisLayer
from django_redis_sessions.store import RedisSessionStore
from tests.utils import data_name, redis_sessions, tombstone_name

LIVE = ["alive-1", "alive-2", "alive-3"]
DESTROYED = ["gone-1", "gone-2"]
OTHER = ["other-1", "other-2"]


class TTYStringIO(io.StringIO):
    """Output that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def create_sessions(prefix: str, keys: list[str]) -> None:
    store = RedisSessionStore(prefix=prefix)
    for key in keys:
        assert store.create(key, {"user": key}, ttl=60)


@pytest.fixture
def other_prefix(prefix: str) -> str:
    """Another app's prefix: it starts with ours, and its keys are under ours."""
    return f"{prefix}other:"


@pytest.fixture
def outside_key(prefix: str, raw_redis: redis.Redis) -> Iterator[str]:
    """A key with the prefix's leading characters, outside the prefix."""
    key = prefix[:-1] + "x{abc}"
    raw_redis.set(key, b"decoy", ex=60)
    yield key
    raw_redis.delete(key)


@pytest.fixture
def arranged(
    prefix: str, other_prefix: str, raw_redis: redis.Redis, outside_key: str
) -> set[str]:
    """Live and destroyed sessions plus decoys; the keys clear must leave."""
    create_sessions(prefix, LIVE + DESTROYED)
    store = RedisSessionStore(prefix=prefix)
    for key in DESTROYED:
        assert store.destroy(key)
    create_sessions(other_prefix, OTHER)
    raw_redis.set(f"{prefix}x{{abc}}", b"decoy", ex=60)
    raw_redis.set(f"{prefix}plain", b"decoy", ex=60)
    return {
        *(tombstone_name(prefix, key) for key in DESTROYED),
        *(data_name(other_prefix, key) for key in OTHER),
        f"{prefix}x{{abc}}",
        f"{prefix}plain",
    }


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """Make ``input()`` answer; the prompts it was asked are returned."""

    def answer_with(answer: str) -> list[str]:
        prompts: list[str] = []

        def fake_input(prompt: str = "") -> str:
            prompts.append(prompt)
            return answer

        monkeypatch.setattr(builtins, "input", fake_input)
        return prompts

    return answer_with


@pytest.fixture
def no_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command asks anything."""

    def fake_input(prompt: str = "") -> str:
        raise AssertionError(f"Unexpected prompt: {prompt!r}")

    monkeypatch.setattr(builtins, "input", fake_input)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def unreachable(settings: Any, prefix: str) -> int:
    """``SESSION_REDIS`` on a closed port, with credentials in the URL."""
    port = closed_port()
    settings.SESSION_REDIS = {
        "URL": f"redis://user:s3cret@127.0.0.1:{port}/0?password=s3cret&db=0",
        "PREFIX": prefix,
        "OPTIONS": {"socket_connect_timeout": 0.5},
    }
    return port


# count


def test_count_prints_the_number_of_live_sessions_alone_on_its_line(
    arranged: set[str],
) -> None:
    assert redis_sessions("count") == "3\n"


def test_count_ignores_tombstones_of_destroyed_sessions(prefix: str) -> None:
    create_sessions(prefix, ["a", "b"])
    RedisSessionStore(prefix=prefix).destroy("a")

    assert redis_sessions("count") == "1\n"


def test_count_is_zero_when_there_are_no_sessions() -> None:
    assert redis_sessions("count") == "0\n"


def test_count_leaves_every_key_alone(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    raw_redis: redis.Redis,
    outside_key: str,
) -> None:
    before = redis_keys()

    redis_sessions("count")

    assert redis_keys() == before
    assert raw_redis.get(outside_key) == b"decoy"


def test_count_with_prefix_counts_the_other_prefix(
    arranged: set[str], other_prefix: str
) -> None:
    assert redis_sessions("count", "--prefix", other_prefix) == "2\n"


def test_count_with_scan_count_one_gives_the_same_number(arranged: set[str]) -> None:
    assert redis_sessions("count", "--scan-count", "1") == "3\n"


def test_a_prefix_with_glob_characters_is_taken_literally(
    arranged: set[str], prefix: str
) -> None:
    assert redis_sessions("count", "--prefix", prefix[:-1] + "*") == "0\n"
    assert redis_sessions("count", "--prefix", prefix[:-1] + "?") == "0\n"


# clear


@pytest.mark.parametrize("flag", ["--noinput", "--no-input"])
def test_clear_noinput_deletes_live_sessions_and_keeps_tombstones_and_decoys(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    raw_redis: redis.Redis,
    outside_key: str,
    no_input: None,
    flag: str,
) -> None:
    assert redis_sessions("clear", flag) == "Deleted 3 sessions.\n"

    assert redis_keys() == arranged
    assert raw_redis.get(outside_key) == b"decoy"


def test_clear_accepts_interactive_false_from_call_command(
    arranged: set[str], redis_keys: Callable[[], set[str]], no_input: None
) -> None:
    assert redis_sessions("clear", interactive=False) == "Deleted 3 sessions.\n"
    assert redis_keys() == arranged


def test_clear_says_session_in_the_singular_for_one(
    prefix: str, redis_keys: Callable[[], set[str]], no_input: None
) -> None:
    create_sessions(prefix, ["only"])

    assert redis_sessions("clear", "--noinput") == "Deleted 1 session.\n"
    assert redis_keys() == set()


def test_clear_asks_first_and_deletes_after_yes(
    arranged: set[str],
    prefix: str,
    redis_keys: Callable[[], set[str]],
    answers: Callable[[str], list[str]],
) -> None:
    prompts = answers("y")

    assert redis_sessions("clear") == "Deleted 3 sessions.\n"

    assert prompts == [
        f"This will delete 3 sessions under the prefix '{prefix}'. Are you sure? [y/N] "
    ]
    assert redis_keys() == arranged


@pytest.mark.parametrize("answer", ["yes", " YES ", "Y"])
def test_clear_accepts_yes_in_any_case(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    answers: Callable[[str], list[str]],
    answer: str,
) -> None:
    answers(answer)

    assert redis_sessions("clear") == "Deleted 3 sessions.\n"
    assert redis_keys() == arranged


@pytest.mark.parametrize("answer", ["n", "", "no", "yes please", "oui"])
def test_clear_deletes_nothing_unless_the_answer_is_yes(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    answers: Callable[[str], list[str]],
    answer: str,
) -> None:
    before = redis_keys()
    prompts = answers(answer)

    assert redis_sessions("clear") == "Cancelled; nothing was deleted.\n"

    assert len(prompts) == 1
    assert redis_keys() == before


def test_clear_treats_a_closed_stdin_as_no(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = redis_keys()

    def closed_stdin(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(builtins, "input", closed_stdin)

    assert redis_sessions("clear") == "Cancelled; nothing was deleted.\n"
    assert redis_keys() == before


def test_clear_does_not_ask_when_there_are_no_sessions(
    prefix: str, redis_keys: Callable[[], set[str]], no_input: None
) -> None:
    create_sessions(prefix, ["gone"])
    RedisSessionStore(prefix=prefix).destroy("gone")

    assert redis_sessions("clear") == "No sessions to delete.\n"
    assert redis_keys() == {tombstone_name(prefix, "gone")}


def test_clear_dry_run_reports_and_deletes_nothing(
    arranged: set[str],
    prefix: str,
    redis_keys: Callable[[], set[str]],
    no_input: None,
) -> None:
    before = redis_keys()

    assert redis_sessions("clear", "--dry-run") == (
        f"Would delete 3 sessions under the prefix '{prefix}'.\n"
    )
    assert redis_sessions("clear", "--dry-run", "--noinput") == (
        f"Would delete 3 sessions under the prefix '{prefix}'.\n"
    )
    assert redis_keys() == before


def test_clear_with_prefix_deletes_only_the_other_prefix(
    arranged: set[str],
    prefix: str,
    other_prefix: str,
    redis_keys: Callable[[], set[str]],
    raw_redis: redis.Redis,
    outside_key: str,
    no_input: None,
) -> None:
    before = redis_keys()

    output = redis_sessions("clear", "--prefix", other_prefix, "--noinput")

    assert output == "Deleted 2 sessions.\n"
    assert redis_keys() == before - {data_name(other_prefix, key) for key in OTHER}
    assert redis_sessions("count") == "3\n"
    assert raw_redis.get(outside_key) == b"decoy"


def test_clear_with_scan_count_one_gives_the_same_result(
    arranged: set[str], redis_keys: Callable[[], set[str]], no_input: None
) -> None:
    assert (
        redis_sessions("clear", "--noinput", "--scan-count", "1")
        == "Deleted 3 sessions.\n"
    )
    assert redis_keys() == arranged


def test_clear_twice_deletes_nothing_the_second_time(
    arranged: set[str], redis_keys: Callable[[], set[str]], no_input: None
) -> None:
    redis_sessions("clear", "--noinput")

    assert redis_sessions("clear", "--noinput") == "Deleted 0 sessions.\n"
    assert redis_keys() == arranged


# Progress on a terminal

#: Sessions for a store of well over 10 SCAN batches with --scan-count 2, on
#: Redis and on Valkey 8, whose SCAN returns whole buckets of up to 7 keys.
MANY = 200


@pytest.fixture
def many_sessions(prefix: str) -> int:
    create_sessions(prefix, [f"s{number}" for number in range(MANY)])
    return MANY


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """What each batch of the command's clear deleted, in order."""
    deleted: list[int] = []
    clear_batches = RedisLayer.clear_batches

    def recording(
        layer: RedisLayer, **options: Any
    ) -> Iterator[tuple[int, list[bytes]]]:
        for count, names in clear_batches(layer, **options):
            deleted.append(count)
            yield count, names

    monkeypatch.setattr(RedisLayer, "clear_batches", recording)
    return deleted


def fake_clock(monkeypatch: pytest.MonkeyPatch, step: float) -> None:
    """Make the command's clock advance ``step`` seconds on every reading."""
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    monkeypatch.setattr(command, "monotonic", clock)


def running_totals(batches: list[int]) -> list[int]:
    totals, total = [], 0
    for count in batches:
        total += count
        totals.append(total)
    return totals


def progress(*totals: int) -> str:
    return "".join(f"\rDeleted {total:,} sessions..." for total in totals) + "\n"


def test_clear_shows_progress_on_a_terminal_after_the_tenth_batch(
    many_sessions: int,
    batches: list[int],
    redis_keys: Callable[[], set[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_clock(monkeypatch, step=1.0)
    stderr = TTYStringIO()

    output = redis_sessions("clear", "--noinput", "--scan-count", "2", stderr=stderr)

    assert output == "Deleted 200 sessions.\n"
    assert len(batches) > 10
    # Every batch after the tenth (the clock says a second passed), then the
    # total again and a newline.
    assert stderr.getvalue() == progress(*running_totals(batches)[10:], 200)
    assert redis_keys() == set()


def test_clear_shows_progress_at_most_ten_times_a_second(
    many_sessions: int, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_clock(monkeypatch, step=0.03)
    stderr = TTYStringIO()

    output = redis_sessions("clear", "--noinput", "--scan-count", "2", stderr=stderr)

    assert output == "Deleted 200 sessions.\n"
    assert len(batches) > 14
    # 0.03 s a batch: the 11th batch, then every 4th (0.12 s later).
    assert stderr.getvalue() == progress(*running_totals(batches)[10::4], 200)


def test_clear_shows_no_progress_when_stderr_is_not_a_terminal(
    many_sessions: int, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_clock(monkeypatch, step=1.0)
    stderr = io.StringIO()

    output = redis_sessions("clear", "--noinput", "--scan-count", "2", stderr=stderr)

    assert output == "Deleted 200 sessions.\n"
    assert len(batches) > 10
    assert stderr.getvalue() == ""


def test_clear_shows_no_progress_for_a_store_of_ten_batches_or_fewer(
    arranged: set[str], batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_clock(monkeypatch, step=1.0)
    stderr = TTYStringIO()

    output = redis_sessions("clear", "--noinput", stderr=stderr)

    assert output == "Deleted 3 sessions.\n"
    assert len(batches) <= 10
    assert stderr.getvalue() == ""


def test_progress_uses_thousands_separators_and_no_color() -> None:
    stderr = TTYStringIO()
    cmd = command.Command(stderr=stderr, force_color=True)

    with command.Progress(cmd.stderr, "Deleted") as progress:
        for _ in range(command.PROGRESS_AFTER_BATCHES):
            progress.add(1000)
        progress.add(2300)

    assert stderr.getvalue() == (
        "\rDeleted 12,300 sessions...\rDeleted 12,300 sessions...\n"
    )


# Bad options


def test_scan_count_zero_is_an_error() -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions("count", "--scan-count", "0")

    assert str(excinfo.value) == "--scan-count must be at least 1, not 0."


def test_a_negative_scan_count_is_an_error_for_clear_too(
    arranged: set[str], redis_keys: Callable[[], set[str]], no_input: None
) -> None:
    before = redis_keys()

    with pytest.raises(CommandError) as excinfo:
        redis_sessions("clear", "--noinput", "--scan-count", "-5")

    assert str(excinfo.value) == "--scan-count must be at least 1, not -5."
    assert redis_keys() == before


def test_a_scan_count_of_zero_in_settings_is_an_error(
    session_redis: dict[str, Any],
) -> None:
    session_redis["SCAN_COUNT"] = 0

    with pytest.raises(CommandError) as excinfo:
        redis_sessions("count")

    assert (
        str(excinfo.value) == "SESSION_REDIS['SCAN_COUNT'] must be at least 1, not 0."
    )


def test_a_scan_count_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions("count", "--scan-count", "many")

    assert str(excinfo.value) == (
        "Error: argument --scan-count: invalid int value: 'many'"
    )


@pytest.mark.parametrize("subcommand", ["count", "clear"])
def test_an_empty_prefix_is_an_error(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    no_input: None,
    subcommand: str,
) -> None:
    before = redis_keys()

    with pytest.raises(CommandError) as excinfo:
        redis_sessions(subcommand, "--prefix", "")

    assert str(excinfo.value) == (
        "--prefix is empty, which would match the sessions of every app on this "
        "Redis; give a non-empty prefix."
    )
    assert redis_keys() == before


def test_an_empty_prefix_in_settings_is_an_error(
    session_redis: dict[str, Any],
) -> None:
    session_redis["PREFIX"] = ""

    with pytest.raises(CommandError) as excinfo:
        redis_sessions("clear", "--noinput")

    assert str(excinfo.value) == (
        "SESSION_REDIS['PREFIX'] is empty, which would match the sessions of every "
        "app on this Redis; give a non-empty prefix."
    )


def test_a_subcommand_is_required() -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions()

    assert str(excinfo.value) == (
        "Error: the following arguments are required: "
        "{count,clear,rehash,user,import,stats,show}"
    )


def test_an_unknown_subcommand_is_an_error() -> None:
    with pytest.raises(
        CommandError,
        match=r"^Error: argument \{count,clear,rehash,user,import,stats,show\}: ",
    ):
        redis_sessions("flush")


def test_count_does_not_take_clear_options() -> None:
    with pytest.raises(
        CommandError, match=r"^Error: unrecognized arguments: --noinput$"
    ):
        redis_sessions("count", "--noinput")


# Redis unreachable


def test_count_fails_with_a_command_error_when_redis_is_unreachable(
    unreachable: int,
) -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions("count")

    message = str(excinfo.value)
    assert message.startswith(
        "Could not count sessions: could not reach Redis at "
        f"redis://user@127.0.0.1:{unreachable}/0?db=0: "
    )
    assert message.endswith(".")
    assert not message.endswith("..")
    assert "s3cret" not in message


def test_clear_fails_with_a_command_error_when_redis_is_unreachable(
    unreachable: int, no_input: None
) -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions("clear", "--noinput")

    message = str(excinfo.value)
    assert message.startswith(
        "Could not delete sessions: could not reach Redis at "
        f"redis://user@127.0.0.1:{unreachable}/0?db=0: "
    )
    assert message.endswith(
        ". Nothing after the last completed batch was deleted; run the command "
        "again to finish."
    )
    assert "s3cret" not in message


def test_clear_says_nothing_was_deleted_when_redis_is_unreachable_before_asking(
    unreachable: int, no_input: None
) -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions("clear")

    message = str(excinfo.value)
    assert message.startswith(
        "Could not count sessions: could not reach Redis at "
        f"redis://user@127.0.0.1:{unreachable}/0?db=0: "
    )
    assert message.endswith(". Nothing was deleted.")
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://alice:pw@[::1]:6380/2", "rediss://alice@[::1]:6380/2"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?db=1"),
        ("unix:///run/redis.sock?db=3&Password=pw", "unix:///run/redis.sock?db=3"),
        # Malformed: urlsplit() refuses it, and an error message must show it.
        ("redis://user:pw@[::1/0", "redis://user@[::1/0"),
        # A password with an unescaped "/", "?" or "@" is hidden whole.
        ("redis://:p/w@localhost/0", "redis://localhost/0"),
        ("redis://:p?w@localhost/0", "redis://localhost/0"),
        ("redis://h/0?password=p@w", "redis://h/0"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.fixture
def interrupt_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], list[int]]:
    """Make ``RedisLayer.<method>`` (or a batch's UNLINK) raise KeyboardInterrupt
    on its next+n-th call.

    Returns what each completed call returned: the batches done before Ctrl-C.
    """

    def arm(method: str, calls: int) -> list[int]:
        done: list[int] = []
        # "unlink": each batch's UNLINK, which clear sends through bulk.py.
        owner: Any = layer_module if method == "unlink" else RedisLayer
        name = "unlink_on" if method == "unlink" else method
        original = getattr(owner, name)

        def interrupted(*args: Any, **kwargs: Any) -> int:
            if len(done) == calls:
                raise KeyboardInterrupt
            result: int = original(*args, **kwargs)
            done.append(result)
            return result

        monkeypatch.setattr(owner, name, interrupted)
        return done

    return arm


def test_ctrl_c_during_clear_says_how_far_it_got_and_a_rerun_finishes(
    many_sessions: int,
    redis_keys: Callable[[], set[str]],
    interrupt_after: Callable[[str, int], list[int]],
    monkeypatch: pytest.MonkeyPatch,
    no_input: None,
) -> None:
    done = interrupt_after("unlink", 2)

    with pytest.raises(CommandError) as excinfo:
        redis_sessions("clear", "--noinput", "--scan-count", "2")

    assert str(excinfo.value) == (
        f"Interrupted: deleted {sum(done)} sessions so far. Run the command "
        "again to delete the rest."
    )
    assert excinfo.value.returncode == 130
    assert redis_sessions("count") == f"{MANY - sum(done)}\n"
    monkeypatch.undo()
    assert (
        redis_sessions("clear", "--noinput")
        == f"Deleted {MANY - sum(done)} sessions.\n"
    )
    assert redis_keys() == set()


def test_ctrl_c_during_rehash_says_how_far_it_got_and_a_rerun_finishes(
    session_redis: dict[str, Any],
    prefix: str,
    interrupt_after: Callable[[str, int], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session_redis["HASH_IDS"] = "migrate"
    plain = RedisSessionStore(prefix=prefix, hash_ids=False)
    for number in range(40):
        assert plain.create(f"plain{number:027d}", {"n": number}, ttl=60)
    done = interrupt_after("move_to_ids", 2)

    with pytest.raises(CommandError) as excinfo:
        redis_sessions("rehash", "--scan-count", "2")

    assert str(excinfo.value) == (
        f"Interrupted: moved {sum(done)} sessions so far. Run the command again "
        "to move the rest."
    )
    monkeypatch.undo()
    assert (
        redis_sessions("rehash") == f"Moved {40 - sum(done)} sessions to their ids.\n"
    )
    assert RedisSessionStore().get(f"plain{39:027d}") == {"n": 39}


def test_ctrl_c_while_counting_before_the_question_deletes_nothing(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    monkeypatch: pytest.MonkeyPatch,
    no_input: None,
) -> None:
    before = redis_keys()

    def interrupted(*args: Any, **kwargs: Any) -> Iterator[list[bytes]]:
        raise KeyboardInterrupt
        yield []

    monkeypatch.setattr(RedisLayer, "scan", interrupted)

    with pytest.raises(CommandError) as excinfo:
        redis_sessions("clear")

    assert str(excinfo.value) == (
        "Interrupted: counted 0 sessions so far. Nothing was deleted."
    )
    assert redis_keys() == before


def test_ctrl_c_at_the_question_cancels(
    arranged: set[str],
    redis_keys: Callable[[], set[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = redis_keys()

    def ctrl_c(prompt: str = "") -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "input", ctrl_c)

    assert redis_sessions("clear") == "Cancelled; nothing was deleted.\n"
    assert redis_keys() == before


def test_ctrl_c_from_the_shell_prints_one_line_and_exits_130(
    many_sessions: int,
    interrupt_after: Callable[[str, int], list[int]],
) -> None:
    done = interrupt_after("unlink", 1)
    stderr = io.StringIO()
    cmd = command.Command(stdout=io.StringIO(), stderr=stderr)

    with pytest.raises(SystemExit) as excinfo:
        cmd.run_from_argv(
            ["manage.py", "redis_sessions", "clear", "--noinput", "--scan-count", "2"]
        )

    assert excinfo.value.code == 130
    assert stderr.getvalue() == (
        f"CommandError: Interrupted: deleted {sum(done)} sessions so far. Run the "
        "command again to delete the rest.\n"
    )


@pytest.mark.parametrize(
    ("args", "failed", "consequence"),
    [
        (["stats"], "Could not measure sessions", " Nothing was changed."),
        (["show", "abcdefgh12345678"], "Could not read the session", ""),
    ],
)
def test_stats_and_show_fail_with_one_line_when_redis_is_unreachable(
    unreachable: int, args: list[str], failed: str, consequence: str
) -> None:
    with pytest.raises(CommandError) as excinfo:
        redis_sessions(*args)

    message = str(excinfo.value)
    assert message.startswith(
        f"{failed}: could not reach Redis at "
        f"redis://user@127.0.0.1:{unreachable}/0?db=0: "
    )
    assert message.endswith("." + consequence)
    assert "\n" not in message
    assert "s3cret" not in message
    assert "abcdefgh12345678" not in message
