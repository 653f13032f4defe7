"""The ``watchd`` command line: a thin layer that builds library objects and calls them."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from watchd import __version__

if TYPE_CHECKING:
    from watchd.cluster_config import ClusterConfig
    from watchd.config import Config
    from watchd.ledger.db import Ledger
    from watchd.ledger.pg import PgLedger
    from watchd.ledger.protocol import LedgerAPI

DEFAULT_CONFIG = "/etc/carmic-watchd/config.toml"

EPILOG = f"""\
CONFIG defaults to $WATCHD_CONFIG, else {DEFAULT_CONFIG}.
Exit codes: 0 ok; 1 unknown job id (retry/forget); 2 bad config; 3 cannot log in or reach the API
(or, with [cluster] or for `ledger migrate`, the database).
"""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="CONFIG",
        help=f"config file (default: $WATCHD_CONFIG, else {DEFAULT_CONFIG})",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="watchd",
        description="Watch folders that feed the Carmic Pro video-clipping API: drop a video into "
        "an inbox folder, get rendered clips, captions and NLE exports in the outbox.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"watchd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the daemon in the foreground until SIGTERM/SIGINT",
        description="Run the daemon in the foreground. SIGTERM/SIGINT stop intake, checkpoint "
        "in-flight work in the ledger and exit within 10 s; SIGHUP reloads the config. "
        "Exit 0 on a clean stop, 2 on a bad config, 3 when the Carmic login is refused.",
    )
    _config_arg(run)
    run.add_argument(
        "--debug",
        action="store_true",
        help='log at debug level and show tracebacks of start-up errors (as log_level = "debug")',
    )

    check = sub.add_parser(
        "check",
        help="validate the config, log in, resolve the workspace, list inboxes and rules",
        description="Validate the config, log in, resolve the workspace and list each inbox and "
        "rule with the folder it maps to. Exit 0 ok, 2 bad config, 3 cannot log in/reach the API.",
    )
    _config_arg(check)
    check.add_argument("--offline", action="store_true", help="skip the network checks")

    status = sub.add_parser(
        "status",
        help="show the ledger: one row per source file",
        description="Show the ledger: one row per source file (id, path, rule, state, progress, "
        "project id, error, updated), then the files still settling and the entries not taken.",
    )
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="print a JSON array")
    status.add_argument(
        "--watch", action="store_true", help="redraw the table live until interrupted (Ctrl-C)"
    )
    status.add_argument(
        "--interval",
        type=_positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="with --watch: seconds between redraws (default: 2)",
    )

    retry = sub.add_parser(
        "retry",
        help="put failed or parked jobs back in the queue",
        description="Put failed or parked jobs back in the queue at the stage they stopped at. "
        "A job none of whose clips was sent to render takes its rule's current preset (the "
        "config and the file's sidecar as they are now); the output says what changed. "
        "Exit 1 if an ID is unknown.",
    )
    _config_arg(retry)
    retry.add_argument(
        "--keep-preset",
        action="store_true",
        help="keep the preset each job started with (default: a job that has not rendered yet "
        "takes its rule's current preset, with its sidecar)",
    )
    retry.add_argument("ids", nargs="+", metavar="ID")

    forget = sub.add_parser(
        "forget",
        help="drop finished jobs from the ledger so the same file can be taken again",
        description="Drop finished (delivered or failed) jobs from the ledger so that the same "
        "file can be taken again. Exit 1 if an ID is unknown.",
    )
    _config_arg(forget)
    forget.add_argument("ids", nargs="+", metavar="ID")

    notify = sub.add_parser(
        "notify",
        help="notifications ([[notify]]): send a test event to each notifier",
        description="Notifications ([[notify]] in the config).",
    )
    notify_sub = notify.add_subparsers(dest="notify_command", metavar="ACTION", required=True)
    notify_test = notify_sub.add_parser(
        "test",
        help="send a test event to each notifier (or to NAME) and show the answers",
        description="Send a test event (type watchd.test) to each [[notify]] notifier, or only to "
        "NAME, and show what each answered. Nothing is recorded in the ledger. Exit 0 when every "
        "one answered well, 1 otherwise, 2 on a bad config.",
    )
    _config_arg(notify_test)
    notify_test.add_argument("name", nargs="?", metavar="NAME", help="only this notifier")

    ledger = sub.add_parser(
        "ledger",
        help="repair the ledger (`ledger rebuild`) or copy it into a cluster database "
        "(`ledger migrate`)",
        description="Work on the ledger itself.",
    )
    ledger_sub = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    rebuild = ledger_sub.add_parser(
        "rebuild",
        help="record every delivery found in the outboxes' manifest.json files",
        description="Record in the ledger every delivery found in the outboxes' manifest.json "
        "files that it does not know (delivered or failed, with project id and outbox folder), "
        "so that content delivered before a ledger was lost is never billed again. The daemon "
        "does this by itself when it starts on a new or empty ledger. Not while a daemon runs "
        "on the same state_dir. Exit 0 ok, 2 bad config or ledger.",
    )
    _config_arg(rebuild)
    migrate = ledger_sub.add_parser(
        "migrate",
        help="copy this host's SQLite ledger into a PostgreSQL ledger",
        description="Copy this host's SQLite ledger (jobs, clips, exports, events, inboxes) into "
        "the PostgreSQL ledger at URL, creating its tables if needed. Rows already there are "
        "left as they are. Exit 0 copied, 2 bad config or URL, 3 cannot reach the database.",
    )
    _config_arg(migrate)
    migrate.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the PostgreSQL ledger, a libpq URL: postgresql://USER@HOST:PORT/DATABASE",
    )

    emu = sub.add_parser(
        "emulator",
        help="run the bundled Carmic API emulator",
        description="Run the bundled Carmic API emulator: the API at http://HOST:PORT/api, its "
        "storage origin on another port, one seeded user (printed at start).",
    )
    from watchd.emulator.cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(emu)

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline against the bundled emulator on a generated sample video",
        description="Run the whole pipeline against the bundled emulator in a temporary folder, "
        "with a generated sample video, and print where the results landed. The dashboard "
        "runs meanwhile on http://127.0.0.1:8377/ (another port when that one is taken).",
    )
    demo.add_argument(
        "--dir", type=Path, default=None, help="work in this folder (kept afterwards)"
    )
    demo.add_argument(
        "--web",
        action="store_true",
        help="keep serving the dashboard (its URL is printed) after the deliveries, until Ctrl-C",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler = COMMANDS[args.command]
    if args.command not in ("check", "status", "retry", "forget", "notify", "ledger"):
        return handler(args)
    from watchd.service.logsetup import setup_logging, teardown_logging

    # The short-lived commands print their results; what the library logs (a warning about a
    # config file's permissions, a retried request) goes to stderr as one redacted text line,
    # warnings and worse only. `run` sets up the daemon's logging from the config, `demo` and
    # `emulator` their own.
    setup_logging("text", "warning")
    try:
        return handler(args)
    finally:
        teardown_logging()


def _path(args: argparse.Namespace) -> Path:
    from watchd.config import default_config_path

    return args.config if args.config is not None else default_config_path()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_run(args: argparse.Namespace) -> int:
    # A stop that arrives while we are still starting (imports, config) is a clean stop too; the
    # event loop installs its own handlers once it runs.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    from watchd.daemon import run_daemon

    return run_daemon(_path(args), debug=args.debug)


def cmd_check(args: argparse.Namespace) -> int:
    from watchd.checkcmd import check

    return check(_path(args), offline=args.offline)


def _config(args: argparse.Namespace) -> Config | None:
    """The config (paths need not exist: a paused NAS must not stop `status`), or None after
    saying why it is bad."""
    from watchd.config import ConfigError, load_config

    path = _path(args)
    try:
        return load_config(path, check_paths=False, log_warnings=False)
    except ConfigError as e:
        print(f"watchd: bad config {path}: {e}", file=sys.stderr)
        return None


def _open_ledger(cfg: Config, *, readonly: bool = False) -> tuple[Ledger | None, int]:
    """This host's SQLite ledger in ``state_dir``. Returns (ledger or None, exit code)."""
    import sqlite3

    from watchd.ledger.db import DB_NAME, MIGRATIONS, Ledger
    from watchd.ledger.files import private_umask
    from watchd.ledger.health import translate

    db = cfg.daemon.state_dir / DB_NAME
    if not db.exists():
        return None, 0
    try:
        with private_umask():  # the -wal/-shm SQLite may create are the daemon's secrets too
            ledger = Ledger(db, readonly=readonly)
    except sqlite3.Error as e:
        print(f"watchd: {translate(db, e)}", file=sys.stderr)
        return None, 2
    if readonly and ledger.schema_version() < len(MIGRATIONS):
        # The daemon has created the file and not yet all its tables and columns (it is
        # starting this moment, its migrations one after the other).
        ledger.close()
        return None, 0
    return ledger, 0


def _open_shared(cluster: ClusterConfig, action: str) -> tuple[PgLedger | None, int]:
    """The cluster's shared ledger for an operator command, or (None, 0) when no daemon has
    created its tables yet; (None, 3) when it cannot be reached, (None, 2) for a schema this
    watchd cannot use, after one line on stderr."""
    from watchd.cluster.open import DatabaseUnreachable, open_jobs
    from watchd.ledger.db import LedgerError

    try:
        return open_jobs(cluster), 0
    except DatabaseUnreachable as e:
        print(f"watchd {action}: {e}", file=sys.stderr)
        return None, 3
    except LedgerError as e:
        print(f"watchd {action}: {e}", file=sys.stderr)
        return None, 2


def cmd_status(args: argparse.Namespace) -> int:
    from watchd.status_view import StatusSource, show

    cfg = _config(args)
    if cfg is None:
        return 2
    local, code = _open_ledger(cfg, readonly=True)
    if code:
        return code
    shared: PgLedger | None = None
    if cfg.cluster is not None:
        shared, code = _open_shared(cfg.cluster, "status")
        if code:
            if local is not None:
                local.close()
            return code
    if (local if cfg.cluster is None else shared) is None:
        if args.json:
            print("[]")
        elif cfg.cluster is None:
            print("no ledger yet: the daemon has not run with this config")
        else:
            print(f"no ledger yet: no daemon has started on {cfg.cluster.shown}")
        if local is not None:
            local.close()
        return 0
    if shared is not None:
        from watchd.cluster.nodes import nodes

        pg = shared
        source = StatusSource(pg, local, nodes=lambda: nodes(pg))
    else:
        assert local is not None
        source = StatusSource.one_host(local)
    try:
        return show(source, sys.stdout, as_json=args.json, watch=args.watch, interval=args.interval)
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        if shared is None or not _database_error(e):
            raise
        _lost(cfg, "status", e)
        return 3
    finally:
        if local is not None:
            local.close()
        if shared is not None:
            shared.close()


def _database_error(e: Exception) -> bool:
    """A PostgreSQL error (psycopg's, the pool's), once the shared ledger was opened."""
    import psycopg

    return isinstance(e, psycopg.Error)


def _lost(cfg: Config, action: str, e: Exception) -> None:
    from watchd.cluster.open import scrub

    assert cfg.cluster is not None
    text = scrub(cfg.cluster, " ".join(str(e).split()))
    print(f"watchd {action}: lost the ledger database {cfg.cluster.shown}: {text}", file=sys.stderr)


def _each_job(args: argparse.Namespace, action: str) -> int:
    from watchd.config import ConfigError
    from watchd.ledger.db import LedgerError
    from watchd.represet import retry_job

    config = _config(args)
    if config is None:
        return 2
    ledger: LedgerAPI | None
    if config.cluster is None:
        ledger, code = _open_ledger(config)
    else:
        ledger, code = _open_shared(config.cluster, action)
    if code:
        return code
    if ledger is None:
        for jid in args.ids:
            print(f"watchd {action}: unknown job {jid}", file=sys.stderr)
        return 1
    rc = 0
    keep = action != "retry" or args.keep_preset
    cfg = None if keep else config
    try:
        for jid in args.ids:
            try:
                if action == "retry":
                    print(retry_job(ledger, cfg, jid))
                else:
                    ledger.forget(jid)
                    print(f"{jid}: forgotten")
            except LedgerError as e:
                print(f"watchd {action}: {e}", file=sys.stderr)
                rc = 1
            except ConfigError as e:
                print(
                    f"watchd retry: {jid}: not retried, its current preset is not usable: {e} "
                    "(fix it, or --keep-preset)",
                    file=sys.stderr,
                )
                rc = 1
    except Exception as e:
        if config.cluster is None or not _database_error(e):
            raise
        _lost(config, action, e)
        return 3
    finally:
        ledger.close()
    return rc


def cmd_retry(args: argparse.Namespace) -> int:
    return _each_job(args, "retry")


def cmd_forget(args: argparse.Namespace) -> int:
    return _each_job(args, "forget")


def cmd_notify(args: argparse.Namespace) -> int:
    from watchd.notify.testsend import notify_test

    return notify_test(_path(args), args.name)


def cmd_ledger(args: argparse.Namespace) -> int:
    if args.ledger_command == "migrate":
        from watchd.ledgercmd import migrate_command

        return migrate_command(_path(args), args.to)
    from watchd.config import ConfigError, load_config
    from watchd.ledger.db import LedgerError
    from watchd.ledger.rebuild import rebuild_state_dir

    path = _path(args)
    try:
        cfg = load_config(path, check_paths=False, log_warnings=False)
        if cfg.cluster is not None:
            print(
                "watchd ledger rebuild: this config has [cluster]: its ledger is the cluster's "
                "database, which keeps every host's history (nothing to rebuild); remove "
                "[cluster] to rebuild this host's own ledger",
                file=sys.stderr,
            )
            return 2
        report = rebuild_state_dir(cfg.daemon.state_dir, cfg.inboxes)
    except ConfigError as e:
        print(f"watchd: bad config {path}: {e}", file=sys.stderr)
        return 2
    except LedgerError as e:
        print(f"watchd ledger rebuild: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from watchd.emulator.cli import run as run_emulator

    return run_emulator(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from watchd.demo import run_demo

    return run_demo(workdir=args.dir, web=args.web)


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "status": cmd_status,
    "retry": cmd_retry,
    "forget": cmd_forget,
    "notify": cmd_notify,
    "ledger": cmd_ledger,
    "emulator": cmd_emulator,
    "demo": cmd_demo,
}
