"""`watchd run` as a subprocess against the emulator over loopback: every plausible reading of
the loose spots of the Carmic reference (the emulator's ``Variants``) ends in a delivery.

Each reading is served by the emulator in turn; the emulator's request log then shows that the
daemon really took the path the reading is about (an SSE stream, not quiet polling; a refused
create or /process learned from, not hammered).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Env, billed_projects, wait_for
from tests.e2e.test_failures import RULE, UNPACED, events_of
from watchd.emulator import Variants

# Settling is not what these tests are about: take files soon.
FAST = {"settle_seconds": 0.2}
# Nor, mostly, are renders: every clip is delivered with its captions but not rendered.
UNRENDERED = {**RULE, "render": "none"}


def ledger_states(env: Env) -> dict[str, str]:
    """Source -> state, read straight from the ledger (cheaper than a `watchd status` process
    per poll; the contract's view is checked once at the end)."""
    try:
        db = sqlite3.connect(f"file:{env.state / 'ledger.db'}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return {}
    try:
        return dict(db.execute("SELECT rel_path, state FROM jobs").fetchall())
    except sqlite3.OperationalError:
        return {}  # the daemon is still creating its tables
    finally:
        db.close()


def start(
    env: Env,
    files: dict[str, Path],
    *,
    rule: dict[str, Any] = RULE,
    carmic: dict[str, Any] | None = None,
) -> None:
    """Start the daemon on one rule (``podcasts``) and drop ``files`` (inbox path -> sample)."""
    env.write_config({"podcasts": rule}, carmic=carmic, daemon=FAST)
    env.start()
    for rel, src in files.items():
        env.drop(src, rel)


def wait_delivered(env: Env, names: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    """Wait until every one of ``names`` is delivered; return `watchd status --json`."""

    def done() -> bool:
        assert env.proc is not None
        if env.proc.poll() is not None:
            raise AssertionError(f"daemon exited {env.proc.returncode}:\n{env.log()[-4000:]}")
        states = ledger_states(env)
        assert "failed" not in states.values(), f"{states}\n{env.log()[-4000:]}"
        return all(states.get(n) == "delivered" for n in names)

    try:
        wait_for(done, timeout=timeout, interval=0.05, what=f"{names} delivered")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- daemon log ---\n{env.log()[-6000:]}") from None
    jobs = env.status()
    assert {j["source"]: j["state"] for j in jobs} == dict.fromkeys(names, "delivered"), jobs
    return jobs


def deliver_one(
    env: Env, video: Path, *, rule: dict[str, Any] = RULE, carmic: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``video`` dropped as ``podcasts/ep.mp4`` and delivered; its status row and manifest."""
    start(env, {"podcasts/ep.mp4": video}, rule=rule, carmic=carmic)
    (job,) = wait_delivered(env, ["podcasts/ep.mp4"])
    m = env.manifest("podcasts/ep")
    assert m["status"] == "delivered" and m["project_id"] == job["project_id"], m
    return job


def requests_to(snap: dict[str, Any], method: str, pattern: str) -> list[dict[str, Any]]:
    """The API requests of ``method`` whose path (query stripped) matches ``pattern``."""
    rx = re.compile(pattern)
    return [
        r
        for r in snap["requests"]
        if r["origin"] == "api" and r["method"] == method and rx.search(r["path"])
    ]


# ---- realtime: the SSE ticket wrapped or bare; polling only --------------------------------------


@pytest.mark.parametrize("ticket", ["data", "bare"])
def test_sse_ticket_either_shape_opens_a_live_stream(
    env: Env, sample_videos: list[Path], ticket: str
) -> None:
    # Processing lasts long enough that the first status read cannot already say CLIPS_READY:
    # the clips must come from the stream.
    env.emu.update(variants=Variants(sse_ticket=ticket), timings={"step": 0.2})
    job = deliver_one(env, sample_videos[0], rule=UNRENDERED, carmic={"realtime": "sse"})
    pid = job["project_id"]
    snap = env.emu.snapshot()
    tickets = requests_to(snap, "POST", r"/v1/sse-ticket$")
    streams = requests_to(snap, "GET", rf"/v1/projects/{pid}/stream$")
    assert tickets and all(r["status"] == 200 for r in tickets), tickets
    assert streams and all(r["query_keys"] == ["ticket"] for r in streams), streams
    assert any(r["status"] == 200 for r in streams), streams
    assert snap["counters"]["sse_events"] > 0
    # The stream did the following: one look at the project before it opened (which also
    # catches a project done before the stream could tell), one for the clips; no status reads.
    assert requests_to(snap, "GET", rf"/v1/projects/{pid}/status$") == []
    looks = requests_to(snap, "GET", rf"/v1/projects/{pid}$")
    assert len(looks) == 2, looks
    assert "progress stream unavailable" not in env.log()
    assert env.stop() == 0


def test_poll_mode_never_touches_sse(env: Env, sample_videos: list[Path]) -> None:
    env.emu.update(timings={"step": 0.1})
    job = deliver_one(env, sample_videos[0], rule=UNRENDERED, carmic={"realtime": "poll"})
    snap = env.emu.snapshot()
    assert requests_to(snap, "POST", r"/v1/sse-ticket$") == []
    assert requests_to(snap, "GET", r"/stream$") == []
    assert snap["counters"]["sse_tickets"] == snap["counters"]["sse_connections"] == 0
    assert len(requests_to(snap, "GET", rf"/v1/projects/{job['project_id']}/status$")) >= 2
    assert env.stop() == 0


# ---- transcript word times: relative to the clip or to the source --------------------------------

_SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
_SRT_CUE = re.compile(rf"^{_SRT_TIME} --> {_SRT_TIME}$", re.MULTILINE)


def srt_cues(text: str) -> list[tuple[float, float]]:
    """The (start, end) seconds of every cue of an SRT file."""

    def secs(h: str, m: str, s: str, ms: str) -> float:
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    return [(secs(*m.groups()[:4]), secs(*m.groups()[4:])) for m in _SRT_CUE.finditer(text)]


@pytest.mark.parametrize("times", ["clip", "source"])
def test_captions_are_clip_relative_whatever_the_transcript_frame(
    env: Env, sample_videos: list[Path], times: str
) -> None:
    env.emu.update(variants=Variants(transcript_times=times))
    deliver_one(env, sample_videos[0], rule={**UNRENDERED, "captions": True})
    m = env.manifest("podcasts/ep")
    assert len(m["clips"]) >= 2
    # A clip that starts well into the source tells the two frames apart.
    assert max(c["start_time"] for c in m["clips"]) > 3.0
    for c in m["clips"]:
        duration = c["end_time"] - c["start_time"]
        cues = srt_cues((env.outbox / "podcasts/ep" / c["captions"]).read_text())
        assert cues, c
        # The emulator's speech fills each clip from its first frame to its last.
        assert cues[0][0] <= 0.5, (c, cues[:2])
        assert all(0 <= a < b <= duration + 0.01 for a, b in cues), (c, cues)
        assert cues[-1][1] >= duration - 1.0, (c, cues[-2:])
        assert [a for a, _ in cues] == sorted(a for a, _ in cues)
    assert env.stop() == 0


# ---- the status a finished export ends in --------------------------------------------------------


@pytest.mark.parametrize("done", ["COMPLETED", "READY", "done", "SUCCEEDED"])
def test_finished_exports_are_downloaded_whatever_their_final_status(
    env: Env, sample_videos: list[Path], done: str
) -> None:
    env.emu.update(variants=Variants(export_done_status=done), exports_per_minute=0)
    rule = {**RULE, "render": {"min_score": 0, "max_clips": 1}, "exports": ["premiere"]}
    deliver_one(env, sample_videos[0], rule=rule, carmic=UNPACED)
    folder = env.outbox / "podcasts/ep"
    m = env.manifest("podcasts/ep")
    assert [s for s in m["skipped"] if not s["what"].startswith("clip ")] == [], m
    (clip,) = m["clips"]
    (export,) = clip["exports"]
    assert export["format"] == "premiere"
    bundle = folder / export["path"]
    assert bundle.is_dir() and bundle.resolve().is_relative_to((folder / "exports").resolve())
    assert [p for p in bundle.rglob("*") if p.is_file() and p.stat().st_size > 0], export
    # The emulator really ended the export in this status.
    (made,) = env.emu.snapshot()["exports"]
    assert made["status"] == done
    assert env.stop() == 0


# ---- the tier's processing limit, whatever status carries it and wherever it is enforced ---------

TIER_FILES = 3


def refusals(snap: dict[str, Any], status: int) -> list[dict[str, Any]]:
    """Refused creates and /process calls (the places the tier limit is enforced)."""
    return [
        r
        for r in requests_to(snap, "POST", r"/v1/projects/(create|[^/]+/process)$")
        if r["status"] == status
    ]


@pytest.mark.parametrize("where", ["create", "process"])
@pytest.mark.parametrize("status", [429, 402, 403, 409])
def test_tier_limit_refusals_are_waited_out_and_learned(
    env: Env, sample_videos: list[Path], status: int, where: str
) -> None:
    # The tier is not told in /v1/me (the reference does not say it is): the daemon only learns
    # the limit (1) from the refusals. Processing lasts long enough for the others to be refused.
    env.emu.update(
        tier="PROFESSIONAL",
        variants=Variants(tier_limit_status=status, tier_limit_at=where, me_tier=False),
        timings={"step": 0.15},
        creates_per_minute=0,
    )
    names = [f"podcasts/f{i}.mp4" for i in range(TIER_FILES)]
    start(env, dict(zip(names, sample_videos, strict=False)), rule=UNRENDERED, carmic=UNPACED)

    # While it happens, `watchd status` shows a refused job parked, with the reason.
    def waiting() -> str:
        out = env.cli("status").stdout
        return out if "parked (tier limit)" in out and "waiting: tier limit: " in out else ""

    shown = wait_for(waiting, timeout=30, what="a job parked on the tier limit in status")
    assert "concurrent" in shown.lower(), shown

    wait_delivered(env, names)
    snap = env.emu.snapshot()
    billed = billed_projects(snap)
    assert sorted(len(ids) for ids in billed.values()) == [1] * TIER_FILES, billed
    refused = refusals(snap, status)
    assert refused, "the tier limit never refused anything: the test proves nothing"
    assert snap["counters"]["tier_limited"] == len(refused)
    # Learned, not hammered: after the first round of refusals a job asks again when one of
    # ours has freed the slot (or the service's Retry-After has passed).
    assert len(refused) <= 2 * (TIER_FILES - 1), refused
    assert "learned the workspace's processing limit" in env.log()
    # Every wait is in the ledger with its reason (what `watchd status --json` shows meanwhile).
    parked = events_of(env, "parked")
    assert parked and all("tier limit: " in json.loads(e["detail"])["reason"] for e in parked)
    assert env.stop() == 0
