"""A real HTTP receiver on loopback for notification tests: it records every request and
answers what the test tells it to (a status, a Retry-After, or nothing at all)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)


# (the request, how many came before it) -> (status, extra headers), or None: never answer.
Responder = Callable[[Request, int], tuple[int, dict[str, str]] | None]


def ok(_: Request, __: int) -> tuple[int, dict[str, str]]:
    return 200, {}


class Receiver:
    def __init__(self, responder: Responder = ok) -> None:
        self.responder = responder
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._release = threading.Event()  # set at close: hung answers return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.monotonic(),
                )
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append(req)
                answer = receiver.responder(req, n)
                if answer is None:
                    receiver._release.wait(120)
                    self.close_connection = True
                    return
                status, headers = answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def received(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        out = [r.json for r in self.received()]
        return [e for e in out if type_ is None or e.get("type") == type_]


def verify(secret: str, req: Request) -> Any:
    """The body, verified with the Standard Webhooks verifier (raises when it does not)."""
    return Webhook(secret).verify(req.body, req.headers)
