"""8. The web dashboard: render time, live latency, the cost of an idle open page.

- Render: a ledger of 10,000 jobs (every state, clips with thumbnails on the newest), the queue
  page rendered by the dashboard's own code in this process (``views.queue_view`` and the
  template: the server's work for ``GET /``), first page, a filter, a search and the last page;
  and the same pages fetched over loopback from the dashboard's server (HTTP included).
- Latency: ``watchd run`` with ``[web]`` and a file going through the emulator, watched the way
  the page does it: the ``/events`` stream, and on each ``changed`` event the queue's fragment
  fetched again. For every state the fragment showed: the time from the ledger's event for that
  state (its ``at``) to the fragment that showed it.
- Idle: the same daemon with nothing happening, its CPU over a spell without a page open and
  over one with a page open (the event stream connected): the difference is the page's cost.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from bench.common import Options, Report, Sample, Table, median, spread
from bench.rig import Run, emulator, ledger_query, make_env, sample_video, unique_copy
from tests.web.helpers import StaticSource, add_job, serve
from watchd.ledger.db import Ledger
from watchd.ledger.states import Stage
from watchd.web import views
from watchd.web.app import make_env as make_templates

NAME = "dashboard"
TITLE = "web dashboard: render time, live latency, idle page"
JOBS = 10_000
QUICK_JOBS = 1_000
RENDER_TARGET_MS = 150.0
LATENCY_TARGET = 1.0
IDLE_TARGET = 0.5  # % of one core for an open page
IDLE_SECONDS = 30.0
QUICK_IDLE_SECONDS = 4.0
STATES = [s for s in Stage]


def fill(ledger: Ledger, n: int) -> None:
    """``n`` jobs over every state (mostly delivered, as a long-running ledger is), the newest
    200 with a clip and its thumbnail."""
    with ledger.batch():
        ids = [
            add_job(ledger, f"show-{i // 100:03d}/episode-{i:05d}.mp4", rule=f"rule{i % 7}")
            for i in range(n)
        ]
    weights = {Stage.DELIVERED: 80, Stage.FAILED: 5, Stage.PARKED: 2}
    cycle = [s for s in STATES for _ in range(weights.get(s, 1))]
    with ledger.batch():
        for i, job_id in enumerate(ids):
            state = cycle[i % len(cycle)]
            ledger.update(
                job_id,
                state=state.value,
                progress=float(i % 100),
                step="transcribing" if state is Stage.PROCESSING else None,
                error="Carmic refused the request: 422 — Check the rule's settings"
                if state is Stage.FAILED
                else None,
                park_reason="billing: Insufficient processing minutes"
                if state is Stage.PARKED
                else None,
            )
            if i >= n - 200:
                ledger.put_clips(
                    job_id,
                    [
                        {
                            "clip_id": f"c{i}",
                            "rank": 1,
                            "title": "A clip",
                            "start_time": 0.0,
                            "end_time": 30.0,
                            "virality_score": 80,
                            "thumbnail": "01 - A clip.jpg",
                        }
                    ],
                )


def render_ms(ledger: Ledger, query: dict[str, str], runs: int) -> list[float]:
    """Milliseconds for the queue page's server work: the view-model and the template."""
    env = make_templates()
    template = env.get_template("queue.html")
    source = StaticSource(ledger)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        view = views.queue_view(ledger, source, views.parse_filters(query), time.time())
        template.render(view=view, csrf="x")
        out.append(1000 * (time.perf_counter() - t0))
    return out


async def http_ms(ledger: Ledger, paths: list[str], runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {p: [] for p in paths}
    async with (
        serve(StaticSource(ledger)) as server,
        httpx.AsyncClient(base_url=server.url.rstrip("/")) as c,
    ):
        for path in paths:
            for _ in range(runs):
                t0 = time.perf_counter()
                r = await c.get(path)
                out[path].append(1000 * (time.perf_counter() - t0))
                assert r.status_code == 200, r.status_code
    return out


QUERIES = [
    ("first page", {}, "/"),
    ("state filter (failed)", {"state": "failed"}, "/?state=failed"),
    ("name search", {"q": "episode-0999"}, "/?q=episode-0999"),
    ("last page", {"page": "100"}, "/?page=100"),
]


def bench_render(report: Report, work: Path, n: int, runs: int) -> None:
    ledger = Ledger(work / "render.db", fsync=False)
    try:
        t0 = time.monotonic()
        fill(ledger, n)
        filled = time.monotonic() - t0
        table = Table(
            ["page", "server ms (median)", "range", "over HTTP ms (median)", "range"],
            title=f"the queue page over a ledger of {n:,} jobs, {runs} runs each",
        )
        http = asyncio.run(http_ms(ledger, [p for _, _, p in QUERIES], runs))
        worst = 0.0
        for label, query, path in QUERIES:
            server = render_ms(ledger, query, runs)
            worst = max(worst, median(server))
            table.add(label, median(server), spread(server), median(http[path]), spread(http[path]))
        report.tables.append(table)
        report.notes.append(f"ledger of {n:,} jobs filled in {filled:.1f} s")
        report.check(
            f"queue page with {n:,} jobs, server time (slowest median)",
            f"{worst:.1f} ms",
            f"<= {RENDER_TARGET_MS:g} ms",
            worst <= RENDER_TARGET_MS,
        )
    finally:
        ledger.close()


# ---- live latency and the idle page ------------------------------------------------------------


class Watcher(threading.Thread):
    """The page's part, without a browser: the event stream, and the fragment fetched again on
    each ``changed``. Records when each state was first shown."""

    def __init__(self, url: str) -> None:
        super().__init__(name="dashboard-watcher", daemon=True)
        self.url = url
        self.first_seen: dict[str, float] = {}
        self.events = 0
        self.stopping = threading.Event()
        self.connected = threading.Event()

    def look(self, c: httpx.Client) -> None:
        text = c.get(self.url + "fragments/queue").text
        now = time.time()
        for state in re.findall(r'class="job" data-state="([a-z_]+)"', text):
            self.first_seen.setdefault(state, now)

    def run(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=None)) as c,
            c.stream("GET", self.url + "events") as stream,
        ):
            self.connected.set()
            for line in stream.iter_lines():
                if self.stopping.is_set():
                    break
                if line.startswith("event: changed"):
                    self.events += 1
                    self.look(c)


def _with_web(env: Any) -> None:
    cfg = tomllib.loads(env.config_path.read_text())
    cfg["web"] = {"listen": "127.0.0.1:0"}
    env.config_path.write_bytes(tomli_w.dumps(cfg).encode())


def _url(run: Run) -> str:
    found = re.search(r"dashboard at (http://127\.0\.0\.1:\d+/)", run.log())
    assert found, "the daemon did not log its dashboard's URL"
    return found.group(1)


def cpu_percent(pid: int, seconds: float) -> float:
    a = Sample.of(pid)
    time.sleep(seconds)
    b = Sample.of(pid)
    return 100 * (b.cpu - a.cpu) / (b.t - a.t)


def bench_live(report: Report, work: Path, idle_seconds: float) -> None:
    from watchd.emulator import Timings

    with emulator(timings=Timings(step=0.3, render=0.3, export=0.2, keepalive=5)) as emu:
        env = make_env(work / "live", emu, {"podcasts": {"render": {"max_clips": 2}}})
        _with_web(env)
        run = Run(env)
        try:
            run.wait_ready()
            url = _url(run)
            # Idle, no page open; then idle with a page open (its event stream connected).
            time.sleep(2.0)
            closed = cpu_percent(run.pid, idle_seconds)
            watcher = Watcher(url)
            watcher.start()
            watcher.connected.wait(10)
            httpx.get(url)  # the page itself, once
            opened = cpu_percent(run.pid, idle_seconds)
            # Live: a file through the pipeline, watched as the page watches it.
            unique_copy(sample_video(work), env.inbox / "podcasts/live.mp4", "live")
            deadline = time.monotonic() + 120
            while "delivered" not in watcher.first_seen and time.monotonic() < deadline:
                time.sleep(0.05)
            watcher.stopping.set()
        finally:
            run.stop()
    events = ledger_query(
        env.state, "SELECT to_state, MIN(at) FROM events WHERE to_state IS NOT NULL GROUP BY 1"
    )
    table = Table(["state", "latency s"], title="from the ledger's event to the page's fragment")
    lags = []
    for state, at in sorted(events, key=lambda r: r[1]):
        if state in watcher.first_seen:
            lag = watcher.first_seen[state] - float(at)
            lags.append(lag)
            table.add(state, lag)
        else:
            table.add(state, "(passed between two updates)")
    report.tables.append(table)
    worst = max(lags) if lags else float("inf")
    report.check(
        "a state change reaches an open page (slowest state)",
        f"{worst:.3f} s (median {statistics.median(lags) if lags else float('nan'):.3f} s)",
        f"<= {LATENCY_TARGET:g} s",
        worst <= LATENCY_TARGET and "delivered" in watcher.first_seen,
    )
    idle = Table(["daemon, nothing happening", "CPU % of a core"], title=f"{idle_seconds:g} s each")
    idle.add("dashboard on, no page open", closed)
    idle.add("dashboard on, one page open", opened)
    report.tables.append(idle)
    report.check(
        "an idle open page's cost to the daemon",
        f"{opened - closed:.2f} % of a core",
        f"< {IDLE_TARGET:g} %",
        opened - closed < IDLE_TARGET,
    )
    report.notes.append(
        f"{watcher.events} update(s) reached the page for one file. CPU is counted in clock "
        f"ticks (10 ms): over {idle_seconds:g} s the resolution is {1 / idle_seconds:.2f} %."
    )


def run(opts: Options) -> Report:
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    bench_render(report, work, QUICK_JOBS if opts.quick else JOBS, max(3, opts.runs))
    bench_live(report, work, QUICK_IDLE_SECONDS if opts.quick else IDLE_SECONDS)
    return report
