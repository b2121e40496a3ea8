"""``merge.merged``: a request's own changes re-applied onto the current data."""

from __future__ import annotations

from typing import Any

import pytest

from django_redis_sessions.merge import merged

AUTH = {"_auth_user_id": "1", "_auth_user_hash": "h1", "_auth_user_backend": "b"}


def test_changes_to_different_keys_both_land() -> None:
    loaded = {"a": 1}
    assert merged(loaded, {"a": 1, "mine": 2}, {"a": 1, "theirs": 3}) == {
        "a": 1,
        "mine": 2,
        "theirs": 3,
    }


def test_a_key_changed_by_both_keeps_this_requests_value() -> None:
    assert merged({"k": 0}, {"k": "mine"}, {"k": "theirs"}) == {"k": "mine"}


def test_a_key_this_request_did_not_touch_keeps_the_current_value() -> None:
    assert merged({"k": 0, "x": 1}, {"k": 0, "x": 2}, {"k": "theirs", "x": 1}) == {
        "k": "theirs",
        "x": 2,
    }


def test_a_key_the_other_side_deleted_stays_deleted() -> None:
    assert merged({"gone": 1, "x": 1}, {"gone": 1, "x": 2}, {"x": 1}) == {"x": 2}


def test_a_key_the_other_side_deleted_comes_back_only_if_this_request_set_it() -> None:
    assert merged({"k": 1}, {"k": 2}, {}) == {"k": 2}


def test_a_key_this_request_deleted_stays_deleted_whatever_the_other_side_did() -> None:
    assert merged({"k": 1, "x": 0}, {"x": 0}, {"k": "theirs", "x": 0}) == {"x": 0}


def test_a_nested_value_mutated_in_place_counts_as_changed() -> None:
    loaded = {"cart": ["book"]}
    mine = {"cart": ["book", "pen"]}  # session["cart"].append(); modified = True
    current = {"cart": ["book", "cup"], "flash": "saved"}
    assert merged(loaded, mine, current) == {"cart": ["book", "pen"], "flash": "saved"}


@pytest.mark.parametrize(
    ("mine", "current", "expected"),
    [
        # Another request changed the password (a new hash): it wins.
        (AUTH, {**AUTH, "_auth_user_hash": "h2"}, {**AUTH, "_auth_user_hash": "h2"}),
        # This request changed the password: its hash wins.
        ({**AUTH, "_auth_user_hash": "h3"}, AUTH, {**AUTH, "_auth_user_hash": "h3"}),
        # Both did: the later save, this one.
        (
            {**AUTH, "_auth_user_hash": "h3"},
            {**AUTH, "_auth_user_hash": "h2"},
            {**AUTH, "_auth_user_hash": "h3"},
        ),
    ],
)
def test_auth_keys_follow_the_side_that_changed_them(
    mine: dict[str, Any], current: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert merged(AUTH, mine, current) == expected


def test_nothing_changed_leaves_the_current_data() -> None:
    current = {"a": 2, "b": 3}
    assert merged({"a": 1}, {"a": 1}, current) == current
    assert merged({"a": 1}, {"a": 1}, current) is not current


def test_an_assigned_key_counts_even_with_the_value_it_loaded() -> None:
    """A loads sudo=False, B saves sudo=True, A assigns False and saves last."""
    loaded = {"sudo": False, "x": 1}
    current = {"sudo": True, "x": 1}
    assert merged(loaded, {"sudo": False, "x": 1}, current) == current
    assert merged(loaded, {"sudo": False, "x": 1}, current, {"sudo"}) == {
        "sudo": False,
        "x": 1,
    }
