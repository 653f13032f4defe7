"""3. Progress latency: the emulator's CLIPS_READY transition -> the daemon's first clip request.

The start is when the emulator's project turned CLIPS_READY (its inspection records it), the end
the first ``GET /v1/projects/{id}`` (the clip listing) the daemon sent after it, as the
emulator logged it. With SSE the status arrives pushed; with polling it waits for the next
``/status`` poll, so its latency depends on where the transition falls between two polls: each
file gets a random processing time, so the phases spread over the whole period.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

from bench.common import Options, Report, Table, median, spread, wait_until
from bench.rig import Run, emulator, make_env, sample_video, unique_copy
from watchd.emulator import Emulator, Timings

NAME = "progress"
TITLE = "progress latency: CLIPS_READY -> first clip request (SSE vs polling)"
POLL_SECONDS = 10.0  # the daemon's default, and the API reference's quickstart loop
SSE_TARGET = 1.0


def _clip_request_after(emu: Emulator, pid: str) -> float | None:
    """Seconds from the project's CLIPS_READY to the daemon's first listing of its clips."""
    snapshot = emu.snapshot()
    project = next((p for p in snapshot["projects"] if p["id"] == pid), None)
    if project is None or project["clips_ready_at"] is None:
        return None
    ready = float(project["clips_ready_at"])
    for q in snapshot["requests"]:
        if (
            q["origin"] == "api"
            and q["method"] == "GET"
            and q["path"].endswith(f"/v1/projects/{pid}")
            and q["t"] >= ready
        ):
            return float(q["t"]) - ready
    return None


def _new_project(emu: Emulator, known: set[str]) -> str | None:
    fresh = [p["id"] for p in emu.snapshot()["projects"] if p["id"] not in known]
    return str(fresh[0]) if fresh else None


def latencies(
    emu: Emulator, root: Path, sample: Path, realtime: str, steps: list[float]
) -> list[float]:
    """One file per processing step length, one after the other."""
    env = make_env(root, emu, carmic={"realtime": realtime, "poll_seconds": POLL_SECONDS})
    run = Run(env)
    out: list[float] = []
    try:
        run.wait_ready()
        for i, step in enumerate(steps):
            emu.update(timings=Timings(step=step, keepalive=5))
            known = {p["id"] for p in emu.snapshot()["projects"]}
            unique_copy(sample, env.inbox / f"{realtime}{i}.mp4", f"{realtime}-{i}")
            pid: str = wait_until(
                partial(_new_project, emu, known),
                timeout=30,
                interval=0.05,
                what="a project",
            )
            out.append(
                wait_until(
                    partial(_clip_request_after, emu, pid),
                    timeout=4 * step + 2 * POLL_SECONDS + 10,
                    interval=0.05,
                    what="the clip request",
                )
            )
    finally:
        run.stop()
    return out


def run(opts: Options) -> Report:
    """SSE, then polling every ``POLL_SECONDS``."""
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    sample = sample_video(work)
    rng = random.Random(5)
    n_sse, n_poll = (2, 2) if opts.quick else (2 * opts.runs, opts.runs)
    # Four processing steps: CLIPS_READY 1-3 s after /process with SSE; 1-11 s with polling,
    # so that the moment falls anywhere within a poll period.
    sse_steps = [rng.uniform(0.25, 0.75) for _ in range(n_sse)]
    poll_steps = [rng.uniform(0.25, 0.25 + POLL_SECONDS / 4) for _ in range(n_poll)]
    table = Table(
        ["realtime", "poll s", "files", "median s", "range"],
        title="CLIPS_READY at the emulator to the daemon's GET of the clips",
    )
    with emulator(store_uploads=False) as emu:
        sse = latencies(emu, work / "sse", sample, "sse", sse_steps)
        poll = latencies(emu, work / "poll", sample, "poll", poll_steps)
    table.add("sse", "-", len(sse), median(sse), spread(sse))
    table.add("poll", POLL_SECONDS, len(poll), median(poll), spread(poll))
    report.tables.append(table)
    report.check(
        "SSE median latency", f"{median(sse):.3f} s", f"<= {SSE_TARGET:g} s", median(sse) <= 1
    )
    report.notes.append(
        f"Polling every {POLL_SECONDS:g} s (the daemon's default `poll_seconds` and the "
        f"reference quickstart's loop) waits {POLL_SECONDS / 2:g} s on average; with SSE the "
        f"daemon asks for the clips {median(sse) * 1000:.0f} ms after the transition."
    )
    return report
