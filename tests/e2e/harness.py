"""End-to-end harness: the real emulator (in this process, over loopback) and ``watchd run`` as a
subprocess, with real files and a real SQLite ledger. Nothing of ours is mocked."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import tomli_w

from watchd.emulator import Emulator

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
MANIFEST_SCHEMA = REPO / "docs" / "manifest.schema.json"


@functools.cache
def _manifest_validator() -> Any:
    schema = json.loads(MANIFEST_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_manifest(doc: Any, where: object = "manifest") -> dict[str, Any]:
    """``doc`` when it follows docs/manifest.schema.json; else the test fails, naming every
    problem."""
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in _manifest_validator().iter_errors(doc)
    ]
    assert not problems, f"{where} does not follow the manifest schema: " + "; ".join(problems)
    assert isinstance(doc, dict)
    return doc


def check_manifests_under(root: Path) -> int:
    """Validate every manifest.json under ``root``; how many there were."""
    n = 0
    for path in sorted(root.rglob("manifest.json")):
        check_manifest(json.loads(path.read_text()), path)
        n += 1
    return n


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate!r} (last: {last!r})"
    )


@dataclass
class Env:
    root: Path
    emu: Emulator
    inbox: Path = field(init=False)
    outbox: Path = field(init=False)
    state: Path = field(init=False)
    config_path: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    runs: int = 0

    def __post_init__(self) -> None:
        self.inbox = self.root / "inbox"
        self.outbox = self.root / "outbox"
        self.state = self.root / "state"
        self.config_path = self.root / "config.toml"
        self.log_path = self.root / "daemon.log"
        for d in (self.inbox, self.outbox, self.state):
            d.mkdir(parents=True, exist_ok=True)

    # ---- config ---------------------------------------------------------------------------

    def write_config(
        self,
        rules: dict[str, dict[str, Any]] | None = None,
        *,
        carmic: dict[str, Any] | None = None,
        daemon: dict[str, Any] | None = None,
        inbox: dict[str, Any] | None = None,
        notify: list[dict[str, Any]] | None = None,
    ) -> Path:
        secret = self.root / "password"
        secret.write_text(self.emu.seed_password + "\n")
        os.chmod(secret, 0o600)
        cfg: dict[str, Any] = {
            "carmic": {
                "api_url": self.emu.api_url,
                "email": self.emu.seed_email,
                "password_file": str(secret),
                "realtime": "sse",
                "poll_seconds": 0.2,
                **(carmic or {}),
            },
            "daemon": {
                "state_dir": str(self.state),
                "settle_seconds": 0.5,
                "scan": "events",
                "rescan_seconds": 5,
                "max_uploads": 2,
                "poll_interval": 0.2,
                **(daemon or {}),
            },
            "inbox": [
                {
                    "path": str(self.inbox),
                    "outbox": str(self.outbox),
                    "on_success": "move",
                    "on_failure": "move",
                    **(inbox or {}),
                    "rules": rules or {},
                }
            ],
        }
        if notify:
            cfg["notify"] = notify
        self.config_path.write_bytes(tomli_w.dumps(cfg).encode())
        return self.config_path

    # ---- the daemon -----------------------------------------------------------------------

    def start(
        self, *, drop: Iterable[str] = ("NOTIFY_SOCKET",), **extra: str
    ) -> subprocess.Popen[bytes]:
        """``watchd run`` on this config, its output appended to the log; the variables in
        ``drop`` are not inherited from ours, those in ``extra`` are set."""
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self.runs += 1
        dropped = set(drop)
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update(PYTHONUNBUFFERED="1", WATCHD_CONFIG=str(self.config_path), **extra)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== run {self.runs} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "watchd", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
            )
        return self.proc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout}s of signal {sig}") from None

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "watchd", *args, "-c", str(self.config_path)]
            if args and args[0] in ("status", "retry", "forget", "check")
            else [sys.executable, "-m", "watchd", *args],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            timeout=60,
            # GNU readline, once loaded in the test process, exports COLUMNS=80 to children;
            # `watchd status` would honour it and cut its lines.
            env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
        )

    def status(self) -> list[dict[str, Any]]:
        r = self.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert isinstance(data, list)
        return data

    def wait_states(
        self, expected: dict[str, str] | int, *, timeout: float = 90.0, terminal: bool = True
    ) -> list[dict[str, Any]]:
        """Wait until every job is terminal (and, given a dict, each rel source is in its state)."""

        def check() -> list[dict[str, Any]] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            jobs = self.status()
            if isinstance(expected, int):
                if len(jobs) < expected:
                    return None
            else:
                by_source = {j["source"]: j["state"] for j in jobs}
                if any(by_source.get(k) != v for k, v in expected.items()):
                    return None
            if terminal and any(j["state"] not in ("delivered", "failed") for j in jobs):
                return None
            return jobs

        try:
            return wait_for(check, timeout=timeout, interval=0.2, what=f"jobs {expected}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- daemon log ---\n{self.log()[-6000:]}") from None

    # ---- files ----------------------------------------------------------------------------

    def drop(self, src: Path, rel: str) -> Path:
        """Copy ``src`` into the inbox at ``rel`` (a plain copy, as a person would)."""
        dest = self.inbox / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def outbox_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.outbox)) for p in self.outbox.rglob("*") if p.is_file()
        )

    def manifest(self, rel_folder: str) -> dict[str, Any]:
        path = self.outbox / rel_folder / "manifest.json"
        return check_manifest(json.loads(path.read_text()), path)


# ---- inputs (also the benchmarks') --------------------------------------------------------------
# One short real MP4 made unique cheaply: a trailing MP4 ``free`` box, which players and the
# daemon's probe skip, changes the content fingerprint; a sparse one pads it to any size.


def unique_copy(sample: Path, dest: Path, tag: str) -> Path:
    """``sample`` with a trailing ``free`` box holding ``tag``: the same video, another file."""
    payload = tag.encode()
    data = sample.read_bytes() + struct.pack(">I4s", 8 + len(payload), b"free") + payload
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def padded_video(sample: Path, dest: Path, size: int) -> Path:
    """``sample`` padded to exactly ``size`` bytes with a sparse 64-bit ``free`` box."""
    data = sample.read_bytes()
    with open(dest, "wb") as f:
        f.write(data)
        f.write(struct.pack(">I4sQ", 1, b"free", size - len(data)))
        f.truncate(size)
    return dest


def iter_manifests(outbox: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for m in sorted(outbox.rglob("manifest.json")):
        yield m.parent, check_manifest(json.loads(m.read_text()), m)


def rendered_styles(snapshot: dict[str, Any]) -> dict[str, set[str]]:
    """Project id -> the caption styles its rendered clips had when they were rendered."""
    out: dict[str, set[str]] = {}
    for p in snapshot["projects"]:
        rendered = [c for c in p["clips"] if c["render_count"]]
        out[p["id"]] = {c["template_config"].get("caption_style") for c in rendered}
    return out


def billed_projects(snapshot: dict[str, Any]) -> dict[str, list[str]]:
    """Project title marker (``[wd-…]``) -> ids of its projects whose ingest charge stands."""
    charged = {
        ch["project_id"]
        for ws in snapshot["billing"].values()
        for ch in ws["charges"]
        if ch["kind"] == "ingest" and not ch["refunded"]
    }
    out: dict[str, list[str]] = {}
    for p in snapshot["projects"]:
        if p["id"] not in charged:
            continue
        title = str(p["title"])
        marker = title[title.rfind("[") + 1 : title.rfind("]")] if "[" in title else title
        out.setdefault(marker, []).append(p["id"])
    return out


class OutboxWatcher:
    """Walks the outbox over and over while a test runs and remembers every size it saw for
    every file under a final (non-temporary) name: a file seen with two sizes was visible
    before it was complete."""

    def __init__(self, outbox: Path) -> None:
        import threading

        self.outbox = outbox
        self.sizes: dict[str, set[int]] = {}
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-watcher", daemon=True)

    def __enter__(self) -> OutboxWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for dirpath, dirnames, filenames in os.walk(self.outbox):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue  # hidden temporaries are not final names
                    p = Path(dirpath) / name
                    try:
                        size = p.stat().st_size
                    except OSError:
                        continue
                    self.sizes.setdefault(str(p.relative_to(self.outbox)), set()).add(size)
            self.scans += 1
            self._stop.wait(0.01)

    def partial_files(self) -> list[str]:
        return sorted(k for k, v in self.sizes.items() if len(v) > 1)
