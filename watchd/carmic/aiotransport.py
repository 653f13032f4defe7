"""An httpx transport that moves bytes with aiohttp's client.

httpx stays the interface (requests, responses, redirects, timeouts, our error translation in
:mod:`watchd.carmic.http`); only the wire below it changes. httpcore's pure-Python HTTP/1.1
machinery (h11 validation, anyio task lookups, the pool's bookkeeping) was 40 % of the daemon's
CPU in a burst of small files; on loopback an httpx request over this transport costs half the
CPU of one over httpcore (``bench/http_transport.py``), and storage transfers are cheaper and
faster too.

The transport hands aiohttp the request exactly as httpx built it (target bytes, header order,
duplicates, no headers of its own, no redirects, no decompression) and maps aiohttp's
exceptions onto httpx's, as httpx's own ``map_httpcore_exceptions`` does for httpcore.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

import aiohttp
import httpx
from aiohttp import hdrs
from multidict import CIMultiDict
from yarl import URL

from watchd.redact import redact

# aiohttp adds these unless told not to; httpx already put what it wants on the request.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# httpx's own defaults.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5)
_HTTP_VERSIONS = {(1, 1): b"HTTP/1.1", (1, 0): b"HTTP/1.0"}


class _Upload:
    """The progress of one streamed request body, and its write deadline.

    aiohttp has no write timeout: a peer that stops reading would hold an upload forever (its
    read timeout only starts once the body is sent). The body iterator arms a deadline on the
    request's :func:`asyncio.timeout` while aiohttp writes each chunk and disarms it while the
    next chunk is produced, so a stall between chunks fails like httpcore's ``WriteTimeout``.
    """

    def __init__(self, write_timeout: float | None) -> None:
        self.write_timeout = write_timeout
        self.deadline: asyncio.Timeout | None = None
        self.finished = False
        self.failed: Exception | None = None

    def _reschedule(self, seconds: float | None) -> None:
        deadline = self.deadline
        if deadline is None:
            return
        when = None if seconds is None else asyncio.get_running_loop().time() + seconds
        deadline.reschedule(when)

    async def body(self, stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
        """``stream``'s chunks, each under the write deadline while aiohttp sends it."""
        try:
            async for chunk in stream:
                self._reschedule(self.write_timeout)
                yield chunk
                self._reschedule(None)
        except Exception as e:
            self.failed = e
            raise
        self.finished = True


def _text(e: BaseException) -> str:
    # aiohttp puts the whole URL in some messages; a presigned query must not reach a log.
    return redact(str(e)) or type(e).__name__


def _os_reason(e: OSError) -> str:
    """``connection refused`` for an OSError from a connect (its errno's text)."""
    if e.errno:
        return os.strerror(e.errno).lower()
    return _text(e)


def _httpx_error(
    e: Exception, request: httpx.Request, upload: _Upload | None
) -> httpx.TransportError | None:
    """httpx's exception for aiohttp's (or the OS's) ``e``; None for any other exception."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        # Also raised when no pooled connection came free in time (httpcore's PoolTimeout).
        return httpx.ConnectTimeout("timed out connecting", request=request)
    if isinstance(e, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(_text(e), request=request)
    if isinstance(e, TimeoutError):
        # Only the write deadline of a streamed body raises a bare TimeoutError here.
        return httpx.WriteTimeout("sending the body stalled", request=request)
    if isinstance(e, aiohttp.ClientSSLError):
        return httpx.ConnectError(_text(e), request=request)
    if isinstance(e, aiohttp.ClientConnectorError):
        # Its own text names aiohttp's idea of TLS ("ssl:default") even for plain http: say
        # only why the connection failed; the caller names the origin.
        return httpx.ConnectError(_os_reason(e.os_error), request=request)
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(
            "Server disconnected without sending a complete response", request=request
        )
    if isinstance(e, aiohttp.ClientResponseError):
        # A malformed answer (aiohttp's parser says "400"); its text names the URL.
        return httpx.RemoteProtocolError(redact(e.message) or "bad answer", request=request)
    if isinstance(e, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(_text(e), request=request)
    if isinstance(e, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol("invalid URL", request=request)
    if isinstance(e, aiohttp.ClientConnectionError | OSError):
        if upload is not None and not upload.finished:
            return httpx.WriteError(_text(e), request=request)
        return httpx.ReadError(_text(e), request=request)
    if isinstance(e, aiohttp.ClientError):
        return httpx.NetworkError(_text(e), request=request)
    return None


def _raise_mapped(e: Exception, request: httpx.Request, upload: _Upload | None = None) -> NoReturn:
    """Raise httpx's exception for aiohttp's (or the OS's) ``e`` (classes the rest of the code
    branches on), as httpx's ``map_httpcore_exceptions`` does, or ``e`` itself when it is
    neither's. ``upload`` tells a failed write from a failed read, and its body's own exception
    passes through as it was raised. (A plain ``except`` calling this costs a small exchange
    less than a context manager around it.)"""
    if upload is not None and upload.failed is not None:
        # The body's producer failed (the file changed while read): that error is the caller's
        # to see, not aiohttp's "failed to send bytes" around it (httpcore too lets it through).
        raise upload.failed from None
    mapped = _httpx_error(e, request, upload)
    if mapped is None:
        raise e
    raise mapped from e


def _extensions(response: aiohttp.ClientResponse) -> dict[str, bytes]:
    version = response.version
    return {
        "http_version": _HTTP_VERSIONS.get((version.major, version.minor), b"HTTP/1.1")
        if version is not None
        else b"HTTP/1.1",
        "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
    }


def _filled(response: httpx.Response, body: bytes) -> None:
    # What Response.read() leaves behind over a ByteStream of ``body`` with no Content-Encoding
    # to decode, without its iterators (most of what a small exchange costs httpx).
    response._content = body
    response._num_bytes_downloaded = len(body)
    response.is_stream_consumed = True
    response.is_closed = True


def _whole_response(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    request: httpx.Request,
    extensions: dict[str, bytes],
    encoded: bool,
) -> httpx.Response:
    """A response whose body arrived whole: what ``Response(stream=ByteStream(body))`` is once
    read (``encoded``: a Content-Encoding header is present, to be decoded as httpx does)."""
    response = httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(body),
        request=request,
        extensions=extensions,
    )
    if encoded or not _FILL_IN_PLACE:
        response.read()
    else:
        _filled(response, body)
    return response


def _can_fill_in_place() -> bool:
    # Response's insides are httpx's business: fill them only while they behave as expected.
    try:
        request = httpx.Request("GET", "http://h.test/")
        body = b'{"a": 1}'
        read = httpx.Response(200, stream=httpx.ByteStream(body), request=request)
        read.read()
        filled = httpx.Response(200, stream=httpx.ByteStream(body), request=request)
        _filled(filled, body)
        return all(
            getattr(read, name) == getattr(filled, name)
            for name in ("content", "num_bytes_downloaded", "is_stream_consumed", "is_closed")
        ) and set(vars(read)) - {"_decoder"} == set(vars(filled))  # made again when needed
    except Exception:  # pragma: no cover - another httpx
        return False


_FILL_IN_PLACE = _can_fill_in_place()


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it. Closing it gives the connection back to the
    pool when the body was read to the end, and closes the connection otherwise."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as e:
            _raise_mapped(e, self._request)

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()
        else:
            response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport over an ``aiohttp.ClientSession`` (HTTP/1.1).

    ``ssl_context`` verifies every TLS connection; ``limits`` sizes the pool
    (``max_connections`` and ``keepalive_expiry``; aiohttp keeps every idle connection until
    it expires, so ``max_keepalive_connections`` has no equivalent). The session is made on
    the first request, inside the running event loop, and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self._ssl = ssl_context
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        limits = self._limits
        connector = aiohttp.TCPConnector(
            ssl=self._ssl,
            limit=limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=limits.keepalive_expiry,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # httpx decodes Content-Encoding, keeps cookies, follows redirects and reads the
            # proxy settings; aiohttp must do none of it a second time.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            requote_redirect_url=False,
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        spec = request.extensions.get("timeout", {})
        connect, read, pool = spec.get("connect"), spec.get("read"), spec.get("pool")
        key = (connect, read, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # aiohttp's ``connect`` covers waiting for a free connection and opening it.
            wait = None if connect is None or pool is None else connect + pool
            timeout = aiohttp.ClientTimeout(
                total=None, connect=wait, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    async def _send(self, request: httpx.Request) -> aiohttp.ClientResponse:
        """Send ``request`` with aiohttp; its answer with the body still to be read."""
        session = self._session if self._session is not None else self._open()
        url = request.url
        scheme = url.scheme
        if scheme != "https" and scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'.", request=request
            )
        # Byte for byte the target httpx has: presigned URLs are signed over the exact query.
        target = URL(
            f"{scheme}://{url.netloc.decode('ascii')}{url.raw_path.decode('ascii')}",
            encoded=True,
        )
        # aiohttp sends a CIMultiDict as given (order, duplicates).
        headers: CIMultiDict[str] = CIMultiDict(
            [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in request.headers.raw
            ]
        )
        if "Transfer-Encoding" in headers:
            # aiohttp frames a body of unknown length itself, header and all.
            headers = CIMultiDict(
                (k, v)
                for k, v in headers.items()
                if not (k.lower() == "transfer-encoding" and v.lower() == "chunked")
            )
        timeout = self._timeout(request)
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            try:
                return await session.request(
                    request.method,
                    target,
                    headers=headers,
                    data=b"".join(stream) or None,  # one chunk: the bytes as given
                    allow_redirects=False,
                    timeout=timeout,
                )
            except Exception as e:
                _raise_mapped(e, request)
        assert isinstance(stream, httpx.AsyncByteStream)
        upload = _Upload(request.extensions.get("timeout", {}).get("write"))
        try:
            async with asyncio.timeout(None) as deadline:
                upload.deadline = deadline
                try:
                    return await session.request(
                        request.method,
                        target,
                        headers=headers,
                        data=upload.body(stream),
                        allow_redirects=False,
                        timeout=timeout,
                    )
                finally:
                    # An early answer leaves the body still going out: no deadline outside
                    # this block.
                    upload.deadline = None
        except Exception as e:
            _raise_mapped(e, request, upload)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return its response with the body still to be read."""
        response = await self._send(request)
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            extensions=_extensions(response),
        )

    async def fetch(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return its response read whole (and closed, the connection
        back in the pool): what ``handle_async_request`` and ``Response.aread()`` give, without
        httpx's body iterators between aiohttp and the bytes (a quarter of a small exchange's
        CPU). A body that fails to arrive closes the connection and raises httpx's error."""
        response = await self._send(request)
        try:
            # What _ResponseStream does, in one call: read to the end, then release().
            body = await response.content.read()
        except BaseException as e:
            response.close()  # a connection with an unread answer is never reused
            if isinstance(e, Exception):
                _raise_mapped(e, request)
            raise
        response.release()
        return _whole_response(
            response.status,
            response.raw_headers,
            body,
            request=request,
            extensions=_extensions(response),
            encoded=hdrs.CONTENT_ENCODING in response.headers,
        )

    async def aclose(self) -> None:
        """Close the session and every pooled connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
