"""Rule folders and the outbox are made at start, never inside a missing inbox or share."""

from __future__ import annotations

from pathlib import Path

from watchd.config import InboxConfig, Preset, Rule
from watchd.watching.folders import make_folders, missing_folders


def inbox_config(root: Path, outbox: Path | None = None) -> InboxConfig:
    return InboxConfig(
        index=0,
        path=root / "inbox",
        outbox=outbox or root / "outbox",
        on_success="move",
        on_failure="move",
        rules=(Rule("", Preset()), Rule("podcasts", Preset()), Rule("clients/acme", Preset())),
    )


def test_the_outbox_and_every_rule_folder_are_made(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    cfg = inbox_config(tmp_path)
    wanted = [tmp_path / "outbox", tmp_path / "inbox/podcasts", tmp_path / "inbox/clients/acme"]
    assert missing_folders(cfg) == wanted
    assert make_folders(cfg) == wanted
    assert all(p.is_dir() for p in wanted)
    assert missing_folders(cfg) == [] and make_folders(cfg) == []


def test_nothing_is_made_inside_a_missing_inbox_or_share(tmp_path: Path) -> None:
    cfg = inbox_config(tmp_path, outbox=tmp_path / "share/outbox")
    assert missing_folders(cfg) == []
    assert make_folders(cfg) == []
    assert not (tmp_path / "inbox").exists() and not (tmp_path / "share").exists()
