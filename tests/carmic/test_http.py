"""The HTTP boundary: client settings, TLS, error translation, client ownership."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import certifi
import httpx
import pytest

import watchd
from tests.carmic.fakeapi import FakeApi, err, make_client, ok
from watchd.carmic.aiotransport import AiohttpTransport
from watchd.carmic.client import CarmicClient
from watchd.carmic.errors import NetworkError, PermanentError, ServerError
from watchd.carmic.http import build_request, send, ssl_context, translate_errors
from watchd.carmic.http import make_client as make_http


def test_tls_context_verifies_and_takes_an_extra_ca_file() -> None:
    ctx = ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    before = ctx.cert_store_stats()["x509_ca"]
    extra = ssl_context(certifi.where())
    assert extra.verify_mode == ssl.CERT_REQUIRED
    assert extra.cert_store_stats()["x509_ca"] >= before


def test_unreadable_ca_file_is_a_clear_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="cannot load the CA file"):
        ssl_context(str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(PermanentError, match=r"bad\.pem"):
        ssl_context(str(bad))


async def test_daemon_clients_are_http11_with_explicit_timeouts() -> None:
    async with make_http() as http:
        assert http.timeout.connect and http.timeout.read and http.timeout.write
        assert http.timeout.pool
        assert not http.follow_redirects
        # carmic-watchd/<version> (node <node>): which daemon, which host.
        ua = f"carmic-watchd/{watchd.__version__} (node {socket.gethostname()})"
        assert http.headers["User-Agent"] == ua
        # The wire is aiohttp's client, which speaks HTTP/1.1 only, verifying TLS.
        transport = http._transport
        assert isinstance(transport, AiohttpTransport)
        assert transport._ssl.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("exc", "cls", "text"),
    [
        (httpx.ConnectTimeout("x"), NetworkError, "connection timed out"),
        (httpx.ReadTimeout("x"), NetworkError, "read timeout"),
        (httpx.WriteTimeout("x"), NetworkError, "write timeout"),
        (httpx.PoolTimeout("x"), NetworkError, "no free connection"),
        # The origin (scheme, host, port) of a connection that failed; the route is the
        # endpoint's, said once.
        (
            httpx.ConnectError("refused"),
            NetworkError,
            "cannot connect to https://r2.test:443: refused",
        ),
        (httpx.RemoteProtocolError("peer closed"), NetworkError, "broke the exchange"),
        (httpx.ReadError("reset"), NetworkError, "ReadError: reset"),
        (httpx.UnsupportedProtocol("ftp"), PermanentError, "invalid URL"),
        (httpx.TooManyRedirects("loop"), ServerError, "too many redirects"),
    ],
)
def test_foreign_errors_are_translated_with_the_url_redacted(
    exc: Exception, cls: type[Exception], text: str
) -> None:
    url = "https://r2.test/b/k?X-Amz-Signature=secret-sig"
    with pytest.raises(cls) as ei, translate_errors("storage:PUT", url):
        raise exc
    msg = str(ei.value)
    assert text in msg and "secret-sig" not in msg
    assert "https://r2.test/b/k?<redacted>" in msg or isinstance(exc, httpx.ConnectError)
    assert ei.value.__cause__ is exc


async def test_aclose_closes_only_the_clients_it_made() -> None:
    injected = httpx.AsyncClient(transport=httpx.MockTransport(FakeApi()))
    client = CarmicClient("https://api.test/api", "a@b.c", "pw-123456", http=injected)
    await client.aclose()
    assert not injected.is_closed
    assert client._storage.is_closed
    await injected.aclose()


async def test_rate_limit_hook_sees_every_429() -> None:
    api = FakeApi()
    answers = [err(429, "slow", **{"Retry-After": "3"})]
    api.routes[("GET", "/v1/clips/c1/render-progress")] = lambda r: (
        answers.pop() if answers else ok({"status": "RENDERED"})
    )
    seen: list[tuple[str, float | None]] = []
    async with make_client(api, on_rate_limited=lambda e, ra: seen.append((e, ra))) as c:
        assert (await c.render_progress("c1")).done
    assert seen == [("/v1/clips/{id}/render-progress", 3.0)]


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_proxies_from_the_environment_are_mounted(no_proxy_env: pytest.MonkeyPatch) -> None:
    # httpx reads no proxy variables for a client given a transport: make_client mounts them.
    async with make_http() as http:
        assert isinstance(http._transport_for_url(httpx.URL("https://a.test/")), AiohttpTransport)
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    no_proxy_env.setenv("NO_PROXY", "localhost,internal.test")
    async with make_http() as http:
        via = http._transport_for_url
        assert isinstance(via(httpx.URL("https://api.test/api")), httpx.AsyncHTTPTransport)
        assert isinstance(via(httpx.URL("https://x.internal.test/")), AiohttpTransport)
        assert isinstance(via(httpx.URL("http://api.test/")), AiohttpTransport)  # no HTTP_PROXY


async def test_requests_reach_a_proxy_from_the_environment(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    try:
        async with make_http() as http:
            request = build_request(http, "GET", "http://api.test/api/v1/health")
            response = await send(http, request, endpoint="/v1/health")
        assert response.text == "ok"
        assert lines == [b"GET http://api.test/api/v1/health HTTP/1.1"]
    finally:
        server.close()
        await server.wait_closed()
