"""What every benchmark shares: reports and tables, medians and ratios, and what ``/proc`` says
about a process (CPU seconds, peak memory, wake-ups) and about the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


# ---- reports -------------------------------------------------------------------------------


@dataclass
class Table:
    """A small table: a header and rows of already formatted cells."""

    columns: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: object) -> None:
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])

    def text(self) -> str:
        """Aligned plain text: the first column left, the others right."""
        grid = [list(self.columns), *[list(r) for r in self.rows]]
        widths = [max(len(row[i]) for row in grid) for i in range(len(self.columns))]

        def line(row: Sequence[str]) -> str:
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        out = [self.title] if self.title else []
        out += [line(grid[0]), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in grid[1:]]
        return "\n".join(out)

    def markdown(self) -> str:
        """The same table as GitHub markdown (for RESULTS.md)."""
        out = [f"**{self.title}**", ""] if self.title else []
        out.append("| " + " | ".join(self.columns) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out)


@dataclass
class Check:
    """One target of the issue: what was measured against what was promised."""

    what: str
    value: str
    target: str
    ok: bool


@dataclass
class Report:
    """What one benchmark prints: its tables, its checks against targets, and notes."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, what: str, value: str, target: str, ok: bool) -> None:
        self.checks.append(Check(what, value, target, ok))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def text(self) -> str:
        out = [f"== {self.name}: {self.title} ({self.seconds:.0f} s) =="]
        out += [t.text() + "\n" for t in self.tables]
        for c in self.checks:
            out.append(f"[{'PASS' if c.ok else 'MISS'}] {c.what}: {c.value} (target {c.target})")
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"### {self.name}: {self.title}", ""]
        for t in self.tables:
            out += [t.markdown(), ""]
        if self.checks:
            checks = Table(["target", "measured", "promised", "verdict"])
            for c in self.checks:
                checks.add(c.what, c.value, c.target, "pass" if c.ok else "MISS")
            out += [checks.markdown(), ""]
        out += [f"- {n}" for n in self.notes]
        out.append(f"\n_{self.seconds:.0f} s to run._\n")
        return "\n".join(out)


def fmt(value: object) -> str:
    """Numbers with as many digits as a reader can use; anything else as ``str``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def brief(error: BaseException) -> str:
    """An error on one line: its first line and its last three (a daemon's last log lines,
    when the error quotes its log), for a note in a report."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return " / ".join(lines[:1] + lines[-3:])


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def spread(values: Sequence[float]) -> str:
    """``min–max`` of a few runs, to show how noisy a median is."""
    return f"{fmt(min(values))}–{fmt(max(values))}" if values else "-"


# ---- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` (and of children it has waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def vm_mib(pid: int, key: str = "VmHWM") -> float:
    """A ``/proc/<pid>/status`` memory figure (VmHWM: peak resident set) in MiB."""
    return int(proc_status(pid)[key].split()[0]) / 1024


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread: how often the process went to sleep and
    was woken again (a busy loop that polls shows up here even when its CPU is small)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended in between
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


@dataclass(frozen=True)
class Sample:
    """A process's counters at one moment."""

    t: float
    cpu: float
    wakeups: int

    @classmethod
    def of(cls, pid: int) -> Sample:
        return cls(time.monotonic(), cpu_seconds(pid), wakeups(pid))


# ---- waiting --------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy (which is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


# ---- the machine ----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """Where the figures came from."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / MIB:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": _fs_of(Path.cwd()),
    }


def _fs_of(path: Path) -> str:
    from watchd.watching.mounts import fs_type

    try:
        return fs_type(path) or "unknown"
    except OSError:
        return "unknown"


# ---- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What ``python -m bench`` passes every benchmark: how many runs make a median, whether to
    run a quick, smaller version (a smoke test of the benchmark itself), and a scratch folder."""

    workdir: Path
    runs: int = 5
    quick: bool = False

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
