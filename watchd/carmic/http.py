"""The one place where httpx meets our exception tree.

Everything that goes on the wire (API calls, storage transfers, SSE streams) passes through
:func:`send` or :func:`translate_errors`, which turn httpx's exceptions into
:mod:`watchd.carmic.errors` classes (httpx's own ``map_httpcore_exceptions`` pattern), log one
DEBUG line per exchange with the URL redacted, and report ``(endpoint, status)`` to the metrics
hook. Clients are built here too: HTTP/1.1, explicit timeouts, TLS verification always on.

Requests are built by :func:`build_request` and sent by :func:`send` without going through
``AsyncClient.build_request``/``send``: the same ``httpx.Request`` reaches the same transport (the
one the client mounts for the URL), but httpx's merging, auth flow, event hooks and cookie jar
around it cost a quarter of a small exchange's CPU, and the daemon uses none of them (bearer
tokens, signed storage URLs, no cookies). Clients configured with what that machinery serves
(auth, event hooks, cookies, params, a base URL) still go through httpx's own path. A whole
exchange over our own transport has its body read by the transport in one go
(:meth:`AiohttpTransport.fetch`); any other transport (a proxy's, a test's ``MockTransport``)
is read through httpx's stream interface.
"""

from __future__ import annotations

import datetime
import functools
import json as jsonlib
import logging
import re
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.request import getproxies

import httpx

from watchd.carmic.aiotransport import AiohttpTransport
from watchd.carmic.errors import CarmicError, NetworkError, PermanentError, ServerError
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


def user_agent(node: str = "") -> str:
    """``carmic-watchd/<version> (node <node>)``: the service can tell our daemons (and, with
    several hosts, which one) apart; the node defaults to this host's name."""
    from watchd import __version__

    return f"carmic-watchd/{__version__} (node {node or socket.gethostname()})"


USER_AGENT = user_agent()


def set_node(node: str) -> None:
    """Name this daemon's node in the User-Agent of the clients made from now on (``[cluster]
    node``; the default is the host name)."""
    global USER_AGENT
    USER_AGENT = user_agent(node)


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
    through httpx's own transports (:func:`proxy_mounts`)."""
    ctx = ssl_context(ca_file)
    return httpx.AsyncClient(
        http1=True,
        http2=False,
        verify=ctx,
        timeout=timeout,
        limits=limits,
        transport=AiohttpTransport(ssl_context=ctx, limits=limits),
        mounts=proxy_mounts(ctx, limits),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        trust_env=True,
    )


def proxy_mounts(
    ctx: ssl.SSLContext, limits: httpx.Limits
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """The proxies of the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) as httpx
    mounts them for a client that makes its own transport: a client given one (ours) reads no
    proxy settings at all. ``None`` mounts (``NO_PROXY``) leave those URLs to our transport."""
    try:
        # httpx's own reading of the variables (NO_PROXY's forms are many); private.
        from httpx._utils import get_environment_proxies
    except ImportError:  # pragma: no cover - another httpx
        if getproxies():
            log.warning("proxy settings in the environment are ignored (httpx changed)")
        return {}
    return {
        pattern: None
        if url is None
        else httpx.AsyncHTTPTransport(
            verify=ctx, http1=True, http2=False, limits=limits, trust_env=True, proxy=url
        )
        for pattern, url in get_environment_proxies().items()
    }


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
        return text
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the exchange: {text}"
    return f"{type(exc).__name__}: {text}"


def _origin(url: str | httpx.URL) -> str:
    """``http://127.0.0.1:9`` (scheme, host and port, the port even when it is the default)."""
    try:
        u = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError):
        return redact_url(str(url))
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return f"{u.scheme}://{u.host}" + (f":{port}" if port else "")


def _translated(e: Exception, endpoint: str, url: str | httpx.URL) -> CarmicError | None:
    """Our exception for httpx's ``e`` (the URL redacted); None for any other exception."""
    if isinstance(e, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return PermanentError(
            f"invalid URL {redact_url(str(url))}: {redact(str(e))}", endpoint=endpoint
        )
    if isinstance(e, httpx.TooManyRedirects):
        return ServerError(f"too many redirects from {redact_url(str(url))}", endpoint=endpoint)
    if isinstance(e, httpx.ConnectError):
        # The origin with its scheme: the one place a wrong http/https or port shows.
        return NetworkError(f"cannot connect to {_origin(url)}: {_describe(e)}", endpoint=endpoint)
    if isinstance(e, httpx.TransportError):
        return NetworkError(f"{_describe(e)} ({redact_url(str(url))})", endpoint=endpoint)
    if isinstance(e, httpx.DecodingError):
        return NetworkError(
            f"undecodable answer from {redact_url(str(url))}: {redact(str(e))}", endpoint=endpoint
        )
    return None


@contextmanager
def translate_errors(endpoint: str, url: str | httpx.URL) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into our tree (the URL redacted)."""
    try:
        yield
    except Exception as e:
        error = _translated(e, endpoint, url)
        if error is None:
            raise
        raise error from e


# ---- URLs --------------------------------------------------------------------------------------

# A path httpx's parser leaves exactly as it is: unreserved characters, "/" and %XX escapes.
_PLAIN_PATH = re.compile(r"(?:[A-Za-z0-9._~/-]|%[0-9A-Fa-f]{2})*")
_MAX_PLAIN = 4096  # far below httpx's own URL length limit


@functools.lru_cache(maxsize=16)
def _parsed_base(base: str) -> Any:
    """httpx's parsed form of ``base`` (a NamedTuple inside httpx.URL) when a plain path can be
    appended to it in place: it reads back exactly as written, with no query or fragment."""
    ref = getattr(httpx.URL(base), "_uri_reference", None)
    if (
        ref is None
        or not hasattr(ref, "_replace")
        or str(ref) != base
        or ref.query is not None
        or ref.fragment is not None
    ):
        return None
    return ref


def _in_place(ref: Any, added: str, path: str, query: str | None = None) -> httpx.URL | None:
    """``ref`` (a parsed base) with ``path`` (ending in ``added``, the part not parsed yet) and
    ``query`` set, when parsing the whole would give exactly that: else None."""
    if not _PLAIN_PATH.fullmatch(added) or ("." in path and {".", ".."} & set(path.split("/"))):
        return None  # parsing would encode something or drop dot segments
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = ref._replace(path=path, query=query)
    return url


def _joined_in_place(base: str, path: str) -> httpx.URL | None:
    ref = _parsed_base(base)
    if ref is None or not path.startswith("/") or len(path) > _MAX_PLAIN:
        return None
    return _in_place(ref, path, ref.path + path)


# A query httpx's parser leaves exactly as it is (a presigned URL's): unreserved characters,
# "=", "&" and %XX escapes.
_PLAIN_QUERY = re.compile(r"(?:[A-Za-z0-9._~=&-]|%[0-9A-Fa-f]{2})+")


def exact_in_place(url: str) -> httpx.URL | None:
    """``httpx.URL(url)`` for an absolute URL whose path and query httpx would leave exactly as
    written (a presigned storage URL), with only its origin parsed (once, cached): a storage
    URL's long signed query cost ~30 us per parse. None when ``url`` needs the full parse."""
    return _exact_in_place(url) if _JOIN_IN_PLACE else None


def _exact_in_place(url: str) -> httpx.URL | None:
    if len(url) > _MAX_PLAIN:
        return None
    at = url.find("://")
    start = url.find("/", at + 3) if at > 0 else -1
    if start < 0 or "@" in url[:start] or "#" in url:
        return None
    path, sep, query = url[start:].partition("?")
    ref = _parsed_base(url[:start])
    if ref is None or ref.path or (sep and not _PLAIN_QUERY.fullmatch(query)):
        return None
    return _in_place(ref, path, path, query if sep else None)


def _can_join_in_place() -> bool:
    # httpx.URL's insides are httpx's business: use them only while they behave as expected.
    try:
        for base, path in (("https://h.test:8443/api", "/v1/a%2Fb-c"), ("http://h.test", "/x")):
            url = _joined_in_place(base, path)
            parsed = httpx.URL(base + path)
            if url is None or (str(url), url.raw_path, url.netloc, url.host) != (
                str(parsed),
                parsed.raw_path,
                parsed.netloc,
                parsed.host,
            ):
                return False
        signed = "http://127.0.0.1:9000/b/k%2F1.mp4?X-Amz-Credential=A%2F1&X-Amz-Signature=ab"
        if not _in_place_matches(signed):
            return False
    except Exception:  # pragma: no cover - another httpx
        return False
    finally:
        _parsed_base.cache_clear()
    return True


def _in_place_matches(url: str) -> bool:
    fast, parsed = _exact_in_place(url), httpx.URL(url)
    return fast is not None and (str(fast), fast.raw_path, fast.netloc, fast.query) == (
        str(parsed),
        parsed.raw_path,
        parsed.netloc,
        parsed.query,
    )


_JOIN_IN_PLACE = _can_join_in_place()


def join_url(base: str, path: str) -> httpx.URL:
    """``httpx.URL(base + path)``, without parsing the whole URL again for every request when
    ``path`` is plain (unreserved characters, ``/`` and ``%XX`` escapes, no dot segments): the
    parse (~13 us) was a tenth of what an API exchange cost above aiohttp's own work."""
    if _JOIN_IN_PLACE:
        url = _joined_in_place(base, path)
        if url is not None:
            return url
    return httpx.URL(base + path)


# ---- requests ----------------------------------------------------------------------------------

# Methods for which httpx adds ``Content-Length: 0`` to a request without a body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _encode_header(text: str) -> bytes:
    # What httpx.Headers does with a str name or value.
    return text.encode("ascii")


def build_request(
    http: httpx.AsyncClient,
    method: str,
    url: httpx.URL | str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    json: Any = None,
    content: bytes | AsyncIterable[bytes] | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    """The request ``http.build_request(...)`` builds with these arguments (URL, headers in the
    same order, body, timeout extension), without its merging and re-normalising.

    A relative URL, or a client with query params or cookies of its own, takes
    ``http.build_request`` itself: those merges are httpx's to get right.
    """
    if not isinstance(url, httpx.URL):
        url = httpx.URL(url)
    if url.is_relative_url or http.params or http.cookies:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return http.build_request(
            method, url, headers=headers, params=params, json=json, content=content, **extra
        )
    if params is not None:
        url = httpx.URL(url, params=params)
    extensions = {"timeout": (http.timeout if timeout is None else timeout).as_dict()}
    # The client's headers, those given here replacing them (httpx's Headers.update).
    merged = http.headers.raw
    if headers:
        given = [(_encode_header(k), _encode_header(v)) for k, v in headers.items()]
        replaced = {k.lower() for k, _ in given}
        merged = [kv for kv in merged if kv[0].lower() not in replaced] + given
    if content is not None and not isinstance(content, bytes):
        # A streamed body: Request frames it (Content-Length or chunked) as build_request does.
        return httpx.Request(method, url, headers=merged, content=content, extensions=extensions)
    body = b""
    body_headers: list[tuple[bytes, bytes]] = []
    if content is not None:
        body = content
        if body:
            body_headers.append((b"Content-Length", str(len(body)).encode()))
    elif json is not None:
        # httpx's encode_json, byte for byte.
        body = jsonlib.dumps(
            json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
        body_headers.append((b"Content-Length", str(len(body)).encode()))
        body_headers.append((b"Content-Type", b"application/json"))
    # Request._prepare: body headers unless given, then Host and an empty body's length first.
    present = {k.lower() for k, _ in merged}
    for key, value in body_headers:
        if key.lower() not in present:
            merged.append((key, value))
            present.add(key.lower())
    auto: list[tuple[bytes, bytes]] = []
    if b"host" not in present and url.host:
        auto.append((b"Host", url.netloc))
    if (
        b"content-length" not in present
        and b"transfer-encoding" not in present
        and method.upper() in _BODY_METHODS
    ):
        auto.append((b"Content-Length", b"0"))
    request = httpx.Request(
        method, url, headers=auto + merged, stream=httpx.ByteStream(body), extensions=extensions
    )
    request.read()  # as Request(content=...) does: the body stays readable as request.content
    return request


class _TimedStream(httpx.AsyncByteStream):
    """The transport's response body, setting ``response.elapsed`` when closed (httpx's
    BoundAsyncStream) without a generator of its own between the caller and every chunk."""

    def __init__(
        self, stream: httpx.AsyncByteStream, response: httpx.Response, started: float
    ) -> None:
        self._stream = stream
        self._response = response
        self._started = started

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        elapsed = time.perf_counter() - self._started
        self._response.elapsed = datetime.timedelta(seconds=elapsed)
        await self._stream.aclose()


async def _send_once(
    http: httpx.AsyncClient,
    transport: httpx.AsyncBaseTransport,
    request: httpx.Request,
    *,
    whole: bool,
) -> httpx.Response:
    """AsyncClient._send_single_request less the cookie jar and httpx's INFO log line. With
    ``whole`` the body is read too, by our own transport itself when it is the one."""
    if not isinstance(request.stream, httpx.AsyncByteStream):
        raise RuntimeError("Attempted to send an sync request with an AsyncClient instance.")
    started = time.perf_counter()
    try:
        if whole and isinstance(transport, AiohttpTransport):
            response = await transport.fetch(request)
            response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        else:
            response = await transport.handle_async_request(request)
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _TimedStream(response.stream, response, started)
    except httpx.RequestError as e:
        e.request = request  # httpx's request_context: an error names its request
        raise
    response.request = request
    response.default_encoding = getattr(http, "_default_encoding", "utf-8")
    return response


async def _exchange(
    http: httpx.AsyncClient, request: httpx.Request, *, stream: bool, follow_redirects: bool
) -> httpx.Response:
    """``http.send(request, stream=..., follow_redirects=...)``, minus what the daemon never
    uses: no auth flow, no event hooks, no cookie jar (cookies a server sets are not kept),
    no ``next_request`` on an unfollowed redirect, no INFO line on the ``httpx`` logger."""
    # Private methods of AsyncClient: without them (another httpx), httpx's own path.
    transport_for = getattr(http, "_transport_for_url", None)
    redirect_for = getattr(http, "_build_redirect_request", None)
    if (
        transport_for is None
        or (follow_redirects and redirect_for is None)
        or http.auth is not None
        or request.url.userinfo
        or http.event_hooks["request"]
        or http.event_hooks["response"]
    ):
        return await http.send(request, stream=stream, follow_redirects=follow_redirects)
    if http.is_closed:
        raise RuntimeError("Cannot send a request, as the client has been closed.")
    if "timeout" not in request.extensions:
        request.extensions = {**request.extensions, "timeout": http.timeout.as_dict()}
    history: list[httpx.Response] = []
    while True:
        if len(history) > http.max_redirects:
            raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)
        # The transport the client mounts for the URL (a proxy's), or its own.
        response = await _send_once(http, transport_for(request.url), request, whole=not stream)
        if history:
            response.history = list(history)
        if not (follow_redirects and response.has_redirect_location):
            break
        try:
            assert redirect_for is not None
            next_request = redirect_for(request, response)
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        history.append(response)
        request = next_request
    if not stream:
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
    return response


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
        try:
            response = await _exchange(
                http, request, stream=stream, follow_redirects=follow_redirects
            )
        except Exception as e:
            # translate_errors(), without a context manager around every exchange.
            error = _translated(e, endpoint, request.url)
            if error is None:
                raise
            raise error from e
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
