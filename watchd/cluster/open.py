"""Opening the cluster's shared ledger (``[cluster] database``) for the daemon and the CLI.

One place turns what can go wrong into one line without the password: psycopg not installed,
the database unreachable or refusing the login (:class:`DatabaseUnreachable`: the CLI's exit
3), a schema this watchd cannot use (:class:`~watchd.ledger.db.LedgerError`: exit 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchd.cluster_config import ClusterConfig
from watchd.ledger.db import LedgerError
from watchd.redact import redact

if TYPE_CHECKING:
    from watchd.ledger.pg import PgLedger

CONNECT_TIMEOUT = 10.0
# What the operator commands wait for the database: someone is waiting for an answer.
CLI_TIMEOUT = 5.0
NOT_INSTALLED = (
    "PostgreSQL support is not installed: pip install 'carmic-watchd[cluster]' (psycopg 3)"
)


class DatabaseUnreachable(LedgerError):
    """The cluster's database cannot be reached, or refuses the connection or the login."""


def scrub(cluster: ClusterConfig, text: str) -> str:
    """``text`` with every password of ``cluster`` (and any registered secret) scrubbed."""
    for secret in cluster.secrets:
        text = text.replace(secret.reveal(), "***")
    return redact(text)


def open_shared(
    cluster: ClusterConfig, *, readonly: bool = False, connect_timeout: float = CONNECT_TIMEOUT
) -> PgLedger:
    """The cluster's PostgreSQL ledger, with the password of the config (``password_file`` or
    the systemd credential; else libpq's: the URL, ``PGPASSWORD``, ``~/.pgpass``).

    Not ``readonly``, the schema is brought up to date (under the migration lock). ``readonly``
    leaves it as it is: callers ask :func:`usable_schema` before reading rows. Raises
    :class:`DatabaseUnreachable` when the database cannot be reached within
    ``connect_timeout`` seconds or refuses us, :class:`LedgerError` for a schema newer than
    this watchd knows or a migration that fails; the messages never hold the password."""
    try:
        from watchd.ledger.pg import PgLedger
    except ImportError:
        raise LedgerError(NOT_INSTALLED) from None
    import psycopg

    password = cluster.password.reveal() if cluster.password is not None else None
    try:
        pg = PgLedger(
            cluster.database, password=password, readonly=True, connect_timeout=connect_timeout
        )
    except LedgerError as e:
        raise DatabaseUnreachable(scrub(cluster, str(e))) from None
    if readonly:
        return pg
    try:
        usable_schema(pg, cluster.shown)  # a newer one: SchemaNewer
    except SchemaOlder:
        pass
    except BaseException:
        pg.close()
        raise
    try:
        pg.migrate()
    except LedgerError as e:
        pg.close()
        raise LedgerError(scrub(cluster, str(e))) from None
    except psycopg.Error as e:
        pg.close()
        raise LedgerError(
            f"cannot bring the ledger database {cluster.shown} up to date: "
            + scrub(cluster, " ".join(str(e).split()))
        ) from None
    return pg


class SchemaNewer(LedgerError):
    """The database's schema is newer than this watchd knows: upgrade watchd."""


class SchemaOlder(LedgerError):
    """The database's schema is older than this watchd's: ``watchd run`` migrates it."""


def usable_schema(pg: PgLedger, shown: str) -> int:
    """The schema version of ``pg`` when this watchd can read and write its rows as they are
    (0: no tables yet, nothing recorded), else :class:`SchemaNewer` or :class:`SchemaOlder`
    saying what to do. ``shown`` names the database (without its password)."""
    from watchd.ledger.pg import PG_MIGRATIONS

    version = pg.schema_version()
    known = len(PG_MIGRATIONS)
    if version > known:
        raise SchemaNewer(
            f"the ledger database {shown} has schema version {version}, newer than this watchd "
            f"knows ({known}): upgrade watchd on this host"
        )
    if 0 < version < known:
        raise SchemaOlder(
            f"the ledger database {shown} has schema version {version}, older than this "
            f"watchd's ({known}): it is brought up to date when `watchd run` starts"
        )
    return version


def open_jobs(cluster: ClusterConfig, *, connect_timeout: float = CLI_TIMEOUT) -> PgLedger | None:
    """The shared ledger for the operator commands (``status``, ``retry``, ``forget``), as it
    is (never migrated by them); None when no daemon has created its tables yet. Raises as
    :func:`open_shared` and :func:`usable_schema`."""
    pg = open_shared(cluster, readonly=True, connect_timeout=connect_timeout)
    try:
        version = usable_schema(pg, cluster.shown)
    except BaseException:
        pg.close()
        raise
    if version == 0:
        pg.close()
        return None
    return pg
