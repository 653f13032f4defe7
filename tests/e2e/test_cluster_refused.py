"""A daemon running on one host refuses a reload that adds ``[cluster]`` (moving to the shared
ledger takes a restart), keeps its running config and goes on delivering."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from tests.e2e.harness import Env
from tests.e2e.test_service import reload, wait_log


def test_a_reload_that_adds_cluster_is_refused(env: Env, sample_videos: list[Path]) -> None:
    env.write_config({})
    env.start()
    wait_log(env, r"watching .* -> ", timeout=60)
    original = env.config_path.read_text()
    cfg = tomllib.loads(original)
    cfg["cluster"] = {"database": "postgresql://watchd:Db-pw-1234@127.0.0.1:1/watchd"}
    cfg["inbox"][0]["name"] = "studio-a"
    env.config_path.write_bytes(tomli_w.dumps(cfg).encode())
    mark = reload(env)
    refused = wait_log(env, r"reload refused, keeping the running config: (.*)", after=mark)
    assert "takes a restart" in refused.group(1)
    assert "Db-pw-1234" not in env.log()
    env.config_path.write_text(original)  # `watchd status` reads the config too
    env.drop(sample_videos[0], "a.mp4")
    env.wait_states({"a.mp4": "delivered"})
    assert env.stop() == 0
