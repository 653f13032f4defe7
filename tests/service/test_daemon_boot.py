"""Start-up under systemd when the API cannot be reached: the daemon says so in STATUS=, keeps
extending the start timeout, answers /healthz 503 "starting", sends READY=1 only once the login
works, and a stop during the wait is a clean one.

The daemon runs in-process with the real CarmicClient, built with a retry policy of one attempt
and a generous login pace: the shipped client spends about a minute retrying one login before
the daemon sees the failure, which is right for a service and too slow for a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import emulator  # noqa: F401 - the fixture
from tests.e2e.harness import Env
from tests.service.fakesystemd import NotifyRecorder
from tests.service.inprocess import DaemonThread, healthz
from watchd.carmic.client import CarmicClient
from watchd.carmic.retry import RetryPolicy
from watchd.config import load_config
from watchd.daemon import Daemon
from watchd.emulator import Emulator, Faults
from watchd.service.notify import Notifier


@pytest.fixture
def booting(tmp_path: Path, emulator: Emulator) -> Iterator[tuple[DaemonThread, NotifyRecorder]]:  # noqa: F811
    env = Env(root=tmp_path, emu=emulator)
    env.write_config(daemon={"metrics": "127.0.0.1:0"})
    cfg = load_config(env.config_path)
    emulator.update(faults=Faults(error_rate=1.0))  # every API call answers 500
    client = CarmicClient(
        cfg.carmic.api_url,
        cfg.carmic.email,
        cfg.carmic.require_password(),
        retry=RetryPolicy(attempts=1),
        logins_per_minute=6000,
    )
    with NotifyRecorder() as systemd:
        daemon = Daemon(cfg, notifier=Notifier(systemd.env()), client=client)
        daemon.login_retry_first = 0.1
        runner = DaemonThread(daemon)
        try:
            yield runner, systemd
        finally:
            runner.stop()


def waiting_for_api(s: NotifyRecorder) -> bool:
    return any(x.startswith("waiting for the Carmic API") for x in s.statuses())


def test_login_retried_at_boot_is_reported_and_ready_follows_the_login(
    booting: tuple[DaemonThread, NotifyRecorder],
    emulator: Emulator,  # noqa: F811
) -> None:
    runner, systemd = booting
    systemd.wait(waiting_for_api)
    fields = systemd.fields()
    assert fields[0].startswith("STATUS=logging in to Carmic at http://127.0.0.1:")
    assert any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in fields)
    extensions = [int(f.split("=")[1]) for f in fields if f.startswith("EXTEND_TIMEOUT_USEC=")]
    assert min(extensions) >= 30_000_000
    status = next(s for s in systemd.statuses() if s.startswith("waiting for the Carmic API"))
    assert "attempt 1" in status and "500" in status
    assert "READY=1" not in fields
    assert healthz(runner.daemon) == (503, "unhealthy: starting\n")

    emulator.update(faults=Faults())
    systemd.wait(lambda s: s.count("READY=1") == 1)
    assert healthz(runner.daemon) == (200, "ok\n")
    # READY came after the last report of waiting, with the first summary as its status.
    fields = systemd.fields()
    ready_at = fields.index("READY=1")
    last_wait = max(i for i, f in enumerate(fields) if f.startswith("STATUS=waiting for"))
    assert last_wait < ready_at
    assert fields[ready_at + 1].startswith("STATUS=0 queued, 0 uploading")
    assert runner.daemon.ready and runner.daemon.ledger is not None
    (inbox,) = runner.daemon.ledger.inboxes()
    assert inbox.last_scan_at is not None
    assert runner.stop() == 0
    assert "STOPPING=1" in systemd.fields()


def test_a_stop_while_waiting_for_the_api_is_clean(
    booting: tuple[DaemonThread, NotifyRecorder],
) -> None:
    runner, systemd = booting
    systemd.wait(waiting_for_api)
    assert runner.stop() == 0
    fields = systemd.fields()
    assert "STOPPING=1" in fields and "READY=1" not in fields
