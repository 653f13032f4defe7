"""``python -m bench [name ...]``: run benchmarks (all by default) and print their tables.

Options: ``--runs N`` (runs per median), ``--quick`` (small sizes and short waits: a smoke test
of the benchmarks themselves, not figures to quote), ``--markdown FILE`` (also write the
reports as markdown, for ``bench/RESULTS.md``), ``--list``.

Several benchmarks are each run in a process of their own (``--report-to``, an internal option,
hands the report back): the emulator lives in the benchmark's process, and one left busy by an
earlier benchmark's multi-GiB uploads made the burst's daemon cost 1-2 ms more per file.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Options, Report, machine

# In the order of the issue; each module has NAME, TITLE and run(Options) -> Report.
BENCHMARKS = (
    "upload",
    "pickup",
    "progress",
    "burst",
    "rescan",
    "idle",
    "soak",
    "notify",
    "dashboard",
    "pipeline",
    "ledgercost",
    "takeover",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="name", help=f"any of {', '.join(BENCHMARKS)}")
    p.add_argument("--runs", type=int, default=5, help="runs per median (default 5)")
    p.add_argument("--quick", action="store_true", help="small sizes: check the benchmarks run")
    p.add_argument("--markdown", type=Path, help="also write the reports as markdown here")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--report-to", type=Path, help=argparse.SUPPRESS)  # one benchmark, pickled
    return p


def _in_own_process(name: str, args: argparse.Namespace, tmp: Path) -> Report:
    """``name`` run by a fresh ``python -m bench`` process; its report."""
    out = tmp / f"{name}.report"
    cmd = [sys.executable, "-m", "bench", name, "--runs", str(args.runs), "--report-to", str(out)]
    if args.quick:
        cmd.append("--quick")
    code = subprocess.run(cmd, check=False).returncode
    if not out.exists():
        raise SystemExit(f"benchmark {name} failed (exit {code}) before it reported")
    with open(out, "rb") as f:
        report: Report = pickle.load(f)
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name in BENCHMARKS:
            module = importlib.import_module(f"bench.{name}")
            print(f"{name:10} {module.TITLE}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    names = args.names or list(BENCHMARKS)
    info = machine()
    if args.report_to is None:  # a child of a run of several: its parent said it
        print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="watchd-bench-") as tmp:
        for name in names:
            if len(names) > 1:
                report = _in_own_process(name, args, Path(tmp))
            else:
                module = importlib.import_module(f"bench.{name}")
                opts = Options(workdir=Path(tmp), runs=args.runs, quick=args.quick)
                t0 = time.monotonic()
                report = module.run(opts)
                report.seconds = time.monotonic() - t0
                if args.report_to is not None:
                    with open(args.report_to, "wb") as f:
                        pickle.dump(report, f)
                    return 0
            reports.append(report)
            print("\n" + report.text(), flush=True)
    if args.markdown:
        lines = ["machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), ""]
        lines += [r.markdown() for r in reports]
        args.markdown.write_text("\n".join(lines))
    missed = [r.name for r in reports if not r.ok]
    if missed:
        print(f"\ntargets missed in: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
