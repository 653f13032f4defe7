"""carmic.http's own request building and sending (no AsyncClient.build_request/send): the
transport sees what it saw through httpx's path, responses behave the same, and whatever the
daemon does not use (cookies, auth, hooks) either stays out or sends the exchange through
httpx's own path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from watchd.carmic import http as http_module
from watchd.carmic.aiotransport import AiohttpTransport
from watchd.carmic.errors import NetworkError, ServerError
from watchd.carmic.http import USER_AGENT, build_request, join_url, make_client, send
from watchd.carmic.transfer import exact_url

API = "https://api.test/api"


class Recorder:
    """A MockTransport handler that keeps every request and answers ``answer(request)``."""

    def __init__(self, answer: Any = None) -> None:
        self.seen: list[httpx.Request] = []
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.answer is not None:
            response: httpx.Response = self.answer(request)
            return response
        return httpx.Response(200, json={"data": {"ok": True}})


def mock_client(handler: Any = None, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler or Recorder()), **kwargs)


def shape(request: httpx.Request) -> tuple[Any, ...]:
    """Everything of a request a transport acts on."""
    return (
        request.method,
        str(request.url),
        request.url.raw_path,
        request.headers.raw,
        request.content,
        request.extensions,
    )


# A client that is never used to send: nothing to close.
PLAIN = httpx.AsyncClient(headers={"User-Agent": "carmic-watchd"})

# ---- building ---------------------------------------------------------------------------------

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"{API}/v1/me", {}),
    ("GET", f"{API}/v1/projects/p%2F1/status", {"headers": {"Accept": "application/json"}}),
    (
        "get",
        f"{API}/v1/projects",
        {"params": {"limit": 100, "offset": 0, "search": "a b&c"}, "headers": {"X-A": "1"}},
    ),
    ("GET", f"{API}/v1/templates/?ratio=old", {"params": {"ratio": "9:16"}}),
    ("GET", f"{API}/v1/templates/?ratio=old", {"params": {}}),
    ("POST", f"{API}/v1/projects/p1/process", {"headers": {"X-Workspace-ID": "ws"}}),
    ("DELETE", f"{API}/v1/projects/p1", {}),
    ("PUT", f"{API}/v1/clips/c1", {"json": {"a": [1, 2.5, None], "é": "ü", "n": {}}}),
    ("POST", f"{API}/v1/auth/login", {"json": {"email": "a@b.c", "password": "pw"}}),
    ("POST", f"{API}/v1/x", {"json": {}, "headers": {"Content-Type": "application/x+json"}}),
    ("POST", f"{API}/v1/x", {"content": b"raw bytes"}),
    ("POST", f"{API}/v1/x", {"content": b""}),
    ("PUT", f"{API}/v1/x", {"content": b"x", "headers": {"Content-Length": "1"}}),
    ("GET", "http://127.0.0.1:8080/a/../b/./c?q=%2F", {"headers": {"accept-encoding": "identity"}}),
    ("GET", "https://[::1]:443/x", {"headers": {"Host": "elsewhere.test", "User-Agent": "me"}}),
    ("GET", f"{API}/v1/events", {"timeout": httpx.Timeout(5.0, read=45.0)}),
]


@pytest.mark.parametrize(("method", "url", "kwargs"), CASES)
@pytest.mark.parametrize("daemon_client", [True, False], ids=["make_client", "plain"])
async def test_built_request_is_what_build_request_builds(
    method: str, url: str, kwargs: dict[str, Any], daemon_client: bool
) -> None:
    async with make_client() if daemon_client else httpx.AsyncClient() as http:
        theirs = http.build_request(method, url, **kwargs)
        ours = build_request(http, method, url, **kwargs)
        assert shape(ours) == shape(theirs)
        # A URL object instead of a string: the same.
        assert shape(build_request(http, method, httpx.URL(url), **kwargs)) == shape(theirs)


@given(
    headers=st.dictionaries(
        st.sampled_from(["Accept", "accept", "User-Agent", "X-Workspace-ID", "Connection", "X-B"]),
        st.text(alphabet="abcXYZ019 -/;=", max_size=12),
        max_size=4,
    ),
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
)
def test_headers_and_json_bodies_match_build_request(
    headers: dict[str, str], body: Any, method: str
) -> None:
    http = PLAIN
    theirs = http.build_request(method, f"{API}/v1/x", headers=headers, json=body)
    ours = build_request(http, method, f"{API}/v1/x", headers=headers, json=body)
    assert shape(ours) == shape(theirs)


async def test_streamed_body_is_framed_as_build_request_frames_it() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"c"

    async with make_client() as http:
        # With a length (an upload), and without (chunked).
        for headers in ({"Content-Length": "3", "Content-Type": "video/mp4"}, {}):
            body = chunks()
            theirs = http.build_request(
                "PUT", "https://r2.test/k?s=1", headers=headers, content=body
            )
            ours = build_request(
                http, "PUT", "https://r2.test/k?s=1", headers=headers, content=body
            )
            assert ours.headers.raw == theirs.headers.raw
            assert ours.extensions == theirs.extensions
            assert b"".join([c async for c in ours.stream]) == b"abc"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "client_kwargs",
    [
        {"base_url": "https://api.test/api/"},
        {"params": {"always": "1"}},
        {"cookies": {"session": "s1"}},
    ],
    ids=["base_url", "params", "cookies"],
)
async def test_clients_with_their_own_merges_build_through_httpx(
    client_kwargs: dict[str, Any],
) -> None:
    url = "v1/me" if "base_url" in client_kwargs else f"{API}/v1/me"
    async with httpx.AsyncClient(**client_kwargs) as http:
        theirs = http.build_request("GET", url, headers={"A": "b"}, params={"x": "1"})
        ours = build_request(http, "GET", url, headers={"A": "b"}, params={"x": "1"})
    assert shape(ours) == shape(theirs)


# ---- sending ----------------------------------------------------------------------------------


async def test_transport_sees_what_asyncclient_send_gave_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = Recorder(), Recorder()
    for method, url, kwargs in CASES:
        async with mock_client(theirs) as http:
            await http.send(http.build_request(method, url, **kwargs))
        async with mock_client(ours) as http:
            # Not a single call into AsyncClient's request machinery.
            monkeypatch.setattr(httpx.AsyncClient, "send", None)
            monkeypatch.setattr(httpx.AsyncClient, "build_request", None)
            await send(http, build_request(http, method, url, **kwargs), endpoint="e")
            monkeypatch.undo()
    assert [shape(r) for r in ours.seen] == [shape(r) for r in theirs.seen]


async def test_a_request_without_a_timeout_gets_the_clients() -> None:
    seen = Recorder()
    async with mock_client(seen, timeout=httpx.Timeout(7.0)) as http:
        await send(http, httpx.Request("GET", f"{API}/v1/me"), endpoint="e")
    assert seen.seen[0].extensions["timeout"] == httpx.Timeout(7.0).as_dict()


class Body(httpx.AsyncByteStream):
    """A response body that says whether it was read and closed."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closes = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.closes += 1


async def test_a_whole_exchange_reads_the_body_and_closes_the_stream() -> None:
    body = Body([b'{"a":', b"1}"])
    async with mock_client(lambda r: httpx.Response(200, stream=body)) as http:
        request = build_request(http, "GET", f"{API}/v1/me")
        response = await send(http, request, endpoint="e")
    assert response.json() == {"a": 1} and response.is_closed and body.closes == 1
    assert response.request is request
    assert response.elapsed.total_seconds() >= 0


async def test_a_streamed_response_closes_its_transport_stream_on_aclose() -> None:
    body = Body([b"abc", b"def"])
    async with mock_client(lambda r: httpx.Response(200, stream=body)) as http:
        response = await send(
            http, build_request(http, "GET", f"{API}/x"), endpoint="e", stream=True
        )
        assert not response.is_closed and body.closes == 0
        with pytest.raises(RuntimeError, match="elapsed"):
            _ = response.elapsed  # as with httpx: known only once closed
        await response.aclose()
    assert body.closes == 1 and response.elapsed.total_seconds() >= 0


async def test_a_body_that_breaks_while_read_closes_the_response() -> None:
    body = Body([b"abc"], fail=httpx.ReadError("reset"))
    async with mock_client(lambda r: httpx.Response(200, stream=body)) as http:
        with pytest.raises(NetworkError, match="ReadError: reset"):
            await send(http, build_request(http, "GET", f"{API}/x"), endpoint="e")
    assert body.closes == 1


async def test_transport_errors_name_their_request_and_are_translated() -> None:
    caught: list[httpx.RequestError] = []
    hook: list[tuple[str, int | str]] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        error = httpx.ConnectError("refused")  # no request attached, as a transport may do
        caught.append(error)
        raise error

    async with mock_client(refuse) as http:
        request = build_request(http, "GET", "https://r2.test/k?X-Amz-Signature=secret")
        with pytest.raises(
            NetworkError, match=r"cannot connect to https://r2\.test:443: refused"
        ) as ei:
            await send(http, request, endpoint="storage:GET", on_response=lambda *a: hook.append(a))
    assert caught[0].request is request
    assert "secret" not in str(ei.value)
    assert hook == [("storage:GET", "error")]


async def test_a_closed_client_refuses_to_send() -> None:
    http = mock_client()
    await http.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await send(http, build_request(http, "GET", f"{API}/v1/me"), endpoint="e")


async def test_cookies_a_server_sets_are_not_kept() -> None:
    # Deliberately unlike AsyncClient.send: the API authenticates with bearer tokens, storage
    # with signed URLs, and parsing Set-Cookie cost 4 % of the daemon's CPU (Cookies built a
    # urllib Request per response even when none was set).
    seen = Recorder(lambda r: httpx.Response(200, headers={"Set-Cookie": "sid=abc; Path=/"}))
    async with mock_client(seen) as http:
        for _ in range(2):
            await send(http, build_request(http, "GET", f"{API}/v1/me"), endpoint="e")
        assert not http.cookies
    assert "Cookie" not in seen.seen[1].headers


async def test_a_mounted_transport_is_used_for_its_urls() -> None:
    api, proxy = Recorder(), Recorder()
    mounts = {"https://r2.test": httpx.MockTransport(proxy)}
    async with httpx.AsyncClient(transport=httpx.MockTransport(api), mounts=mounts) as http:
        await send(http, build_request(http, "GET", "https://r2.test/b/k"), endpoint="e")
        await send(http, build_request(http, "GET", f"{API}/v1/me"), endpoint="e")
    assert [str(r.url) for r in proxy.seen] == ["https://r2.test/b/k"]
    assert [str(r.url) for r in api.seen] == [f"{API}/v1/me"]


async def test_unfollowed_redirect_is_returned_as_is() -> None:
    seen = Recorder(lambda r: httpx.Response(302, headers={"Location": "https://r2.test/k"}))
    async with mock_client(seen) as http:
        response = await send(
            http, build_request(http, "GET", f"{API}/v1/clips/c/video"), endpoint="e"
        )
    assert response.status_code == 302 and len(seen.seen) == 1 and response.is_closed


def hops(request: httpx.Request) -> httpx.Response:
    """/r/N redirects (alternating origins, relative and absolute) until /r/0 answers."""
    n = int(request.url.path.rsplit("/", 1)[1])
    if n == 0:
        return httpx.Response(200, content=b"done")
    origin = "https://r2.test" if n % 2 else "https://api.test"
    location = f"/r/{n - 1}" if n == 3 else f"{origin}/r/{n - 1}"
    return httpx.Response(302 if n % 2 else 307, headers={"Location": location})


@pytest.mark.parametrize("stream", [False, True])
async def test_followed_redirects_go_as_httpx_follows_them(stream: bool) -> None:
    ours, theirs = Recorder(hops), Recorder(hops)
    headers = {"Authorization": "Bearer t", "Accept-Encoding": "identity"}
    async with mock_client(theirs) as http:
        expected = await http.send(
            http.build_request("GET", "https://api.test/r/4", headers=headers),
            follow_redirects=True,
        )
    async with mock_client(ours) as http:
        request = build_request(http, "GET", "https://api.test/r/4", headers=headers)
        response = await send(http, request, endpoint="e", follow_redirects=True, stream=stream)
        assert await response.aread() == b"done"
    assert [shape(r) for r in ours.seen] == [shape(r) for r in theirs.seen]
    assert [r.status_code for r in response.history] == [307, 302, 307, 302]
    assert [len(r.history) for r in response.history] == [0, 1, 2, 3]
    assert all(r.is_closed for r in response.history)
    assert response.request.url == expected.request.url == "https://r2.test/r/0"


async def test_endless_redirects_stop_at_the_clients_limit() -> None:
    seen = Recorder(lambda r: httpx.Response(302, headers={"Location": "/again"}))
    async with mock_client(seen, max_redirects=3) as http:
        with pytest.raises(ServerError, match="too many redirects"):
            await send(
                http, build_request(http, "GET", f"{API}/x"), endpoint="e", follow_redirects=True
            )
    assert len(seen.seen) == 4  # as AsyncClient.send: the first answer and 3 redirects


# ---- httpx's own path ------------------------------------------------------------------------


async def test_auth_and_event_hooks_take_httpxs_path() -> None:
    hooked: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        hooked.append(str(request.url))

    seen = Recorder()
    async with mock_client(seen, auth=("u", "p"), event_hooks={"request": [on_request]}) as http:
        await send(http, build_request(http, "GET", f"{API}/v1/me"), endpoint="e")
    assert hooked == [f"{API}/v1/me"]
    assert seen.seen[0].headers["Authorization"].startswith("Basic ")
    async with mock_client(seen) as http:
        await send(http, build_request(http, "GET", "https://u:p@api.test/x"), endpoint="e")
    assert seen.seen[1].headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("missing", "follow"),
    [("_transport_for_url", False), ("_build_redirect_request", True)],
)
async def test_without_httpxs_private_methods_send_is_asyncclient_send(
    monkeypatch: pytest.MonkeyPatch, missing: str, follow: bool
) -> None:
    # Another httpx may rename what the fast path borrows: the exchange then goes whole to
    # AsyncClient.send (here a stand-in, since send itself needs the missing method).
    calls: list[tuple[httpx.Request, bool, bool]] = []

    async def stand_in(
        self: httpx.AsyncClient, request: httpx.Request, *, stream: bool, follow_redirects: bool
    ) -> httpx.Response:
        calls.append((request, stream, follow_redirects))
        return httpx.Response(204, request=request)

    owner = next(c for c in httpx.AsyncClient.__mro__ if missing in vars(c))
    monkeypatch.delattr(owner, missing)
    monkeypatch.setattr(httpx.AsyncClient, "send", stand_in)
    async with mock_client() as http:
        request = build_request(http, "GET", f"{API}/v1/me")
        response = await send(http, request, endpoint="e", stream=True, follow_redirects=follow)
    assert response.status_code == 204
    assert calls == [(request, True, follow)]


# ---- the daemon's own clients, over loopback --------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """An aiohttp server on loopback answering GETs of ``routes``; its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_daemon_client_over_loopback_releases_connections() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ua": request.headers.get("User-Agent"), "n": 1})

    async with serving({"/x": answer}) as base, make_client() as http:
        transport = http._transport
        assert isinstance(transport, AiohttpTransport)
        url = f"{base}/x"
        response = await send(http, build_request(http, "GET", url), endpoint="e")
        assert response.json() == {"ua": USER_AGENT, "n": 1}
        streamed = await send(http, build_request(http, "GET", url), endpoint="e", stream=True)
        assert json.loads(await streamed.aread())["n"] == 1
        await streamed.aclose()
        session = transport._session
        assert session is not None and session.connector is not None
        assert not session.connector._acquired  # both connections back in the pool


async def test_whole_answers_are_read_by_our_transport_in_one_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    for name in ("fetch", "handle_async_request"):
        original = getattr(AiohttpTransport, name)

        async def spy(
            self: AiohttpTransport, request: httpx.Request, _o: Any = original, _n: str = name
        ) -> Any:
            calls.append(_n)
            return await _o(self, request)

        monkeypatch.setattr(AiohttpTransport, name, spy)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"n": 1})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/x")

    async def bad_gzip(request: web.Request) -> web.Response:
        return web.Response(body=b"not gzip", headers={"Content-Encoding": "gzip"})

    routes: dict[str, Handler] = {"/x": answer, "/moved": moved, "/gz": bad_gzip}
    async with serving(routes) as base, make_client() as http:
        request = build_request(http, "GET", f"{base}/x")
        response = await send(http, request, endpoint="e")
        assert calls == ["fetch"]
        assert response.json() == {"n": 1} and response.is_closed
        assert response.request is request and response.elapsed.total_seconds() >= 0

        calls.clear()
        followed = await send(
            http,
            build_request(http, "GET", f"{base}/moved"),
            endpoint="e",
            follow_redirects=True,
        )
        assert calls == ["fetch", "fetch"]
        assert [r.status_code for r in followed.history] == [302] and followed.json() == {"n": 1}

        calls.clear()
        streamed = await send(
            http, build_request(http, "GET", f"{base}/x"), endpoint="e", stream=True
        )
        assert calls == ["handle_async_request"] and not streamed.is_closed
        await streamed.aclose()

        with pytest.raises(NetworkError, match="undecodable answer"):
            await send(http, build_request(http, "GET", f"{base}/gz"), endpoint="e")
        transport = http._transport
        assert isinstance(transport, AiohttpTransport)
        session = transport._session
        assert session is not None and session.connector is not None
        assert not session.connector._acquired


# ---- URLs -------------------------------------------------------------------------------------


def url_shape(url: httpx.URL) -> tuple[Any, ...]:
    return (str(url), url.raw_path, url.scheme, url.host, url.port, url.netloc, url.path, url.query)


BASES = [
    "https://api.test/api",
    "http://127.0.0.1:8080/api",
    "https://API.test:443/api/",
    "https://api.test",
    "https://[::1]:8443/a%2Fb",
    "https://api.test/a/../api",
    "https://api.test/api?x=1",
    "https://u:p@api.test/api",
]


@given(
    base=st.sampled_from(BASES),
    path=st.lists(
        st.sampled_from(
            ["/", "v1", "projects", "%2F", "%zz", ".", "..", "a b", "é", "?", "#", "~"]
        ),
        max_size=8,
    ).map("".join),
)
def test_joined_url_is_the_parsed_concatenation(base: str, path: str) -> None:
    try:
        expected = httpx.URL(base + path)
    except httpx.InvalidURL:
        with pytest.raises(httpx.InvalidURL):
            join_url(base, path)
        return
    assert url_shape(join_url(base, path)) == url_shape(expected)


def count_url_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, every URL httpx parses (what ``httpx.URL(...)`` was given)."""
    calls: list[str] = []
    real_init = httpx.URL.__init__

    def counting_init(self: httpx.URL, url: Any = "", **kwargs: Any) -> None:
        calls.append(str(url))
        real_init(self, url, **kwargs)

    monkeypatch.setattr(httpx.URL, "__init__", counting_init)
    return calls


def test_plain_paths_skip_the_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    # The installed httpx lets the path be set in place; were that lost, every API request
    # would parse its URL again (correct, only slower).
    assert http_module._JOIN_IN_PLACE
    join_url(API, "/v1/warm")  # the base parsed once
    calls = count_url_parses(monkeypatch)
    url = join_url(API, "/v1/projects/p%2F1/status")
    assert calls == [] and str(url) == f"{API}/v1/projects/p%2F1/status"
    join_url(API, "/v1/projects/a b")
    assert calls == [f"{API}/v1/projects/a b"]


def test_without_in_place_joins_urls_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_module, "_JOIN_IN_PLACE", False)
    for base in BASES:
        assert url_shape(join_url(base, "/v1/x")) == url_shape(httpx.URL(base + "/v1/x"))


def pinned_the_long_way(url: str) -> httpx.URL:
    """exact_url as it was: always a second parse."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        return httpx.URL(url).copy_with(raw_path=target.encode("ascii"))
    except UnicodeEncodeError:
        return httpx.URL(url)


ORIGINS = [
    "https://r2.test",
    "http://127.0.0.1:9000",
    "https://R2.Test:443",
    "https://[::1]:8443",
    "https://u:p@r2.test",
    "http://r2.test:80",
]


@given(
    origin=st.sampled_from(ORIGINS),
    path=st.lists(
        st.sampled_from(["/", "b", "%2F", "%zz", ".", "..", "a b", "é", "~", "*", "'", "#"]),
        max_size=5,
    ).map("".join),
    query=st.none()
    | st.lists(
        st.sampled_from(["X-Sig=", "%2F", "%3D", "&", "=", "a b", "~*'()!", "é", "?", "%g1"])
    ).map("".join),
)
def test_exact_url_is_what_it_was(origin: str, path: str, query: str | None) -> None:
    # Whether the origin is parsed once (a plain presigned URL) or the whole URL (anything else).
    url = origin + path + ("" if query is None else f"?{query}")
    try:
        expected = pinned_the_long_way(url)
    except httpx.InvalidURL:
        return
    assert url_shape(exact_url(url)) == url_shape(expected)


def test_a_presigned_url_is_not_parsed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    signed = (
        "http://127.0.0.1:9000/bucket/ws/1/source.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261129%2Fauto&X-Amz-Expires=3600&X-Amz-Signature=" + "ab" * 32
    )
    exact_url("http://127.0.0.1:9000/warm")  # the origin parsed once
    calls = count_url_parses(monkeypatch)
    assert str(exact_url(signed)) == signed and calls == []
    spaced = "http://127.0.0.1:9000/a b"  # httpx encodes the space: the whole parse, as before
    assert exact_url(spaced).raw_path == b"/a%20b" and calls
