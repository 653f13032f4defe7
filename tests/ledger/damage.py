"""Helpers for tests of a damaged ledger."""

from __future__ import annotations

from pathlib import Path

from watchd.ledger.db import Ledger

PAGE = 4096


def fill_jobs(ledger: Ledger, jobs: int) -> None:
    """``jobs`` queued jobs, each a few hundred bytes (many pages in all)."""
    with ledger.batch():
        for n in range(jobs):
            ledger.add_job(
                inbox="/in",
                rel_path=f"show/ep{n:05d}.mp4",
                path=f"/in/show/ep{n:05d}.mp4",
                rule="show",
                preset={"video_type": "podcast", "padding": "x" * 200},
                size=1000 + n,
                mtime_ns=n,
                inode=n,
                dev=1,
                fingerprint=f"fp{n}",
            )


def damage_middle(db: Path) -> None:
    """Overwrite two pages in the middle of the file (not the header) with garbage."""
    pages = db.stat().st_size // PAGE
    assert pages > 20, "too small a ledger to damage in the middle"
    with open(db, "r+b") as f:
        for n in (pages // 2, pages // 2 + 1):
            f.seek(n * PAGE)
            f.write(b"\xa5" * PAGE)
