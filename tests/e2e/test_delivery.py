"""`watchd run` as a subprocess against the emulator over loopback: the happy paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.harness import Env, wait_for

PODCASTS = {
    "video_type": "podcast",
    "caption_style": "BUBBLE",
    "render": {"min_score": 0, "max_clips": 2},
    "exports": ["premiere"],
    # The reference's defaults are Inter/uppercase: ask for something else so a PUT is due.
    "template": {"style": {"captionFont": "Montserrat", "uppercase": False}},
}
TUTORIALS = {"video_type": "tutorial", "caption_style": "KARAOKE", "render": "all"}


def test_two_rules_deliver_with_preset_put_before_render(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": PODCASTS, "tutorials": TUTORIALS})
    env.start()
    env.drop(sample_videos[0], "podcasts/ep12.mp4")
    env.drop(sample_videos[1], "tutorials/lesson.mov.mp4")
    jobs = env.wait_states(
        {"podcasts/ep12.mp4": "delivered", "tutorials/lesson.mov.mp4": "delivered"}
    )
    assert len(jobs) == 2

    m = env.manifest("podcasts/ep12")
    assert m["status"] == "delivered" and m["rule"] == "podcasts"
    assert m["source"]["name"] == "ep12.mp4" and len(m["source"]["sha256"]) == 64
    assert 1 <= len(m["clips"]) <= 2
    scores = [c["virality_score"] for c in m["clips"]]
    assert scores == sorted(scores, reverse=True)
    for n, c in enumerate(m["clips"], start=1):
        assert c["file"].startswith(f"{n:02d} - ") and c["file"].endswith(".mp4")
        assert (env.outbox / "podcasts/ep12" / c["file"]).stat().st_size > 0
        assert c["captions"] and (env.outbox / "podcasts/ep12" / c["captions"]).read_text()
        assert [e["format"] for e in c["exports"]] == ["premiere"]
        assert (env.outbox / "podcasts/ep12" / c["exports"][0]["path"]).is_dir()

    # The emulator saw the preset PUT on every rendered clip, before its render.
    state = env.emu.snapshot()
    log = state["clip_puts"]
    for c in m["clips"]:
        kinds = [e["kind"] for e in log if e["clip_id"] == c["id"]]
        assert "put" in kinds and "render" in kinds, kinds
        assert kinds.index("put") < kinds.index("render")
    projects = {p["id"]: p for p in state["projects"]}
    tc = next(
        cl["template_config"]
        for cl in projects[m["project_id"]]["clips"]
        if cl["id"] == m["clips"][0]["id"]
    )
    assert tc["caption_style"] == "BUBBLE" and tc["style"]["captionFont"] == "Montserrat"
    assert tc["style"]["fontSize"] == 72  # merged, not replaced

    # Sources moved to _done/<rule>/ only after delivery; nothing left in the rule folders.
    assert (env.inbox / "_done/podcasts/ep12.mp4").exists()
    assert not (env.inbox / "podcasts/ep12.mp4").exists()
    # status --json has the contract's keys.
    for j in env.status():
        assert {"id", "path", "rule", "state", "project_id", "error", "updated_at"} <= set(j)
    assert env.stop() == 0


def test_duplicate_drop_is_not_billed_twice(env: Env, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": PODCASTS})
    env.start()
    env.drop(sample_videos[2], "podcasts/original.mp4")
    env.wait_states({"podcasts/original.mp4": "delivered"})
    env.drop(sample_videos[2], "podcasts/copy of original.mp4")
    jobs = env.wait_states({"podcasts/copy of original.mp4": "delivered"})
    dup = next(j for j in jobs if j["source"] == "podcasts/copy of original.mp4")
    assert dup["duplicate_of"]
    m = env.manifest("podcasts/copy of original")
    assert m["duplicate_of"]["outbox_folder"] == "podcasts/original"
    assert m["clips"] == []
    billed = [c for c in env.emu.snapshot()["billing"].values()]
    charges = [ch for ws in billed for ch in ws["charges"] if ch["kind"] in ("ingest", "create")]
    assert len({ch["project_id"] for ch in charges if not ch.get("refunded")}) == 1
    env.stop()


def test_ignored_files_are_left_untouched(env: Env, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": PODCASTS})
    ignored = [
        ".hidden.mp4",
        "._ep.mp4",
        ".DS_Store",
        "Thumbs.db",
        "podcasts/ep.mp4.part",
        "podcasts/ep.mp4.filepart",
        "podcasts/ep.mp4.crdownload",
        "podcasts/ep.mp4.tmp",
        "podcasts/.ep.mp4.Xa9b3c",
        "podcasts/.syncthing.ep.mp4.tmp",
        "podcasts/~$ep.mp4",
        "_UNPACK_ep/ep.mp4",
        "@eaDir/ep.mp4",
        ".AppleDouble/ep.mp4",
        "_private/ep.mp4",
        "notes.txt",
    ]
    for rel in ignored:
        env.drop(sample_videos[3], rel)
    env.drop(sample_videos[4], "podcasts/real.mp4")
    env.start()
    env.wait_states({"podcasts/real.mp4": "delivered"})
    jobs = env.status()
    assert [j["source"] for j in jobs] == ["podcasts/real.mp4"]
    for rel in ignored:
        assert (env.inbox / rel).exists(), rel
    env.stop()


def test_status_json_while_running_and_heartbeat(env: Env, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": PODCASTS})
    env.start()
    env.drop(sample_videos[5], "podcasts/a.mp4")
    wait_for(lambda: env.status(), timeout=30, what="a job in the ledger")
    env.wait_states({"podcasts/a.mp4": "delivered"})
    r = env.cli("status")
    assert r.returncode == 0 and "delivered" in r.stdout
    assert json.loads(env.cli("status", "--json").stdout)[0]["state"] == "delivered"
    env.stop()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_delivers_on_either_event_loop(env: Env, sample_videos: list[Path], loop: str) -> None:
    """uvloop by default, asyncio's loop with WATCHD_EVENT_LOOP=asyncio: the same delivery."""
    env.write_config({"tutorials": TUTORIALS})
    env.start(WATCHD_EVENT_LOOP=loop)
    env.drop(sample_videos[0], "tutorials/lesson.mp4")
    env.wait_states({"tutorials/lesson.mp4": "delivered"})
    assert env.manifest("tutorials/lesson")["status"] == "delivered"
    assert re.search(rf"INFO +password from .*; event loop {loop}\b", env.log())
    assert env.stop() == 0


def test_an_unknown_event_loop_is_a_config_error(env: Env) -> None:
    env.write_config({"tutorials": TUTORIALS})
    env.start(WATCHD_EVENT_LOOP="trio")
    assert env.proc is not None and env.proc.wait(timeout=30) == 2
    assert "WATCHD_EVENT_LOOP='trio': use one of auto, uvloop, asyncio" in env.log()
