"""scripts/ensure-apt.sh (`make sysdeps`): PostgreSQL's server is found off PATH, in
/usr/lib/postgresql/<version>/bin, and installed only when it is not there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-apt.sh"


def run(tmp_path: Path, pg_root: Path) -> tuple[int, list[str]]:
    """The script, its apt-get a stand-in that records its calls (sudo one that runs them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    stand_ins = {
        "apt-get": f'echo "apt-get $*" >> {calls}',
        "sudo": '[ "$1" = -n ] && shift; exec "$@"',  # when not root
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PG_ROOT": str(pg_root)}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "postgresql"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return proc.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_postgresql_is_installed_when_no_server_is_found(tmp_path: Path) -> None:
    code, calls = run(tmp_path, tmp_path / "none")
    assert code == 0
    assert calls[-1].startswith("apt-get install") and calls[-1].endswith(" postgresql")


def test_an_installed_server_off_path_is_found(tmp_path: Path) -> None:
    initdb = tmp_path / "pg" / "15" / "bin" / "initdb"
    initdb.parent.mkdir(parents=True)
    initdb.write_text("#!/bin/sh\n")
    initdb.chmod(0o755)
    assert run(tmp_path, tmp_path / "pg") == (0, [])
