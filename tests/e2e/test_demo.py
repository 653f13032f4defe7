import subprocess
import sys
from pathlib import Path


def test_watchd_demo_delivers_and_prints_where(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "watchd", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "demo: 2 deliveries complete" in r.stdout
    assert "manifest.json: status=delivered" in r.stdout
    manifests = sorted((tmp_path / "demo" / "outbox").rglob("manifest.json"))
    assert len(manifests) == 2
