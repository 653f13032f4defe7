"""Tell systemd how the daemon is doing (``sd_notify``), without ever getting in its way.

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the unit started, kills the
service when ``WATCHDOG=1`` stops arriving within ``WatchdogSec=``, and shows ``STATUS=`` in
``systemctl status``. Outside systemd (a terminal, the tests, ``watchd demo``) ``NOTIFY_SOCKET``
is unset and every call is a cheap no-op.

systemd-python's ``systemd.daemon.notify`` is used when it is installed and the notifier reads
the real environment; otherwise a dependency-free sender writes the datagram itself (the same
protocol gunicorn and sd_notify(3) speak): a path socket, or an abstract one when the address
starts with ``@``. A failed notification is never the caller's problem: it is logged once at
DEBUG and reported as ``False``.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Sender = Callable[[str], bool]
"""Sends one notification (newline-separated ``KEY=VALUE`` lines); True when it was delivered."""


class SocketSender:
    """Sends notifications to a ``NOTIFY_SOCKET`` address over a fresh ``SOCK_DGRAM`` socket.

    A socket per message keeps this thread-safe and leaves no descriptor open between the
    watchdog pings (every tens of seconds, so the cost does not matter).
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def __call__(self, message: str) -> bool:
        target = socket_address(self.address)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message.encode("utf-8"))
        return True


def socket_address(address: str) -> str | bytes:
    """The ``connect()`` argument for a ``NOTIFY_SOCKET`` value.

    ``@name`` is Linux's abstract namespace (a leading NUL byte on the wire); anything else is a
    filesystem path. systemd ≥ 254 also hands out ``vsock:`` addresses (for VMs); those are not
    supported here and raise ``ValueError``, which the notifier logs and swallows.
    """
    if address.startswith("@"):
        return b"\0" + address[1:].encode("utf-8")
    if address.startswith("/"):
        return address
    raise ValueError(f"unsupported NOTIFY_SOCKET address {address!r}")


def _systemd_python_sender() -> Sender | None:
    """``systemd.daemon.notify`` when systemd-python is installed, else None."""
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify: Callable[[str], Any] = daemon.notify

    def send(message: str) -> bool:
        return bool(notify(message))

    return send


class Notifier:
    """sd_notify for the daemon: ``ready()``, ``status()``, ``watchdog()``, ``reloading()``,
    ``stopping()``.

    ``env`` defaults to ``os.environ``; ``sender`` and ``monotonic_ns`` are seams for tests.
    Every method returns True when the message was handed to systemd and False when
    notifications are off or the send failed; none of them raises.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        sender: Sender | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        getpid: Callable[[], int] = os.getpid,
    ) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._address = self._env.get("NOTIFY_SOCKET", "")
        self._monotonic_ns = monotonic_ns
        self._getpid = getpid
        self._failed_once = False
        self._lock = threading.Lock()
        self._sender: Sender | None
        if sender is not None:
            self._sender = sender if self._address else None
        elif not self._address:
            self._sender = None
        else:
            # systemd-python reads os.environ itself, so it is only right for the real environment.
            native = _systemd_python_sender() if self._env is os.environ else None
            self._sender = native or SocketSender(self._address)

    @property
    def enabled(self) -> bool:
        """True when systemd asked for notifications (``NOTIFY_SOCKET`` is set)."""
        return self._sender is not None

    def notify(self, *fields: str) -> bool:
        """Send raw ``KEY=VALUE`` fields in one datagram."""
        if self._sender is None or not fields:
            return False
        message = "\n".join(fields)
        try:
            return self._sender(message)
        except Exception as exc:  # a broken notify socket must never take the daemon down
            with self._lock:
                first, self._failed_once = not self._failed_once, True
            if first:
                log.debug(
                    "sd_notify to %s failed (%s: %s); later failures are not logged",
                    self._address,
                    type(exc).__name__,
                    exc,
                )
            return False

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: ``READY=1``, with an optional status line."""
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """A one-line free-form status shown by ``systemctl status``."""
        return self.notify(*self._status_field(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; must arrive within ``WatchdogSec=`` or systemd restarts the unit."""
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """A reload has started. systemd ≥ 253 wants ``MONOTONIC_USEC`` (CLOCK_MONOTONIC) with
        ``RELOADING=1`` to order it against the ``SIGHUP``; send ``ready()`` when done."""
        usec = self._monotonic_ns() // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status_field(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (``STOPPING=1``)."""
        return self.notify("STOPPING=1", *self._status_field(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (``EXTEND_TIMEOUT_USEC``), e.g. during a slow
        checkpoint; systemd counts the extension from the moment it receives it."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """How often to call ``watchdog()``, in seconds: half of ``WatchdogSec=``, as
        sd_watchdog_enabled(3) recommends. None when the watchdog is off or meant for another
        process (``WATCHDOG_PID`` names someone else)."""
        raw_usec = self._env.get("WATCHDOG_USEC", "")
        try:
            usec = int(raw_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        raw_pid = self._env.get("WATCHDOG_PID", "")
        if raw_pid:
            try:
                pid = int(raw_pid)
            except ValueError:
                return None
            if pid != self._getpid():
                return None
        return usec / 2 / 1_000_000

    @staticmethod
    def _status_field(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        # A newline would start a new KEY=VALUE field: keep the status on one line.
        return ("STATUS=" + " ".join(text.splitlines()),)
