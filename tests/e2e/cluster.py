"""Several real daemons on one inbox: ``watchd run`` subprocesses (the end-to-end harness's
:class:`~tests.e2e.harness.Env`), each with its own config and ``state_dir``, all with the same
``[[inbox]] name``, inbox and outbox folders, one PostgreSQL database (``[cluster]``) and one
emulator over loopback. Without a database the same rig runs single-host daemons on SQLite
(benchmarks compare the two).

What the emulator saw answers the questions the cluster tests ask: which daemon sent each
request (``User-Agent: ... (node <name>)``), how many billed projects each file got, how many
projects were in the tier's processing window at once, how many 429s there were.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import tomli_w

from tests.e2e.harness import Env, check_manifest, wait_for
from watchd.emulator import Emulator

INBOX_NAME = "studio-a"
_NODE = re.compile(r"\(node ([^)]+)\)")
_RUN_MARK = "\n===== run "


def jobs(database: str) -> list[dict[str, Any]]:
    """Every job row of the cluster's ledger."""
    with psycopg.connect(database, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT id, rel_path, state, node, project_id, lease_until FROM jobs ORDER BY rel_path"
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def job_of(database: str, rel_path: str) -> dict[str, Any] | None:
    return next((j for j in jobs(database) if j["rel_path"] == rel_path), None)


@dataclass
class Cluster:
    """``names`` daemons under ``root`` sharing ``root/inbox`` and ``root/outbox``.

    ``database`` is the cluster's PostgreSQL URL; None runs each daemon on its own SQLite
    ledger without ``[cluster]`` (only sensible with one daemon)."""

    root: Path
    emu: Emulator
    database: str | None
    names: Sequence[str] = ("n1", "n2", "n3")
    lease_seconds: float = 10.0
    inbox_name: str = INBOX_NAME
    nodes: dict[str, Env] = field(init=False)
    inbox: Path = field(init=False)
    outbox: Path = field(init=False)

    def __post_init__(self) -> None:
        self.inbox = self.root / "inbox"
        self.outbox = self.root / "outbox"
        self.nodes = {}
        for name in self.names:
            env = Env(root=self.root / name, emu=self.emu)
            env.inbox, env.outbox = self.inbox, self.outbox
            self.nodes[name] = env
        for d in (self.inbox, self.outbox):
            d.mkdir(parents=True, exist_ok=True)

    # ---- configs ----------------------------------------------------------------------------

    def configure(
        self,
        rules: dict[str, dict[str, Any]] | None = None,
        *,
        carmic: dict[str, Any] | None = None,
        daemon: dict[str, Any] | None = None,
        inbox: dict[str, Any] | None = None,
        cluster: dict[str, Any] | None = None,
    ) -> None:
        """Write every node's config: the end-to-end defaults, these tables merged in, and
        ``[cluster]`` with the node's name (unless the rig runs without a database)."""
        for name, env in self.nodes.items():
            env.write_config(rules, carmic=carmic, daemon=daemon, inbox=inbox)
            if self.database is not None:
                self.join(name, cluster)

    def join(self, name: str, cluster: dict[str, Any] | None = None) -> None:
        """Add ``[cluster]`` (and the inbox's ``name``) to node ``name``'s config."""
        env = self.nodes[name]
        assert self.database is not None
        cfg = tomllib.loads(env.config_path.read_text())
        cfg["cluster"] = {
            "database": self.database,
            "node": name,
            "lease_seconds": self.lease_seconds,
            **(cluster or {}),
        }
        for entry in cfg["inbox"]:
            entry["name"] = self.inbox_name
        env.config_path.write_bytes(tomli_w.dumps(cfg).encode())

    # ---- daemons ----------------------------------------------------------------------------

    def start(self, *names: str, ready: bool = True, timeout: float = 60.0) -> None:
        """Start these daemons (all by default), then wait until each says it is ready."""
        chosen = names or tuple(self.nodes)
        for name in chosen:
            self.nodes[name].start()
        if ready:
            for name in chosen:
                self.wait_log(name, "ready:", timeout=timeout)

    def log(self, name: str) -> str:
        """Node ``name``'s log since its latest start."""
        text = self.nodes[name].log()
        return text[text.rfind(_RUN_MARK) :] if _RUN_MARK in text else text

    def wait_log(self, name: str, needle: str, *, timeout: float = 60.0) -> None:
        env = self.nodes[name]

        def seen() -> bool:
            if env.proc is not None and env.proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited with {env.proc.returncode}:\n{self.log(name)[-4000:]}"
                )
            return needle in self.log(name)

        wait_for(seen, timeout=timeout, interval=0.05, what=f"{name} to log {needle!r}")

    def pid(self, name: str) -> int:
        proc = self.nodes[name].proc
        assert proc is not None and proc.poll() is None, f"{name} is not running"
        return proc.pid

    def kill(self, name: str) -> None:
        """SIGKILL: the daemon dies with whatever it held."""
        self.nodes[name].kill()

    def freeze(self, name: str) -> None:
        """SIGSTOP: the daemon stops where it is (a VM pause), its connections left open."""
        os.kill(self.pid(name), signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGCONT)

    def running(self) -> list[str]:
        return [n for n, e in self.nodes.items() if e.proc is not None and e.proc.poll() is None]

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """SIGTERM every running daemon (SIGCONT first, in case one is frozen); exit codes."""
        codes: dict[str, int] = {}
        for name in self.running():
            os.kill(self.pid(name), signal.SIGCONT)
            self.nodes[name].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for name, env in self.nodes.items():
            if env.proc is not None and name not in codes:
                try:  # one SIGTERM each: a second may come during the shutdown's last steps
                    codes[name] = env.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    codes[name] = env.stop(timeout=timeout)
        return codes

    def kill_all(self) -> None:
        for name in self.running():
            os.kill(self.pid(name), signal.SIGCONT)
            self.kill(name)

    def tail(self, lines: int = 40) -> str:
        """The end of every node's log, for a failing test's message."""
        out = []
        for name in self.nodes:
            text = self.log(name).splitlines()[-lines:]
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    # ---- files ------------------------------------------------------------------------------

    def drop_all(self, sources: Iterable[Path], rel_dir: str = "") -> list[str]:
        """Rename each prepared file into the inbox (under ``rel_dir``) in one go; the
        relative paths."""
        out = []
        target = self.inbox / rel_dir
        target.mkdir(parents=True, exist_ok=True)
        for src in sources:
            os.replace(src, target / src.name)
            out.append(str((target / src.name).relative_to(self.inbox)))
        return out

    def manifests(self) -> dict[str, list[dict[str, Any]]]:
        """Source name -> every manifest written for it (one each, when all is well)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(self.outbox.rglob("manifest.json")):
            doc = check_manifest(json.loads(path.read_text()), path)
            out.setdefault(doc["source"]["name"], []).append(doc)
        return out

    def done(self) -> Counter[str]:
        """Source name -> how many copies of it are under ``_done/`` (moved once: 1)."""
        return Counter(p.name for p in (self.inbox / "_done").rglob("*") if p.is_file())

    def wait_delivered(self, names: Iterable[str], *, timeout: float) -> dict[str, Any]:
        """Wait until every source in ``names`` has a manifest; fail with the logs."""
        wanted = set(names)

        def check() -> dict[str, Any] | None:
            if not self.running():
                raise AssertionError("no daemon is running\n" + self.tail())
            have = self.manifests()
            return have if wanted <= set(have) else None

        try:
            result: dict[str, Any] = wait_for(
                check, timeout=timeout, interval=0.25, what=f"{len(wanted)} deliveries"
            )
        except AssertionError as e:
            missing = sorted(wanted - set(self.manifests()))
            raise AssertionError(f"{e}\nmissing: {missing[:20]}\n{self.tail()}") from None
        return result


# ---- what the emulator saw -----------------------------------------------------------------------


def node_of(request: dict[str, Any]) -> str | None:
    """The node named in a request's User-Agent (None: not one of our daemons)."""
    found = _NODE.search(request.get("user_agent") or "")
    return found.group(1) if found else None


def requests_by_node(snapshot: dict[str, Any]) -> Counter[str | None]:
    return Counter(node_of(q) for q in snapshot["requests"])


def billed_by_filename(snapshot: dict[str, Any]) -> dict[str, list[str]]:
    """Source file name -> the ids of its projects whose ingest charge stands."""
    charged = {
        ch["project_id"]
        for ws in snapshot["billing"].values()
        for ch in ws["charges"]
        if ch["kind"] == "ingest" and not ch["refunded"]
    }
    out: dict[str, list[str]] = {}
    for p in snapshot["projects"]:
        if p["id"] in charged:
            out.setdefault(p["filename"], []).append(p["id"])
    return out


def processing_windows(snapshot: dict[str, Any]) -> Iterator[tuple[float, float]]:
    """Each project's time in the tier's processing count (from its creation, when the
    emulator starts counting it, to CLIPS_READY; still counting: until now)."""
    now = float(snapshot["now"])
    for p in snapshot["projects"]:
        # Failed or deleted: when is not recorded; counted to the end (the worst case).
        end = p["clips_ready_at"] if p["clips_ready_at"] is not None else now
        yield float(p["created_at"]), float(end)


def peak_processing(snapshot: dict[str, Any]) -> int:
    """The most projects the tier counted at one time."""
    edges = sorted(
        [(start, 1) for start, _ in processing_windows(snapshot)]
        + [(end, -1) for _, end in processing_windows(snapshot)],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def refusals(snapshot: dict[str, Any]) -> dict[str, int]:
    """429s of every kind the emulator gave (pace and tier)."""
    counters = snapshot["counters"]
    too_many = sum(1 for q in snapshot["requests"] if q["status"] == 429)
    return {
        "rate_limited": int(counters["rate_limited"]),
        "tier_limited": int(counters["tier_limited"]),
        "429": too_many,
    }
