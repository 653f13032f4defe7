"""``watchd notify test``: one test event per notifier, the answers, the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.notify.receiver import Receiver
from tests.test_config import base_doc
from watchd.cli import main


def write_config(tmp_path: Path, notify: list[dict[str, Any]]) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    (tmp_path / "password").write_text("pw\n")
    (tmp_path / "password").chmod(0o600)
    doc = base_doc(tmp_path)
    if notify:
        doc["notify"] = notify
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def test_each_notifier_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Receiver() as good, Receiver(lambda r, n: (500, {})) as bad:
        cfg = write_config(
            tmp_path, [{"url": good.url, "name": "good"}, {"url": bad.url, "name": "bad"}]
        )
        assert main(["notify", "test", "-c", str(cfg)]) == 1
        out = capsys.readouterr().out
        assert "webhook good: ok (200)" in out and "webhook bad: FAILED: 500" in out
        assert main(["notify", "test", "-c", str(cfg), "good"]) == 0
        assert good.events()[0]["type"] == "watchd.test"
        assert len(good.received()) == 2 and len(bad.received()) == 1
        assert main(["notify", "test", "-c", str(cfg), "nope"]) == 1
        assert "no notifier named 'nope' (there are: good, bad)" in capsys.readouterr().err


def test_without_notifiers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [])
    assert main(["notify", "test", "-c", str(cfg)]) == 1
    assert "no [[notify]]" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [{"url": "ftp://x/"}])
    assert main(["notify", "test", "-c", str(cfg)]) == 2
    assert "notify[0].url" in capsys.readouterr().err
