"""The library side of ``watchd ledger migrate``: copy this host's SQLite ledger into a
PostgreSQL ledger (watchd/ledger/migrate.py does the copying).

Exit codes as elsewhere: 0 copied (or nothing to copy), 2 a bad config or URL, a daemon running
on the same ``state_dir`` (the copy takes its lock), or the ``[cluster]`` extra (psycopg) not
installed, 3 the database cannot be reached.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

EXIT_OK, EXIT_CONFIG, EXIT_DATABASE = 0, 2, 3
PREFIX = "watchd ledger migrate"


def migrate_command(
    config_path: Path, url: str, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    from watchd.config import ConfigError, load_config
    from watchd.ledger.db import DB_NAME, LedgerError
    from watchd.ledger.dsn import check_dsn, redact_dsn

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    problem = check_dsn(url)
    if problem:
        err.write(f"{PREFIX}: --to {problem}\n")
        return EXIT_CONFIG
    try:
        cfg = load_config(config_path, check_paths=False, log_warnings=False)
    except ConfigError as e:
        err.write(f"{PREFIX}: bad config {config_path}: {e}\n")
        return EXIT_CONFIG
    source = cfg.daemon.state_dir / DB_NAME
    if not source.exists():
        out.write(f"no ledger at {source}: nothing to copy\n")
        return EXIT_OK
    try:
        from watchd.ledger.migrate import migrate
        from watchd.ledger.pg import PgLedger
    except ImportError:
        err.write(
            f"{PREFIX}: PostgreSQL support is not installed: "
            "pip install 'carmic-watchd[cluster]' (psycopg 3)\n"
        )
        return EXIT_CONFIG
    from watchd.ledger.lock import LedgerBusy, acquire

    password = cfg.cluster.password if cfg.cluster is not None else None
    try:
        # The daemon's lock: not beside a running daemon (what it wrote meanwhile would be
        # missing from the copy), and no daemon starts on this ledger until the copy is done.
        with acquire(cfg.daemon.state_dir):
            target = PgLedger(url, password=password.reveal() if password else None)
            try:
                # A cluster's jobs name their inbox by its [[inbox]] name, not this host's path.
                names = (
                    {str(i.path): i.name for i in cfg.inboxes} if cfg.cluster is not None else {}
                )
                result = migrate(source, target, inbox_names=names)
            finally:
                target.close()
    except LedgerError as e:  # a running daemon (LedgerBusy), or the database
        err.write(f"{PREFIX}: {e}\n")
        return EXIT_CONFIG if isinstance(e, LedgerBusy) else EXIT_DATABASE
    except OSError as e:
        err.write(f"{PREFIX}: cannot take the lock in {cfg.daemon.state_dir}: {e.strerror or e}\n")
        return EXIT_CONFIG
    out.write(f"copied {source} into {redact_dsn(url)}\n")
    for line in result.lines():
        out.write(f"  {line}\n")
    return EXIT_OK
