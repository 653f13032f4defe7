"""AiohttpTransport against real servers on loopback: the request exactly as httpx built it,
streamed bodies both ways, SSE, timeouts and broken connections as httpx's exceptions,
cancellation, TLS verification."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from httpx_sse import aconnect_sse

from watchd.carmic import aiotransport
from watchd.carmic.aiotransport import AiohttpTransport

LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=5)
MIB = 1 << 20


def transport(ctx: ssl.SSLContext | None = None) -> AiohttpTransport:
    return AiohttpTransport(ssl_context=ctx or ssl.create_default_context(), limits=LIMITS)


def idle(t: AiohttpTransport) -> bool:
    """No connection of ``t``'s pool is lent out (a cancelled request gave its own back)."""
    session = t._session
    assert session is not None and session.connector is not None
    return not session.connector._acquired


def client(ctx: ssl.SSLContext | None = None, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport(ctx), **kwargs)  # type: ignore[arg-type]


async def fetch_or_send(
    http: httpx.AsyncClient, request: httpx.Request, whole: bool
) -> httpx.Response:
    """``request``'s response read whole: by the transport's ``fetch`` (``whole``), or through
    httpx's own path (``handle_async_request``, then the body read through httpx's iterators)."""
    if whole:
        t = http._transport
        assert isinstance(t, AiohttpTransport)
        return await t.fetch(request)
    return await http.send(request)


WHOLE = pytest.mark.parametrize("whole", [False, True], ids=["streamed", "fetch"])


# ---- servers ----------------------------------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    """What arrived: target, headers in order, body length and hash, framing, the peer port."""
    body = await request.read()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return web.json_response(
        {
            "method": request.method,
            "target": request.raw_path,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "port": peer[1] if peer else None,
        }
    )


async def _gzipped(_: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(b"hello " * 100),
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
    )


async def _redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/echo")


async def _large(_: web.Request) -> web.Response:
    return web.Response(body=b"x" * (4 * MIB))


async def _events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(3):
        await response.write(f"event: tick\ndata: {json.dumps({'n': i})}\n\n".encode())
    await response.write_eof()
    return response


def _app() -> web.Application:
    app = web.Application(client_max_size=64 * MIB)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/{tail:.*}/echo", _echo)
    app.router.add_get("/gzip", _gzipped)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/large", _large)
    app.router.add_get("/events", _events)
    return app


async def _serve(
    app: web.Application, ctx: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    server = site._server
    assert server is not None  # asyncio.Server or uvloop's Server: both have .sockets
    return runner, server.sockets[0].getsockname()[1]


@pytest.fixture
async def base() -> AsyncIterator[str]:
    runner, port = await _serve(_app())
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server that misbehaves on purpose; its connections are closed at the end."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()  # a client connection was closed by the client
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def until_client_closes(self, reader: asyncio.StreamReader) -> None:
        """Read (and drop) until the client closes its end."""
        while await reader.read(65536):
            pass
        self.closed.set()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


# ---- the request as httpx built it ------------------------------------------------------------


async def test_session_is_made_in_the_loop_on_first_use_and_closed_by_aclose(base: str) -> None:
    t = transport()
    assert t._session is None
    async with httpx.AsyncClient(transport=t) as http:
        assert (await http.get(f"{base}/echo")).status_code == 200
        session = getattr(t, "_session", None)
        assert session is not None and not session.closed
    assert session.closed and t._session is None


async def test_headers_are_exactly_httpxs_in_order_with_duplicates(base: str) -> None:
    async with client() as http:
        for request in (
            http.build_request(
                "GET",
                f"{base}/echo",
                headers=[("X-Dup", "1"), ("Accept", "text/x"), ("X-Dup", "2")],
            ),
            http.build_request("POST", f"{base}/echo", content=b"abc"),
            http.build_request("PUT", f"{base}/echo", json={"a": 1}),
        ):
            seen = (await http.send(request)).json()
            assert seen["headers"] == [[k.decode(), v.decode()] for k, v in request.headers.raw], (
                request.method
            )
    # No User-Agent, Accept, Accept-Encoding or Content-Type of aiohttp's own.
    post = [h for h in seen["headers"] if h[0].lower() in ("user-agent", "content-type")]
    assert post == [
        ["User-Agent", f"python-httpx/{httpx.__version__}"],
        ["Content-Type", "application/json"],
    ]


async def test_a_bodiless_delete_gets_a_zero_content_length(base: str) -> None:
    # The one header aiohttp insists on (for every method outside GET/HEAD/OPTIONS/TRACE);
    # httpcore sends none. Harmless: it says what is true.
    async with client() as http:
        request = http.build_request("DELETE", f"{base}/echo")
        seen = (await http.send(request)).json()
    sent = [[k.decode(), v.decode()] for k, v in request.headers.raw]
    assert seen["headers"] == [*sent, ["Content-Length", "0"]]


async def test_request_target_is_byte_for_byte(base: str) -> None:
    # A presigned URL is signed over the exact query: %2F stays %2F, the order stays.
    url = httpx.URL(f"{base}/a%2Fb/echo").copy_with(
        raw_path=b"/a%2Fb/echo?X-Sig=ab%2Fcd%3D%3D&b=1&a=x%20y"
    )
    async with client() as http:
        seen = (await http.get(url)).json()
    assert seen["target"] == "/a%2Fb/echo?X-Sig=ab%2Fcd%3D%3D&b=1&a=x%20y"


async def test_content_encoding_is_left_to_httpx(base: str) -> None:
    async with client() as http:
        response = await http.get(f"{base}/gzip")
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.text == "hello " * 100
        async with http.stream("GET", f"{base}/gzip") as raw:
            assert gzip.decompress(b"".join([c async for c in raw.aiter_raw()])) == b"hello " * 100


async def test_redirects_are_httpxs_business(base: str) -> None:
    async with client() as http:
        response = await http.get(f"{base}/redirect")
        assert response.status_code == 302 and response.headers["Location"] == "/echo"
        followed = await http.get(f"{base}/redirect", follow_redirects=True)
        assert followed.status_code == 200 and followed.json()["target"] == "/echo"
        assert [r.status_code for r in followed.history] == [302]


async def test_response_carries_version_and_reason(base: str) -> None:
    async with client() as http:
        response = await http.get(f"{base}/redirect")
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "Found"


# ---- bodies -----------------------------------------------------------------------------------


async def _chunks(n: int, size: int = MIB) -> AsyncIterator[bytes]:
    for i in range(n):
        yield bytes([i]) * size


def _upload(http: httpx.AsyncClient, port: int, mib: int) -> httpx.Request:
    """A PUT of ``mib`` MiB to the loopback server at ``port``, streamed with its length."""
    return http.build_request(
        "PUT",
        f"http://127.0.0.1:{port}/",
        content=_chunks(mib),
        headers={"Content-Length": str(mib * MIB)},
    )


async def test_streamed_upload_with_a_length_is_not_chunked(base: str) -> None:
    expected = hashlib.sha256(b"".join(bytes([i]) * MIB for i in range(8))).hexdigest()
    async with client() as http:
        request = http.build_request(
            "PUT",
            f"{base}/echo",
            content=_chunks(8),
            headers={"Content-Length": str(8 * MIB), "Content-Type": "video/mp4"},
        )
        seen = (await http.send(request)).json()
    names = {k.lower(): v for k, v in seen["headers"]}
    assert names["content-length"] == str(8 * MIB) and "transfer-encoding" not in names
    assert names["content-type"] == "video/mp4"
    assert seen["length"] == 8 * MIB and seen["sha256"] == expected


async def test_streamed_upload_without_a_length_is_chunked(base: str) -> None:
    async with client() as http:
        seen = (await http.put(f"{base}/echo", content=_chunks(3, 1000))).json()
    names = {k.lower(): v for k, v in seen["headers"]}
    assert names["transfer-encoding"] == "chunked" and "content-length" not in names
    assert seen["length"] == 3000


async def test_an_error_of_the_body_itself_passes_through_as_raised(base: str) -> None:
    class Changed(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * MIB
        raise Changed("the file changed while read")

    t = transport()
    async with httpx.AsyncClient(transport=t) as http:
        request = http.build_request(
            "PUT", f"{base}/echo", content=body(), headers={"Content-Length": str(2 * MIB)}
        )
        with pytest.raises(Changed, match="changed while read"):
            await http.send(request)
        assert idle(t)


async def test_responses_stream_and_connections_are_reused_only_when_read(base: str) -> None:
    async with client() as http:
        async with http.stream("GET", f"{base}/large") as response:
            got = 0
            async for chunk in response.aiter_raw():
                got += len(chunk)
        assert got == 4 * MIB
        first = (await http.get(f"{base}/echo")).json()["port"]
        assert (await http.get(f"{base}/echo")).json()["port"] == first  # kept alive
        async with http.stream("GET", f"{base}/large") as response:
            async for _ in response.aiter_raw():
                break  # unread rest: the connection cannot serve another request
        assert idle(http._transport)  # type: ignore[arg-type]


async def test_sse_over_httpx_sse(base: str) -> None:
    async with client() as http, aconnect_sse(http, "GET", f"{base}/events") as source:
        events = [(e.event, e.json()) async for e in source.aiter_sse()]
    assert events == [("tick", {"n": 0}), ("tick", {"n": 1}), ("tick", {"n": 2})]


# ---- a whole answer at once (fetch) ------------------------------------------------------------


@pytest.mark.parametrize("fill", [True, False], ids=["filled in place", "read by httpx"])
@pytest.mark.parametrize("path", ["/echo", "/gzip", "/redirect", "/large"])
async def test_fetch_gives_the_response_httpx_reads(
    base: str, path: str, fill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiotransport, "_FILL_IN_PLACE", fill)
    async with client() as http:
        request = http.build_request("GET", f"{base}{path}")
        got = await fetch_or_send(http, request, whole=True)
        expected = await fetch_or_send(http, http.build_request("GET", f"{base}{path}"), False)
        assert idle(http._transport)  # type: ignore[arg-type]
    assert got.request is request
    for name in (
        "status_code",
        "http_version",
        "reason_phrase",
        "is_closed",
        "is_stream_consumed",
        "num_bytes_downloaded",
        "encoding",
    ):
        assert getattr(got, name) == getattr(expected, name), name
    # Every header in order, but the Date: the two answers may straddle a second.
    assert [h for h in got.headers.raw if h[0] != b"Date"] == [
        h for h in expected.headers.raw if h[0] != b"Date"
    ]
    if path == "/echo":
        assert got.json() == {**expected.json(), "port": got.json()["port"]}
    else:
        assert got.content == expected.content
        assert got.text == expected.text
    assert b"".join([c async for c in got.aiter_bytes()]) == got.content  # read again


async def test_fetch_gives_the_connection_back_for_the_next_request(base: str) -> None:
    async with client() as http:
        ports = [
            (await fetch_or_send(http, http.build_request("GET", f"{base}/echo"), True)).json()[
                "port"
            ]
            for _ in range(3)
        ]
        assert idle(http._transport)  # type: ignore[arg-type]
    assert len(set(ports)) == 1


@WHOLE
async def test_an_early_answer_to_an_upload_stops_sending_it(whole: bool) -> None:
    # The server refuses at once and reads no more: the answer is the caller's without
    # waiting for a body that can no longer go out (no write deadline is armed by then).
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied")
        await writer.drain()
        await asyncio.Event().wait()  # neither reads nor closes

    async with RawServer(handler) as server, client() as http:
        request = _upload(http, server.port, 256)
        response = await asyncio.wait_for(fetch_or_send(http, request, whole), 5)
        assert (response.status_code, response.content) == (403, b"denied")
        assert idle(http._transport)  # type: ignore[arg-type]


# ---- failures as httpx's exceptions -----------------------------------------------------------


async def test_refused_port_is_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")


async def test_unknown_host_is_connect_error() -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://nonexistent.invalid/")


async def test_unsupported_scheme() -> None:
    async with client() as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.send(httpx.Request("GET", "ftp://127.0.0.1/"))


async def test_a_full_accept_queue_is_connect_timeout() -> None:
    # A listener that never accepts, its backlog filled: further SYNs are dropped.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                with suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                fillers.append(s)
            async with client(timeout=httpx.Timeout(5, connect=0.3)) as http:
                with pytest.raises(httpx.ConnectTimeout) as caught:
                    await http.get(f"http://127.0.0.1:{port}/up?X-Amz-Signature=s3cr3t")
                assert "s3cr3t" not in str(caught.value)
        finally:
            for s in fillers:
                s.close()


@WHOLE
@pytest.mark.parametrize("head", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123"])
async def test_silent_server_is_read_timeout(whole: bool, head: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(head)  # no answer, or the start of one
        await server.until_client_closes(reader)

    async with RawServer(handler) as server, client(timeout=httpx.Timeout(5, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await fetch_or_send(
                http, http.build_request("GET", f"http://127.0.0.1:{server.port}/"), whole
            )
        await asyncio.wait_for(server.closed.wait(), 5)  # the connection was not kept
        assert idle(http._transport)  # type: ignore[arg-type]


async def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


@pytest.mark.parametrize(
    ("reply", "reset", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000,
            True,
            (httpx.RemoteProtocolError, httpx.ReadError),
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", False, httpx.RemoteProtocolError),
        (b"", False, httpx.RemoteProtocolError),
        (b"SPDY/9 what\r\n\r\n", False, httpx.RemoteProtocolError),
    ],
    ids=["reset mid-body", "short body", "closed without an answer", "not HTTP"],
)
@WHOLE
async def test_a_broken_answer_is_a_protocol_or_read_error(
    reply: bytes,
    reset: bool,
    expected: type[Exception] | tuple[type[Exception], ...],
    whole: bool,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(reply)
        await writer.drain()
        if reset:
            await _reset(writer)

    async with RawServer(handler) as server, client() as http:
        url = f"http://127.0.0.1:{server.port}/up?X-Amz-Signature=s3cr3t"
        with pytest.raises(expected) as caught:
            await fetch_or_send(http, http.build_request("GET", url), whole)
        assert "s3cr3t" not in str(caught.value)
        assert idle(http._transport)  # type: ignore[arg-type]


async def test_server_closing_before_the_upload_finished_is_a_network_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await reader.readexactly(MIB)
        await _reset(writer)

    async with RawServer(handler) as server, client() as http:
        request = _upload(http, server.port, 64)
        with pytest.raises((httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError)):
            await http.send(request)


async def test_a_peer_that_stops_reading_is_write_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await asyncio.Event().wait()  # never reads the body

    async with (
        RawServer(handler) as server,
        client(timeout=httpx.Timeout(5, write=0.2)) as http,
    ):
        request = _upload(http, server.port, 256)
        with pytest.raises(httpx.WriteTimeout):
            await http.send(request)


async def test_pool_wait_is_bounded_by_the_pool_timeout(base: str) -> None:
    one = httpx.Limits(max_connections=1, keepalive_expiry=5)
    t = AiohttpTransport(ssl_context=ssl.create_default_context(), limits=one)
    timeout = httpx.Timeout(5, connect=0.1, pool=0.1)
    async with (
        httpx.AsyncClient(transport=t, timeout=timeout) as http,
        http.stream("GET", f"{base}/large"),
    ):
        # httpcore says PoolTimeout; aiohttp cannot tell waiting for a slot from connecting
        # (its bound is pool + connect).
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"{base}/echo")


# ---- cancellation -----------------------------------------------------------------------------


async def _cancel(
    call: Callable[[httpx.AsyncClient, str], Coroutine[Any, Any, object]],
    reached: asyncio.Event | None = None,
    reply: bytes = b"",
) -> None:
    """Cancel ``call`` once ``reached`` is set (by default: once the server has the request
    head); the connection must be closed and none left lent out."""
    asked = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        asked.set()
        writer.write(reply)
        await writer.drain()
        await server.until_client_closes(reader)

    async with RawServer(handler) as server:
        t = transport()
        async with httpx.AsyncClient(transport=t) as http:
            task = asyncio.create_task(call(http, f"http://127.0.0.1:{server.port}/"))
            await asyncio.wait_for((reached or asked).wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(server.closed.wait(), 5)
            assert idle(t)


async def test_cancelled_while_waiting_for_the_answer_closes_the_connection() -> None:
    async def get(http: httpx.AsyncClient, url: str) -> object:
        return await http.get(url)

    await _cancel(get)


async def test_cancelled_while_fetching_the_body_closes_the_connection() -> None:
    async def fetch(http: httpx.AsyncClient, url: str) -> object:
        return await fetch_or_send(http, http.build_request("GET", url), whole=True)

    await _cancel(fetch, reply=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123")


async def test_cancelled_mid_upload_closes_the_connection() -> None:
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * MIB
        sent.set()
        await asyncio.Event().wait()  # the rest never comes
        yield b""

    async def upload(http: httpx.AsyncClient, url: str) -> object:
        headers = {"Content-Length": str(2 * MIB)}
        return await http.send(http.build_request("PUT", url, content=body(), headers=headers))

    await _cancel(upload, sent)


async def test_cancelled_mid_stream_closes_the_connection() -> None:
    got = asyncio.Event()

    async def listen(http: httpx.AsyncClient, url: str) -> None:
        async with aconnect_sse(http, "GET", url) as source:
            async for _ in source.aiter_sse():
                got.set()

    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n"
    await _cancel(listen, got, head)


# ---- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified_with_the_given_context(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    runner, port = await _serve(_app(), server_ctx)
    try:
        url = f"https://127.0.0.1:{port}/echo"
        async with client() as http:
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await http.get(url)
        trusting = ssl.create_default_context()
        trusting.load_verify_locations(cert)
        async with client(trusting) as http:
            assert (await http.get(url)).status_code == 200
    finally:
        await runner.cleanup()


async def test_a_closed_plain_http_port_names_the_origin_and_scheme() -> None:
    """Not aiohttp's "ssl:default" for a plain-http URL, and the route said once."""
    import socket

    from watchd.carmic.client import CarmicClient
    from watchd.carmic.errors import NetworkError
    from watchd.carmic.retry import RetryPolicy

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CarmicClient(
        f"http://127.0.0.1:{port}/api", "a@b.c", "pw", retry=RetryPolicy(attempts=1)
    )
    try:
        with pytest.raises(NetworkError) as ei:
            await client.me()
    finally:
        await client.aclose()
    text = str(ei.value)
    assert text == (
        f"cannot connect to http://127.0.0.1:{port}: connection refused (/v1/auth/login)"
    )
