"""``[cluster]``: several hosts sharing one PostgreSQL ledger, and what it asks of
``[[inbox]] name`` (written, unique).

Parsed and validated here, with the precision of the rest of the config (did-you-mean on
unknown keys, every problem named by its key path); the database password is never shown,
and a URL that carries one is shown with ``***`` in its place.

How the daemons share the ledger (claims, leases, fencing) is watchd/cluster/; the user's
guide is docs/cluster.md.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import unquote, urlsplit

from watchd.ledger.dsn import check_dsn, redact_dsn
from watchd.secrets import Secret, read_secret_file

if TYPE_CHECKING:
    from watchd.config import _Report, _Table

CLUSTER_KEYS: Final = ("database", "password_file", "node", "lease_seconds")
CREDENTIAL_NAME = "database-password"
DEFAULT_LEASE_SECONDS = 60.0

# A node's name: what the other hosts and the database see.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_NAME_RULE = 'letters, digits, ".", "_" and "-", starting with a letter or digit, at most 63'


@dataclass(frozen=True)
class ClusterConfig:
    """The validated ``[cluster]`` table. ``database`` may hold a password: it is left out of
    the repr; :attr:`shown` is the URL to put in messages."""

    database: str = field(repr=False)
    node: str
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    password: Secret | None = None  # from password_file or the systemd credential
    password_source: str = ""  # "" = left to libpq: the URL, PGPASSWORD or ~/.pgpass

    @property
    def shown(self) -> str:
        return redact_dsn(self.database)

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """Every password this table holds, to scrub from messages."""
        found = [self.password] if self.password is not None else []
        try:
            in_url = urlsplit(self.database).password
        except ValueError:
            in_url = None
        if in_url:
            found.append(Secret(unquote(in_url)))
        return tuple(found)


class _HasName(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def name(self) -> str: ...


def default_node() -> str:
    return socket.gethostname().split(".", 1)[0]


def parse_cluster(
    top: _Table, base: Path, env: Mapping[str, str], check_paths: bool
) -> ClusterConfig | None:
    """The ``[cluster]`` table of the config's top level, or None when there is none."""
    from watchd.config import _path_key

    t = top.table("cluster")
    if t is None:
        return None
    t.unknown(CLUSTER_KEYS)
    database = t.string("database", "", required=True).strip()
    if database:
        problem = check_dsn(database)
        if problem:
            t.error("database", problem)
    node = t.string("node", "").strip() or default_node()
    if not _NAME.fullmatch(node):
        whose = "" if t.present("node") else ", the host name: set node"
        t.error("node", f"must be {_NAME_RULE} characters (got {node!r}{whose})")
    lease = t.number("lease_seconds", DEFAULT_LEASE_SECONDS, minimum=10, maximum=3600)
    password, source = None, ""
    password_file = _path_key(t, "password_file", base, default="")
    if password_file is not None:
        source = f"password_file {password_file}"
        password = _read_password(t, password_file, strict=check_paths)
    elif env.get("CREDENTIALS_DIRECTORY"):
        credential = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        if credential.exists():
            source = f"the systemd credential {CREDENTIAL_NAME}"
            password = _read_password(t, credential, strict=check_paths)
    return ClusterConfig(database, node, lease, password, source)


def _read_password(t: _Table, path: Path, *, strict: bool) -> Secret | None:
    """The password in ``path``; a file that cannot be read is a problem, or only a warning
    when not ``strict`` (``status`` may run as someone who may not read the secret)."""
    report = t.error if strict else t.warn
    try:
        secret, loose = read_secret_file(path)
    except OSError as e:
        report("password_file", f"cannot read {path}: {e.strerror or e}")
        return None
    except ValueError as e:
        report("password_file", str(e))
        return None
    if loose:
        t.warn("password_file", loose.replace("the Carmic password", "the database password"))
    return secret


def check_inbox_names(
    inboxes: Sequence[_HasName],
    raw: Any,
    cluster: ClusterConfig | None,
    report: _Report,
) -> None:
    """Names written in the config (``raw``: the ``[[inbox]]`` array as read) are unique, and
    with ``[cluster]`` every inbox has one written: a name taken from the folder (the default)
    may differ from host to host."""
    seen: dict[str, int] = {}
    for inbox in inboxes:
        where = f"inbox[{inbox.index}].name"
        given = isinstance(raw, list) and isinstance(raw[inbox.index], Mapping)
        if not (given and "name" in raw[inbox.index]):
            if cluster is not None:
                report.error(
                    where,
                    "is required with [cluster]: the inbox's identity, the same on every host "
                    '(e.g. name = "studio-a")',
                )
            continue
        if inbox.name in seen:
            report.error(where, f'"{inbox.name}" is already the name of inbox[{seen[inbox.name]}]')
        else:
            seen[inbox.name] = inbox.index
