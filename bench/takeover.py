"""8c. Takeover after a SIGKILL: how long until another host carries the dead one's job on.

Two daemons with ``[cluster]`` share an inbox and a PostgreSQL ledger. One file is dropped;
once its job is processing at the emulator (16 s of processing, so the project is still busy
when the heir arrives), the daemon holding it is SIGKILLed. Measured: from the kill to the
heir's first request about that job's project (the contract's "carries its jobs on"), and to
its delivery. The goal is ``lease_seconds + 5 s``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from bench.common import Options, Report, Table, median, spread, wait_until
from bench.rig import BASE_CARMIC, emulator, pg_database, pg_server, sample_video, unique_copy
from tests.e2e.cluster import Cluster, job_of, node_of
from watchd.emulator import Timings

NAME = "takeover"
TITLE = "takeover after SIGKILL: kill to the heir's first request about the job"
LEASE = 10.0
SLACK = 5.0
STEP = 4.0  # 4 statuses: 16 s of processing


def takeover_once(work: Path, sample: Path, url: str, tag: str) -> dict[str, float]:
    src = unique_copy(sample, work / f"staging-{tag}" / f"{tag}.mp4", tag)
    with ExitStack() as stack:
        emu = stack.enter_context(
            emulator(tier="BUSINESS", timings=Timings(step=STEP, keepalive=1))
        )
        rig = Cluster(work / f"rig-{tag}", emu, url, names=("n1", "n2"), lease_seconds=LEASE)
        rig.configure(carmic=BASE_CARMIC, daemon={"settle_seconds": 0.5}, inbox={"render": "none"})
        stack.callback(rig.kill_all)
        rig.start()
        rig.drop_all([src])
        held = wait_until(
            lambda: (j := job_of(url, src.name)) and j["state"] == "processing" and j,
            timeout=60,
            interval=0.05,
            what="the job to be processing",
        )
        victim = held["node"]
        heir = "n2" if victim == "n1" else "n1"
        rig.kill(victim)
        killed = time.time()
        project = held["project_id"]

        def first_request() -> float | None:
            times = [
                q["started"] or q["t"]
                for q in emu.snapshot()["requests"]
                if node_of(q) == heir and project in q["path"] and (q["started"] or q["t"]) > killed
            ]
            return min(times) if times else None

        first = wait_until(first_request, timeout=LEASE + 60, interval=0.05, what="the heir")
        rig.wait_delivered([src.name], timeout=120)
        delivered = time.time()
        rig.stop()
    return {"first": first - killed, "delivered": delivered - killed}


def run(opts: Options) -> Report:
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    runs = 1 if opts.quick else min(3, opts.runs)
    sample = sample_video(work)
    results = []
    with pg_server() as server:
        for k in range(runs):
            with pg_database(server) as url:
                results.append(takeover_once(work, sample, url, f"t{k}"))
    table = Table(
        ["figure", "median", "range"],
        title=f"lease_seconds {LEASE:g}, 2 daemons, {runs} kill(s) mid-processing",
    )
    firsts = [r["first"] for r in results]
    table.add("kill to the heir's first request about the project, s", median(firsts),
              spread(firsts))  # fmt: skip
    deliveries = [r["delivered"] for r in results]
    table.add("kill to delivery, s", median(deliveries), spread(deliveries))
    report.tables.append(table)
    worst = max(firsts)
    report.check(
        "takeover (worst run)",
        f"{worst:.1f} s",
        f"<= lease + {SLACK:g} = {LEASE + SLACK:g} s",
        worst <= LEASE + SLACK,
    )
    report.notes.append(
        f"The project processes for {4 * STEP:g} s at the emulator, so delivery waits for it "
        "too; the first request is what the contract times."
    )
    return report
