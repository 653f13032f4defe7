"""CarmicClient over MockTransport: endpoints, retries, pacing, workspaces, hooks, logging."""

from __future__ import annotations

import email.utils
import logging
from pathlib import Path

import httpx
import pytest

from tests.carmic.fakeapi import WS2_ID, WS_ID, FakeApi, body_of, err, make_client, ok
from watchd.carmic.errors import (
    BillingRequired,
    ConcurrencyLimited,
    NetworkError,
    NotFound,
    RateLimited,
    ServerError,
)
from watchd.carmic.pacing import TokenBucket
from watchd.clock import Clock, FakeClock

# ---- workspaces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("", WS_ID),
        (WS2_ID, WS2_ID),
        (WS2_ID.upper(), WS2_ID),
        ("Archive", WS2_ID),
        ("studio", WS_ID),
    ],
)
async def test_workspace_by_uuid_or_name(wanted: str, expected: str) -> None:
    api = FakeApi()
    async with make_client(api, workspace=wanted) as client:
        ws = await client.resolve_workspace()
        assert client.workspace_id == expected == ws.id


async def test_unknown_workspace_lists_what_exists() -> None:
    async with make_client(FakeApi(), workspace="Marketing") as client:
        with pytest.raises(NotFound) as ei:
            await client.resolve_workspace()
    msg = str(ei.value)
    assert "'Marketing'" in msg and "'Studio'" in msg and WS2_ID in msg


async def test_workspace_resolved_once_and_sent_on_scoped_calls_only() -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/templates/")] = lambda r: ok([{"id": "t1"}])
    async with make_client(api, workspace="Archive") as client:
        assert client.workspace_id is None
        assert await client.templates(ratio="9_16") == [{"id": "t1"}]
        await client.templates()
        await client.me()
        await client.health()
    assert api.count("GET", "/v1/me") == 2  # resolve once + the explicit me()
    t1, t2 = [r for r in api.log if r.url.path.endswith("/templates/")]
    assert t1.url.params["ratio"] == "9_16" and "ratio" not in t2.url.params
    assert t1.headers["X-Workspace-ID"] == WS2_ID
    health = api.log[-1]
    assert "Authorization" not in health.headers and "X-Workspace-ID" not in health.headers


# ---- retries ------------------------------------------------------------------------------


def _flaky(
    api: FakeApi,
    method: str,
    path: str,
    failures: list[httpx.Response | Exception],
    final: httpx.Response,
) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if failures:
            f = failures.pop(0)
            if isinstance(f, Exception):
                raise f
            return f
        return final

    api.routes[(method, path)] = route


async def test_5xx_and_network_errors_are_retried_with_backoff() -> None:
    api = FakeApi()
    _flaky(
        api,
        "GET",
        "/v1/projects/p1/status",
        [err(502, "bad gateway"), httpx.ReadError("reset"), err(503, "unavailable")],
        ok({"status": "TRANSCRIBING", "progress": 30}),
    )
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        st = await client.project_status("p1")
    assert (st.status, st.progress, st.id) == ("TRANSCRIBING", 30, "p1")
    assert clock.sleeps == [1, 2, 4]


async def test_retries_give_up_after_the_policy_attempts() -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/projects/p1")] = lambda r: (_ for _ in ()).throw(
        httpx.ConnectError("refused")
    )
    async with make_client(api) as client:
        with pytest.raises(NetworkError, match="cannot connect") as ei:
            await client.get_project("p1")
    assert ei.value.endpoint == "/v1/projects/{id}"
    assert api.count("GET", "/v1/projects/p1") == 4


async def test_read_timeout_is_a_network_error() -> None:
    api = FakeApi()

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    api.routes[("GET", "/v1/clips/c1")] = slow
    async with make_client(api) as client:
        with pytest.raises(NetworkError, match="read timeout"):
            await client.get_clip("c1")


async def test_429_waits_retry_after_seconds() -> None:
    api = FakeApi()
    _flaky(
        api,
        "GET",
        "/v1/clips/c1/render-progress",
        [err(429, "Too Many Requests", **{"Retry-After": "17"})],
        ok({"status": "RENDERING", "progress": 40}),
    )
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        p = await client.render_progress("c1")
    assert p.status == "RENDERING"
    assert clock.sleeps == [17]


async def test_429_waits_retry_after_http_date() -> None:
    api = FakeApi()
    clock = FakeClock()
    date = email.utils.formatdate(clock.now() + 25, usegmt=True)
    _flaky(
        api,
        "GET",
        "/v1/exports/e1",
        [err(429, "slow", **{"Retry-After": date})],
        ok({"status": "COMPLETED", "download_url": "https://s/x.zip?sig=1"}),
    )
    async with make_client(api, clock=clock) as client:
        ex = await client.get_export("e1")
    assert ex.done and ex.id == "e1"
    assert clock.sleeps == [25]


async def test_429_with_a_long_retry_after_is_raised_for_the_pipeline() -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/exports/e1")] = lambda r: err(429, "slow", **{"Retry-After": "900"})
    async with make_client(api) as client:
        with pytest.raises(RateLimited) as ei:
            await client.get_export("e1")
    assert ei.value.retry_after == 900
    assert api.count("GET", "/v1/exports/e1") == 1


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("POST", "/v1/projects/create", lambda c: c.create_project(filename="a.mp4", filesize=1)),
        ("POST", "/v1/clips/c1/render", lambda c: c.render_clip("c1")),
        ("POST", "/v1/clips/c1/retry-render", lambda c: c.retry_render("c1")),
        ("POST", "/v1/clips/c1/exports", lambda c: c.create_export("c1", "premiere")),
    ],
)
@pytest.mark.parametrize("failure", ["502", "reset", "429"])
async def test_non_idempotent_posts_are_never_retried(
    method: str, path: str, call: object, failure: str
) -> None:
    api = FakeApi()

    def route(request: httpx.Request) -> httpx.Response:
        if failure == "reset":
            raise httpx.RemoteProtocolError("peer closed connection")
        if failure == "429":
            return err(429, "slow down", **{"Retry-After": "1"})
        return err(502, "bad gateway")

    api.routes[(method, path)] = route
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        with pytest.raises((ServerError, NetworkError, RateLimited)):
            await call(client)  # type: ignore[operator]
    assert api.count(method, path) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("PUT", "/v1/clips/c1", lambda c: c.put_clip("c1", {"caption_style": "HORMOZI"})),
        ("POST", "/v1/projects/p1/process", lambda c: c.process_project("p1")),
        ("DELETE", "/v1/projects/p1", lambda c: c.delete_project("p1")),
        ("POST", "/v1/projects/p1/cancel", lambda c: c.cancel_project("p1")),
        ("POST", "/v1/sse-ticket", lambda c: c.sse_ticket()),
    ],
)
async def test_idempotent_writes_are_retried(method: str, path: str, call: object) -> None:
    api = FakeApi()
    _flaky(api, method, path, [err(500, "oops")], ok({"ok": True, "ticket": "t"}))
    async with make_client(api) as client:
        await call(client)  # type: ignore[operator]
    assert api.count(method, path) == 2


async def test_concurrency_limit_on_process_is_not_retried() -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/projects/p1/process")] = lambda r: err(
        409, "Concurrent processing limit reached (1 for PROFESSIONAL)"
    )
    async with make_client(api) as client:
        with pytest.raises(ConcurrencyLimited):
            await client.process_project("p1")
    assert api.count("POST", "/v1/projects/p1/process") == 1


# ---- pacing -------------------------------------------------------------------------------


def _create_route(api: FakeApi) -> list[dict[str, object]]:
    bodies: list[dict[str, object]] = []

    def route(request: httpx.Request) -> httpx.Response:
        bodies.append(body_of(request))
        n = len(bodies)
        return ok(
            {
                "project_id": f"p{n}",
                "upload_url": f"https://s/b/k{n}?X-Amz-Signature=s",
                "object_key": f"k{n}",
            }
        )

    api.routes[("POST", "/v1/projects/create")] = route
    return bodies


async def test_project_creations_are_paced_per_minute() -> None:
    api = FakeApi()
    _create_route(api)
    clock = FakeClock()
    api.clock = clock
    stamps: list[float] = []
    async with make_client(api, clock=clock, creates_per_minute=5) as client:
        for i in range(7):
            await client.create_project(filename=f"{i}.mp4", filesize=10)
            stamps.append(clock.monotonic())
    assert stamps[4] - stamps[0] < 1
    assert stamps[5] - stamps[0] >= 60
    assert stamps[6] - stamps[1] >= 60


async def test_zero_means_unpaced() -> None:
    api = FakeApi()
    _create_route(api)
    clock = FakeClock()
    async with make_client(api, clock=clock, creates_per_minute=0) as client:
        for i in range(20):
            await client.create_project(filename=f"{i}.mp4", filesize=10)
    assert clock.sleeps == []


async def test_exports_are_paced_and_a_429_holds_the_bucket() -> None:
    api = FakeApi()
    answers = [err(429, "Export rate limit", **{"Retry-After": "30"})]

    def route(request: httpx.Request) -> httpx.Response:
        if answers:
            return answers.pop()
        return ok({"export_id": "e1", "status": "PENDING"}, status=202)

    api.routes[("POST", "/v1/clips/c1/exports")] = route
    clock = FakeClock()
    async with make_client(api, clock=clock, exports_per_minute=5) as client:
        with pytest.raises(RateLimited):
            await client.create_export("c1", "davinci")
        t = clock.monotonic()
        job = await client.create_export("c1", "davinci", include_proxy=True)
    assert clock.monotonic() - t == pytest.approx(30)
    assert (job.export_id, job.status) == ("e1", "PENDING")
    assert body_of(api.log[-1]) == {"target_format": "davinci", "include_proxy": True}


async def test_a_bucket_factory_builds_the_pace_per_workspace_and_kind() -> None:
    api = FakeApi()
    _create_route(api)
    built: list[tuple[str, str, float]] = []

    def factory(workspace: str, kind: str, per_minute: float, clock: Clock) -> TokenBucket:
        built.append((workspace, kind, per_minute))
        return TokenBucket(1, clock=clock)

    clock = FakeClock()
    async with make_client(api, clock=clock, creates_per_minute=5, bucket_factory=factory) as c:
        await c.create_project(filename="a.mp4", filesize=10)
        t = clock.monotonic()
        await c.create_project(filename="b.mp4", filesize=10)
    assert built == [(WS_ID, "creates", 5)]  # built once, then reused
    assert clock.monotonic() - t == pytest.approx(61)  # the factory's bucket, not 5 a minute


async def test_before_send_runs_after_the_pace_wait_and_may_stop_the_call() -> None:
    api = FakeApi()
    bodies = _create_route(api)
    clock = FakeClock()
    seen: list[float] = []

    def lease_left() -> None:
        seen.append(clock.monotonic())
        if len(seen) == 2:
            raise RuntimeError("lease lost")

    async with make_client(api, clock=clock, creates_per_minute=1) as client:
        await client.create_project(filename="a.mp4", filesize=10, before_send=lease_left)
        t = clock.monotonic()
        with pytest.raises(RuntimeError, match="lease lost"):
            await client.create_project(filename="b.mp4", filesize=10, before_send=lease_left)
        assert seen[1] - t == pytest.approx(61)  # checked after the wait, not before it
        # Nothing went, and the token came back: the next call does not wait.
        await client.create_project(filename="c.mp4", filesize=10, before_send=lease_left)
        assert clock.monotonic() == seen[1]
    assert [b["filename"] for b in bodies] == ["a.mp4", "c.mp4"]


async def test_unknown_export_format_is_refused_locally() -> None:
    async with make_client(FakeApi()) as client:
        with pytest.raises(ValueError, match="logic_pro"):
            await client.create_export("c1", "logic_pro")


# ---- endpoints ----------------------------------------------------------------------------


async def test_create_project_sends_only_given_fields() -> None:
    api = FakeApi()
    bodies = _create_route(api)
    async with make_client(api) as client:
        created = await client.create_project(
            filename="ep12.mp4",
            filesize=524288000,
            content_type="video/mp4",
            duration=1800,
            title="Episode 12",
            language="en",
            video_type="podcast",
            enable_multimodal=False,
        )
    assert created.project_id == "p1" and created.object_key == "k1"
    assert bodies == [
        {
            "filename": "ep12.mp4",
            "filesize": 524288000,
            "content_type": "video/mp4",
            "duration": 1800,
            "title": "Episode 12",
            "language": "en",
            "video_type": "podcast",
            "enable_multimodal": False,
        }
    ]


async def test_create_answer_without_upload_url_is_an_error() -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/projects/create")] = lambda r: ok({"project_id": "p1"})
    async with make_client(api) as client:
        with pytest.raises(ServerError, match="upload_url"):
            await client.create_project(filename="a.mp4", filesize=1)


async def test_billing_on_render() -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/clips/c1/render")] = lambda r: err(
        402, "Insufficient processing minutes"
    )
    async with make_client(api) as client:
        with pytest.raises(BillingRequired, match="Insufficient"):
            await client.render_clip("c1")


async def test_render_and_clip_payloads() -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/clips/c1/render")] = lambda r: ok(
        {"render_job_id": "rj1", "status": "QUEUED", "clip_id": "c1"}
    )
    api.routes[("GET", "/v1/clips/c1")] = lambda r: ok(
        {
            "id": "c1",
            "title": "T",
            "start_time": 1,
            "end_time": 9,
            "template_config": {"caption_style": "DEFAULT"},
            "transcript": {"words": [{"word": "hi", "start": 0.1, "end": 0.4}]},
        }
    )
    seen: list[object] = []

    def put(request: httpx.Request) -> httpx.Response:
        seen.append(body_of(request))
        return ok({"ok": True})

    api.routes[("PUT", "/v1/clips/c1")] = put
    async with make_client(api) as client:
        job = await client.render_clip("c1")
        clip = await client.get_clip("c1")
        assert await client.put_clip("c1", {"caption_style": "HORMOZI"}) == {"ok": True}
    assert (job.render_job_id, job.status, job.clip_id) == ("rj1", "QUEUED", "c1")
    assert clip.words[0].text == "hi" and clip.template_config == {"caption_style": "DEFAULT"}
    assert seen == [{"caption_style": "HORMOZI"}]


async def test_list_and_find_projects_walk_every_page() -> None:
    api = FakeApi()
    projects = [{"id": f"p{i}", "title": f"ep [wd-abc] {i}"} for i in range(250)]

    def listing(request: httpx.Request) -> httpx.Response:
        q = request.url.params
        assert q["search"] == "wd-abc"
        limit, offset = int(q["limit"]), int(q["offset"])
        page = projects[offset : offset + limit]
        return ok(
            page,
            meta={
                "total": len(projects),
                "limit": limit,
                "offset": offset,
                "has_more": offset + limit < len(projects),
            },
        )

    api.routes[("GET", "/v1/projects")] = listing
    async with make_client(api) as client:
        page = await client.list_projects(search="wd-abc", limit=20, offset=40)
        found = await client.find_projects("wd-abc")
    assert page.total == 250 and page.offset == 40 and page.has_more and len(page.items) == 20
    assert [p["id"] for p in found] == [p["id"] for p in projects]
    assert api.count("GET", "/v1/projects") == 1 + 3


async def test_find_projects_survives_a_server_that_never_stops_saying_has_more() -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/projects")] = lambda r: ok([{"id": "same"}], meta={"has_more": True})
    async with make_client(api) as client:
        assert await client.find_projects("x") == [{"id": "same"}]


async def test_exports_listing_and_caption_templates_in_loose_shapes() -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/clips/c1/exports")] = lambda r: ok(
        {"exports": [{"id": "e1", "status": "PENDING", "target_format": "fcpx"}]}
    )
    api.routes[("GET", "/v1/projects/caption-templates")] = lambda r: ok(
        [{"name": "HORMOZI"}, {"name": "DEFAULT"}]
    )
    async with make_client(api) as client:
        exports = await client.list_exports("c1")
        caps = await client.caption_templates()
    assert [(e.id, e.target_format) for e in exports] == [("e1", "fcpx")]
    assert [c["name"] for c in caps] == ["HORMOZI", "DEFAULT"]


@pytest.mark.parametrize(
    "answer", [{"ticket": "tk-1"}, {"data": {"ticket": "tk-1"}}, {"data": "tk-1"}]
)
async def test_sse_ticket_both_shapes(answer: dict[str, object]) -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/sse-ticket")] = lambda r: httpx.Response(200, json=answer)
    async with make_client(api) as client:
        assert await client.sse_ticket() == "tk-1"


async def test_ids_are_quoted_into_paths() -> None:
    api = FakeApi()
    # FakeApi routes on the decoded path; the raw one is checked below.
    api.routes[("GET", "/v1/projects/a/../b/status")] = lambda r: ok({"status": "PENDING_UPLOAD"})
    async with make_client(api) as client:
        st = await client.project_status("a/../b")
    assert st.status == "PENDING_UPLOAD"
    assert api.log[-1].url.raw_path == b"/api/v1/projects/a%2F..%2Fb/status"


# ---- clip video ---------------------------------------------------------------------------

STORAGE_URL = (
    "https://r2.test/bucket/clips/c1.mp4?X-Amz-Credential=k%2F20260101%2Fauto&X-Amz-Signature=abc"
)


async def test_clip_video_is_404_until_rendered_then_302() -> None:
    api = FakeApi()
    rendered = False

    def video(request: httpx.Request) -> httpx.Response:
        if not rendered:
            return err(404, "Clip not rendered yet")
        return httpx.Response(302, headers={"Location": STORAGE_URL})

    api.routes[("GET", "/v1/clips/c1/video")] = video
    async with make_client(api) as client:
        with pytest.raises(NotFound):
            await client.clip_video_location("c1")
        rendered = True
        assert await client.clip_video_location("c1") == STORAGE_URL
    assert api.count("GET", "/v1/clips/c1/video") == 2


async def test_download_clip_video_follows_the_redirect_without_credentials(tmp_path: Path) -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/clips/c1/video")] = lambda r: httpx.Response(
        302, headers={"Location": STORAGE_URL}
    )
    storage_seen: list[httpx.Request] = []
    payload = b"\x00\x00\x00\x18ftypmp42" + b"x" * 5000

    def storage(request: httpx.Request) -> httpx.Response:
        storage_seen.append(request)
        return httpx.Response(200, content=payload)

    async with make_client(api, storage=storage) as client:
        res = await client.download_clip_video("c1", tmp_path / "01 - Clip.mp4")
    (req,) = storage_seen
    assert "Authorization" not in req.headers and "X-Workspace-ID" not in req.headers
    assert str(req.url) == STORAGE_URL
    assert (tmp_path / "01 - Clip.mp4").read_bytes() == payload
    assert res.size == len(payload)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01 - Clip.mp4"]


@pytest.mark.parametrize(
    ("location", "fetched"),
    [
        (STORAGE_URL, STORAGE_URL),  # absolute: used as the server wrote it, not re-parsed
        ("/files/c1.mp4?X-Sig=a%2Fb", "https://api.test/files/c1.mp4?X-Sig=a%2Fb"),  # joined
        ("c1.mp4?X-Sig=1", "https://api.test/api/v1/clips/c1/c1.mp4?X-Sig=1"),
    ],
)
async def test_a_clip_video_redirect_is_followed_absolute_or_relative(
    tmp_path: Path, location: str, fetched: str
) -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/clips/c1/video")] = lambda r: httpx.Response(
        302, headers={"Location": location}
    )
    seen: list[str] = []

    def storage(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=b"mp4")

    async with make_client(api, storage=storage) as client:
        assert await client.clip_video_location("c1") == fetched
        await client.download_clip_video("c1", tmp_path / "c.mp4")
    assert seen == [fetched]


async def test_download_clip_video_served_directly_by_the_api(tmp_path: Path) -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/clips/c1/video")] = lambda r: httpx.Response(200, content=b"mp4bytes")
    async with make_client(api) as client:
        res = await client.download_clip_video("c1", tmp_path / "c.mp4")
    assert res.size == 8 and (tmp_path / "c.mp4").read_bytes() == b"mp4bytes"


# ---- hooks and logging --------------------------------------------------------------------


async def test_on_response_sees_route_templates_and_statuses() -> None:
    api = FakeApi()
    _flaky(
        api,
        "GET",
        "/v1/projects/p1/status",
        [httpx.ConnectError("down")],
        ok({"status": "PROCESSING"}),
    )
    seen: list[tuple[str, int | str]] = []
    logins: list[int] = []
    async with make_client(
        api, on_response=lambda e, s: seen.append((e, s)), on_login=lambda: logins.append(1)
    ) as client:
        await client.project_status("p1")
    assert seen == [
        ("/v1/auth/login", 200),
        ("/v1/me", 200),
        ("/v1/projects/{id}/status", "error"),
        ("/v1/projects/{id}/status", 200),
    ]
    assert logins == [1]


async def test_debug_log_per_exchange_is_redacted(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/clips/c1/video")] = lambda r: httpx.Response(
        302, headers={"Location": STORAGE_URL}
    )
    caplog.set_level(logging.DEBUG, logger="watchd.carmic")
    async with make_client(api, storage=lambda r: httpx.Response(200, content=b"x")) as client:
        await client.download_clip_video("c1", tmp_path / "c.mp4")
    lines = [r.getMessage() for r in caplog.records if r.name == "watchd.carmic"]
    for expected in (
        "POST https://api.test/api/v1/auth/login -> 200 (",
        "GET https://api.test/api/v1/clips/c1/video -> 302 (",
        "GET https://r2.test/bucket/clips/c1.mp4?<redacted> -> 200 (",
    ):
        assert any(line.startswith(expected) for line in lines), expected
    text = caplog.text
    assert "abc" not in text and "access-1" not in text and "Sup3r" not in text
