"""The ``watchd`` command line: a thin layer that builds library objects and calls them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from watchd import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="watchd",
        description="Watch folders that feed the Carmic Pro video-clipping API.",
    )
    p.add_argument("--version", action="version", version=f"watchd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the daemon in the foreground")
    sub.add_parser("check", help="validate the config, log in, list inboxes and rules")
    sub.add_parser("status", help="show the ledger")
    sub.add_parser("retry", help="put failed or parked jobs back in the queue")
    sub.add_parser("forget", help="drop finished jobs from the ledger")
    sub.add_parser("emulator", help="run the bundled Carmic API emulator")
    sub.add_parser("demo", help="run the whole pipeline against the bundled emulator")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    print(f"watchd {args.command}: not implemented yet", file=sys.stderr)
    return 2
