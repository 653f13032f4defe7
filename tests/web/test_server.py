"""The dashboard inside the daemon: the source it reads, and a port that is taken."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from watchd.clock import FakeClock
from watchd.daemon import InboxRuntime
from watchd.ledger.db import Ledger
from watchd.web.app import start_for_daemon
from watchd.web.settings import WebConfig
from watchd.web.source import DaemonSource


def _daemon(listen: str, ledger: Ledger) -> SimpleNamespace:
    """What of a Daemon the dashboard reads, with the Daemon's own attribute names."""
    inbox = InboxRuntime(config=SimpleNamespace(path=Path("/mnt/nas/inbox")))  # type: ignore[arg-type]
    return SimpleNamespace(
        config=SimpleNamespace(
            web=WebConfig(listen=listen), carmic=SimpleNamespace(api_url="https://api.example/api")
        ),
        ledger=ledger,
        clock=FakeClock(),
        inboxes={inbox.key: inbox},
        ready=False,
    )


def test_the_daemon_source_reads_the_running_state() -> None:
    ledger = Ledger(None)
    daemon = _daemon("127.0.0.1:0", ledger)
    source = DaemonSource(daemon)
    assert source.ledger is ledger
    assert (
        source.starting() == "watchd is starting: logging in to Carmic at https://api.example/api"
    )
    assert source.paused_inboxes() == []
    rt = daemon.inboxes["/mnt/nas/inbox"]
    rt.paused, rt.reason = True, "inbox /mnt/nas/inbox is missing (unmounted share?)"
    daemon.ready = True
    assert source.starting() is None
    assert source.paused_inboxes() == [("/mnt/nas/inbox", rt.reason)]
    assert source.notifier_problems() == []
    ledger.db.execute(
        "INSERT INTO notifiers (name, failing, last_status, last_error) "
        "VALUES ('hooks.example', 3, 'HTTP 500', 'Internal Server Error')"
    )
    (problem,) = source.notifier_problems()
    assert problem.startswith("NOTIFIER hooks.example failing: HTTP 500 Internal Server Error")


async def test_a_taken_port_leaves_the_daemon_running_without_the_dashboard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ledger = Ledger(None)
        daemon = _daemon(f"127.0.0.1:{port}", ledger)
        with caplog.at_level(logging.ERROR, logger="watchd.web"):
            assert await start_for_daemon(daemon) is None
    assert ledger.on_change is None
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text


async def test_the_ledger_feeds_the_dashboard_it_started() -> None:
    ledger = Ledger(None)
    server = await start_for_daemon(_daemon("127.0.0.1:0", ledger))
    assert server is not None
    try:
        assert ledger.on_change == server.note
        assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
    finally:
        await server.close()
