"""``watchd check`` with ``[cluster]``: can this host use the cluster's database?

Reachable within a short time, a schema this watchd can run on (an older one is brought up to
date when ``watchd run`` starts; a newer one needs a newer watchd), and this config's ``node``
name not in use by a live daemon on another host (two daemons under one name would take each
other's leases). Every message names the database without its password.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from watchd.cluster.open import (
    CLI_TIMEOUT,
    DatabaseUnreachable,
    SchemaNewer,
    SchemaOlder,
    open_shared,
    scrub,
    usable_schema,
)
from watchd.cluster_config import ClusterConfig
from watchd.ledger.db import LedgerError

EXIT_OK, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 2, 3


@dataclass(frozen=True)
class DatabaseCheck:
    """``code`` 0 with the line to print, or the exit code (2 a problem of this config or
    watchd, 3 the database cannot be reached) with the one line saying why."""

    code: int
    text: str


def describe_cluster(cluster: ClusterConfig) -> str:
    """``check``'s line about ``[cluster]`` (offline too)."""
    if cluster.password_source:
        password = cluster.password_source
    elif cluster.secrets:
        password = "in the URL"
    else:
        password = "libpq's (PGPASSWORD, ~/.pgpass) or none"
    return (
        f"cluster  node {cluster.node} on {cluster.shown}; lease {cluster.lease_seconds:g} s; "
        f"password: {password}"
    )


def check_database(
    cluster: ClusterConfig,
    *,
    host: str | None = None,
    connect_timeout: float = CLI_TIMEOUT,
) -> DatabaseCheck:
    """Connect (within ``connect_timeout`` seconds), read the schema version and the nodes;
    ``host`` is this host's name as the daemons record it (default: ``socket.gethostname()``)."""
    import psycopg

    from watchd.cluster.nodes import LIVE, nodes, other_live_daemon
    from watchd.status_view import format_age

    host = socket.gethostname() if host is None else host
    shown = cluster.shown
    try:
        pg = open_shared(cluster, readonly=True, connect_timeout=connect_timeout)
    except DatabaseUnreachable as e:
        return DatabaseCheck(EXIT_UNREACHABLE, str(e))
    except LedgerError as e:  # psycopg not installed
        return DatabaseCheck(EXIT_CONFIG, str(e))
    try:
        server = str(pg.query("SHOW server_version")[0][0]).split()[0]
        try:
            version = usable_schema(pg, shown)
            schema = (
                f"schema version {version} (current)"
                if version
                else "no tables yet: `watchd run` creates them at start"
            )
        except SchemaOlder as e:
            schema = str(e).split(f"{shown} has ", 1)[-1]
        except SchemaNewer as e:
            return DatabaseCheck(EXIT_CONFIG, str(e))
        rows = nodes(pg)
    except psycopg.Error as e:
        text = scrub(cluster, " ".join(str(e).split()))
        return DatabaseCheck(EXIT_UNREACHABLE, f"cannot read the ledger database {shown}: {text}")
    finally:
        pg.close()
    other = other_live_daemon(rows, cluster.node, host)
    if other is not None:
        return DatabaseCheck(
            EXIT_CONFIG,
            f'cluster.node: "{cluster.node}" is the name of a live daemon on host {other.host} '
            f"(pid {other.pid}, heartbeat {format_age(other.heartbeat_age)} ago): give each "
            "host a node name of its own",
        )
    live = [n.name for n in rows if n.state == LIVE]
    return DatabaseCheck(
        EXIT_OK,
        f"database OK: {shown}, PostgreSQL {server}, {schema}; live nodes: "
        f"{', '.join(live) if live else 'none'}",
    )
