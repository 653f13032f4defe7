"""`watchd run` as a subprocess against the emulator over loopback: the failure paths.

Each test drives a real daemon with real files; the emulator's knobs make the Carmic side go
wrong on purpose, and the emulator's inspection state says what was (not) created and billed.
"""

from __future__ import annotations

import hashlib
import os
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
    env.write_config({"podcasts": RULE})
    podcasts = env.inbox / "podcasts"
    podcasts.mkdir()
    (podcasts / "empty.mp4").write_bytes(b"")
    whole = sample_videos[0].read_bytes()
    (podcasts / "truncated.mp4").write_bytes(whole[: len(whole) * 6 // 10])
    (podcasts / "noise.mp4").write_bytes(os.urandom(200_000))
    huge = podcasts / "huge.mp4"
    with open(huge, "wb") as f:
        f.write(whole[:4096])  # a real header: only the size is wrong
        f.truncate(5_100_000_000)  # sparse: no disk used
    env.start()
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
    assert (env.inbox / "_failed/podcasts/huge.mp4").stat().st_size == 5_100_000_000
    by_source = {j["source"]: j for j in jobs}
    assert "0 bytes" in by_source["podcasts/empty.mp4"]["error"]
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
    assert parked["error"] and parked["project_id"]
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
    # One login at start; every expiry after that is a refresh, not a new login.
    assert counters["logins"] == 1, counters
    assert counters["refreshes"] >= 2, counters
    expired = [r for r in snap["requests"] if r["status"] == 401]
    assert expired, "the test never ran into an expired token"
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
    dest.parent.mkdir()
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
