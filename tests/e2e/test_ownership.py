"""One daemon per state_dir: `watchd run` twice on one config, at the same instant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import Env, wait_for

ROUNDS = 10


def _spawn(env: Env, out: Path) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    environ["PYTHONUNBUFFERED"] = "1"
    with open(out, "wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "watchd", "run", "-c", str(env.config_path)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=env.root,
        )


def test_two_daemons_started_together_exactly_one_runs(env: Env) -> None:
    env.write_config()
    for n in range(ROUNDS):
        _one_round(env, n)


def _one_round(env: Env, n: int) -> None:
    outs = [env.root / f"round{n}-{i}.log" for i in range(2)]
    procs = [_spawn(env, outs[0]), _spawn(env, outs[1])]
    try:
        loser = wait_for(
            lambda: next((p for p in procs if p.poll() is not None), None),
            timeout=60,
            what=f"round {n}: one of the two daemons to exit",
        )
        winner = procs[1 - procs.index(loser)]
        text = outs[procs.index(loser)].read_text()
        assert loser.returncode == 2, text
        errors = [line for line in text.splitlines() if " ERROR " in line]
        assert len(errors) == 1, text
        assert f"PID {winner.pid}" in errors[0] and str(env.state) in errors[0], text
        assert "Traceback" not in text
        # The other one runs, and the read-only commands work beside it.
        winner_log = outs[procs.index(winner)]
        wait_for(
            lambda: winner.poll() is not None or "ready:" in winner_log.read_text(),
            timeout=60,
            what=f"round {n}: the winner to be ready",
        )
        assert winner.poll() is None, winner_log.read_text()
        r = env.cli("status", "--json")
        assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
        if n == 0:  # retry and forget open the ledger beside it too (an unknown id: exit 1)
            for action in ("retry", "forget"):
                r = env.cli(action, "jnope")
                assert r.returncode == 1 and "unknown job jnope" in r.stderr, r.stderr
        winner.send_signal(signal.SIGTERM)
        assert winner.wait(timeout=30) == 0, winner_log.read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
