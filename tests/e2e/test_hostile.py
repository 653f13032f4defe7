"""`watchd run` against the emulator with hostile inbox entries: names that are not valid UTF-8,
names too long for a sidecar, symbolic links, FIFOs, and files still being written.

One entry that cannot be taken never holds up the others; each is reported once (a log line and
a row in `watchd status`) and left untouched."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Env, wait_for
from tests.service.inprocess import DaemonThread
from watchd.config import load_config
from watchd.daemon import Daemon
from watchd.watching import regular

RULE = {"video_type": "podcast", "render": "none"}
UTF8_REASON = "the name is not valid UTF-8: rename it"


def bad_name(folder: Path, raw: bytes) -> Path:
    """A path in ``folder`` whose last name is the raw bytes ``raw``."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))


def not_taken(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {j["source"]: j for j in jobs if j["id"] is None and j["state"] == "failed"}


def jobs_only(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {j["source"]: j for j in jobs if j["id"] is not None}


def log_lines(env: Env, needle: str) -> list[str]:
    return [line for line in env.log().splitlines() if needle in line]


def start_ready(env: Env, **daemon: Any) -> None:
    """Start the daemon on an inbox of RULE and wait until it has logged in and scanned."""
    env.write_config(inbox=RULE, daemon=daemon)
    env.start()
    wait_for(lambda: "ready:" in env.log(), timeout=30, what="the daemon ready")


def wait_scans(env: Env, count: int) -> None:
    """Wait until the daemon has finished ``count`` more full scans of the inbox."""
    import sqlite3

    def last_scan() -> float:
        with sqlite3.connect(env.state / "ledger.db") as db:
            row = db.execute("SELECT last_scan_at FROM inboxes").fetchone()
        return float(row[0]) if row and row[0] else 0.0

    for _ in range(count):
        before = last_scan()
        wait_for(lambda b=before: last_scan() > b, timeout=30, what="a rescan")


@pytest.mark.parametrize("scan", ["events", "poll"])
def test_bad_names_first_in_the_inbox_hold_up_nothing(
    env: Env, sample_videos: list[Path], scan: str
) -> None:
    """The reproduction: `bad\\xff.mp4`, `a1.mp4`, `z1.mp4` (and a bad name and a name too
    long for a sidecar sorting before everything), at start and dropped while it runs."""
    env.write_config(inbox=RULE, daemon={"scan": scan, "rescan_seconds": 1})
    shutil.copyfile(sample_videos[0], bad_name(env.inbox, b"0\xff first.mp4"))
    shutil.copyfile(sample_videos[1], bad_name(env.inbox, b"bad\xff.mp4"))
    long_name = "0" * 248 + ".mp4"  # 252 bytes: `<name>.toml` is 257, over NAME_MAX
    env.drop(sample_videos[2], long_name)
    long_ok = "1" * 246 + ".mp4"  # 250 bytes: its sidecar's name fits, and so does everything
    env.drop(sample_videos[3], "a1.mp4")
    env.drop(sample_videos[4], "z1.mp4")
    env.drop(sample_videos[5], long_ok)
    env.start()
    jobs = env.wait_states({"a1.mp4": "delivered", "z1.mp4": "delivered", long_ok: "delivered"})
    assert jobs_only(jobs)[long_name]["state"] == "failed"
    rows = not_taken(jobs)
    assert set(rows) == {"0\\xff first.mp4", "bad\\xff.mp4"}
    for row in rows.values():
        assert row["error"] == UTF8_REASON and row["name_escaped"] and row["rule"] == ""
        assert set(row) >= {"id", "path", "rule", "state", "project_id", "error", "updated_at"}

    # The name too long for a sidecar is a failed job, told in the outbox like other failures.
    failed = jobs_only(jobs)[long_name]
    assert failed["error_code"] == "name_too_long"
    assert "the name is too long for a sidecar (252 bytes)" in failed["error"]
    assert (env.outbox / ("0" * 248) / "FAILED.txt").exists()

    # On rescan, and for files dropped while it runs: the same.
    shutil.copyfile(sample_videos[5], bad_name(env.inbox, b"00\xfe late.mp4"))
    env.drop(sample_videos[5], "m1.mp4")
    env.wait_states({"m1.mp4": "delivered"})
    wait_scans(env, 3)
    jobs = env.status()
    assert set(not_taken(jobs)) == {"0\\xff first.mp4", "bad\\xff.mp4", "00\\xfe late.mp4"}
    # Reported once each, however many rescans saw them; no traceback.
    for shown in ("xff first.mp4", "xff.mp4", "xfe late.mp4"):
        lines = [x for x in log_lines(env, UTF8_REASON) if f"{shown}: " in x]
        assert len(lines) == 1, env.log()
    assert "Traceback" not in env.log()
    # Left untouched, and the table shows them too.
    assert bad_name(env.inbox, b"bad\xff.mp4").exists()
    table = env.cli("status").stdout
    assert "not taken    bad\\xff.mp4" in table and UTF8_REASON in table
    assert env.stop() == 0


def test_a_bulk_copy_with_a_bad_name_gives_every_good_file_a_job(
    env: Env, sample_videos: list[Path]
) -> None:
    start_ready(env, rescan_seconds=1)
    shutil.copyfile(sample_videos[0], bad_name(env.inbox, b"\xff.mp4"))
    for i in range(50):
        env.drop(sample_videos[i % 2], f"bulk{i:02d}.mp4")
    jobs = env.wait_states(51, timeout=180)
    assert len(jobs_only(jobs)) == 50
    assert all(j["state"] == "delivered" for j in jobs_only(jobs).values())
    assert list(not_taken(jobs)) == ["\\xff.mp4"]
    assert env.stop() == 0


@pytest.mark.parametrize("scan", ["events", "poll"])
def test_links_and_special_files_are_never_taken_and_reported_once(
    env: Env, sample_videos: list[Path], tmp_path: Path, scan: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(sample_videos[0], elsewhere / "real.mp4")
    (elsewhere / "inside.mp4").write_bytes(sample_videos[1].read_bytes())
    env.write_config({"podcasts": RULE}, inbox=RULE, daemon={"rescan_seconds": 1, "scan": scan})
    (env.inbox / "x.mp4").symlink_to(elsewhere / "real.mp4")
    (env.inbox / "secret.mp4").symlink_to("/etc/passwd")
    (env.inbox / "podcasts").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(env.inbox / "pipe.mp4")
    env.drop(sample_videos[2], "good.mp4")
    env.drop(sample_videos[3], "sidecar.mp4")
    (env.inbox / "sidecar.mp4.toml").symlink_to("/etc/passwd")  # a sidecar is not followed either
    env.start()
    env.wait_states({"good.mp4": "delivered", "sidecar.mp4": "failed"})
    # A link dropped while it runs is reported too.
    (env.inbox / "later.mp4").symlink_to(elsewhere / "real.mp4")
    wait_for(lambda: "later.mp4" in not_taken(env.status()), timeout=30, what="later.mp4")
    wait_scans(env, 3)

    snapshot = env.emu.snapshot()
    assert len(snapshot["projects"]) == 1  # good.mp4's only: nothing behind a link uploaded
    jobs = env.status()
    assert sorted(jobs_only(jobs)) == ["good.mp4", "sidecar.mp4"]
    assert jobs_only(jobs)["sidecar.mp4"]["error"].startswith(
        "the sidecar sidecar.mp4.toml is invalid: it is a symbolic link; only a regular file "
        "is read"
    )
    rows = not_taken(jobs)
    assert set(rows) == {"x.mp4", "secret.mp4", "podcasts", "pipe.mp4", "later.mp4"}
    assert "symbolic link" in rows["x.mp4"]["error"]
    assert "symbolic link to a folder" in rows["podcasts"]["error"]
    assert "FIFO" in rows["pipe.mp4"]["error"]
    for name in rows:
        assert len(log_lines(env, f"{env.inbox / name}: not taken")) == 1, env.log()
    # Left untouched.
    assert (env.inbox / "x.mp4").is_symlink() and (elsewhere / "real.mp4").exists()
    assert (env.inbox / "pipe.mp4").exists() and not (env.inbox / "_done" / "x.mp4").exists()
    assert not (env.outbox / "podcasts").exists() and not (env.outbox / "x").exists()

    # Gone: its row goes with it.
    (env.inbox / "x.mp4").unlink()
    wait_for(lambda: "x.mp4" not in not_taken(env.status()), timeout=30, what="x.mp4 gone")
    assert env.stop() == 0


def test_a_file_still_being_written_is_listed_as_settling(
    env: Env, sample_videos: list[Path]
) -> None:
    start_ready(env, settle_seconds=1)
    data = sample_videos[0].read_bytes()
    # Held open for writing by this process: never settled while the writer holds it.
    with open(env.inbox / "growing.mp4", "wb") as writer:
        writer.write(data[: len(data) // 2])
        writer.flush()

        def settling(text: str) -> dict[str, Any] | None:
            rows = [j for j in env.status() if j["state"] == "settling"]
            return next((j for j in rows if text in j["step"]), None)

        # Unchanged for settle_seconds, but still held open for writing: said so, not taken.
        row = wait_for(lambda: settling("open for writing"), timeout=30, what="a settling row")
        assert row["source"] == "growing.mp4" and row["id"] is None and row["error"] is None
        assert row["step"].startswith(
            "waiting for the copy to finish: open for writing by a program, unchanged for "
        )
        table = env.cli("status").stdout
        assert "settling     growing.mp4" in table
        writer.write(data[len(data) // 2 :])
    jobs = env.wait_states({"growing.mp4": "delivered"})
    assert [j["state"] for j in jobs] == ["delivered"]  # the settling row went
    assert env.stop() == 0


def test_an_unreadable_file_is_a_failed_job_and_holds_up_nothing(
    env: Env, sample_videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """chmod 000 does not stop root (the tests run as root): the daemon runs in this process,
    and the one call that opens sources (``regular._open``) refuses the file as the kernel
    would refuse an unprivileged user."""
    real_open = regular._open

    def refusing(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if os.fspath(path).endswith("0 locked.mp4"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return int(real_open(path, flags, *args, **kw))

    monkeypatch.setattr(regular, "_open", refusing)
    env.write_config(inbox=RULE, daemon={"rescan_seconds": 1})
    env.drop(sample_videos[0], "0 locked.mp4")
    env.drop(sample_videos[1], "a1.mp4")
    runner = DaemonThread(Daemon(load_config(env.config_path)))
    try:
        jobs = env.wait_states({"a1.mp4": "delivered", "0 locked.mp4": "failed"})
    finally:
        assert runner.stop() == 0
    failed = jobs_only(jobs)["0 locked.mp4"]
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert failed["error_code"] == "unreadable"
    assert failed["error"].startswith(f"cannot read: permission denied for user {user}")
    text = (env.outbox / "0 locked" / "FAILED.txt").read_text()
    assert f"permission denied for user {user}" in text and "chmod" in text
    assert len(env.emu.snapshot()["projects"]) == 1


def test_any_error_of_one_entry_stays_with_it(
    env: Env,
    sample_videos: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fault injection: whatever raises while one file is taken (here the preset lookup, for
    one name) is recorded against that file, logged once, and the others go on."""
    from watchd import daemon as daemon_mod

    real_resolve = daemon_mod.resolve_preset

    def failing(inbox: Any, rel: Any, sidecar: Any = None) -> Any:
        if str(rel).endswith("0 boom.mp4"):
            raise RuntimeError("injected")
        return real_resolve(inbox, rel, sidecar)

    monkeypatch.setattr(daemon_mod, "resolve_preset", failing)
    env.write_config(inbox=RULE, daemon={"rescan_seconds": 1})
    env.drop(sample_videos[0], "0 boom.mp4")
    env.drop(sample_videos[1], "a1.mp4")
    caplog.set_level(logging.WARNING)
    runner = DaemonThread(Daemon(load_config(env.config_path)))
    try:
        env.wait_states({"a1.mp4": "delivered"})
        wait_scans(env, 3)  # each rescan tries the file again
        jobs = env.status()
    finally:
        assert runner.stop() == 0
    row = not_taken(jobs)["0 boom.mp4"]
    assert row["error_code"] == "error" and row["error"] == "not taken: RuntimeError: injected"
    assert sorted(jobs_only(jobs)) == ["a1.mp4"]
    assert not [r for r in caplog.records if "step of the main loop failed" in r.getMessage()]
    told = [r for r in caplog.records if "RuntimeError: injected" in r.getMessage()]
    assert len(told) == 1 and told[0].exc_info is not None  # once, with its traceback


def test_a_file_still_growing_is_listed_as_settling(env: Env, sample_videos: list[Path]) -> None:
    start_ready(env, settle_seconds=5)
    data = sample_videos[0].read_bytes()
    growing = env.inbox / "growing.mp4"
    sent = 0

    def grow_then_look() -> dict[str, Any] | None:
        """Append a piece (closing the file each time, as a network copy does), then look."""
        nonlocal sent
        with open(growing, "ab") as f:
            f.write(data[sent : sent + 4096])
        sent += 4096
        rows = [j for j in env.status() if j["state"] == "settling"]
        return rows[0] if rows else None

    row = wait_for(grow_then_look, timeout=30, what="a settling row")
    assert row["source"] == "growing.mp4" and row["id"] is None
    assert row["step"].startswith("waiting for the copy to finish: unchanged for ")
    assert row["step"].endswith(" s of 5")
    growing.write_bytes(data)
    env.wait_states({"growing.mp4": "delivered"})
    assert env.stop() == 0
