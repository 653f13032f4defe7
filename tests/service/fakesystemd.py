"""Stand-ins for the systemd side of the daemon's conversations, for in-process and subprocess
tests: a notify socket that records every datagram with its arrival time, and a fake
systemd-python package (``systemd.journal.send`` and ``systemd.daemon.notify``) that a child
process can import instead of the real one."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class NotifyRecorder:
    """A ``NOTIFY_SOCKET`` (a datagram socket in a short temporary folder: ``sun_path`` holds
    108 bytes) whose thread records each message as ``(arrival monotonic time, fields)``."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="nfy"))
        self.path = self._dir / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.02)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-systemd-notify")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append((time.monotonic(), data.decode().split("\n")))

    def env(self, **more: str) -> dict[str, str]:
        """The environment systemd would give the service."""
        return {"NOTIFY_SOCKET": str(self.path), **more}

    def messages(self) -> list[tuple[float, list[str]]]:
        with self._lock:
            return list(self._messages)

    def fields(self) -> list[str]:
        """Every field of every message, in order of arrival."""
        return [f for _, fields in self.messages() for f in fields]

    def count(self, field: str) -> int:
        return sum(1 for f in self.fields() if f == field)

    def times(self, field: str) -> list[float]:
        return [t for t, fields in self.messages() if field in fields]

    def statuses(self) -> list[str]:
        return [f.removeprefix("STATUS=") for f in self.fields() if f.startswith("STATUS=")]

    def wait(self, predicate: Callable[[NotifyRecorder], Any], timeout: float = 30.0) -> Any:
        """Wait until ``predicate(self)`` is truthy (and return it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {predicate}; got {self.fields()[-40:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NotifyRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fake_systemd_python(root: Path, journal_file: Path) -> Path:
    """Write a ``systemd`` package under ``root`` that a child process finds first on
    ``PYTHONPATH``: ``systemd.journal.send`` appends each entry as a JSON line to
    ``journal_file``; ``systemd.daemon.notify`` speaks the real protocol to ``$NOTIFY_SOCKET``
    and tags each message with ``X_VIA=systemd-python``, so a test can tell which sender ran.
    Returns ``root`` (to put on ``PYTHONPATH``)."""
    pkg = root / "systemd"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "journal.py").write_text(
        textwrap.dedent(
            f"""\
            import json

            def send(MESSAGE, **fields):
                entry = {{"MESSAGE": MESSAGE, **{{k: str(v) for k, v in fields.items()}}}}
                with open({str(journal_file)!r}, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\\n")
            """
        )
    )
    (pkg / "daemon.py").write_text(
        textwrap.dedent(
            """\
            import os
            import socket

            def notify(status, unset_environment=False, pid=0, fds=None):
                address = os.environ.get("NOTIFY_SOCKET")
                if not address:
                    return False
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                    s.connect(address)
                    s.sendall((status + "\\nX_VIA=systemd-python").encode())
                return True
            """
        )
    )
    return root


def journal_stream_of(path: Path) -> str:
    """The ``JOURNAL_STREAM`` value (``device:inode``) that names ``path`` as journald's stream."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"
