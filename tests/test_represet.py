"""watchd.represet: `watchd retry` gives a job that has not rendered its rule's current preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from watchd.clock import FakeClock
from watchd.config import Config, ConfigError, parse_config
from watchd.ledger.db import Ledger
from watchd.ledger.states import Stage
from watchd.represet import retry_job

OLD = {
    "caption_style": "BRAND",
    "video_type": "podcast",
    "render": "all",
    "_delivery": {"inbox": "x", "outbox": "y", "on_success": "move", "on_failure": "move"},
}


def config(tmp_path: Path, **rule: Any) -> Config:
    (tmp_path / "in").mkdir(exist_ok=True)
    doc = {
        "carmic": {"api_url": "http://127.0.0.1:9/api", "email": "a@b.example"},
        "daemon": {"state_dir": str(tmp_path / "state")},
        "inbox": [
            {"path": str(tmp_path / "in"), "outbox": str(tmp_path / "out"), "rules": {"p": rule}}
        ],
    }
    return parse_config(doc, env={"WATCHD_CARMIC_PASSWORD": "pw-123456"})


def failed_job(ledger: Ledger, tmp_path: Path, *, clip_state: str = "pending", **kw: Any) -> str:
    job = ledger.add_job(
        inbox=str(tmp_path / "in"),
        rel_path="p/ep.mp4",
        path=str(tmp_path / "in/p/ep.mp4"),
        rule="p",
        preset=OLD,
        size=1,
        mtime_ns=1,
        inode=1,
        dev=1,
        fingerprint="fp",
    )
    clips = [
        {
            "clip_id": f"c{i}",
            "rank": i,
            "title": "t",
            "start_time": 0,
            "end_time": 1,
            "virality_score": score,
            "reasoning": "",
            "thumbnail_url": None,
            "selected": 1,
        }
        for i, score in ((1, 90), (2, 40))
    ]
    ledger.put_clips(job.id, clips)
    for c in clips:
        ledger.update_clip(job.id, str(c["clip_id"]), state=clip_state)
    ledger.transition(job.id, Stage.FAILED, resume_stage="rendering", **kw)
    return job.id


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(None, clock=FakeClock())


def test_a_job_that_has_not_rendered_takes_the_current_preset(
    ledger: Ledger, tmp_path: Path
) -> None:
    cfg = config(tmp_path, caption_style="HORMOZI", render={"max_clips": 1})
    jid = failed_job(ledger, tmp_path, clip_state="configured")
    line = retry_job(ledger, cfg, jid)
    assert line.startswith(f"{jid}: back in the queue at rendering; takes the rule's current")
    assert 'caption_style "BRAND" -> "HORMOZI"' in line
    job = ledger.require(jid)
    assert job.preset_dict["caption_style"] == "HORMOZI"
    assert job.preset_dict["_delivery"] == OLD["_delivery"]
    clips = {c.clip_id: c for c in ledger.clips(jid)}
    assert clips["c1"].state == clips["c2"].state == "pending"  # configured with the old one
    assert (clips["c1"].selected, clips["c2"].selected) == (1, 0)  # the new render choice
    assert [e.kind for e in ledger.events(jid)][-2:] == ["preset_reapplied", "retry"]


def test_keys_of_an_existing_project_are_kept_and_said(ledger: Ledger, tmp_path: Path) -> None:
    cfg = config(tmp_path, caption_style="BRAND", video_type="tutorial", render="all")
    jid = failed_job(ledger, tmp_path, project_id="p-1")
    line = retry_job(ledger, cfg, jid)
    assert "the rule's current preset is the one it has" in line
    assert "project p-1 was created with the old video_type: to change that, `watchd forget`" in (
        line
    )
    assert ledger.require(jid).preset_dict["video_type"] == "podcast"


def test_a_job_that_rendered_keeps_its_preset(ledger: Ledger, tmp_path: Path) -> None:
    cfg = config(tmp_path, caption_style="HORMOZI")
    jid = failed_job(ledger, tmp_path, clip_state="failed")
    assert retry_job(ledger, cfg, jid).endswith(
        "keeps its preset: its clips were sent to render already"
    )
    assert ledger.require(jid).preset_dict["caption_style"] == "BRAND"


def test_keep_preset(ledger: Ledger, tmp_path: Path) -> None:
    jid = failed_job(ledger, tmp_path)
    assert retry_job(ledger, None, jid).endswith("keeps its preset (--keep-preset)")
    assert ledger.require(jid).preset_dict["caption_style"] == "BRAND"


def test_a_bad_sidecar_is_a_config_error_and_nothing_changes(
    ledger: Ledger, tmp_path: Path
) -> None:
    cfg = config(tmp_path, caption_style="HORMOZI")
    jid = failed_job(ledger, tmp_path)
    (tmp_path / "in/p").mkdir(parents=True)
    (tmp_path / "in/p/ep.mp4.toml").write_text("rendr = 1\n")
    with pytest.raises(ConfigError, match="rendr"):
        retry_job(ledger, cfg, jid)
    assert ledger.require(jid).state == "failed"


def test_a_job_past_its_renders_keeps_its_preset(ledger: Ledger, tmp_path: Path) -> None:
    cfg = config(tmp_path, caption_style="HORMOZI")
    jid = failed_job(ledger, tmp_path)
    ledger.update(jid, resume_stage="delivering")
    assert "keeps its preset" in retry_job(ledger, cfg, jid)
    assert ledger.require(jid).preset_dict["caption_style"] == "BRAND"
