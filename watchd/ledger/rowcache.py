"""Rows the ledger's connection has read or written, so that reading a job back costs no query.

The pipeline reads the same job many times between two writes (after every transition, at the
start of every stage); each read was a query plus a row built from it. The cache is only as good
as the :class:`~watchd.ledger.db.Ledger` that keeps it: it drops everything when another
connection has committed, and files our own writes as they are made. This module holds the two
pieces that need no SQLite: the bounded store with its transaction overlay, and the prediction of
what SQLite gives back for a value written to a column (so a row can be updated in place instead
of read again).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import fields
from typing import Any, Final, Generic, Literal, TypeVar

R = TypeVar("R")

Affinity = Literal["TEXT", "INTEGER", "REAL"]


class _Unsure:
    """A value whose stored form is not predicted here (the row is read back instead)."""


UNSURE: Final = _Unsure()


def affinities(cls: type) -> dict[str, Affinity]:
    """Each field's column affinity, from its annotation (``str``, ``int``, ``float``,
    optionally ``| None``): the row dataclasses mirror the schema, and a test holds them to it."""
    kinds: dict[str, Affinity] = {}
    for f in fields(cls):
        base = str(f.type).split("|")[0].strip()
        kinds[f.name] = {"str": "TEXT", "int": "INTEGER", "float": "REAL"}[base]  # type: ignore[assignment]
    return kinds


def stored(affinity: Affinity, value: Any) -> Any:
    """What SQLite returns for ``value`` written to a column of this affinity, or :data:`UNSURE`.

    Only the plain cases are predicted: exact ``str`` into TEXT, ``int``/``bool`` into INTEGER,
    ``int``/``bool``/``float`` into REAL (converted to float, as REAL affinity does; NaN becomes
    NULL and -0.0 is stored as an integer 0, so both are left to a read). Anything else (text
    that looks like a number, a float in an INTEGER column, an enum) is left to a read."""
    if value is None:
        return None
    kind = type(value)
    if affinity == "TEXT":
        return value if kind is str else UNSURE
    if affinity == "INTEGER":
        return int(value) if kind is int or kind is bool else UNSURE
    if kind is float:
        if value != value:
            return UNSURE  # NaN is stored as NULL
        return value if value else 0.0  # -0.0 is stored as the integer 0
    return float(value) if kind is int or kind is bool else UNSURE


def with_values(row: R, values: dict[str, Any], kinds: dict[str, Affinity]) -> R | None:
    """``row`` (a frozen row dataclass) with ``values`` written over it as SQLite would store
    them, or None when one of them is not predicted (:func:`stored`)."""
    merged = dict(vars(row))
    for name, value in values.items():
        value = stored(kinds[name], value)
        if value is UNSURE:
            return None
        merged[name] = value
    return type(row)(**merged)


class RowCache(Generic[R]):
    """Rows by key, the least recently used dropped beyond ``limit``.

    Between :meth:`begin` and :meth:`commit` or :meth:`rollback` what is put or dropped lands in
    an overlay, read first by :meth:`get`: the rows of a transaction reach the cache only once it
    is committed, and on rollback every row it touched is dropped (read again when next asked).
    The rows are frozen dataclasses or tuples of them, handed out as they are."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._rows: OrderedDict[str, R] = OrderedDict()
        self._overlay: dict[str, R | None] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> R | None:
        """The row for ``key``, or None when it is not known."""
        overlay = self._overlay
        if overlay is not None and key in overlay:
            return overlay[key]
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: str, row: R) -> None:
        if self._overlay is not None:
            self._overlay[key] = row
        else:
            self._store(key, row)

    def drop(self, key: str) -> None:
        """Forget ``key`` (its row changed in a way not predicted here, or is gone)."""
        if self._overlay is not None:
            self._overlay[key] = None
        else:
            self._rows.pop(key, None)

    def clear(self) -> None:
        self._rows.clear()
        if self._overlay is not None:
            self._overlay.clear()

    def begin(self) -> None:
        self._overlay = {}

    def commit(self) -> None:
        overlay, self._overlay = self._overlay or {}, None
        for key, row in overlay.items():
            if row is None:
                self._rows.pop(key, None)
            else:
                self._store(key, row)

    def rollback(self) -> None:
        overlay, self._overlay = self._overlay or {}, None
        for key in overlay:
            self._rows.pop(key, None)

    def _store(self, key: str, row: R) -> None:
        rows = self._rows
        rows[key] = row
        rows.move_to_end(key)
        if len(rows) > self.limit:
            rows.popitem(last=False)
