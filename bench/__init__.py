"""Benchmarks and the soak test of carmic-watchd (issue 5): ``python -m bench`` or ``make bench``.

Each module measures one thing against the bundled emulator over loopback, with ``watchd run``
as a real subprocess, and returns a :class:`bench.common.Report`: a small table of medians of
several runs, ratios against a baseline measured in the same run, and checks against the
targets. Results and how to reproduce them: ``bench/RESULTS.md``.
"""
