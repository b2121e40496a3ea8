"""Merging a request's changes onto a session another request saved meanwhile.

The save is versioned (see ``scripts.UPDATE_VERSIONED``): it writes only
over the bytes the request loaded. When another request saved first, the
script answers with what is stored now, and the backend re-applies this
request's own changes onto it with ``merged()`` and saves again.

The rule, by top-level key: a key this request assigned, changed or deleted
since its load takes this request's value (or stays deleted); every other key keeps
what is stored now. So two requests that change different keys both land, a
key changed by both ends with the later save's value, a key the other side
deleted stays deleted unless this request set it, and the auth keys
(``_auth_user_id``, ``_auth_user_hash``, ``_auth_user_backend``) follow
whichever side changed them. A key counts as changed when the request
assigned it (even to the value it loaded) or when its value differs from what
was loaded (``!=``), so a nested value mutated in place counts too; that
comparison is exact for the values JSON decodes to, and for pickled values
whose types define equality.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any


def changes(
    loaded: dict[str, Any], mine: dict[str, Any], assigned: Set[str] = frozenset()
) -> dict[str, Any]:
    """The keys this request set or changed, with their values.

    ``assigned``: the keys the request assigned (``session[key] = value``),
    which count even when the value equals what was loaded: an explicit write
    of the loaded value, after another request changed it, is written.
    """
    return {
        key: value
        for key, value in mine.items()
        if key in assigned or key not in loaded or loaded[key] != value
    }


def deletions(loaded: dict[str, Any], mine: dict[str, Any]) -> set[str]:
    """The keys this request deleted since its load."""
    return loaded.keys() - mine.keys()


def merged(
    loaded: dict[str, Any],
    mine: dict[str, Any],
    current: dict[str, Any],
    assigned: Set[str] = frozenset(),
) -> dict[str, Any]:
    """``current`` with this request's own changes since ``loaded`` applied."""
    result = dict(current)
    result.update(changes(loaded, mine, assigned))
    for key in deletions(loaded, mine):
        result.pop(key, None)
    return result
