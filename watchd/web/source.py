"""The running daemon as the dashboard sees it (:class:`watchd.web.views.DashboardSource`)."""

from __future__ import annotations

from typing import Any

from watchd.ledger.db import JobRow, Ledger


class DaemonSource:
    """Reads a :class:`watchd.daemon.Daemon`: its ledger (with the notifiers' health the
    notifications keep there), its inboxes' pause state, whether it has logged in. Nothing else
    of the daemon is touched."""

    def __init__(self, daemon: Any) -> None:
        self._daemon = daemon

    @property
    def ledger(self) -> Ledger | None:
        """The daemon's ledger once open: this host's, or with [cluster] the cluster's (the
        same reads; see watchd/cluster/ledger.py), else None."""
        ledger: Ledger | None = self._daemon.ledger
        return ledger

    @property
    def config(self) -> Any:
        """The config in force: a retry gives a job its rule's preset as it is now."""
        return self._daemon.config

    def paused_inboxes(self) -> list[tuple[str, str]]:
        return [
            (key, rt.reason or "paused")
            for key, rt in list(self._daemon.inboxes.items())
            if rt.paused
        ]

    def starting(self) -> str | None:
        if self._daemon.ready:
            return None
        return f"watchd is starting: logging in to Carmic at {self._daemon.config.carmic.api_url}"

    def notifier_problems(self) -> list[str]:
        """The failing notifiers, one line each (what ``watchd status`` shows)."""
        ledger = self.ledger
        if ledger is None:
            return []
        from watchd.notify.queue import status_lines

        return [line.removeprefix("! ") for line in status_lines(ledger)]

    def node_of(self, job: JobRow) -> str:
        # HOOK for a cluster: the node working on the job ("" on a single machine).
        return ""
