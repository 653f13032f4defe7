"""The library side of ``watchd ledger migrate``: copy this host's SQLite ledger into a
PostgreSQL ledger (watchd/ledger/migrate.py does the copying).

Exit codes as elsewhere: 0 copied (or nothing to copy), 2 a bad config or URL, or the
``[cluster]`` extra (psycopg) not installed, 3 the database cannot be reached.
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
    password = cfg.cluster.password if cfg.cluster is not None else None
    try:
        target = PgLedger(url, password=password.reveal() if password else None)
    except LedgerError as e:
        err.write(f"{PREFIX}: {e}\n")
        return EXIT_DATABASE
    try:
        result = migrate(source, target)
    finally:
        target.close()
    out.write(f"copied {source} into {redact_dsn(url)}\n")
    for line in result.lines():
        out.write(f"  {line}\n")
    return EXIT_OK
