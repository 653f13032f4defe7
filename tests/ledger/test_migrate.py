"""``watchd ledger migrate --to URL``: this host's SQLite ledger copied into a PostgreSQL ledger,
read back equal through the PostgreSQL backend, and nothing copied twice."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.ledger.test_db import _clip
from tests.pg import PgServer
from tests.test_config import base_doc, write
from watchd.cli import main
from watchd.clock import FakeClock
from watchd.ledger.db import EventRow, Ledger
from watchd.ledger.lock import acquire
from watchd.ledger.pg import PgLedger
from watchd.ledger.protocol import LedgerAPI
from watchd.ledger.states import Stage

DELIVERY = (Stage.PROBED, Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED, Stage.PROCESSING)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with a config (its inbox and password file need not exist: `ledger migrate`
    reads neither); the ledger goes to ``state/``."""
    write(tmp_path, base_doc(tmp_path))
    return tmp_path


def config(site: Path) -> Path:
    return site / "config.toml"


def fill(ledger: Ledger, clock: FakeClock, n: int, start: int = 0) -> list[str]:
    """``n`` jobs: delivered ones with clips and exports, a failed one, one under way."""
    ids = []
    for i in range(start, start + n):
        clock.advance(1)
        job = ledger.add_job(
            inbox="/in", rel_path=f"ep{i}.mp4", path=f"/in/ep{i}.mp4", rule="",
            preset={"video_type": "podcast"}, size=1000 + i, mtime_ns=1_700_000_000_000_000_000 + i,
            inode=2**33 + i, dev=64769, fingerprint=f"fp{i}",
        )  # fmt: skip
        ids.append(job.id)
        if i % 4 == 3:
            ledger.transition(job.id, Stage.PROBED)  # under way
            continue
        if i % 4 == 2:
            ledger.transition(job.id, Stage.FAILED, error="not a video", error_code="not_video")
            continue
        for stage in DELIVERY:
            ledger.transition(job.id, stage, project_id=f"p{i}", progress=0.5)
        ledger.put_clips(job.id, [_clip(selected=1, words=[["hi", 0.0, 0.5]]), _clip(clip_id="c2")])
        ledger.transition(job.id, Stage.CLIPS_READY)
        ledger.update_clip(job.id, "c1", state="rendered", file="ep/c1.mp4", size=123)
        ledger.transition(job.id, Stage.EXPORTING)
        ledger.put_export(job.id, "c1", "premiere", export_id=f"e{i}", state="done", path="x.xml")
        ledger.transition(job.id, Stage.DELIVERING)
        ledger.transition(job.id, Stage.DELIVERED, outbox_dir=f"/out/ep{i}", disposed_to="_done")
    ledger.set_inbox("/in", paused=False, reason=None, entries=n, last_scan_at=clock.now())
    return ids


def snapshot(ledger: LedgerAPI) -> dict[str, Any]:
    """Everything the ledger holds, events without their ids (the database numbers its own)."""
    jobs = ledger.jobs()
    return {
        "jobs": jobs,
        "clips": {j.id: ledger.clips(j.id) for j in jobs},
        "exports": {j.id: ledger.exports(j.id) for j in jobs},
        "events": [dataclasses.replace(e, id=0) for e in ledger.events()],
        "inboxes": ledger.inboxes(),
    }


def test_a_ledger_migrated_reads_back_equal_and_twice_copies_nothing_twice(
    site: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    local = Ledger.open(site / "state", clock=clock)
    fill(local, clock, 8)
    local.forget(local.jobs([Stage.FAILED])[0].id)  # its events stay, the job goes
    before = snapshot(local)
    assert len(before["jobs"]) == 7 and before["events"]

    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "jobs: 7 copied\n" in out and "clips: 8 copied\n" in out
    assert "exports: 4 copied\n" in out and f"events: {len(before['events'])} copied\n" in out
    pg = PgLedger(pg_url)
    assert snapshot(pg) == before

    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "jobs: 0 copied, 7 already there" in out and "events: 0 copied\n" in out
    assert snapshot(pg) == before

    # The daemon ran on meanwhile: only what is new is copied.
    new = fill(local, clock, 2, start=8)
    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "jobs: 2 copied, 7 already there" in out
    assert [e.kind for e in pg.events(new[0])] == [e.kind for e in local.events(new[0])]
    assert len(pg.events()) == len(local.events())
    # The copy is a working ledger: the delivered files are known, the rest carries on.
    delivered = local.jobs([Stage.DELIVERED])[0]
    assert pg.find_by_identity("/in", delivered.rel_path, delivered.size, delivered.mtime_ns)
    under_way = pg.jobs([Stage.PROBED])[0]
    assert pg.transition(under_way.id, Stage.CREATING).stage is Stage.CREATING
    pg.close()
    local.close()


def test_what_the_database_has_no_place_for_is_named(
    site: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    local = Ledger.open(site / "state", clock=clock)
    fill(local, clock, 1)
    # As a later SQLite migration would add them.
    local.db.execute("ALTER TABLE jobs ADD COLUMN colour TEXT")
    local.db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    local.close()
    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "jobs: 1 copied" in out
    assert "not copied (no such column in the database): colour" in out
    assert "notes: not copied (no such table in the database)" in out


def test_no_ledger_yet_is_nothing_to_copy(
    site: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0
    assert "nothing to copy" in capsys.readouterr().out


def test_a_bad_url_or_an_unreachable_database(
    site: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    Ledger.open(site / "state").close()
    path = str(config(site))
    assert main(["ledger", "migrate", "-c", path, "--to", "mysql://u:Pw-s3cret@db/x"]) == 2
    err = capsys.readouterr().err
    assert "--to must be a postgresql:// URL" in err and "Pw-s3cret" not in err
    down = f"postgresql://u:Pw-s3cret@127.0.0.1:{pg_server.port + 1}/x?connect_timeout=1"
    assert main(["ledger", "migrate", "-c", path, "--to", down]) == 3
    err = capsys.readouterr().err
    assert "cannot connect to the ledger database" in err and "Pw-s3cret" not in err
    assert err.count("\n") == 1


def test_not_beside_a_running_daemon(
    site: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Ledger.open(site / "state").close()
    with acquire(site / "state", pid=4242):  # as `watchd run` holds it
        assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 2
    err = capsys.readouterr().err
    assert "another watchd is already running" in err and "PID 4242" in err
    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0


def test_the_events_keep_their_order(site: Path, pg_url: str) -> None:
    clock = FakeClock()
    local = Ledger.open(site / "state", clock=clock)
    jid = fill(local, clock, 1)[0]
    local.close()
    assert main(["ledger", "migrate", "-c", str(config(site)), "--to", pg_url]) == 0
    pg = PgLedger(pg_url)
    events: list[EventRow] = pg.events(jid)
    assert [e.to_state for e in events if e.to_state][-2:] == ["delivering", "delivered"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    pg.close()


def test_into_a_cluster_the_jobs_name_their_inbox_by_its_name(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = base_doc(tmp_path)
    doc["inbox"][0]["name"] = "studio-a"
    doc["cluster"] = {"database": pg_url, "node": "suite-1"}
    path = write(tmp_path, doc)
    clock = FakeClock()
    local = Ledger.open(tmp_path / "state", clock=clock)
    inbox = str(tmp_path / "inbox")
    job = local.add_job(
        inbox=inbox, rel_path="ep.mp4", path=f"{inbox}/ep.mp4", rule="", preset={}, size=10,
        mtime_ns=5, inode=1, dev=1, fingerprint="fp",
    )  # fmt: skip
    local.transition(job.id, Stage.FAILED, error="x", error_code="not_video")
    local.close()
    assert main(["ledger", "migrate", "-c", str(path), "--to", pg_url]) == 0
    pg = PgLedger(pg_url)
    assert pg.find_by_identity("studio-a", "ep.mp4", 10, 5) is not None
    assert pg.find_by_identity(inbox, "ep.mp4", 10, 5) is None
    pg.close()
