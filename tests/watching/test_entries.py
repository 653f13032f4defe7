"""EntryBook: entries that are not jobs, logged once, mirrored into the ledger in batches."""

from __future__ import annotations

import logging
import os

import pytest

from watchd.clock import FakeClock
from watchd.ledger.db import EntryRow, Ledger
from watchd.status_view import entry_json, render_json, render_table
from watchd.watching.entries import (
    NOT_TAKEN,
    WRITING,
    EntryBook,
    settling_row,
    settling_text,
)


def settling(rel: str, since: float, wait: float = 5.0) -> EntryRow:
    return settling_row(
        "/in", f"/in/{rel}", rel, rule="", since=since, wait=wait, size=10, now=since
    )


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(clock=FakeClock(1_800_000_000.0))


def test_settling_text() -> None:
    assert settling_text(100.0, 5.0, 102.4) == (
        "waiting for the copy to finish: unchanged for 2 s of 5"
    )
    assert settling_text(100.0, 5.0, 200.0).endswith("unchanged for 5 s of 5")
    assert settling_text(None, None, 1.0) == "waiting for the copy to finish"
    assert settling_text(100.0, 5.0, 103.0, WRITING) == (
        "waiting for the copy to finish: open for writing by a program, unchanged for 3 s"
    )
    assert settling_row("/in", "/in/a", "a", rule="", since=1, wait=5, size=1, now=1).reason is None
    held = settling_row("/in", "/in/a", "a", rule="", since=1, wait=5, size=1, now=1, writing=True)
    assert held.reason == WRITING


def test_not_taken_is_logged_once_and_stays_while_scans_see_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = EntryBook()
    bad = os.fsdecode(b"bad\xff.mp4")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three rescans
            book.begin_scan("/in")
            book.not_taken("/in", f"/in/{bad}", bad, rule="", code="bad_name", reason="r", now=1)
            book.end_scan("/in")
    assert len([r for r in caplog.records if "bad\\xff.mp4" in r.getMessage()]) == 1
    (row,) = book.rows().values()
    assert (row.rel_path, row.escaped, row.state) == ("bad\\xff.mp4", 1, NOT_TAKEN)
    # A scan that does not see it any more: gone, and reported again if it comes back.
    book.begin_scan("/in")
    book.end_scan("/in")
    assert book.rows() == {}


def test_a_regular_file_again_drops_a_link_row_but_keeps_an_error_row() -> None:
    book = EntryBook()
    book.not_taken("/in", "/in/x.mp4", "x.mp4", rule="", code="not_regular", reason="r", now=1)
    book.not_taken("/in", "/in/y.mp4", "y.mp4", rule="", code="error", reason="boom", now=1)
    book.begin_scan("/in")
    book.regular("/in", "x.mp4")
    book.regular("/in", "y.mp4")
    book.end_scan("/in")
    assert [k[1] for k in book.rows()] == ["y.mp4"]
    book.gone("/in", "y.mp4")
    assert book.rows() == {}


def test_sync_writes_only_changes_in_one_batch_at_most_every_second(ledger: Ledger) -> None:
    book = EntryBook(min_interval=1.0)
    book.set_settling([settling("a.mp4", 10.0), settling("b.mp4", 10.0)])
    assert book.sync(ledger, 10.0)
    assert [e.rel_path for e in ledger.entries()] == ["a.mp4", "b.mp4"]
    book.set_settling([settling("b.mp4", 10.0)])
    assert not book.sync(ledger, 10.5)  # too soon
    assert book.sync(ledger, 11.0)
    assert [e.rel_path for e in ledger.entries()] == ["b.mp4"]
    writes = ledger._writes
    assert not book.sync(ledger, 12.0)  # nothing changed: nothing written
    assert ledger._writes == writes
    book.set_settling([])
    assert book.sync(ledger, 12.1, force=True)
    assert ledger.entries() == []


def test_rows_a_previous_run_left_are_cleared(ledger: Ledger) -> None:
    ledger.sync_entries([settling("stale.mp4", 1.0)], [])
    book = EntryBook()
    book.set_settling([settling("new.mp4", 5.0)])
    book.sync(ledger, 5.0)
    assert [e.rel_path for e in ledger.entries()] == ["new.mp4"]


def test_status_shows_entries_as_rows(ledger: Ledger) -> None:
    book = EntryBook()
    book.set_settling([settling("ep1.mp4", 100.0)])
    book.not_taken("/in", "/in/x.mp4", "x.mp4", rule="", code="not_regular", reason="nope", now=1)
    book.sync(ledger, 100.0)
    waiting, link = (entry_json(e, 102.0) for e in ledger.entries())
    assert waiting["state"] == "settling" and waiting["id"] is None
    assert waiting["step"] == "waiting for the copy to finish: unchanged for 2 s of 5"
    assert link["state"] == "failed" and link["error"] == "nope" and link["taken"] is False
    keys = {"id", "path", "rule", "state", "project_id", "error", "updated_at"}
    assert keys <= set(waiting) and keys <= set(link)
    assert '"source": "x.mp4"' in render_json(ledger, now=102.0)
    table = render_table([], [], now=102.0, width=100, entries=ledger.entries())
    assert "settling     ep1.mp4" in table and "unchanged for 2 s of 5" in table
    assert "not taken    x.mp4" in table and "↳ nope" in table
