"""The one place where httpx meets our exception tree.

Everything that goes on the wire (API calls, storage transfers, SSE streams) passes through
:func:`send` or :func:`translate_errors`, which turn httpx's exceptions into
:mod:`watchd.carmic.errors` classes (httpx's own ``map_httpcore_exceptions`` pattern), log one
DEBUG line per exchange with the URL redacted, and report ``(endpoint, status)`` to the metrics
hook. Clients are built here too: HTTP/1.1, explicit timeouts, TLS verification always on.
"""

from __future__ import annotations

import logging
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from watchd.carmic.aiotransport import AiohttpTransport
from watchd.carmic.errors import NetworkError, PermanentError, ServerError
from watchd.redact import redact, redact_url

log = logging.getLogger("watchd.carmic")

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore asks sniffio which event loop runs on every pool operation, and anyio 4 no
    # longer brings sniffio along. A failed import is not cached: each call searched sys.path
    # again (about 100 times per file, a tenth of the daemon's CPU in a burst). None in
    # sys.modules makes the import fail at once; httpcore and anyio then assume asyncio.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

# A metrics hook: (endpoint route template, HTTP status or "error" when no answer came).
ResponseHook = Callable[[str, int | str], None]

API_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0)
# Storage transfers move gigabytes: a slow NAS or a congested uplink may stall a write for a
# while without the transfer being dead.
STORAGE_TIMEOUT = httpx.Timeout(connect=15.0, read=120.0, write=120.0, pool=60.0)
# SSE streams hold a connection each for minutes, so the API pool is roomy.
API_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30)
STORAGE_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=4, keepalive_expiry=15)

USER_AGENT = "carmic-watchd"


def ssl_context(ca_file: str = "") -> ssl.SSLContext:
    """A verifying TLS context: the system trust store (certifi when the system has none), plus
    ``ca_file`` for a private CA (an intercepting proxy, a staging server). Never unverified."""
    ctx = ssl.create_default_context()
    if not ctx.cert_store_stats().get("x509_ca"):
        try:
            import certifi

            ctx.load_verify_locations(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx
            pass
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise PermanentError(f"cannot load the CA file {ca_file}: {e}") from e
    return ctx


def make_client(
    *,
    timeout: httpx.Timeout = API_TIMEOUT,
    limits: httpx.Limits = API_LIMITS,
    ca_file: str = "",
) -> httpx.AsyncClient:
    """An AsyncClient as the daemon uses it: HTTP/1.1 only, no redirects followed behind our
    back (a redirect to storage must shed the Authorization header: we follow it ourselves).

    The wire is aiohttp's (:class:`AiohttpTransport`: half the CPU per request of httpcore's,
    and cheaper and faster for storage transfers); proxies from the environment still go
    through httpx's own transports."""
    ctx = ssl_context(ca_file)
    return httpx.AsyncClient(
        http1=True,
        http2=False,
        verify=ctx,
        timeout=timeout,
        limits=limits,
        transport=AiohttpTransport(ssl_context=ctx, limits=limits),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        trust_env=True,
    )


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.ReadTimeout):
        return "no answer within the read timeout"
    if isinstance(exc, httpx.WriteTimeout):
        return "sending stalled past the write timeout"
    if isinstance(exc, httpx.PoolTimeout):
        return "no free connection in the pool"
    text = redact(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the exchange: {text}"
    return f"{type(exc).__name__}: {text}"


@contextmanager
def translate_errors(endpoint: str, url: str | httpx.URL) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into our tree (the URL redacted)."""
    try:
        yield
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
        raise PermanentError(
            f"invalid URL {redact_url(str(url))}: {redact(str(e))}", endpoint=endpoint
        ) from e
    except httpx.TooManyRedirects as e:
        raise ServerError(
            f"too many redirects from {redact_url(str(url))}", endpoint=endpoint
        ) from e
    except httpx.TransportError as e:
        raise NetworkError(f"{_describe(e)} ({redact_url(str(url))})", endpoint=endpoint) from e
    except httpx.DecodingError as e:
        raise NetworkError(
            f"undecodable answer from {redact_url(str(url))}: {redact(str(e))}", endpoint=endpoint
        ) from e


async def send(
    http: httpx.AsyncClient,
    request: httpx.Request,
    *,
    endpoint: str,
    stream: bool = False,
    follow_redirects: bool = False,
    on_response: ResponseHook | None = None,
) -> httpx.Response:
    """Send one request: foreign errors translated, one DEBUG line, the metrics hook told.

    With ``stream=True`` the body is left unread and the caller must close the response.
    """
    started = time.perf_counter()
    try:
        with translate_errors(endpoint, request.url):
            response = await http.send(request, stream=stream, follow_redirects=follow_redirects)
    except Exception as e:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %s (%.0f ms)",
                request.method,
                redact_url(str(request.url)),
                e.__class__.__name__,
                (time.perf_counter() - started) * 1000,
            )
        if on_response is not None:
            on_response(endpoint, "error")
        raise
    # The arguments cost more than the call: build them only when the line is written.
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s -> %d (%.0f ms)",
            request.method,
            redact_url(str(request.url)),
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
    if on_response is not None:
        on_response(endpoint, response.status_code)
    return response
