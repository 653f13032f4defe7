"""`watchd run` against the emulator: a writer that pauses keeps its file, and waits are told as
waits (in `watchd status`, once in the log), never as errors."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from tests.e2e.harness import Env, billed_projects, wait_for
from tests.e2e.test_service import metrics_url, sample, scrape
from tests.service.fakesystemd import NotifyRecorder

RULE = {"video_type": "podcast", "render": {"min_score": 0, "max_clips": 1}}


def test_a_writer_that_pauses_and_comes_back_keeps_its_file(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": RULE}, daemon={"settle_seconds": 0.5, "hold_seconds": 60})
    folder = env.inbox / "podcasts"
    folder.mkdir()
    whole = sample_videos[0].read_bytes()
    half = len(whole) // 2
    env.start()
    target = folder / "talk.mp4"
    # A network client writes the first half, closes, and pauses longer than settle_seconds.
    with open(target, "wb") as f:
        f.write(whole[:half])
    held = wait_for(
        lambda: [j for j in env.status() if (j.get("wait") or "").startswith("held")],
        timeout=30,
        what="the first half held as looking incomplete",
    )[0]
    assert held["state"] == "queued" and held["error"] is None
    assert "truncated" in held["wait"] and held["wait_until"]
    status = env.cli("status").stdout
    assert "waiting: held" in status and "error:" not in status
    assert target.exists() and not (env.inbox / "_failed").exists()
    # It comes back and appends the rest.
    with open(target, "ab") as f:
        f.write(whole[half:])
    jobs = env.wait_states({"podcasts/talk.mp4": "delivered"}, timeout=90)
    assert len(jobs) == 1, jobs
    assert jobs[0]["id"] == held["id"] and jobs[0]["wait"] is None
    m = env.manifest("podcasts/talk")
    assert m["status"] == "delivered" and m["source"]["size"] == len(whole)
    assert (env.inbox / "_done/podcasts/talk.mp4").read_bytes() == whole
    assert not (env.inbox / "_failed").exists()
    snap = env.emu.snapshot()
    assert [len(ids) for ids in billed_projects(snap).values()] == [1]
    assert [pr["filesize"] for pr in snap["projects"]] == [len(whole)]
    # One line when the hold started, one when it ended; not one per look.
    log = env.log()
    assert log.count("waiting: held") == 1, log
    assert log.count("wait over") >= 1
    assert env.stop() == 0


def test_a_truncated_file_left_alone_fails_after_the_hold(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": RULE}, daemon={"settle_seconds": 0.3, "hold_seconds": 2})
    folder = env.inbox / "podcasts"
    folder.mkdir()
    whole = sample_videos[1].read_bytes()
    (folder / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    env.start()
    jobs = env.wait_states({"podcasts/cut.mp4": "failed"}, timeout=60)
    assert jobs[0]["error_code"] == "probe_truncated"
    assert (env.inbox / "_failed/podcasts/cut.mp4").exists()
    assert env.emu.snapshot()["projects"] == []
    assert env.stop() == 0


def test_a_duplicate_waits_quietly_and_is_shown_as_waiting(
    env: Env, sample_videos: list[Path]
) -> None:
    # Renders slow enough that the second copy waits a while for the first job.
    env.emu.update(timings={"render": 1.5})
    env.write_config({"a": RULE}, carmic={"poll_seconds": 0.2}, daemon={"metrics": "127.0.0.1:0"})
    systemd = NotifyRecorder()
    env.start(**systemd.env())
    env.drop(sample_videos[2], "a/one.mp4")
    wait_for(lambda: env.status(), timeout=30, what="the first job")
    env.drop(sample_videos[2], "a/two.mp4")
    dup = wait_for(
        lambda: [j for j in env.status() if (j.get("wait") or "").startswith("duplicate")],
        timeout=30,
        what="the copy waiting for the first job",
    )[0]
    assert dup["error"] is None
    status = env.cli("status").stdout
    assert "waiting: duplicate" in status and "error:" not in status
    # systemd's STATUS= and the metrics say it in the same words.
    try:
        systemd.wait(lambda s: any(x.endswith("; 1 waiting (duplicate)") for x in s.statuses()))
    finally:
        systemd.close()
    base = metrics_url(env)
    wait_for(
        lambda: sample(scrape(base), "watchd_jobs_waiting", cause="duplicate") == 1,
        timeout=10,
        what="watchd_jobs_waiting{cause=duplicate} 1",
    )
    env.wait_states({"a/one.mp4": "delivered", "a/two.mp4": "delivered"}, timeout=90)
    dup_lines = [ln for ln in env.log().splitlines() if dup["id"] in ln and "wait" in ln]
    # Started once, ended once: not a line every few seconds.
    assert len(dup_lines) <= 2, dup_lines
    assert env.stop() == 0


def test_an_unreachable_api_is_told_within_seconds(env: Env) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.write_config(carmic={"api_url": f"http://127.0.0.1:{port}/api"})
    started = time.monotonic()
    env.start()
    lines = wait_for(
        lambda: [ln for ln in env.log().splitlines() if "cannot reach Carmic" in ln],
        timeout=10,
        what="the first warning about the API",
    )
    took = time.monotonic() - started
    # It names the real endpoint, with its scheme, and nothing of aiohttp's TLS guess.
    assert f"cannot connect to http://127.0.0.1:{port}: connection refused" in lines[0]
    assert "ssl:default" not in env.log() and lines[0].count("/v1/auth/login") <= 1
    print(f"first warning after {took:.1f} s")
    assert env.stop() == 0


def test_rule_folders_and_the_outbox_are_made_at_start_as_check_says(env: Env) -> None:
    shutil.rmtree(env.outbox)
    env.write_config({"podcasts": RULE, "clients/acme": RULE})
    said = env.cli("check", "--offline").stdout
    made = "(does not exist: `watchd run` creates it at start)"
    assert f"outbox  {env.outbox} {made}" in said
    assert f"{env.inbox}/clients/acme/ {made}" in said and f"{env.inbox}/podcasts/ {made}" in said
    env.start()
    wait_for(
        lambda: env.outbox.is_dir() and (env.inbox / "clients/acme").is_dir(),
        timeout=30,
        what="the outbox and the rule folders",
    )
    assert (env.inbox / "podcasts").is_dir()
    assert made not in env.cli("check", "--offline").stdout
    assert env.stop() == 0


def test_a_missing_inbox_is_told_loudly_by_check_and_run(env: Env) -> None:
    env.write_config({"podcasts": RULE})
    env.inbox.rmdir()
    check = env.cli("check", "--offline")
    assert check.returncode == 2
    assert f"{env.inbox} does not exist: `watchd run` waits for it" in check.stderr
    env.start()
    wait_for(lambda: "pausing inbox" in env.log(), timeout=30, what="the pause in the log")
    assert f"{env.inbox} does not exist (yet): `watchd run` waits for it" in env.log()
    status = env.cli("status").stdout
    assert f"! PAUSED inbox {env.inbox}: inbox {env.inbox} is missing" in status
    assert not env.inbox.exists()  # nothing made where a share may be mounted
    assert env.stop() == 0
