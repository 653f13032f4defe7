"""`watchd run` as a subprocess against the emulator over loopback: the failure paths.

Each test drives a real daemon with real files; the emulator's knobs make the Carmic side go
wrong on purpose, and the emulator's inspection state says what was (not) created and billed.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import random
import re
import time
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.e2e.harness import Env, billed_projects, iter_manifests, wait_for
from watchd.emulator import Faults, Variants
from watchd.emulator.bundles import EVIL_LINK, EVIL_MEMBERS
from watchd.emulator.content import HOSTILE_TITLES
from watchd.media import make_sample_video

RULE = {"video_type": "podcast", "render": {"min_score": 0, "max_clips": 2}}
# Without the API's pacing: tests that export many clips must not wait a minute for a slot.
UNPACED = {"creates_per_minute": 1000, "exports_per_minute": 1000}


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 43 s videos: seven clips each, so that between them every hostile title is used."""
    root = tmp_path_factory.mktemp("long")
    out = []
    for i in range(2):
        p = root / f"long{i}.mp4"
        make_sample_video(p, seconds=43.0, width=160, height=90, fps=5, label=f"long{i}")
        out.append(p)
    return out


def create_requests(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in snapshot["requests"]
        if r["method"] == "POST" and r["path"].endswith("/v1/projects/create")
    ]


def job_of(jobs: list[dict[str, Any]], source: str) -> dict[str, Any]:
    return next(j for j in jobs if j["source"] == source)


def assert_failed_in_outbox(env: Env, folder: str, code_part: str) -> dict[str, Any]:
    """The failure is told in the outbox: a failed manifest with the error, a FAILED.txt."""
    m = env.manifest(folder)
    assert m["status"] == "failed", m
    assert m["clips"] == [] and m["project_id"] is None
    assert code_part in m["error"]["code"], m["error"]
    assert m["error"]["message"]
    text = (env.outbox / folder / "FAILED.txt").read_text()
    assert text.startswith("FAILED: ") and "What went wrong:" in text and "What to do:" in text
    assert m["error"]["message"].splitlines()[0][:40] in text
    return m


# ---- 1. local failures: nothing is billed ------------------------------------------------------


def test_bad_files_fail_locally_without_a_project(env: Env, sample_videos: list[Path]) -> None:
    # A truncated file is held hold_seconds in case its writer comes back (test_truth.py).
    env.write_config({"podcasts": RULE}, daemon={"hold_seconds": 1})
    podcasts = env.inbox / "podcasts"
    podcasts.mkdir()
    (podcasts / "empty.mp4").write_bytes(b"")
    whole = sample_videos[0].read_bytes()
    (podcasts / "truncated.mp4").write_bytes(whole[: len(whole) * 6 // 10])
    (podcasts / "noise.mp4").write_bytes(random.Random(1).randbytes(200_000))
    huge = podcasts / "huge.mp4"
    with open(huge, "wb") as f:
        f.write(whole[:4096])  # a real header: only the size is wrong
        f.truncate(5_100_000_000)  # sparse: no disk used
    # In the foreground (not under systemd): the log advice points to the daemon's output.
    env.start(drop=("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM"))
    expected = {
        "podcasts/empty.mp4": "empty",
        "podcasts/truncated.mp4": "truncated",
        "podcasts/noise.mp4": "not_video",
        "podcasts/huge.mp4": "too_large",
    }
    jobs = env.wait_states(dict.fromkeys(expected, "failed"), timeout=60)
    for source, code in expected.items():
        job = job_of(jobs, source)
        assert job["error"], job
        assert job["project_id"] is None
        stem = Path(source).stem
        assert_failed_in_outbox(env, f"podcasts/{stem}", code)
        # Moved to _failed/<rule>/ (on_failure = "move"), the same size as before.
        moved = env.inbox / "_failed/podcasts" / Path(source).name
        assert moved.exists(), source
        assert not (env.inbox / source).exists()
        # FAILED.txt beside the moved source too, with advice that fits a foreground daemon.
        beside = moved.with_name(moved.name + ".FAILED.txt").read_text()
        assert beside == (env.outbox / f"podcasts/{stem}/FAILED.txt").read_text()
        assert "journalctl" not in beside and f'"job {job["id"]}"' in beside
        # One hint, said once.
        assert job["error"].count(" — ") == 1
    assert (env.inbox / "_failed/podcasts/huge.mp4").stat().st_size == 5_100_000_000
    by_source = {j["source"]: j for j in jobs}
    assert "0 bytes" in by_source["podcasts/empty.mp4"]["error"]
    noise = by_source["podcasts/noise.mp4"]["error"]
    assert "not a readable video" in noise and "Only video files" not in noise
    snap = env.emu.snapshot()
    assert create_requests(snap) == []
    assert snap["counters"]["creates"] == 0 and snap["projects"] == []
    assert all(ws["charges"] == [] for ws in snap["billing"].values())
    assert env.stop() == 0


# ---- 2. hostile names and zip-slip bundles stay inside the outbox ------------------------------

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in range(10)
}


def assert_sane_name(name: str) -> None:
    assert name not in ("", ".", ".."), name
    assert len(name.encode()) <= 255, name
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in name), repr(name)
    assert not set(name) & set('/\\:*?"<>|'), name
    assert name == name.rstrip(". ") and not name.startswith("."), repr(name)
    assert name.split(".")[0].upper().rstrip() not in _WINDOWS_RESERVED, name
    assert unicodedata.normalize("NFC", name) == name


def tree(root: Path, *, skip: tuple[Path, ...] = ()) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        out.update(str((here / n).relative_to(root)) for n in dirnames + filenames)
    return out


def test_hostile_titles_and_zip_slip_bundles_stay_inside_the_outbox(
    env: Env, long_videos: list[Path]
) -> None:
    env.emu.update(
        variants=Variants(hostile_titles=True),
        faults=Faults(evil_bundles=True),
        exports_per_minute=0,
        creates_per_minute=0,
    )
    env.write_config(
        {"shows": {"render": "all", "exports": ["premiere"], "captions": True}},
        carmic=UNPACED,
    )
    outside_before = tree(env.root.parent, skip=(env.root,)) | tree(
        env.root, skip=(env.outbox, env.inbox, env.state)
    )
    env.start()
    env.drop(long_videos[0], "shows/first.mp4")
    env.drop(long_videos[1], "shows/second.mp4")
    env.wait_states({"shows/first.mp4": "delivered", "shows/second.mp4": "delivered"})
    assert env.stop() == 0

    titles: list[str] = []
    folders = {p.relative_to(env.outbox).as_posix() for p, _ in iter_manifests(env.outbox)}
    assert folders == {"shows/first", "shows/second"}
    for folder, m in iter_manifests(env.outbox):
        assert m["status"] == "delivered", m
        real = folder.resolve()
        files = [c["file"] for c in m["clips"]]
        assert len(set(files)) == len(files) == len(m["clips"]) == 7
        for c in m["clips"]:
            titles.append(c["title"])
            paths = [c["file"], c["captions"], c.get("thumbnail")]
            paths += [e["path"] for e in c["exports"]]
            for rel in filter(None, paths):
                pure = PurePosixPath(rel)
                assert not pure.is_absolute() and ".." not in pure.parts, rel
                target = (folder / rel).resolve()
                assert target.is_relative_to(real) and target.exists(), rel
            assert [e["format"] for e in c["exports"]] == ["premiere"]
        # Each bundle's escape attempts are told, and the bundle's real content is there.
        left_out = [s["what"] for s in m["skipped"] if "member" in s["what"]]
        for member in (*EVIL_MEMBERS, EVIL_LINK[0]):
            assert sum(member in w for w in left_out) == 7, (member, left_out)
    assert sorted(titles) == sorted(HOSTILE_TITLES)

    # Every name in the outbox is one any share accepts; nothing is a link.
    for dirpath, dirnames, filenames in os.walk(env.outbox):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            assert not path.is_symlink(), path
            assert_sane_name(name)
    # Nothing was written anywhere else (the tree around the outbox is as it was).
    outside_after = tree(env.root.parent, skip=(env.root,)) | tree(
        env.root, skip=(env.outbox, env.inbox, env.state)
    )
    assert outside_after - outside_before <= {"daemon.log"}, outside_after - outside_before
    escaped = {Path(m.replace("\\", "/")).name for m in EVIL_MEMBERS}
    for name in escaped:
        assert not (Path("/") / name).exists()
        assert not list(env.root.rglob(name)), name


# ---- 3. out of minutes: parked, topped up, retried, delivered once ----------------------------


def test_402_parks_then_retry_delivers_with_one_billed_project(
    env: Env, sample_videos: list[Path]
) -> None:
    # Enough minutes for the ingest of a 12 s video (1), none left for its renders.
    env.emu.update(minutes=1)
    env.write_config({"podcasts": RULE})
    env.start()
    env.drop(sample_videos[0], "podcasts/ep.mp4")
    parked = wait_for(
        lambda: [j for j in env.status() if j["state"] == "parked"],
        timeout=30,
        what="the job parked",
    )[0]
    assert "minutes" in parked["park_reason"] and "billing" in parked["park_reason"]
    # A wait, shown as one: never in the error column.
    assert parked["error"] is None and parked["project_id"]
    assert parked["wait"] == parked["park_reason"] and parked["wait_until"]
    assert "waiting" in env.cli("status").stdout
    # Nothing was delivered and the source has not moved.
    assert not list(env.outbox.rglob("manifest.json"))
    assert (env.inbox / "podcasts/ep.mp4").exists()

    env.emu.add_minutes(10)
    assert env.cli("retry", parked["id"]).returncode == 0
    jobs = env.wait_states({"podcasts/ep.mp4": "delivered"}, timeout=30)
    assert jobs[0]["project_id"] == parked["project_id"]
    assert env.manifest("podcasts/ep")["status"] == "delivered"
    snap = env.emu.snapshot()
    assert [len(ids) for ids in billed_projects(snap).values()] == [1]
    assert len(create_requests(snap)) == 1
    # Each rendered clip was billed once: the refused render cost nothing.
    renders = [
        ch for ws in snap["billing"].values() for ch in ws["charges"] if ch["kind"] == "render"
    ]
    assert len(renders) == len(env.manifest("podcasts/ep")["clips"])
    assert env.cli("retry", "no-such-job").returncode == 1
    assert env.stop() == 0


# ---- 4. the access token expires again and again while work goes on --------------------------


def test_token_expiry_mid_run_refreshes_without_logging_in_again(
    env: Env, sample_videos: list[Path]
) -> None:
    env.emu.update(access_ttl=2, timings={"step": 0.25, "render": 0.3})
    env.write_config({"podcasts": RULE})
    env.start()
    for i in range(4):
        env.drop(sample_videos[i], f"podcasts/ep{i}.mp4")
    jobs = env.wait_states(dict.fromkeys((f"podcasts/ep{i}.mp4" for i in range(4)), "delivered"))
    assert all(j["error"] is None for j in jobs)
    snap = env.emu.snapshot()
    counters = snap["counters"]
    # One login at start; every expiry after that is a refresh, not a new login, and mostly
    # one made ahead of the expiry (a token whose whole seconds round badly may still get 401s).
    assert counters["logins"] == 1, counters
    assert counters["refreshes"] >= 1, counters
    expired = [r for r in snap["requests"] if r["status"] == 401]
    assert len(expired) <= 2 * counters["refreshes"], (len(expired), counters)
    assert [len(ids) for ids in billed_projects(snap).values()] == [1, 1, 1, 1]
    assert env.stop() == 0


# ---- 5. a slow copy in poll mode is not taken before it ends ---------------------------------


def test_slow_chunked_copy_in_poll_mode_is_taken_only_when_complete(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": RULE}, daemon={"scan": "poll", "settle_seconds": 1.0})
    env.start()
    wait_for(lambda: "ready:" in env.log(), timeout=30, what="the daemon ready")
    data = sample_videos[1].read_bytes()
    dest = env.inbox / "podcasts/slow.mp4"
    assert dest.parent.is_dir()  # rule folders are made at start
    chunks = [data[i : i + len(data) // 10 + 1] for i in range(0, len(data), len(data) // 10 + 1)]
    assert len(chunks) >= 10
    for chunk in chunks:
        # The file is closed between chunks (as an SMB client or `rsync --append` does), so only
        # settling can tell that the copy is not over; each pause is shorter than settle_seconds.
        with open(dest, "ab") as f:
            f.write(chunk)
        time.sleep(0.4)  # the writer is slow: that is the scenario, not a wait on the daemon
    last_write = dest.stat().st_mtime
    env.wait_states({"podcasts/slow.mp4": "delivered"}, timeout=40)
    snap = env.emu.snapshot()
    creates = create_requests(snap)
    puts = [r for r in snap["requests"] if r["origin"] == "storage" and r["method"] == "PUT"]
    assert len(creates) == 1 and len(puts) == 1, (creates, puts)
    assert creates[0]["t"] >= last_write + 1.0
    assert (puts[0]["started"] or puts[0]["t"]) >= last_write + 1.0
    (project,) = snap["projects"]
    assert project["upload"]["size"] == len(data)
    assert project["upload"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert env.stop() == 0


# ---- 6. faults on the Carmic side ------------------------------------------------------------


def events_of(env: Env, kind: str) -> list[dict[str, Any]]:
    """Rows of the ledger's event table of one kind (read like `status` does: read-only)."""
    import sqlite3

    db = sqlite3.connect(f"file:{env.state / 'ledger.db'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
        return [dict(r) for r in rows]
    finally:
        db.close()


def assert_no_secrets_logged(env: Env) -> None:
    """Failures log URLs and responses: never a signature, a token or the password."""
    text = env.log()
    assert "X-Amz-Signature=" not in text and "X-Amz-Credential=" not in text
    assert env.emu.seed_password not in text
    assert not re.search(r"eyJ[\w-]{10,}\.[\w-]{10,}\.", text), "a JWT in the log"
    assert not re.search(r"ticket=[\w-]{8,}", text), "an SSE ticket in the log"


def assert_one_billed_project_each(env: Env, n: int) -> dict[str, Any]:
    assert_no_secrets_logged(env)
    snap = env.emu.snapshot()
    billed = billed_projects(snap)
    assert sorted(len(ids) for ids in billed.values()) == [1] * n, billed
    return snap


def drop_three(env: Env, sample_videos: list[Path]) -> dict[str, str]:
    """Three files at once, on a tier without a processing limit (so they run side by side)."""
    env.emu.update(tier="ENTERPRISE")
    names = {f"podcasts/f{i}.mp4": "delivered" for i in range(3)}
    for i, rel in enumerate(names):
        env.drop(sample_videos[i], rel)
    return names


def test_random_5xx_everything_still_delivered_once(env: Env, sample_videos: list[Path]) -> None:
    env.emu.update(faults=Faults(error_rate=0.2))
    env.write_config({"podcasts": RULE})
    names = drop_three(env, sample_videos)
    env.start()
    env.wait_states(names, timeout=60)
    snap = assert_one_billed_project_each(env, 3)
    assert snap["counters"]["injected_errors"] > 0
    assert env.stop() == 0


def test_create_committed_then_answer_lost_bills_one_project(
    env: Env, sample_videos: list[Path]
) -> None:
    # Every create is committed (and billed) and then answered with a 500 or a dropped
    # connection: the daemon only ever learns of its projects by searching for its markers.
    env.emu.update(faults=Faults(create_commit_then_fail=1.0), creates_per_minute=0)
    env.write_config({"podcasts": RULE}, carmic=UNPACED)
    names = drop_three(env, sample_videos)
    env.start()
    wait_for(
        lambda: env.emu.snapshot()["counters"]["commit_then_fail"] >= 3,
        timeout=30,
        what="lost creates",
    )
    env.emu.update(faults=Faults())
    env.wait_states(names, timeout=60)
    snap = assert_one_billed_project_each(env, 3)
    orphans = [p for p in snap["projects"] if p["deleted"]]
    assert orphans and all(p["refunded"] or not p["billed"] for p in orphans)
    assert events_of(env, "orphan_deleted") or events_of(env, "create_recovered")
    assert env.stop() == 0


def test_upload_resets_are_retried_from_the_start(env: Env, sample_videos: list[Path]) -> None:
    env.emu.update(faults=Faults(upload_reset_rate=0.5))
    env.write_config({"podcasts": RULE})
    env.start()
    env.wait_states(drop_three(env, sample_videos), timeout=60)
    snap = assert_one_billed_project_each(env, 3)
    assert snap["counters"]["upload_resets"] > 0
    for p in snap["projects"]:
        if not p["deleted"]:
            assert p["upload"]["size"] == p["filesize"]
    assert env.stop() == 0


def test_cut_sse_streams_are_reconnected(env: Env, sample_videos: list[Path]) -> None:
    env.emu.update(faults=Faults(sse_cut_after=1), timings={"step": 0.2})
    env.write_config({"podcasts": RULE})
    env.start()
    env.wait_states(drop_three(env, sample_videos), timeout=60)
    counters = assert_one_billed_project_each(env, 3)["counters"]
    # More connections than projects: every cut stream was opened again (with a new ticket).
    assert (
        counters["sse_connections"] > 3 and counters["sse_tickets"] >= counters["sse_connections"]
    )
    assert env.stop() == 0


def run_one(
    env: Env,
    video: Path,
    name: str = "ep",
    *,
    state: str = "delivered",
    rule: dict[str, Any] = RULE,
    carmic: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the daemon on one rule, drop ``video`` as ``podcasts/<name>.mp4``, wait until its
    job reaches ``state``; returns the job's status row."""
    env.write_config({"podcasts": rule}, carmic=carmic)
    env.start()
    env.drop(video, f"podcasts/{name}.mp4")
    (job,) = env.wait_states({f"podcasts/{name}.mp4": state})
    return job


def test_render_failure_is_retried_and_delivered(env: Env, sample_videos: list[Path]) -> None:
    env.emu.update(faults=Faults(render_fail_first=1))
    run_one(env, sample_videos[0])
    m = env.manifest("podcasts/ep")
    assert m["status"] == "delivered" and m["skipped"] == [] and len(m["clips"]) == 2
    snap = env.emu.snapshot()
    clips = {c["id"]: c for p in snap["projects"] for c in p["clips"]}
    for c in m["clips"]:
        attempts = clips[c["id"]]["renders"]
        assert [r["status"] for r in attempts] == ["FAILED_RENDER", "RENDERED"]
        assert [r["refunded"] for r in attempts] == [True, False]
    assert env.stop() == 0


def test_a_clip_that_never_renders_gives_a_partial_delivery(
    env: Env, sample_videos: list[Path]
) -> None:
    env.emu.update(faults=Faults(render_fail_clips=1))
    run_one(env, sample_videos[0])
    m = env.manifest("podcasts/ep")
    assert m["status"] == "partial"
    assert len(m["clips"]) == 1 and m["clips"][0]["file"].startswith("01 - ")
    (skipped,) = m["skipped"]
    assert skipped["what"].startswith("render ") and "failed" in skipped["reason"].lower()
    # The failed clip was tried 1 + max_render_retries times, and never left billed.
    snap = env.emu.snapshot()
    (project,) = snap["projects"]
    bad = project["clips"][0]  # clips are listed by index: the first one is the one that fails
    assert [r["status"] for r in bad["renders"]] == ["FAILED_RENDER"] * 3
    assert sum(not r["refunded"] for r in bad["renders"]) <= 1
    assert (env.inbox / "_done/podcasts/ep.mp4").exists()
    assert env.stop() == 0


@pytest.mark.parametrize("cause", ["export_failures", "free_tier"])
def test_exports_that_cannot_be_had_are_skipped(
    env: Env, sample_videos: list[Path], cause: str
) -> None:
    if cause == "free_tier":
        env.emu.update(tier="FREE")
    else:
        env.emu.update(faults=Faults(export_fail_rate=1.0))
    run_one(
        env, sample_videos[0], rule={**RULE, "exports": ["premiere", "davinci"]}, carmic=UNPACED
    )
    m = env.manifest("podcasts/ep")
    assert m["status"] == "delivered" and m["clips"]
    assert all(c["exports"] == [] and c["file"] for c in m["clips"])
    exports = [s for s in m["skipped"] if s["what"].startswith("export ")]
    assert len(exports) == 2 * len(m["clips"]), m["skipped"]
    for s in exports:
        if cause == "free_tier":
            assert "402" in s["reason"] or "plan" in s["reason"], s
        else:
            assert "failed" in s["reason"].lower(), s
    assert not (env.outbox / "podcasts/ep/exports").exists()
    assert env.stop() == 0


def test_project_failure_fails_the_job_with_the_api_reason(
    env: Env, sample_videos: list[Path]
) -> None:
    env.emu.update(faults=Faults(fail_project="FAILED_NO_SPEECH"))
    job = run_one(env, sample_videos[0], "quiet", state="failed")
    assert "FAILED_NO_SPEECH" in job["error"] and "No speech" in job["error"]
    m = env.manifest("podcasts/quiet")
    assert m["status"] == "failed" and m["project_id"] == job["project_id"]
    assert m["error"]["code"] == "failed_no_speech" and "No speech" in m["error"]["message"]
    assert "no speech" in (env.outbox / "podcasts/quiet/FAILED.txt").read_text().lower()
    assert (env.inbox / "_failed/podcasts/quiet.mp4").exists()
    # A failed ingestion is refunded by the API: nothing stays billed.
    assert billed_projects(env.emu.snapshot()) == {}
    assert env.stop() == 0


# ---- 8. the presigned upload URL expires before the upload -------------------------------------


def ledger_job(env: Env, source: str) -> dict[str, Any]:
    import sqlite3

    db = sqlite3.connect(f"file:{env.state / 'ledger.db'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM jobs WHERE rel_path = ?", (source,)).fetchone()
        return dict(row)
    finally:
        db.close()


def test_expired_upload_url_after_a_stop_recreates_the_project(
    env: Env, sample_videos: list[Path]
) -> None:
    # Short-lived upload URLs, and uploads that fail until the daemon has been stopped: the job
    # is left in `uploading` with a URL that expires while the daemon is down.
    env.emu.update(upload_url_ttl=2, faults=Faults(upload_reset_rate=1.0))
    env.write_config({"podcasts": RULE})
    env.start()
    env.drop(sample_videos[0], "podcasts/ep.mp4")
    wait_for(
        lambda: env.emu.snapshot()["counters"]["upload_resets"] >= 1,
        timeout=30,
        what="a failed upload",
    )
    assert env.stop() == 0
    job = ledger_job(env, "podcasts/ep.mp4")
    assert job["state"] == "uploading" and job["upload_url"]
    first_project = job["project_id"]
    query = dict(q.split("=", 1) for q in job["upload_url"].split("?", 1)[1].split("&"))
    signed = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    expires_at = signed + int(query["X-Amz-Expires"])
    wait_for(lambda: time.time() > expires_at + 1, timeout=10, what="the upload URL expired")

    env.emu.update(faults=Faults())
    env.start()
    (done,) = env.wait_states({"podcasts/ep.mp4": "delivered"}, timeout=40)
    assert done["project_id"] != first_project
    restarts = events_of(env, "project_restarted")
    assert len(restarts) == 1
    detail = json.loads(restarts[0]["detail"])
    assert "expired" in detail["reason"] and detail["old_project_id"] == first_project
    snap = assert_one_billed_project_each(env, 1)
    old = next(p for p in snap["projects"] if p["id"] == first_project)
    assert old["deleted"] and (old["refunded"] or not old["billed"])
    assert env.stop() == 0
