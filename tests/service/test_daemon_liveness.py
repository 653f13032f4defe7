"""The watchdog ping stands for a live daemon: an in-process Daemon (real emulator, ledger,
observers, notifier on a fake NOTIFY_SOCKET, metrics server) stops pinging, and /healthz turns
503, while its event loop is blocked, while its ledger cannot be written and while an observer
is dead; the pings come back when the cause goes away.

The daemon runs on a thread of its own (tests/service/inprocess.py), so that the test can block
its loop from outside (a callback that waits on an Event) the way a hung call would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import emulator  # noqa: F401 - the fixture
from tests.e2e.harness import Env, wait_for
from tests.service.fakesystemd import NotifyRecorder
from tests.service.inprocess import DaemonThread, healthz
from watchd.config import load_config
from watchd.daemon import Daemon
from watchd.emulator import Emulator
from watchd.service.notify import Notifier

WATCHDOG_USEC = 200_000  # pings every 0.1 s


@pytest.fixture
def running(tmp_path: Path, emulator: Emulator) -> Iterator[tuple[DaemonThread, NotifyRecorder]]:  # noqa: F811
    env = Env(root=tmp_path, emu=emulator)
    # No periodic rescan during the test: it writes to the ledger, which one step makes read-only.
    env.write_config(daemon={"metrics": "127.0.0.1:0", "rescan_seconds": 3600})
    with NotifyRecorder() as systemd:
        notifier = Notifier(systemd.env(WATCHDOG_USEC=str(WATCHDOG_USEC)))
        daemon = Daemon(load_config(env.config_path), notifier=notifier)
        daemon.liveness.stall_limit = 0.5
        daemon.liveness.ledger_heartbeat = 0.05
        runner = DaemonThread(daemon)
        try:
            systemd.wait(lambda s: s.count("READY=1") and s.count("WATCHDOG=1") >= 3)
            yield runner, systemd
        finally:
            assert runner.stop() == 0
        assert "STOPPING=1" in systemd.fields()


def all_pings_arrived(runner: DaemonThread, systemd: NotifyRecorder) -> int:
    """Wait until every ping the daemon sent has arrived; returns how many that is."""
    d = runner.daemon
    return int(
        wait_for(
            lambda: systemd.count("WATCHDOG=1") == d.liveness.pings and d.liveness.pings,
            timeout=10,
            what="the pings sent so far to arrive",
        )
    )


def test_a_blocked_event_loop_stops_the_pings(
    running: tuple[DaemonThread, NotifyRecorder],
) -> None:
    runner, systemd = running
    daemon = runner.daemon
    assert healthz(daemon) == (200, "ok\n")
    gate = threading.Event()
    loop = daemon._loop
    assert loop is not None
    loop.call_soon_threadsafe(gate.wait, 60)  # the loop hangs here, as in a blocking call
    try:
        before = all_pings_arrived(runner, systemd)
        # /healthz answers from its own thread and notices the loop is late (stall_limit 0.5 s:
        # at least four pings would have been due by then).
        _, body = wait_for(
            lambda: (r := healthz(daemon))[0] == 503 and r, timeout=10, what="healthz 503"
        )
        assert "event loop has not responded" in body
        assert systemd.count("WATCHDOG=1") == before
    finally:
        gate.set()
    systemd.wait(lambda s: s.count("WATCHDOG=1") > before, timeout=10)
    wait_for(lambda: healthz(daemon)[0] == 200, timeout=10, what="healthz 200 again")


def test_an_unwritable_ledger_stops_the_pings(
    running: tuple[DaemonThread, NotifyRecorder],
) -> None:
    runner, systemd = running
    daemon = runner.daemon
    assert daemon.ledger is not None
    ledger = daemon.ledger
    runner.on_loop(lambda: ledger.db.execute("PRAGMA query_only = ON"))
    try:
        wait_for(lambda: not daemon.alive()[0], timeout=10, what="the heartbeat write to fail")
        before = all_pings_arrived(runner, systemd)
        rounds = daemon.liveness.rounds
        wait_for(lambda: daemon.liveness.rounds >= rounds + 5, timeout=10, what="5 rounds")
        assert systemd.count("WATCHDOG=1") == before
        assert healthz(daemon) == (503, "unhealthy: the ledger is not writable\n")
    finally:
        runner.on_loop(lambda: ledger.db.execute("PRAGMA query_only = OFF"))
    systemd.wait(lambda s: s.count("WATCHDOG=1") > before, timeout=10)
    assert healthz(daemon)[0] == 200


def test_a_dead_observer_is_unhealthy_until_the_loop_restarts_it(
    running: tuple[DaemonThread, NotifyRecorder],
) -> None:
    runner, _ = running
    daemon = runner.daemon
    (rt,) = daemon.inboxes.values()
    assert rt.observer is not None
    observer = rt.observer

    def kill_and_ask() -> tuple[bool, str]:
        observer.stop()
        return daemon.alive()

    ok, reason = runner.on_loop(kill_and_ask)
    assert not ok and "observer" in reason and "dead" in reason
    wait_for(lambda: daemon.alive()[0], timeout=10, what="the observer to be restarted")
    assert observer.alive()


def test_repeated_failures_of_the_main_loop_make_it_unhealthy(
    running: tuple[DaemonThread, NotifyRecorder],
) -> None:
    runner, _ = running
    daemon = runner.daemon

    # A unit-level fault: a step of the loop that raises, whatever the cause.
    def fail(now: float) -> Any:
        raise RuntimeError("simulated: the ledger is locked")

    original = daemon.tick
    daemon.tick_retry_base = 0.01
    runner.on_loop(lambda: setattr(daemon, "tick", fail))
    try:
        wait_for(lambda: not daemon.alive()[0], timeout=30, what="three failed steps")
        assert "steps of the main loop failed" in daemon.alive()[1]
    finally:
        runner.on_loop(lambda: setattr(daemon, "tick", original))
    wait_for(lambda: daemon.alive()[0], timeout=30, what="a good step")
