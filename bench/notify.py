"""10. Notifications: event -> first POST, and the burst with a notifier that is down.

Latency: files are dropped one at a time into a daemon with a webhook to a receiver on
loopback that answers 204 at once; for each ``job.queued`` and ``job.delivered`` event, the
time from the ledger's record of the change (``jobs.created_at``, ``jobs.finished_at``) to the
POST's arrival. Both clocks are this machine's wall clock.

Burst: the same burst as ``burst`` (smaller), once without notifiers and once with a webhook to
a port where nothing listens (every attempt refused, every event queued and retried): the
daemon's CPU per file and the wall time must stay the same.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from bench.burst import burst_once
from bench.common import Options, Report, Table, median, spread, wait_until
from bench.rig import Run, emulator, ledger_query, make_env, sample_video, unique_copy
from tests.notify.receiver import Receiver, Request

NAME = "notify"
TITLE = "notifications: event -> first POST; burst with a notifier down"
LATENCY_TARGET = 1.0
FILES = 10
BURST_FILES = 200
QUICK_BURST_FILES = 50


def latencies(work: Path, sample: Path, files: int) -> dict[str, list[float]]:
    """Seconds from the ledger's change to the POST's arrival, by event type."""
    arrivals: dict[str, float] = {}

    def receive(req: Request, n: int) -> tuple[int, dict[str, str]]:
        arrivals[req.headers["webhook-id"]] = time.time()
        return 204, {}

    out: dict[str, list[float]] = {"job.queued": [], "job.delivered": []}
    with emulator() as emu, Receiver(receive) as rx:
        env = make_env(work / "latency", emu, notify=[{"url": rx.url}])
        run = Run(env)
        try:
            run.wait_ready()
            for i in range(files):
                src = unique_copy(sample, work / "src" / f"f{i}.mp4", f"lat-{i}")
                src.rename(env.inbox / src.name)
                wait_until(
                    lambda i=i: len(rx.events("job.delivered")) > i, timeout=60, what="delivered"
                )
            rows = ledger_query(env.state, "SELECT id, created_at, finished_at FROM jobs")
        finally:
            run.stop()
        times = {job_id: (created, finished) for job_id, created, finished in rows}
        for req in rx.received():
            event = req.json
            created, finished = times[event["data"]["job_id"]]
            start = created if event["type"] == "job.queued" else finished
            out[event["type"]].append(arrivals[req.headers["webhook-id"]] - start)
    return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(opts: Options) -> Report:
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    sample = sample_video(work)
    files = 3 if opts.quick else FILES
    lat = latencies(work, sample, files)
    table = Table(["event", "events", "median s", "range"], title="ledger change -> POST arrives")
    for kind, values in lat.items():
        table.add(kind, len(values), median(values), spread(values))
    report.tables.append(table)
    both = [v for values in lat.values() for v in values]
    med = median(both)
    report.check(
        "event -> first POST (median)", f"{med:.3f} s", f"<= {LATENCY_TARGET:g} s", med <= 1.0
    )

    n = QUICK_BURST_FILES if opts.quick else BURST_FILES
    down = [{"url": f"http://127.0.0.1:{_closed_port()}/hook", "retry_first_seconds": 1}]
    plain = burst_once(work, sample, n, "plain")
    with_down = burst_once(work, sample, n, "down", notify=down)
    burst = Table(["figure", "no notifier", "notifier down", "ratio"], title=f"burst of {n} files")
    for key, label in (
        ("wall", "wall, drop to last delivery, s"),
        ("rate", "files per second"),
        ("ms", "daemon CPU per file, ms"),
        ("hwm", "daemon peak RSS, MiB"),
    ):
        burst.add(label, plain[key], with_down[key], with_down[key] / plain[key])
    report.tables.append(burst)
    ratio = with_down["wall"] / plain["wall"]
    report.check(
        "burst wall time with a notifier down", f"{ratio:.2f}x", "<= 1.1x (unchanged)", ratio <= 1.1
    )
    report.notes.append(
        "Small N on a shared 2-core machine: one run each; the burst's CPU per file with the "
        "notifier down includes recording every event (one row per event and notifier) and the "
        "refused attempts."
    )
    return report
