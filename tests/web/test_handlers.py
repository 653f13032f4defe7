"""The dashboard's handlers over real loopback, without a browser: pages, the API, the guard
(Host, bearer, CSRF, Origin), the headers, outbox files, redaction, the live feed."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.helpers import TOKEN, StaticSource, add_job, serve, status_json
from watchd.clock import FakeClock
from watchd.ledger.db import Ledger
from watchd.ledger.states import Stage
from watchd.web.app import WebServer
from watchd.web.settings import WebConfig
from watchd.web.views import PAGE_SIZE

PRESIGNED = "https://storage.example/bucket/obj.mp4?X-Amz-Signature=deadbeefcafe&X-Amz-Expires=900"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyMTIzNDUifQ.c2lnbmF0dXJlLXZhbHVlLTEyMzQ"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> Iterator[Ledger]:
    db = Ledger(None, clock=clock)
    yield db
    db.close()


@pytest.fixture
async def site(ledger: Ledger) -> AsyncIterator[tuple[WebServer, StaticSource]]:
    source = StaticSource(ledger)
    async with serve(source) as server:
        yield server, source


def client(server: WebServer, **kw: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url.rstrip("/"), timeout=10, **kw)  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    m = re.search(r'"X-CSRF-Token": "([^"]+)"', html)
    assert m, "the page carries its CSRF token"
    return m.group(1)


# ---- pages and headers ------------------------------------------------------------------------


async def test_queue_page_is_rendered_on_the_server_with_strict_headers(site, ledger) -> None:
    server, _ = site
    add_job(ledger, "podcasts/episode-12.mp4", rule="podcasts")
    add_job(ledger, "lesson 3 — framing.mp4", Stage.UPLOADING, progress=42.0)
    async with client(server) as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert "episode-12.mp4" in r.text and "lesson 3 — framing.mp4" in r.text
    assert 'value="42"' in r.text and "upload" in r.text
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    # Not "no-referrer": a browser would then send "Origin: null" with the page's own forms.
    assert r.headers["Referrer-Policy"] == "same-origin"
    # No inline script, handler attribute or style attribute anywhere (CSP would block them).
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text)
    assert not re.search(r"\son[a-z]+=", r.text)
    assert " style=" not in r.text


async def test_job_page_shows_events_clips_and_manifest(site, ledger, tmp_path: Path) -> None:
    server, _ = site
    outbox = tmp_path / "outbox"
    folder = outbox / "episode"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"status": "delivered", "clips": []}')
    (folder / "01.jpg").write_bytes(b"\xff\xd8\xff jpeg")
    job_id = add_job(ledger, "episode.mp4", outbox=outbox)
    ledger.transition(job_id, Stage.PROBED)
    ledger.put_clips(
        job_id,
        [
            {
                "clip_id": "c1",
                "rank": 1,
                "title": "The hook",
                "start_time": 1.0,
                "end_time": 31.5,
                "virality_score": 87,
                "reasoning": "Strong opening line",
                "thumbnail_url": PRESIGNED,
            }
        ],
    )
    ledger.update_clip(job_id, "c1", thumbnail="01.jpg", file="01 The hook.mp4")
    ledger.update(job_id, state="delivered", outbox_dir=str(folder))
    async with client(server) as c:
        r = await c.get(f"/jobs/{job_id}")
        missing = await c.get("/jobs/jnope")
    assert r.status_code == 200
    assert "discovered" in r.text and "queued → probed" in r.text
    assert "The hook" in r.text and "87" in r.text and "30.5 s" in r.text
    assert "Strong opening line" in r.text
    assert f"/jobs/{job_id}/files/01.jpg" in r.text
    assert "01%20The%20hook.mp4" in r.text
    assert "&#34;status&#34;: &#34;delivered&#34;" in r.text  # the manifest, escaped
    assert "X-Amz-Signature" not in r.text
    assert "Forget" in r.text and "Retry" not in r.text.split("<h2>Events")[0]
    assert missing.status_code == 404
    assert missing.headers["X-Frame-Options"] == "DENY" and "unknown job" in missing.text


async def test_api_jobs_is_the_status_json_array(site, ledger) -> None:
    server, _ = site
    add_job(ledger, "a.mp4")
    add_job(ledger, "b.mp4", Stage.FAILED, error="Carmic refused the request — fix it")
    async with client(server) as c:
        r = await c.get("/api/jobs")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == status_json(ledger)


# ---- the guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/api/jobs"), ("GET", "/events"), ("POST", "/api/jobs/j1/retry")],
)
async def test_a_foreign_host_is_refused(site, method: str, path: str) -> None:
    server, _ = site
    async with client(server) as c:
        r = await c.request(
            method, path, headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"}
        )
    assert r.status_code == 403
    assert r.headers["X-Frame-Options"] == "DENY"


async def test_the_allowed_hosts(site) -> None:
    server, _ = site
    async with client(server) as c:
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
            assert (await c.get("/", headers={"Host": host})).status_code == 200
        for host in ("localhost", f"localhost:{server.port + 1}", "127.0.0.1.evil.example"):
            assert (await c.get("/", headers={"Host": host})).status_code == 403


async def test_retry_needs_the_token_or_the_page(site, ledger) -> None:
    server, _ = site
    job_id = add_job(ledger, "a.mp4", Stage.FAILED, error="boom", resume_stage="uploaded")
    async with client(server) as c:
        assert (await c.post(f"/api/jobs/{job_id}/retry")).status_code == 403
        wrong = await c.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        forged = await c.post(
            f"/api/jobs/{job_id}/retry",
            headers={"X-CSRF-Token": "guessed"},
        )
        assert forged.status_code == 403
        assert ledger.require(job_id).state == "failed"
        ok = await c.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json() == {"id": job_id, "state": "uploaded"}
    assert ledger.require(job_id).state == "uploaded"
    assert ledger.events(job_id)[-1].actor == "web"


async def test_the_page_retries_with_its_csrf_token_but_not_from_another_origin(
    site, ledger
) -> None:
    server, _ = site
    job_id = add_job(
        ledger, "a.mp4", Stage.PARKED, park_reason="billing: pay", resume_stage="rendering"
    )
    async with client(server) as c:
        token = csrf_of((await c.get("/")).text)
        elsewhere = await c.post(
            f"/api/jobs/{job_id}/retry",
            headers={"X-CSRF-Token": token, "Origin": "http://evil.example"},
        )
        assert elsewhere.status_code == 403
        assert ledger.require(job_id).state == "parked"
        ours = await c.post(
            f"/api/jobs/{job_id}/retry",
            headers={"X-CSRF-Token": token, "Origin": server.url.rstrip("/"), "HX-Request": "true"},
        )
    assert ours.status_code == 200
    assert ledger.require(job_id).state == "rendering"


async def test_a_plain_form_post_goes_back_to_the_job(site, ledger) -> None:
    server, _ = site
    job_id = add_job(ledger, "a.mp4", Stage.FAILED, error="boom")
    async with client(server) as c:
        token = csrf_of((await c.get("/")).text)
        r = await c.post(f"/api/jobs/{job_id}/retry", data={"csrf_token": token})
        forged = await c.post(f"/api/jobs/{job_id}/forget", data={"csrf_token": "nope"})
    assert r.status_code == 303 and r.headers["Location"] == f"/jobs/{job_id}"
    assert forged.status_code == 403
    assert ledger.require(job_id).state == "queued"


async def test_forget_as_the_cli_allows_it(site, ledger) -> None:
    server, _ = site
    done = add_job(ledger, "done.mp4", Stage.DELIVERED)
    busy = add_job(ledger, "busy.mp4", Stage.UPLOADING)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with client(server) as c:
        assert (await c.post(f"/api/jobs/{busy}/forget", headers=auth)).status_code == 409
        assert (await c.post("/api/jobs/jnope/forget", headers=auth)).status_code == 404
        assert (await c.post(f"/api/jobs/{busy}/retry", headers=auth)).status_code == 409
        r = await c.post(f"/api/jobs/{done}/forget", headers=auth)
    assert r.status_code == 200 and "HX-Redirect" not in r.headers
    assert ledger.get(done) is None and ledger.get(busy) is not None


async def test_forgetting_from_the_jobs_own_page_goes_to_the_queue(site, ledger) -> None:
    server, _ = site
    shown, other = (add_job(ledger, f"{n}.mp4", Stage.FAILED) for n in "ab")
    async with client(server) as c:
        token = csrf_of((await c.get(f"/jobs/{shown}")).text)
        page = {"X-CSRF-Token": token, "HX-Request": "true"}
        here = f"{server.url}jobs/{shown}"
        r = await c.post(f"/api/jobs/{shown}/forget", headers={**page, "HX-Current-URL": here})
        assert r.status_code == 200 and r.headers["HX-Redirect"] == "/"
        # Its open page, told by the feed, fetches its part again: the job is gone.
        gone = await c.get(f"/fragments/jobs/{shown}", headers={"HX-Request": "true"})
        assert gone.status_code == 404 and gone.headers["HX-Redirect"] == "/"
        r = await c.post(
            f"/api/jobs/{other}/forget", headers={**page, "HX-Current-URL": server.url}
        )
        assert r.status_code == 200 and "HX-Redirect" not in r.headers  # the queue stays put


async def test_without_a_token_file_only_the_page_can_change_things(ledger) -> None:
    job_id = add_job(ledger, "a.mp4", Stage.FAILED, error="boom")
    async with serve(StaticSource(ledger), token=None) as server, client(server) as c:
        r = await c.post(f"/api/jobs/{job_id}/retry", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 401
        token = csrf_of((await c.get("/")).text)
        assert (
            await c.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": token})
        ).status_code == 200


async def test_a_network_address_needs_the_token_for_pages_too(ledger) -> None:
    add_job(ledger, "secret-project.mp4")
    async with serve(StaticSource(ledger), listen="0.0.0.0:0") as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            assert (await c.get("/api/jobs")).status_code == 401
            page = await c.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 303 and page.headers["Location"] == "/login"
            assert "secret-project" not in page.text
            assert (
                await c.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
            ).status_code == 200
            assert (await c.post("/login", data={"token": "wrong"})).status_code == 401
            login = await c.post("/login", data={"token": TOKEN})
            assert login.status_code == 303
            assert "HttpOnly" in login.headers["Set-Cookie"]
            assert TOKEN not in login.headers["Set-Cookie"]
            r = await c.get("/")
            assert r.status_code == 200 and "secret-project" in r.text


# ---- files from the outbox ---------------------------------------------------------------------


async def test_files_come_only_from_inside_the_jobs_outbox_folder(site, ledger, tmp_path) -> None:
    server, _ = site
    outbox = tmp_path / "outbox"
    folder = outbox / "ep"
    folder.mkdir(parents=True)
    (folder / "01.jpg").write_bytes(b"\xff\xd8\xffthumb")
    (folder / "notes.sh").write_text("echo hi")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.jpg", folder / "link.jpg")
    job_id = add_job(ledger, "ep.mp4", Stage.DELIVERED, outbox=outbox, outbox_dir=str(folder))
    # A job whose recorded folder lies outside its outbox (a tampered ledger) serves nothing.
    rogue = add_job(ledger, "x.mp4", Stage.DELIVERED, outbox=outbox, outbox_dir=str(tmp_path))
    async with client(server) as c:
        ok = await c.get(f"/jobs/{job_id}/files/01.jpg")
        assert ok.status_code == 200 and ok.content == b"\xff\xd8\xffthumb"
        assert ok.headers["Content-Type"] == "image/jpeg"
        for name in ("../secret.jpg", "..%2Fsecret.jpg", "%2Fetc%2Fpasswd", "link.jpg",
                     "notes.sh", "missing.jpg", "%2E%2E%2Fsecret.jpg"):  # fmt: skip
            r = await c.get(f"/jobs/{job_id}/files/{name}")
            assert r.status_code == 404, name
        assert (await c.get(f"/jobs/{rogue}/files/secret.jpg")).status_code == 404


# ---- nothing secret on any page ----------------------------------------------------------------


async def test_no_page_or_answer_shows_a_secret(site, ledger) -> None:
    server, _ = site
    leak = f"upload to {PRESIGNED} failed with Bearer {JWT} (password=hunter2hunter2)"
    job_id = add_job(ledger, "leaky.mp4", Stage.FAILED, error=leak, step=PRESIGNED)
    ledger.record_event(job_id, "note", {"url": PRESIGNED, "token": JWT})
    async with client(server) as c:
        answers = [
            await c.get("/"),
            await c.get("/fragments/queue"),
            await c.get(f"/jobs/{job_id}"),
            await c.get(f"/fragments/jobs/{job_id}"),
            await c.get("/api/jobs"),
        ]
    for r in answers:
        assert r.status_code == 200
        for secret in ("X-Amz-Signature=deadbeef", JWT, "hunter2hunter2", TOKEN):
            assert secret not in r.text, (r.url, secret)
    assert "leaky.mp4" in answers[0].text


# ---- the queue: filters, pages, banners --------------------------------------------------------


async def test_newest_first_paginated_filtered_and_searched(site, ledger, clock) -> None:
    server, _ = site
    n = 2 * PAGE_SIZE + 30
    for i in range(n):
        clock.advance(1)
        add_job(ledger, f"clip-{i:04d}.mp4", Stage.FAILED if i % 10 == 0 else Stage.DELIVERED,
                rule="podcasts" if i % 2 else "")  # fmt: skip
    async with client(server) as c:
        first = (await c.get("/")).text
        third = (await c.get("/?page=3")).text
        beyond = (await c.get("/?page=99")).text
        failed = (await c.get("/?state=failed")).text
        found = (await c.get("/?q=clip-012")).text
        rule = (await c.get("/?rule=podcasts&state=failed")).text
        junk = await c.get("/?page=abc&state=<script>")

    def rows(text: str) -> list[str]:
        return re.findall(r"clip-\d+\.mp4(?=</a>)", text)

    assert len(rows(first)) == PAGE_SIZE
    assert rows(first)[:2] == [f"clip-{n - 1:04d}.mp4", f"clip-{n - 2:04d}.mp4"]  # newest first
    assert rows(first)[-1] == f"clip-{n - PAGE_SIZE:04d}.mp4"
    assert "page 1 of 3" in first and "older →" in first
    assert rows(third) == [f"clip-{i:04d}.mp4" for i in range(29, -1, -1)]
    assert rows(beyond) == rows(third)  # past the end: the last page
    assert len(rows(failed)) == n // 10
    assert sorted(rows(found)) == [f"clip-{i:04d}.mp4" for i in range(120, 130)]
    assert rows(rule) == []  # the failed ones are every 10th: all in the root rule
    assert junk.status_code == 200 and "<script>" not in junk.text


async def test_banners(site, ledger) -> None:
    server, source = site
    add_job(ledger, "a.mp4", Stage.PARKED, park_reason="billing: Insufficient processing minutes")
    add_job(ledger, "b.mp4", Stage.QUEUED, error="Carmic refused the login for x@y: bad password")
    source.paused.append(("/mnt/nas/inbox", "the inbox is empty: the share may be unmounted"))
    source.problems.append("webhook https://hooks.example/x: HTTP 500")
    async with client(server) as c:
        text = (await c.get("/")).text
    assert "banner-billing" in text and "402" in text
    assert "banner-paused" in text and "/mnt/nas/inbox" in text
    assert "banner-login" in text and "bad password" in text
    assert "banner-notify" in text and "HTTP 500" in text


# ---- the live feed -----------------------------------------------------------------------------


async def _first_event(response: httpx.Response) -> str:
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        if "event: changed" in buffer:
            return buffer
    return buffer


async def test_a_change_reaches_an_open_page_as_an_event(site, ledger) -> None:
    server, _ = site
    job_id = add_job(ledger, "a.mp4")
    other = add_job(ledger, "b.mp4")
    async with (
        client(server) as c,
        c.stream("GET", "/events") as all_jobs,
        c.stream("GET", f"/events?job={job_id}") as one_job,
    ):
        assert all_jobs.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.sleep(0)
        waiting_all = asyncio.create_task(_first_event(all_jobs))
        waiting_one = asyncio.create_task(_first_event(one_job))
        for _ in range(100):  # both streams subscribed
            if server.feed is not None and server.feed.subscribers == 2:
                break
            await asyncio.sleep(0.01)
        ledger.update(other, progress=10.0)
        text = await asyncio.wait_for(waiting_all, 5)
        assert "event: changed" in text
        await asyncio.sleep(0.1)
        assert not waiting_one.done()  # another job's change is not this page's
        ledger.transition(job_id, Stage.PROBED)
        assert "event: changed" in await asyncio.wait_for(waiting_one, 5)
    assert server.feed is not None


async def test_a_change_by_another_process_reaches_an_open_page(tmp_path: Path) -> None:
    """`watchd forget` in a shell writes through its own connection, past the daemon's hook."""
    daemons = Ledger(tmp_path / "ledger.db")
    clis = Ledger(tmp_path / "ledger.db")
    try:
        job_id = add_job(daemons, "a.mp4", Stage.DELIVERED)
        source = StaticSource(daemons)
        config = WebConfig(listen="127.0.0.1:0")
        server = WebServer(config, source, interval=0.02, others_every=0.05)
        await server.start()
        daemons.on_change = server.note
        try:
            async with client(server) as c, c.stream("GET", f"/events?job={job_id}") as page:
                waiting = asyncio.create_task(_first_event(page))
                for _ in range(200):  # subscribed, and the version seen once
                    if server.feed is not None and server.feed.subscribers == 1:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                clis.forget(job_id)
                assert "event: changed" in await asyncio.wait_for(waiting, 5)
        finally:
            await server.close()
    finally:
        clis.close()
        daemons.close()


async def test_a_banner_that_no_ledger_write_announces_reaches_an_open_page(ledger) -> None:
    """A notifier starting to fail is the notifications' own write: looked at while pages are
    open."""
    source = StaticSource(ledger)
    server = WebServer(WebConfig(listen="127.0.0.1:0"), source, interval=0.02, others_every=0.05)
    await server.start()
    try:
        async with client(server) as c, c.stream("GET", "/events") as page:
            waiting = asyncio.create_task(_first_event(page))
            await asyncio.sleep(0.3)  # subscribed, and the banners seen once
            assert not waiting.done()
            source.problems.append("NOTIFIER hooks.example failing: HTTP 500")
            assert "event: changed" in await asyncio.wait_for(waiting, 5)
            assert "banner-notify" in (await c.get("/fragments/queue")).text
    finally:
        await server.close()
