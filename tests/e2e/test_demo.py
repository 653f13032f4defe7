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
    assert "dashboard: http://127.0.0.1:" in r.stdout
    manifests = sorted((tmp_path / "demo" / "outbox").rglob("manifest.json"))
    assert len(manifests) == 2


def test_watchd_demo_web_serves_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    import re
    import signal

    import httpx

    from tests.e2e.harness import wait_for

    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchd", "demo", "--web", "--dir", str(tmp_path / "demo")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        serving = wait_for(
            lambda: re.search(
                r"serving the dashboard at (http://\S+) until Ctrl-C", log.read_text()
            ),
            timeout=240,
            what="the demo serving its dashboard",
        )
        text = log.read_text()
        assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/$", text, re.M)
        page = httpx.get(serving.group(1), timeout=10)
        assert page.status_code == 200
        assert "episode-12.mp4" in page.text and "lesson 3 — framing.mp4" in page.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "demo: 2 deliveries complete" in log.read_text()
