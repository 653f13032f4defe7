"""Other hosts of a cluster, simulated by writing their rows into the shared database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.test_config import base_doc
from watchd.ledger.db import JobRow
from watchd.ledger.pg import PgLedger

NODE = "suite-3"


def cluster_doc(site: Path, database: str, **cluster: Any) -> dict[str, Any]:
    """A config of this host: one inbox named studio-a, the shared ledger at ``database``."""
    (site / "inbox").mkdir(exist_ok=True)
    password = site / "password"
    if not password.exists():
        password.write_text("Sup3r-secret-pw\n")
        password.chmod(0o600)
    doc = base_doc(site)
    doc["cluster"] = {"database": database, "node": NODE, **cluster}
    doc["inbox"][0]["name"] = "studio-a"
    return doc


def add_node(
    url: str,
    name: str,
    host: str,
    *,
    pid: int = 4711,
    age: float = 1.0,
    lease: float = 60.0,
    stopped: bool = False,
) -> None:
    """A daemon's row, its last heartbeat ``age`` seconds ago on the database's clock."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO nodes (name, instance, host, pid, version, inboxes, lease_seconds, "
            "started_at, heartbeat_at, stopped_at) VALUES (%s, %s, %s, %s, '0.test', "
            "'[\"studio-a\"]', %s, now() - interval '1 hour', "
            "now() - make_interval(secs => %s), CASE WHEN %s THEN now() END)",
            (name, f"{name}-instance", host, pid, lease, age, stopped),
        )


def add_job(pg: PgLedger, rel: str, *, fp: str | None = None) -> JobRow:
    return pg.add_job(
        inbox="studio-a", rel_path=rel, path=f"/mnt/nas/inbox/{rel}", rule="", preset={},
        size=10, mtime_ns=1, inode=1, dev=1, fingerprint=fp or f"fp-{rel}",
    )  # fmt: skip


def hold(url: str, job_id: str, node: str, *, seconds: float = 60.0) -> None:
    """``node`` claims the job: its lease runs ``seconds`` from now (negative: lapsed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobs SET node = %s, lease_token = nextval('lease_tokens'), "
            "lease_until = now() + make_interval(secs => %s) WHERE id = %s",
            (node, seconds, job_id),
        )
