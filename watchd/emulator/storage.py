"""The storage ("R2") origin: presigned PUT and GET, strict like S3.

A PUT must carry a valid, unexpired signature for its exact URL, the Content-Type declared when
the URL was made, an exact ``Content-Length`` (no chunked bodies) and no ``Authorization``
header; ``Expect: 100-continue`` is checked before the body is invited. The body is streamed to
disk (or only hashed) and its size and SHA-256 recorded. GET serves objects, with ranges.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from watchd.emulator.core import Core
from watchd.emulator.envelope import Dropped, drop
from watchd.emulator.objects import BodySink, StoredObject
from watchd.emulator.signing import S3Error, SignedRequest
from watchd.emulator.state import UploadSlot

__all__ = ["MAX_SINGLE_PUT", "build_storage_app"]

log = logging.getLogger(__name__)

MAX_SINGLE_PUT = 5 * 1024**3  # S3/R2's single-PUT limit
_CHUNK = 1 << 20

CORE = web.AppKey("core", Core)


def _s3_response(err: S3Error, resource: str = "") -> web.Response:
    return web.Response(
        status=err.status,
        text=err.xml(resource),
        content_type="application/xml",
        headers={"x-amz-error-code": err.code},
    )


def _verify(core: Core, request: web.Request, method: str) -> SignedRequest:
    """The checks every storage request passes before anything else happens."""
    if "Authorization" in request.headers:
        raise S3Error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
        )
    return core.signer.verify(method, request.raw_path, request.host, now=core.now())


def _check_put_headers(core: Core, request: web.Request) -> tuple[SignedRequest, UploadSlot, int]:
    signed = _verify(core, request, "PUT")
    slot = core.state.upload_slots.get(signed.key)
    if slot is None:
        raise S3Error(403, "AccessDenied", "Access Denied")
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise S3Error(
            411,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header (chunked transfer encoding is not "
            "supported for presigned PUTs).",
        )
    raw_length = request.headers.get("Content-Length")
    if raw_length is None or not raw_length.isdigit():
        raise S3Error(
            411, "MissingContentLength", "You must provide the Content-Length HTTP header."
        )
    length = int(raw_length)
    if length > MAX_SINGLE_PUT:
        raise S3Error(
            400,
            "EntityTooLarge",
            f"Your proposed upload exceeds the maximum allowed size ({MAX_SINGLE_PUT} bytes "
            "for a single PUT)",
        )
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type not in slot.content_types:
        raise S3Error(
            403,
            "SignatureDoesNotMatch",
            f"The Content-Type {content_type or '(none)'!r} does not match the Content-Type the "
            f"URL was signed for ({', '.join(sorted(slot.content_types))}).",
        )
    return signed, slot, length


async def _expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: refuse a doomed upload before the client sends its body."""
    core = request.app[CORE]
    if request.headers.get("Expect", "").lower() != "100-continue":
        return web.Response(status=417, text="Expectation Failed")
    if request.method == "PUT":
        try:
            _check_put_headers(core, request)
        except S3Error as err:
            _record(core, request, err.status)
            response = _s3_response(err, request.path)
            # The client holds its body back for our answer: close rather than wait for it.
            response.force_close()
            return response
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the body has not started
    return None


_STARTED = web.RequestKey("started", float)
_FIRST_BYTE = web.RequestKey("first_byte", float)


def _record(core: Core, request: web.Request, status: int) -> None:
    core.inspection.record_request(
        request,
        origin="storage",
        status=status,
        t=core.now(),
        started=request.get(_STARTED),
        first_byte=request.get(_FIRST_BYTE),
    )


async def _receive(core: Core, request: web.Request, length: int, sink: BodySink) -> None:
    """Stream the body into ``sink``. A fault may reset the connection half way."""
    received = 0
    reset_at = length // 2 if core.draw(core.settings.faults.upload_reset_rate) else None
    timeout = core.settings.storage_idle_timeout
    while received < length:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout=timeout or None)
        except TimeoutError:
            raise S3Error(
                400,
                "IncompleteBody",
                f"You did not provide the number of bytes specified by the Content-Length HTTP "
                f"header ({received} of {length} received before the connection went idle).",
            ) from None
        if not chunk:
            break
        if not received:
            request[_FIRST_BYTE] = core.now()
        received += len(chunk)
        await sink.feed(chunk)
        if reset_at is not None and received >= reset_at:
            core.inspection.count("upload_resets")
            raise drop(request)
    if received < length:
        raise S3Error(
            400,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )


async def _put(core: Core, request: web.Request) -> web.StreamResponse:
    signed, slot, length = _check_put_headers(core, request)
    tmp = core.store.temp_path() if core.settings.store_uploads else None
    sink = BodySink(tmp, core.executor)
    try:
        try:
            await _receive(core, request, length, sink)
            size, sha, md5 = await sink.finish()
        finally:
            await sink.aclose()
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        obj = core.store.commit(
            signed.key,
            tmp,
            content_type=content_type,
            size=size,
            sha256=sha,
            md5=md5,
            now=core.now(),
        )
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    _uploaded(core, slot, obj)
    return web.Response(status=200, headers={"ETag": obj.etag})


def _uploaded(core: Core, slot: UploadSlot, obj: StoredObject) -> None:
    core.inspection.count("uploads")
    if slot.project_id is None:
        return
    project = core.state.projects.get(slot.project_id)
    if project is not None and not project.deleted:
        project.upload = obj


async def _get(core: Core, request: web.Request) -> web.StreamResponse:
    signed = _verify(core, request, request.method)
    obj = await core.store.fetch(signed.key, now=core.now())
    if obj is None or obj.path is None or not obj.path.exists():
        raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
    return web.FileResponse(
        obj.path,
        headers={
            "Content-Type": obj.content_type,
            "ETag": obj.etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, max-age=0",
        },
    )


async def _handle(request: web.Request) -> web.StreamResponse:
    core = request.app[CORE]
    request[_STARTED] = core.now()
    status = 0
    try:
        if core.settings.faults.slow_seconds:
            await asyncio.sleep(core.settings.faults.slow_seconds)
        if request.method == "PUT":
            response = await _put(core, request)
        elif request.method in ("GET", "HEAD"):
            response = await _get(core, request)
        else:
            raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed")
        status = response.status
        return response
    except S3Error as err:
        status = err.status
        if err.status >= 400 and request.method == "PUT":
            core.inspection.count("upload_refusals")
        return _s3_response(err, request.path)
    except Dropped:
        return web.Response(status=499)  # never reaches the client: the transport is gone
    except Exception:
        log.exception("storage %s %s failed", request.method, request.path)
        status = 500
        return _s3_response(S3Error(500, "InternalError", "We encountered an internal error."))
    finally:
        _record(core, request, status)


def build_storage_app(core: Core) -> web.Application:
    """The storage origin's aiohttp application."""
    app = web.Application(client_max_size=MAX_SINGLE_PUT)
    app[CORE] = core
    app.router.add_route("*", "/{tail:.*}", _handle, expect_handler=_expect_continue)
    return app
