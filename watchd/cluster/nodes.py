"""The daemons of a cluster as the ``nodes`` table records them, for ``watchd status`` and
``watchd check``.

Every age and whether a node is live is computed by the database on its own clock, the clock
the leases are on: the hosts' clocks may disagree with it and with each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchd.ledger.states import TERMINAL

if TYPE_CHECKING:
    from watchd.ledger.pg import PgLedger

LIVE, STALE, STOPPED = "live", "stale", "stopped"

_TERMINAL = sorted(s.value for s in TERMINAL)
_NODES = """
SELECT n.name, n.instance, n.host, n.pid, n.version, n.inboxes, n.lease_seconds,
       EXTRACT(EPOCH FROM n.started_at)::float8,
       EXTRACT(EPOCH FROM n.heartbeat_at)::float8,
       EXTRACT(EPOCH FROM n.stopped_at)::float8,
       GREATEST(EXTRACT(EPOCH FROM now() - n.heartbeat_at)::float8, 0),
       n.stopped_at IS NULL
           AND n.heartbeat_at > now() - make_interval(secs => n.lease_seconds),
       (SELECT COUNT(*) FROM jobs j
         WHERE j.node = n.name AND j.state <> ALL(%s) AND j.lease_until > now())
  FROM nodes n
 ORDER BY n.name
"""


@dataclass(frozen=True)
class NodeRow:
    """One daemon of the cluster. Times are Unix times of the database's clock;
    ``heartbeat_age`` is seconds since its last heartbeat, on that clock."""

    name: str
    instance: str
    host: str
    pid: int
    version: str
    inboxes: tuple[str, ...]
    lease_seconds: float
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    heartbeat_age: float
    live: bool
    jobs_held: int

    @property
    def state(self) -> str:
        """``live`` (heartbeat within its lease, not stopped), ``stale`` (silent longer than
        its lease: its jobs are free for the others) or ``stopped`` (it stopped cleanly)."""
        if self.stopped_at is not None:
            return STOPPED
        return LIVE if self.live else STALE


def _inboxes(text: Any) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def nodes(pg: PgLedger) -> list[NodeRow]:
    """Every row of ``nodes``, by name, with its heartbeat's age, whether it is live and how
    many jobs it holds (active jobs whose lease it holds now). None before the cluster's
    tables exist (a database no daemon has started on yet)."""
    if not pg.query("SELECT to_regclass('nodes')")[0][0]:
        return []
    return [
        NodeRow(
            name=str(r[0]),
            instance=str(r[1]),
            host=str(r[2]),
            pid=int(r[3]),
            version=str(r[4]),
            inboxes=_inboxes(r[5]),
            lease_seconds=float(r[6]),
            started_at=float(r[7]),
            heartbeat_at=float(r[8]),
            stopped_at=None if r[9] is None else float(r[9]),
            heartbeat_age=float(r[10]),
            live=bool(r[11]),
            jobs_held=int(r[12]),
        )
        for r in pg.query(_NODES, (_TERMINAL,))
    ]


def other_live_daemon(rows: list[NodeRow], node: str, host: str) -> NodeRow | None:
    """The live daemon that uses the node name ``node`` on another host than ``host``, if any
    (a daemon of this host under that name is this host's own, e.g. running beside `check`)."""
    for row in rows:
        if row.name == node and row.state == LIVE and row.host != host:
            return row
    return None
