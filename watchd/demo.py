"""``watchd demo``: the whole pipeline against the bundled emulator, in a temporary folder.

It generates a ~20 s sample video with audio, writes a config with two rules, starts the emulator
in-process and the daemon on the real event loop, waits until both files are delivered, and prints
the outbox tree and a summary of each manifest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import tomli_w

log = logging.getLogger("watchd.demo")

DEMO_TIMEOUT = 180.0
DEMO_WEB_PORT = 8377


def write_demo_config(
    root: Path, api_url: str, email: str, password: str, *, web_listen: str = ""
) -> Path:
    """The demo's config: one inbox with two rules (podcasts, tutorials), and the dashboard
    on ``web_listen`` when given."""
    secret = root / "password"
    secret.write_text(password + "\n")
    os.chmod(secret, 0o600)
    cfg: dict[str, Any] = {
        "carmic": {
            "api_url": api_url,
            "email": email,
            "password_file": str(secret),
            "realtime": "sse",
            "poll_seconds": 0.5,
        },
        "daemon": {
            "state_dir": str(root / "state"),
            "settle_seconds": 1,
            "scan": "events",
            "rescan_seconds": 30,
            "max_uploads": 2,
        },
        "inbox": [
            {
                "path": str(root / "inbox"),
                "outbox": str(root / "outbox"),
                "on_success": "move",
                "on_failure": "move",
                "language": "en",
                "rules": {
                    "podcasts": {
                        "video_type": "podcast",
                        "caption_style": "HORMOZI",
                        "render": {"min_score": 0, "max_clips": 2},
                        "exports": ["premiere", "davinci"],
                        "captions": True,
                        "template": {"style": {"captionFont": "Inter", "uppercase": True}},
                    },
                    "tutorials": {
                        "video_type": "tutorial",
                        "caption_style": "KARAOKE",
                        "render": "all",
                        "exports": [],
                        "captions": True,
                    },
                },
            }
        ],
    }
    if web_listen:
        cfg["web"] = {"listen": web_listen}
    path = root / "config.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return path


def tree(root: Path) -> list[str]:
    lines: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        depth = 0 if str(rel) == "." else len(rel.parts)
        if depth:
            lines.append("  " * (depth - 1) + f"{rel.name}/")
        for f in sorted(filenames):
            size = (Path(dirpath) / f).stat().st_size
            lines.append("  " * depth + f"{f}  ({size:,} bytes)")
    return lines


def summarize(outbox: Path, out: TextIO) -> int:
    manifests = sorted(outbox.rglob("manifest.json"))
    for m in manifests:
        doc = json.loads(m.read_text())
        rel = m.parent.relative_to(outbox)
        out.write(
            f"\n{rel}/manifest.json: status={doc['status']} rule={doc['rule']!r} "
            f"project={doc['project_id']}\n"
        )
        for c in doc.get("clips", []):
            exports = ", ".join(e["format"] for e in c.get("exports", [])) or "none"
            out.write(
                f"  {c.get('file') or '(not rendered)'}  score={c['virality_score']}  "
                f"captions={c.get('captions')}  exports={exports}\n"
            )
        for s in doc.get("skipped", []):
            out.write(f"  skipped: {s['what']}: {s['reason']}\n")
    return len(manifests)


async def _run_until_delivered(
    config_path: Path,
    expected: int,
    timeout: float,
    *,
    out: TextIO | None = None,
    when_ready: Callable[[], None] | None = None,
    serve: bool = False,
) -> bool:
    """Run the daemon until ``expected`` jobs are finished (True when all were delivered).
    Once it is ready: print the dashboard's URL, call ``when_ready``; with ``serve`` keep it
    running afterwards until Ctrl-C (SIGINT or SIGTERM)."""
    from watchd.config import load_config
    from watchd.daemon import Daemon

    daemon = Daemon(load_config(config_path))
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + timeout
    ok = False
    announced = False
    try:
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.25)
            if daemon.ledger is None or not daemon.ready:
                continue
            if not announced:
                announced = True
                if out is not None and daemon.web is not None:
                    out.write(f"dashboard: {daemon.web.url}\n")
                    out.flush()
                if when_ready is not None:
                    when_ready()
            jobs = daemon.ledger.jobs()
            if len(jobs) >= expected and all(j.state in ("delivered", "failed") for j in jobs):
                ok = all(j.state == "delivered" for j in jobs)
                break
        if serve and out is not None and daemon.web is not None and not task.done():
            out.write(f"serving the dashboard at {daemon.web.url} until Ctrl-C\n")
            out.flush()
            await task
    finally:
        daemon.request_stop()
        await task
    return ok


def _free_listen(preferred: int = DEMO_WEB_PORT) -> str:
    """``127.0.0.1:8377`` when that port is free, else any free loopback port."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return "127.0.0.1:0"
    return f"127.0.0.1:{preferred}"


def run_demo(workdir: Path | None = None, *, out: TextIO = sys.stdout, web: bool = False) -> int:
    """The demo. It prints the dashboard's URL; with ``web`` the files are dropped once the
    dashboard is up (to watch them move) and it stays up after the deliveries until Ctrl-C."""
    from watchd.emulator import Emulator, EmulatorSettings, Timings
    from watchd.media import make_sample_video
    from watchd.service.logsetup import setup_logging

    setup_logging("text", "info")
    keep = workdir is not None
    root = workdir or Path(tempfile.mkdtemp(prefix="watchd-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("inbox/podcasts", "inbox/tutorials", "outbox", "state"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    out.write(f"watchd demo in {root}\n")
    out.write("generating a 20 s sample video with audio...\n")
    sample = root / "sample.mp4"
    make_sample_video(sample, seconds=20.0, width=640, height=360, fps=25, audio=True)
    second = root / "sample-2.mp4"
    make_sample_video(second, seconds=16.0, width=640, height=360, fps=25, audio=True)
    settings = EmulatorSettings(
        port=0,
        storage_port=0,
        tier="PROFESSIONAL",
        timings=Timings(step=0.4, render=0.5, export=0.5),
        data_dir=root / "emulator-data",
    )
    with Emulator(settings) as emu:
        out.write(f"emulator API at {emu.api_url} (user {emu.seed_email})\n")
        config = write_demo_config(
            root, emu.api_url, emu.seed_email, emu.seed_password, web_listen=_free_listen()
        )

        def drop() -> None:
            # The way a person would: a copy that lands in a rule's folder.
            shutil.copyfile(sample, root / "inbox/podcasts/episode-12.mp4")
            shutil.copyfile(second, root / "inbox/tutorials/lesson 3 — framing.mp4")

        if not web:
            drop()
        run = _run_until_delivered(
            config,
            expected=2,
            timeout=DEMO_TIMEOUT,
            out=out,
            when_ready=drop if web else None,
            serve=web,
        )
        ok = asyncio.run(run)
    outbox = root / "outbox"
    out.write(f"\nresults in {outbox}:\n")
    for line in tree(outbox):
        out.write(f"  {line}\n")
    n = summarize(outbox, out)
    out.write(f"\nconfig: {config}\nledger: watchd status -c {config}\n")
    if not ok:
        out.write("demo: not every file was delivered; see the log above\n")
        return 1
    out.write(f"demo: {n} deliveries complete\n")
    if not keep:
        out.write(f"(the demo folder {root} is left in place for you to look at)\n")
    return 0
