"""The row cache's pieces without a ledger: the bounded store, its overlay, and the prediction of
what SQLite stores for a value (checked against SQLite itself)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchd.ledger.rowcache import UNSURE, Affinity, RowCache, affinities, stored, with_values


def test_least_recently_used_rows_go_beyond_the_limit() -> None:
    cache: RowCache[int] = RowCache(3)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert cache.get("a") == 1  # now the most recent
    cache.put("d", 4)
    assert (cache.get("b"), len(cache)) == (None, 3)
    assert [cache.get(k) for k in "acd"] == [1, 3, 4]
    with pytest.raises(ValueError):
        RowCache[int](0)


@pytest.mark.parametrize(
    ("end", "after"),
    [
        ("commit", {"kept": 10, "new": 3, "gone": None, "untouched": 4}),
        # A rollback drops every row the transaction touched: read again when next asked.
        ("rollback", {"kept": None, "new": None, "gone": None, "untouched": 4}),
    ],
)
def test_a_transaction_reaches_the_cache_only_when_committed(
    end: str, after: dict[str, int | None]
) -> None:
    cache: RowCache[int] = RowCache(10)
    for key, value in (("kept", 1), ("gone", 2), ("untouched", 4)):
        cache.put(key, value)
    cache.begin()
    cache.put("kept", 10)
    cache.put("new", 3)
    cache.drop("gone")
    assert [cache.get(k) for k in ("kept", "new", "gone")] == [10, 3, None]
    getattr(cache, end)()
    assert {k: cache.get(k) for k in after} == after


def test_clear_inside_a_transaction_forgets_the_overlay_too() -> None:
    cache: RowCache[int] = RowCache(10)
    cache.put("a", 1)
    cache.begin()
    cache.put("b", 2)
    cache.clear()
    assert (cache.get("a"), cache.get("b")) == (None, None)
    cache.commit()
    assert len(cache) == 0


@dataclass(frozen=True)
class _Row:
    t: str | None
    i: int
    r: float | None


def test_affinities_follow_the_annotations() -> None:
    assert affinities(_Row) == {"t": "TEXT", "i": "INTEGER", "r": "REAL"}


def test_with_values_writes_stored_forms_or_gives_up() -> None:
    row = _Row("x", 1, 2.0)
    kinds = affinities(_Row)
    after = with_values(row, {"i": True, "r": 3}, kinds)
    assert after is not None
    assert after == _Row("x", 1, 3.0) and type(after.r) is float
    assert row == _Row("x", 1, 2.0)  # the original is left alone
    assert with_values(row, {"r": "3"}, kinds) is None


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.sampled_from(["1", " 2", "3.5", "1e3", "-0", "x1"]),
)


@given(value=_values)
def test_a_predicted_value_is_what_sqlite_gives_back(value: Any) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (t TEXT, i INTEGER, r REAL)")
        try:
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", (value, value, value))
        except (sqlite3.Error, UnicodeEncodeError):
            return  # not storable at all: the write fails, nothing is cached
        back = conn.execute("SELECT t, i, r FROM t").fetchone()
    finally:
        conn.close()
    kinds: tuple[Affinity, ...] = ("TEXT", "INTEGER", "REAL")
    for affinity, got in zip(kinds, back, strict=True):
        predicted = stored(affinity, value)
        if predicted is not UNSURE:
            assert (type(predicted), repr(predicted)) == (type(got), repr(got)), affinity
