"""1. Upload throughput: the whole daemon against ``curl -T`` to the emulator's storage.

The same padded video (sparse: reads cost no disk time on either side) is sent by ``curl -T``
(what the API reference's quickstart does) and by ``watchd run`` picking it up from its inbox,
in alternating runs. Both are timed by the receiver, from the first body byte to the end of the
PUT, on the same clock. The emulator keeps no bytes (``store_uploads=False``): it hashes them,
as a real object store does. The daemon's peak resident memory (VmHWM) is read from ``/proc``
when its upload has finished.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    MIB,
    Options,
    Report,
    Table,
    cpu_seconds,
    median,
    spread,
    vm_mib,
)
from bench.rig import (
    Run,
    emulator,
    make_env,
    padded_video,
    sample_video,
    storage_puts,
    uploads,
    wait_for_uploads,
)
from tests.emulator.helpers import Api
from watchd.emulator import Emulator, Timings

NAME = "upload"
TITLE = "upload throughput vs curl -T (loopback, emulator storage)"
SIZES = (256 * MIB, 1024 * MIB, 4096 * MIB)
QUICK_SIZES = (64 * MIB,)
RATIO_TARGET = 0.9
HWM_TARGET = 100.0


@dataclass(frozen=True)
class Cores:
    """Which CPUs the receiver (this process: the emulator's storage) and the senders (curl,
    the daemon) run on. In production the storage is another machine: pinned apart, neither
    sender pays for the receiver's hashing, and the comparison is of the uploaders alone."""

    receiver: frozenset[int]
    sender: frozenset[int]

    @classmethod
    def split(cls) -> Cores:
        """The first CPU for the receiver, the others for the senders (all shared on one)."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls.shared()
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))

    @classmethod
    def shared(cls) -> Cores:
        """Everyone on every CPU this process may use."""
        cpus = frozenset(os.sched_getaffinity(0))
        return cls(cpus, cpus)

    @property
    def label(self) -> str:
        if self.receiver == self.sender:
            return "shared"
        return f"receiver {_cpus(self.receiver)}, sender {_cpus(self.sender)}"

    def pin_receiver(self) -> None:
        """Every thread of this process onto the receiver's CPUs (threads started later, the
        emulator's, inherit it)."""
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that has just ended
                os.sched_setaffinity(int(tid), self.receiver)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """A child started inside this block runs on the senders' CPUs (a child inherits the
        affinity of the thread that starts it)."""
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.sender)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _receiver_seconds(put: dict[str, object]) -> float:
    end, first = put["t"], put["first_byte"]
    assert isinstance(end, float) and isinstance(first, float)
    return end - first


def curl_once(emu: Emulator, api: Api, path: Path, cores: Cores) -> tuple[float, float]:
    """(receiver seconds, curl CPU seconds) of one ``curl -T``."""
    created = api.create_for(path)
    cpu0 = _children_cpu()
    with cores.sending():
        out = _curl(path, created["upload_url"])
    cpu = _children_cpu() - cpu0
    if out.stdout != "200":
        raise RuntimeError(f"curl upload answered {out.stdout}: {out.stderr}")
    key = "/" + created["object_key"]
    put = next(q for q in storage_puts(emu) if str(q["path"]).endswith(key))
    return _receiver_seconds(put), cpu


def _curl(path: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-T",
            str(path),
            "-H",
            "Content-Type: video/mp4",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def daemon_once(emu: Emulator, root: Path, path: Path, cores: Cores) -> tuple[float, float, float]:
    """(receiver seconds, daemon CPU seconds during the upload, VmHWM MiB) of ``watchd run``
    taking ``path`` from its inbox."""
    env = make_env(root, emu, daemon={"settle_seconds": 0.5})
    with cores.sending():
        run = Run(env)
    try:
        run.wait_ready()
        before = len(storage_puts(emu))
        done = uploads(emu) + 1
        cpu0 = cpu_seconds(run.pid)
        os.link(path, env.inbox / path.name)
        wait_for_uploads(emu, done, timeout=600)
        cpu = cpu_seconds(run.pid) - cpu0
        hwm = vm_mib(run.pid)
        put = storage_puts(emu)[before]
    finally:
        run.stop()
        shutil.rmtree(root, ignore_errors=True)
    return _receiver_seconds(put), cpu, hwm


def pairs_for(size: int, runs: int) -> int:
    """Small files are quick and noisy: up to three times more pairs for them."""
    return min(3 * runs, max(runs, runs * (1024 * MIB) // size))


def one_size(
    emu: Emulator, api: Api, src: Path, pairs: int, work: Path, cores: Cores
) -> dict[str, list[float]]:
    """``pairs`` alternating curl and daemon runs: throughputs (MB/s), CPU, VmHWM."""
    size = src.stat().st_size
    out: dict[str, list[float]] = {k: [] for k in ("curl", "daemon", "curl_cpu", "daemon_cpu")}
    out["hwm"] = []
    for i in range(pairs):
        for who in ("curl", "daemon") if i % 2 == 0 else ("daemon", "curl"):
            if who == "curl":
                secs, cpu = curl_once(emu, api, src, cores)
            else:
                secs, cpu, hwm = daemon_once(emu, work / f"run{i}", src, cores)
                out["hwm"].append(hwm)
            out[who].append(size / secs / 1e6)
            out[f"{who}_cpu"].append(cpu)
    return out


def run(opts: Options) -> Report:
    """Alternating curl and daemon runs per size, the receiver on a core of its own; one size
    again with every process sharing every core. Medians, ratios, peak memory."""
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    sample = sample_video(work)
    table = Table(
        [
            "size",
            "cores",
            "pairs",
            "curl MB/s",
            "(range)",
            "watchd MB/s",
            "(range)",
            "ratio",
            "watchd VmHWM MiB",
            "watchd CPU s/GiB",
            "curl CPU s/GiB",
        ],
        title="medians of alternating runs; ratio: median of the ratios of neighbouring runs",
    )
    shared = Cores.shared()  # before any pinning
    pinned = Cores.split()
    sizes = QUICK_SIZES if opts.quick else SIZES
    plan = [(size, pinned, pairs_for(size, opts.runs)) for size in sizes]
    # The same comparison with the receiver's hashing competing for the senders' cores.
    plan.append((sizes[min(1, len(sizes) - 1)], shared, min(3, opts.runs)))
    ratios: list[float] = []
    peak = 0.0
    # Slow processing: once its upload is done, the daemon has nothing to do but wait.
    slow = Timings(step=600, keepalive=5)
    pinned.pin_receiver()
    try:
        with emulator(store_uploads=False, timings=slow) as emu, Api(emu) as api:
            api.login()
            for size, cores, pairs in plan:
                src = padded_video(sample, work / f"padded-{size // MIB}MiB.mp4", size)
                if cores is shared:
                    shared.pin_receiver()
                r = one_size(emu, api, src, pairs, work, cores)
                src.unlink()
                # Each daemon run against the curl run beside it in time: noise drifts.
                ratio = median(d / c for d, c in zip(r["daemon"], r["curl"], strict=True))
                if cores is pinned:
                    ratios.append(ratio)
                peak = max(peak, *r["hwm"])
                gib = size / (1024 * MIB)
                table.add(
                    f"{size // MIB} MiB",
                    cores.label,
                    pairs,
                    median(r["curl"]),
                    spread(r["curl"]),
                    median(r["daemon"]),
                    spread(r["daemon"]),
                    f"{ratio:.2f}x",
                    max(r["hwm"]),
                    median(r["daemon_cpu"]) / gib,
                    median(r["curl_cpu"]) / gib,
                )
    finally:
        shared.pin_receiver()
    report.tables.append(table)
    worst = min(ratios)
    report.check(
        f"watchd / curl throughput (worst size; {pinned.label})",
        f"{worst:.2f}x",
        f">= {RATIO_TARGET}x",
        worst >= RATIO_TARGET,
    )
    report.check(
        "watchd peak RSS (VmHWM)", f"{peak:.0f} MiB", f"<= {HWM_TARGET:.0f} MiB", peak <= HWM_TARGET
    )
    report.notes.append(
        "Both timed by the receiver (first body byte to end of PUT); the padded MP4 is sparse, "
        "so neither side reads a disk. The emulator hashes what it receives (SHA-256 + MD5, "
        "about 2 s of CPU per GiB): in production that is another machine's work, so the "
        "target is judged with the receiver on a core of its own and the senders on the "
        "others; the 'shared' row is the same comparison with everyone on every core."
    )
    return report
