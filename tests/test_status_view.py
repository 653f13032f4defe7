"""`watchd status`: the table at several terminal widths, the summary line, whether the daemon
runs, --json, and --watch (bounded rounds in-process; Ctrl-C through the real CLI)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.e2e.harness import wait_for
from watchd.clock import FakeClock
from watchd.ledger.db import Ledger
from watchd.ledger.states import Stage
from watchd.status_view import (
    bar,
    daemon_state,
    format_age,
    iso,
    pid_alive,
    render_screen,
    render_table,
    show,
    summary_line,
)

PATH_TO = {
    Stage.UPLOADING: [Stage.PROBED, Stage.CREATING, Stage.UPLOADING],
    Stage.PROCESSING: [Stage.PROBED, Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED,
                       Stage.PROCESSING],
    Stage.RENDERING: [Stage.PROBED, Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED,
                      Stage.PROCESSING, Stage.CLIPS_READY, Stage.RENDERING],
    Stage.FAILED: [Stage.FAILED],
    Stage.PARKED: [Stage.PROBED, Stage.CREATING, Stage.PARKED],
    Stage.QUEUED: [],
}  # fmt: skip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture
def ledger(clock: FakeClock) -> Iterator[Ledger]:
    db = Ledger(None, clock=clock)
    yield db
    db.close()


def add(ledger: Ledger, rel: str, state: Stage, **fields: object) -> str:
    job = ledger.add_job(
        inbox="/srv/inbox",
        rel_path=rel,
        path=f"/srv/inbox/{rel}",
        rule=rel.split("/")[0] if "/" in rel else "",
        preset={},
        size=1000,
        mtime_ns=1,
        inode=hash(rel) & 0xFFFF,
        dev=1,
        fingerprint=rel,
    )
    for stage in PATH_TO[state]:
        ledger.transition(job.id, stage)
    if fields:
        ledger.update(job.id, **fields)
    return job.id


@pytest.fixture
def busy(ledger: Ledger, clock: FakeClock) -> Ledger:
    add(ledger, "podcasts/ep12 with a rather long name for a narrow terminal.mp4", Stage.QUEUED)
    clock.advance(30)
    add(ledger, "podcasts/up.mp4", Stage.UPLOADING, progress=42.0, bytes_uploaded=420)
    add(ledger, "tutorials/proc.mp4", Stage.PROCESSING, progress=45.0, step="Detecting moments")
    add(ledger, "tutorials/rend.mp4", Stage.RENDERING, progress=50.0, step="rendering 1/2")
    add(ledger, "bad.mp4", Stage.FAILED, error="Carmic refused the request: HTTP 415")
    add(ledger, "wait.mp4", Stage.PARKED, park_reason="billing: Insufficient processing minutes")
    clock.advance(3700)
    return ledger


# ---- pieces --------------------------------------------------------------------------------


def test_format_age_and_bar() -> None:
    assert [format_age(s) for s in (0, 59, 60, 3599, 3600, 3725, 86400 * 3)] == [
        "0s", "59s", "1m", "59m", "1h00m", "1h02m", "3d",
    ]  # fmt: skip
    assert bar(40) == "[####......]  40%"
    assert bar(250, 4) == "[####] 100%" and bar(-5, 4) == "[....]   0%"


def test_summary_line(busy: Ledger) -> None:
    assert summary_line(busy) == (
        "1 queued, 1 uploading 42%, 1 processing, 1 rendering/delivering, "
        "1 parked (billing), 1 failed, 0 delivered"
    )
    busy.set_inbox("/srv/inbox", paused=True, reason="missing", entries=0, last_scan_at=1.0)
    assert summary_line(busy).endswith("; 1 inbox(es) paused")
    assert summary_line(busy, paused_inboxes=0).endswith("0 delivered")


def test_daemon_state() -> None:
    now = 1_800_000_000.0
    hb = {"at": now - 3, "pid": 4242}
    assert daemon_state(None, now=now).text.startswith("daemon: not running (it has never")
    running = daemon_state(hb, now=now, alive=lambda pid: pid == 4242)
    assert running.running and running.text == "daemon: running (pid 4242, heartbeat 3s ago)"
    stale = daemon_state({"at": now - 120, "pid": 4242}, now=now, alive=lambda pid: True)
    assert not stale.running and "NOT RESPONDING" in stale.text and "2m ago" in stale.text
    gone = daemon_state(hb, now=now, alive=lambda pid: False)
    assert not gone.running and gone.text.startswith("daemon: not running (last seen 20")


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(2**22 + 12345)  # above pid_max's default ceiling


# ---- the table -----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 60, 80, 100, 140, 200])
def test_the_table_fits_the_terminal(busy: Ledger, clock: FakeClock, width: int) -> None:
    text = render_table(busy.jobs(), busy.inboxes(), now=clock.now(), width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= max(60, width)
    assert lines[0].split()[:4] == ["ID", "STATE", "PROGRESS", "AGE"]
    assert ("RULE" in lines[0]) == (width >= 120)
    assert ("PROJECT" in lines[0]) == (width >= 170)


def test_the_table_shows_progress_age_and_errors(busy: Ledger, clock: FakeClock) -> None:
    text = render_table(busy.jobs(), busy.inboxes(), now=clock.now(), width=140)
    rows = {line.split()[1]: line for line in text.splitlines()[1:] if line.startswith("j")}
    assert "[####......]  42%" in rows["uploading"]
    assert "[####......]  45%" in rows["processing"]
    assert "[#####.....]  50%" in rows["rendering"]
    assert "%" not in rows["queued"] and "%" not in rows["failed"]
    assert "1h02m" in rows["queued"] and "1h01m" in rows["uploading"]
    assert "podcasts" in rows["uploading"]  # the rule column at this width
    assert "↳ error: Carmic refused the request: HTTP 415" in text
    assert "↳ waiting: billing: Insufficient processing minutes" in text
    assert "↳ Detecting moments" in text


def test_a_long_source_is_cut_not_wrapped(busy: Ledger, clock: FakeClock) -> None:
    text = render_table(busy.jobs(), busy.inboxes(), now=clock.now(), width=80)
    queued = next(line for line in text.splitlines() if " queued " in line)
    assert len(queued) == 80 and queued.endswith("…")


def test_paused_inbox_and_no_jobs(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_inbox("/srv/nas/in", paused=True, reason="the share is gone", entries=0,
                     last_scan_at=1.0)  # fmt: skip
    text = render_table([], ledger.inboxes(), now=clock.now(), width=100)
    assert text == "! PAUSED inbox /srv/nas/in: the share is gone\nno jobs yet\n"


def test_the_screen_starts_with_the_daemon_and_the_summary(busy: Ledger, clock: FakeClock) -> None:
    busy.heartbeat(os.getpid())
    lines = render_screen(busy, now=clock.now(), width=100).splitlines()
    assert lines[0] == f"daemon: running (pid {os.getpid()}, heartbeat 0s ago)"
    assert lines[1].startswith("1 queued, 1 uploading 42%")
    assert lines[2] == "" and lines[3].startswith("ID")


# ---- show ----------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_redraws_in_place_and_follows_a_resize(busy: Ledger, clock: FakeClock) -> None:
    out = Terminal()
    widths = iter([200, 200, 70])
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        clock.advance(seconds)

    code = show(busy, out, watch=True, interval=0.5, clock=clock.now, sleep=nap,
                width=lambda: next(widths), rounds=3)  # fmt: skip
    assert code == 0 and naps == [0.5, 0.5]
    screens = out.getvalue().split("\x1b[H\x1b[2J")
    assert screens[0] == "" and len(screens) == 4
    assert "PROJECT" in screens[1] and "PROJECT" not in screens[3]
    assert max(len(line) for line in screens[3].splitlines()) <= 70


def test_watch_into_a_pipe_separates_screens(busy: Ledger, clock: FakeClock) -> None:
    out = io.StringIO()
    show(busy, out, watch=True, sleep=lambda s: None, clock=clock.now, width=lambda: 100,
         rounds=2)  # fmt: skip
    assert "\x1b[" not in out.getvalue()
    assert out.getvalue().count("daemon: ") == 2


def test_into_a_pipe_lines_are_whole(
    busy: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    long = "/srv/" + "very-long-share-name/" * 8 + "in"
    busy.set_inbox(long, paused=True, reason="inbox suddenly empty: had 2 entries", entries=0,
                   last_scan_at=None)  # fmt: skip
    out = io.StringIO()
    show(busy, out, clock=clock.now)
    assert f"! PAUSED inbox {long}: inbox suddenly empty: had 2 entries" in out.getvalue()
    assert "…" not in out.getvalue()


def test_json_has_the_contract_keys(busy: Ledger) -> None:
    out = io.StringIO()
    assert show(busy, out, as_json=True) == 0
    jobs = json.loads(out.getvalue())
    assert len(jobs) == 6
    for job in jobs:
        assert {"id", "path", "rule", "state", "project_id", "error", "updated_at"} <= set(job)


# ---- through the CLI -----------------------------------------------------------------------


def test_status_watch_runs_until_ctrl_c(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "state"
    ledger = Ledger.open(state)
    add(ledger, "podcasts/up.mp4", Stage.UPLOADING, progress=10.0)
    ledger.close()
    config = tmp_path / "config.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "carmic": {"api_url": "http://127.0.0.1:9/api", "email": "a@b.c"},
                "daemon": {"state_dir": str(state)},
                "inbox": [{"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out")}],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchd", "status", "--watch", "--interval", "0.05",
         "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "90"},
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []

    def screens() -> int:
        line = proc.stdout.readline() if proc.stdout else ""
        seen.append(line)
        return sum(s.startswith("daemon: ") for s in seen) >= 3

    try:
        wait_for(screens, timeout=30, interval=0, what="three screens")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = "".join(seen) + out
    assert "daemon: not running (it has never run with this ledger)" in text
    assert "[#.........]  10%" in text and "podcasts/up.mp4" in text
    assert max(len(line) for line in text.splitlines()) <= 90


def test_a_delivered_duplicate_says_what_it_duplicates_and_where_that_went(
    ledger: Ledger, clock: FakeClock
) -> None:
    first = add(ledger, "a/ep.mp4", Stage.QUEUED)
    copy = add(ledger, "a/ep copy.mp4", Stage.QUEUED)
    for stage in (Stage.PROBED, Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED):
        ledger.transition(first, stage)
    for stage in (Stage.PROCESSING, Stage.CLIPS_READY, Stage.DELIVERING, Stage.DELIVERED):
        ledger.transition(first, stage)
    ledger.update(first, outbox_dir="/srv/outbox/a/ep")
    ledger.transition(copy, Stage.DUPLICATE, duplicate_of=first)
    ledger.transition(copy, Stage.DELIVERED, outbox_dir="/srv/outbox/a/ep copy")
    text = render_table(ledger.jobs(), [], now=clock.now(), width=200)
    assert (
        f"↳ duplicate of {first}, delivered to /srv/outbox/a/ep (same content, rule and preset)"
    ) in text


# ---- waits are waits, not errors ----------------------------------------------------------


def test_a_wait_is_shown_as_a_wait_with_its_cause_and_time(
    ledger: Ledger, clock: FakeClock
) -> None:
    now = clock.now()
    add(
        ledger,
        "exp.mp4",
        Stage.PROCESSING,
        wait="export rate limit: too many exports",
        wait_until=now + 40,
        wait_since=now - 125,
    )
    add(
        ledger,
        "dup.mp4",
        Stage.QUEUED,
        wait="duplicate: same content as job j1 (rendering); delivered when it is",
        wait_until=now + 2,
        wait_since=now - 10,
    )
    text = render_table(ledger.jobs(), ledger.inboxes(), now=now, width=200)
    assert "error:" not in text
    assert "↳ waiting: export rate limit: too many exports (for 40s more, since 2m)" in text
    assert "↳ waiting: duplicate: same content as job j1" in text
    line = summary_line(ledger)
    assert line.endswith("; 2 waiting (duplicate, export rate limit)")
    out = io.StringIO()
    show(ledger, out, as_json=True)
    jobs = {j["source"]: j for j in json.loads(out.getvalue())}
    assert jobs["exp.mp4"]["error"] is None
    assert jobs["exp.mp4"]["wait"] == "export rate limit: too many exports"
    assert jobs["exp.mp4"]["wait_until"] == iso(now + 40)


def test_export_progress_goes_before_the_wait(ledger: Ledger, clock: FakeClock) -> None:
    now = clock.now()
    add(ledger, "x.mp4", Stage.PROCESSING, step="exports 3 of 12, next in 40 s", progress=25.0)
    slot = add(ledger, "slot.mp4", Stage.QUEUED)
    ledger.transition(slot, Stage.PROBED)
    text = render_table(ledger.jobs(), ledger.inboxes(), now=now, width=200)
    assert "↳ exports 3 of 12, next in 40 s" in text
    assert "↳ waiting: processing limit: its project is created when a slot is free" in text
