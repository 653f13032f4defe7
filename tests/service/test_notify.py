"""sd_notify: what lands on a fake NOTIFY_SOCKET, and that nothing ever raises."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchd.service.notify import Notifier, SocketSender, socket_address


class FakeSystemd:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str, bind_to: str | bytes) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(5)

    def recv(self) -> list[str]:
        return self.sock.recv(65536).decode("utf-8").split("\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) >= 100:  # sun_path holds 108 bytes
        path = Path(tempfile.mkdtemp(prefix="nfy")) / "n.sock"
    fake = FakeSystemd(str(path), str(path))
    yield fake
    fake.close()


@pytest.fixture
def abstract_socket() -> Iterator[FakeSystemd]:
    name = f"carmic-watchd-test-{secrets.token_hex(8)}"
    fake = FakeSystemd("@" + name, b"\0" + name.encode())
    yield fake
    fake.close()


def env_for(fake: FakeSystemd, **more: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": fake.address, **more}


def test_ready_status_watchdog_stopping_reach_a_path_socket(path_socket: FakeSystemd) -> None:
    n = Notifier(env_for(path_socket))
    assert n.enabled
    assert n.ready()
    assert path_socket.recv() == ["READY=1"]
    assert n.status("3 jobs, 1 uploading")
    assert path_socket.recv() == ["STATUS=3 jobs, 1 uploading"]
    assert n.watchdog()
    assert path_socket.recv() == ["WATCHDOG=1"]
    assert n.stopping("checkpointing")
    assert path_socket.recv() == ["STOPPING=1", "STATUS=checkpointing"]


def test_abstract_socket(abstract_socket: FakeSystemd) -> None:
    n = Notifier(env_for(abstract_socket))
    assert n.ready("watching 2 inboxes")
    assert abstract_socket.recv() == ["READY=1", "STATUS=watching 2 inboxes"]


def test_reloading_carries_monotonic_usec(path_socket: FakeSystemd) -> None:
    n = Notifier(env_for(path_socket), monotonic_ns=lambda: 123_456_789_000)
    assert n.reloading()
    assert path_socket.recv() == ["RELOADING=1", "MONOTONIC_USEC=123456789"]


def test_reloading_uses_clock_monotonic_by_default(path_socket: FakeSystemd) -> None:
    # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC reading.
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(env_for(path_socket)).reloading()
    fields = path_socket.recv()
    usec = int(fields[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_status_stays_on_one_line(path_socket: FakeSystemd) -> None:
    Notifier(env_for(path_socket)).status("line one\nREADY=1")
    assert path_socket.recv() == ["STATUS=line one READY=1"]


def test_extend_timeout(path_socket: FakeSystemd) -> None:
    Notifier(env_for(path_socket)).extend_timeout(7.5)
    assert path_socket.recv() == ["EXTEND_TIMEOUT_USEC=7500000"]


def test_no_socket_means_no_op() -> None:
    calls: list[str] = []

    def record(message: str) -> bool:
        calls.append(message)
        return True

    n = Notifier({}, sender=record)
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.reloading() is False
    assert calls == []


def test_unreachable_socket_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="watchd.service.notify"):
        assert n.ready() is False
        assert n.watchdog() is False
        assert n.status("x") is False
    records = [r for r in caplog.records if r.name == "watchd.service.notify"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG


def test_sender_exceptions_are_swallowed() -> None:
    def boom(message: str) -> bool:
        raise RuntimeError("socket gone")

    assert Notifier({"NOTIFY_SOCKET": "/x"}, sender=boom).watchdog() is False


def test_unsupported_address_is_swallowed() -> None:
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).ready() is False


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    with pytest.raises(ValueError):
        socket_address("relative/path")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "junk"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env, getpid=lambda: 4242).watchdog_interval() == expected


def test_watchdog_interval_defaults_to_this_process() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 1.0


def test_systemd_python_is_used_for_the_real_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    def notify(status: str) -> bool:
        sent.append(status)
        return True

    pkg = types.ModuleType("systemd")
    daemon = types.ModuleType("systemd.daemon")
    daemon.notify = notify  # type: ignore[attr-defined]
    pkg.daemon = daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", pkg)
    monkeypatch.setitem(sys.modules, "systemd.daemon", daemon)
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert Notifier().ready("up")
    assert sent == ["READY=1\nSTATUS=up"]


def test_pure_python_sender_without_systemd_python(
    monkeypatch: pytest.MonkeyPatch, path_socket: FakeSystemd
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # makes the import fail
    monkeypatch.setenv("NOTIFY_SOCKET", path_socket.address)
    assert Notifier().watchdog()
    assert path_socket.recv() == ["WATCHDOG=1"]


def test_an_injected_environment_never_uses_systemd_python(
    monkeypatch: pytest.MonkeyPatch, path_socket: FakeSystemd
) -> None:
    # systemd-python would read os.environ, not the mapping we were given.
    pkg = types.ModuleType("systemd")
    daemon = types.ModuleType("systemd.daemon")
    daemon.notify = lambda status: pytest.fail("systemd-python used")  # type: ignore[attr-defined]
    pkg.daemon = daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", pkg)
    monkeypatch.setitem(sys.modules, "systemd.daemon", daemon)
    assert Notifier(env_for(path_socket)).ready()
    assert path_socket.recv() == ["READY=1"]


def test_socket_sender_directly(abstract_socket: FakeSystemd) -> None:
    assert SocketSender(abstract_socket.address)("FDSTORE=0")
    assert abstract_socket.recv() == ["FDSTORE=0"]
