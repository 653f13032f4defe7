"""A thin httpx helper for driving the emulator the way a client of the reference would."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from watchd.emulator import Emulator

T = TypeVar("T")


def wait_for(get: Callable[[], T], done: Callable[[T], bool], timeout: float = 15.0) -> T:
    """Call ``get`` until ``done`` holds for its value (the emulator works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last {value!r}"
        time.sleep(0.01)


class Api:
    """An httpx client on the emulator's API with the reference's headers."""

    def __init__(self, emu: Emulator, email: str | None = None, password: str | None = None):
        self.emu = emu
        self.email = email or emu.seed_email
        self.password = password or emu.seed_password
        self.http = httpx.Client(base_url=emu.api_url, timeout=30)
        self.storage = httpx.Client(timeout=30)
        self.token = ""
        self.refresh = ""
        self.ws = ""

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.storage.close()

    # ---- auth -------------------------------------------------------------------------------

    def login(self) -> None:
        r = self.http.post("/v1/auth/login", json={"email": self.email, "password": self.password})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        self.token, self.refresh = data["access"], data["refresh"]
        me = self.get("/v1/me", ws=False).json()["data"]
        self.ws = me["workspaces"][0]["id"]

    def headers(self, ws: bool = True) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"}
        if ws:
            h["X-Workspace-ID"] = self.ws
        return h

    def request(self, method: str, path: str, *, ws: bool = True, **kw: Any) -> httpx.Response:
        headers = {**self.headers(ws), **kw.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    # ---- projects ---------------------------------------------------------------------------

    def create(self, **body: Any) -> httpx.Response:
        payload = {"filename": "talk.mp4", "filesize": 1000, "content_type": "video/mp4"}
        payload.update(body)
        return self.post(
            "/v1/projects/create", json={k: v for k, v in payload.items() if v is not None}
        )

    def create_for(self, video: Path, **body: Any) -> dict[str, Any]:
        r = self.create(filename=video.name, filesize=video.stat().st_size, duration=20, **body)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    def upload(self, url: str, data: bytes, content_type: str = "video/mp4") -> httpx.Response:
        return self.storage.put(url, content=data, headers={"Content-Type": content_type})

    def ready_project(self, video: Path, **body: Any) -> str:
        """Create, upload and process; returns the project id (CLIPS_READY with 0 timings)."""
        created = self.create_for(video, **body)
        content_type = body.get("content_type", "video/mp4")
        r = self.upload(created["upload_url"], video.read_bytes(), content_type)
        assert r.status_code == 200, r.text
        r = self.post(f"/v1/projects/{created['project_id']}/process")
        assert r.status_code == 200, r.text
        return str(created["project_id"])

    def clips(self, pid: str) -> list[dict[str, Any]]:
        clips: list[dict[str, Any]] = self.get(f"/v1/projects/{pid}").json()["data"]["clips"]
        return clips


def raw_request(url: str, request: bytes, *, body: bytes = b"", read_first: bool = False) -> bytes:
    """Send bytes over a plain socket (for what httpx will not send); returns the response."""
    parsed = httpx.URL(url)
    with socket.create_connection((parsed.host, parsed.port or 80), timeout=10) as s:
        s.sendall(request)
        first = b""
        if read_first:
            first = s.recv(65536)
        if body:
            s.sendall(body)
        chunks = [first]
        while not (first and not body and _complete(first)):
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, rest = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 100"):
        return _complete(rest) if rest else False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":", 1)[1])
    return True


def split_url(url: str) -> tuple[str, str]:
    """(host:port, raw path and query) of a URL."""
    rest = url.split("://", 1)[1]
    host, _, target = rest.partition("/")
    return host, "/" + target
