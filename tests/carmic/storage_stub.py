"""A tiny S3/R2-like storage origin on loopback (aiohttp), strict where R2 is strict.

Presigned URLs carry an HMAC over the method, the path and the raw query string exactly as
issued (``X-Amz-Credential`` holds ``%2F``: a client that re-encodes it breaks the signature).
PUT refuses chunked bodies, a missing or short ``Content-Length``, a content type other than the
signed one and any ``Authorization`` header; it streams the body into a SHA-256 (keeping the
bytes only when asked). Runs in the test's own event loop: no threads to leak.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

KEY = b"stub-signing-key"


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    status: int = 0
    received: int = 0


@dataclass
class StoredObject:
    size: int
    sha256: str
    data: bytes | None
    content_type: str


@dataclass
class StorageStub:
    keep_bytes: bool = True
    objects: dict[str, StoredObject] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    expired: bool = False
    # GET: send only this many bytes of the object, then drop the connection.
    truncate_get_at: int | None = None
    truncations_left: int = -1  # how many GETs to truncate (-1: all of them)
    url: str = ""
    _runner: web.AppRunner | None = None

    # ---- signing -------------------------------------------------------------------------

    def _sign(self, method: str, path: str, query: str) -> str:
        return hmac.new(KEY, f"{method}\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()

    def presign(self, method: str, key: str, content_type: str = "video/mp4") -> str:
        """A URL like R2's; the signature covers ``query`` byte for byte (``%2F`` included)."""
        path = f"/bucket/{key}"
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=stubkey%2F20260101%2Fauto%2Fs3%2Faws4_request"
            "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
            f"&x-id={method}Object&ct={content_type.replace('/', '%2F')}"
        )
        return f"{self.url}{path}?{query}&X-Amz-Signature={self._sign(method, path, query)}"

    def _check_signature(self, request: web.Request) -> str | None:
        parts = urlsplit(request.raw_path)
        query, _, sig = parts.query.rpartition("&X-Amz-Signature=")
        if not hmac.compare_digest(sig, self._sign(request.method, parts.path, query)):
            return "SignatureDoesNotMatch"
        return None

    # ---- server --------------------------------------------------------------------------

    async def start(self) -> StorageStub:
        app = web.Application()
        app.router.add_route("PUT", "/bucket/{key:.*}", self._put)
        app.router.add_route("GET", "/bucket/{key:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _error(self, seen: Seen, status: int, code: str, message: str) -> web.Response:
        seen.status = status
        body = (
            f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )
        return web.Response(status=status, text=body, content_type="application/xml")

    def _refusal(self, request: web.Request, seen: Seen) -> web.Response | None:
        if "Authorization" in request.headers:
            return self._error(seen, 400, "InvalidArgument", "Only one auth mechanism allowed")
        if self._check_signature(request):
            return self._error(seen, 403, "SignatureDoesNotMatch", "The signature does not match")
        if self.expired:
            return self._error(seen, 403, "AccessDenied", "Request has expired")
        return None

    async def _put(self, request: web.Request) -> web.StreamResponse:
        seen = Seen("PUT", request.raw_path, dict(request.headers))
        self.seen.append(seen)
        refusal = self._refusal(request, seen)
        if refusal is not None:
            return refusal
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return self._error(seen, 411, "MissingContentLength", "chunked is not supported")
        if request.content_length is None:
            return self._error(seen, 411, "MissingContentLength", "Content-Length required")
        signed_type = dict(parse_qsl(urlsplit(request.raw_path).query)).get("ct")
        if request.headers.get("Content-Type") != signed_type:
            return self._error(seen, 403, "SignatureDoesNotMatch", "content type differs")
        digest = hashlib.sha256()
        kept: list[bytes] | None = [] if self.keep_bytes else None
        while True:
            block = await request.content.readany()
            if not block:
                break
            digest.update(block)
            seen.received += len(block)
            if kept is not None:
                kept.append(block)
        if seen.received != request.content_length:
            return self._error(seen, 400, "IncompleteBody", "fewer bytes than Content-Length")
        self.objects[request.match_info["key"]] = StoredObject(
            seen.received,
            digest.hexdigest(),
            b"".join(kept) if kept is not None else None,
            request.headers["Content-Type"],
        )
        seen.status = 200
        return web.Response(status=200, headers={"ETag": '"stub"'})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        seen = Seen("GET", request.raw_path, dict(request.headers))
        self.seen.append(seen)
        refusal = self._refusal(request, seen)
        if refusal is not None:
            return refusal
        obj = self.objects.get(request.match_info["key"])
        if obj is None or obj.data is None:
            return self._error(seen, 404, "NoSuchKey", "The specified key does not exist")
        seen.status = 200
        resp = web.StreamResponse(status=200, headers={"Content-Type": obj.content_type})
        resp.content_length = obj.size
        await resp.prepare(request)
        if self.truncate_get_at is not None and self.truncations_left != 0:
            self.truncations_left -= 1 if self.truncations_left > 0 else 0
            await resp.write(obj.data[: self.truncate_get_at])
            assert request.transport is not None
            request.transport.abort()  # a dropped connection, mid-body
            return resp
        await resp.write(obj.data)
        await resp.write_eof()
        return resp
