"""``watchd emulator``: the emulator in the foreground until SIGTERM/SIGINT.

The lead's ``watchd/cli.py`` calls :func:`add_arguments` on its subparser and :func:`run` with
the parsed arguments. At start the command prints one ``key: value`` per line: the API URL, the
storage URL and the seeded user's email, password and workspace.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from watchd.emulator.settings import (
    TIERS,
    EmulatorSettings,
    Faults,
    Timings,
    Variants,
    merge,
    parse_assignment,
)

if TYPE_CHECKING:
    from watchd.emulator.server import Emulator

__all__ = ["DEMO_TIMINGS", "add_arguments", "build_settings", "run"]

DEFAULT_PORT = 8765
# The pace of ``--speed 1``: about ten seconds from /process to CLIPS_READY. Without --speed
# (or --timing) work finishes inside the request that starts it.
DEMO_TIMINGS = Timings(step=2.0, render=3.0, export=3.0)


def _assignment(text: str) -> tuple[str, str]:
    try:
        return parse_assignment(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _names(cls: type[Any]) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``watchd emulator``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"API port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--storage-port",
        type=int,
        default=0,
        help="storage origin port (default: PORT+1, or a free port when that is taken)",
    )
    parser.add_argument(
        "--email",
        default=EmulatorSettings.seed_email,
        help="seeded user's email (default %(default)s)",
    )
    parser.add_argument(
        "--password",
        default=EmulatorSettings.seed_password,
        help="seeded user's password (default %(default)s)",
    )
    parser.add_argument(
        "--workspace",
        default=EmulatorSettings.seed_workspace,
        help="seeded workspace's name (default %(default)s)",
    )
    parser.add_argument(
        "--tier",
        choices=TIERS,
        default=EmulatorSettings.tier,
        help="the workspace's tier (default %(default)s)",
    )
    parser.add_argument(
        "--minutes",
        type=int,
        default=EmulatorSettings.minutes,
        help="processing minute pool (default %(default)s)",
    )
    parser.add_argument(
        "--access-ttl",
        type=int,
        default=EmulatorSettings.access_ttl,
        help="access token lifetime in seconds (default %(default)s)",
    )
    parser.add_argument(
        "--inspect",
        action="store_true",
        help="serve GET {api}/_emulator/state and POST {api}/_emulator/config",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep objects here (default: a temp dir)"
    )
    parser.add_argument(
        "--no-store-uploads", action="store_true", help="hash uploads without keeping them"
    )
    parser.add_argument(
        "--lenient-media",
        action="store_true",
        help="do not fail projects whose upload is not a decodable video",
    )
    parser.add_argument(
        "--no-auth-rate-limits", action="store_true", help="switch off the auth rate limits"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for clips and random faults")
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help="make simulated work take time: SPEED times the demo pace (1: about 10 s from "
        "/process to CLIPS_READY); without it work finishes inside the request that starts it",
    )
    assignments = (
        ("--timing", "NAME=SECONDS", f"set one timing ({_names(Timings)})"),
        ("--fault", "NAME=VALUE", f"switch a fault on ({_names(Faults)})"),
        ("--variant", "NAME=VALUE", f"serve a loose spot one way ({_names(Variants)})"),
    )
    for flag, metavar, text in assignments:
        parser.add_argument(
            flag,
            type=_assignment,
            action="append",
            default=[],
            metavar=metavar,
            help=f"{text}; repeatable",
        )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log every request (without query strings)"
    )


def build_settings(args: argparse.Namespace) -> EmulatorSettings:
    """Settings from parsed arguments; ValueError names a bad value."""
    timings = Timings() if args.speed is None else DEMO_TIMINGS.scaled(args.speed)
    return EmulatorSettings(
        host=args.host,
        port=args.port,
        storage_port=args.storage_port,
        seed_email=args.email,
        seed_password=args.password,
        seed_workspace=args.workspace,
        tier=args.tier,
        minutes=args.minutes,
        access_ttl=args.access_ttl,
        inspect=args.inspect,
        data_dir=args.data_dir,
        store_uploads=not args.no_store_uploads,
        strict_media=not args.lenient_media,
        auth_rate_limits=not args.no_auth_rate_limits,
        seed=args.seed,
        timings=merge(timings, dict(args.timing)),
        faults=merge(Faults(), dict(args.fault)),
        variants=merge(Variants(), dict(args.variant)),
    )


def _banner(emu: Emulator, out: TextIO) -> None:
    lines = {
        "api_url": emu.api_url,
        "storage_url": emu.storage_url,
        "email": emu.seed_email,
        "password": emu.seed_password,
        "workspace": emu.settings.seed_workspace,
        "workspace_id": emu.workspace_id,
        "inspect": "on" if emu.settings.inspect else "off",
    }
    for key, value in lines.items():
        out.write(f"{key}: {value}\n")
    out.flush()


async def _serve(settings: EmulatorSettings, out: TextIO) -> None:
    from watchd.emulator.server import Emulator  # the heavy part, only when serving

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(settings) as emu:
            _banner(emu, out)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad options or a taken port."""
    out = out or sys.stdout
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        settings = build_settings(args)
    except ValueError as e:
        print(f"watchd emulator: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(settings, out))
    except OSError as e:
        print(
            f"watchd emulator: cannot listen on {settings.host}:{settings.port}: {e}",
            file=sys.stderr,
        )
        return 2
    return 0
