"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
``watchd run`` and the emulator: a job moves through its states live, thumbnails load, the 402
banner comes and goes with a top-up and a retry from the page, forget from the page, a page
from another origin cannot retry, a foreign Host is refused. Screenshots are saved as test
artefacts (``$WATCHD_ARTEFACTS``, else pytest's temporary folder); with
``WATCHD_SCREENSHOT_DOCS=1`` the queue's is also written to ``docs/dashboard.png``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from playwright.sync_api import Error as PlaywrightError

from tests.e2e.harness import REPO, Env, wait_for

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path(os.environ.get("WATCHD_CHROMIUM", "/usr/bin/chromium"))
RULE = {"video_type": "podcast", "render": {"min_score": 0, "max_clips": 2}}
UNTIL = 90_000  # ms: how long a page may take to show what the daemon did


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make sysdeps` installs Debian's chromium")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("WATCHD_ARTEFACTS")
    path = Path(where) if where else tmp_path_factory.getbasetemp() / "artefacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_with_dashboard(env: Env) -> str:
    """Run the daemon with ``[web] listen`` on a free loopback port; the dashboard's URL."""
    cfg = tomllib.loads(env.config_path.read_text())
    cfg["web"] = {"listen": "127.0.0.1:0"}
    env.config_path.write_bytes(tomli_w.dumps(cfg).encode())
    env.start()
    found = wait_for(
        lambda: re.search(r"dashboard at (http://127\.0\.0\.1:\d+/)", env.log()),
        timeout=30,
        what="the dashboard's URL in the log",
    )
    return found.group(1)


class Page:
    """A browser tab on the dashboard that records console errors (a CSP violation is one)
    and every state a job's row showed."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 400})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        # Loaded once: a reload would drop this marker.
        self.page.evaluate(
            """() => {
                window.__loadedOnce = true;
                window.__seen = [];
                const note = () => document.querySelectorAll('tr.job').forEach(r => {
                    const s = r.dataset.state;
                    if (window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
                });
                new MutationObserver(note).observe(document.body, {subtree: true, childList: true});
                note();
            }"""
        )

    def seen(self) -> list[str]:
        return list(self.page.evaluate("() => window.__seen"))

    def not_reloaded(self) -> bool:
        return bool(self.page.evaluate("() => window.__loadedOnce === true"))

    def row_state(self, state: str) -> None:
        self.page.wait_for_selector(f'tr.job[data-state="{state}"]', timeout=UNTIL)

    def close(self) -> None:
        self.context.close()


def test_the_queue_follows_a_file_live(
    env: Env, sample_videos: list[Path], browser: Any, artefacts: Path
) -> None:
    # Slow enough that processing and rendering each last several live updates (0.25 s).
    env.emu.update(timings={"step": 0.3, "render": 0.8, "export": 0.2})
    env.write_config({"podcasts": RULE})
    url = start_with_dashboard(env)
    tab = Page(browser, url)
    page = tab.page
    assert "No jobs yet" in page.inner_text("#live")

    env.drop(sample_videos[0], "podcasts/episode-12.mp4")
    tab.row_state("processing")
    page.screenshot(path=str(artefacts / "dashboard-processing.png"))
    tab.row_state("delivered")
    seen = tab.seen()
    assert seen[-1] == "delivered" and len(seen) >= 4, seen
    assert {"processing", "rendering"} <= set(seen), seen
    assert tab.not_reloaded(), "the page reloaded instead of updating live"
    assert "episode-12.mp4" in page.inner_text("tr.job")

    # A second file, in the inbox's root rule; then each row's first-clip thumbnail loads.
    env.drop(sample_videos[2], "interview take 2.mp4")
    page.wait_for_function(
        "() => { const rows = [...document.querySelectorAll('tr.job')];"
        " return rows.length === 2 && rows.every(r => r.dataset.state === 'delivered'"
        " && r.querySelector('img.thumb') && r.querySelector('img.thumb').complete"
        " && r.querySelector('img.thumb').naturalWidth > 0); }",
        timeout=UNTIL,
    )
    assert page.inner_text("tr.job").strip().startswith("interview take 2.mp4")  # newest first
    page.screenshot(path=str(artefacts / "dashboard.png"), full_page=True)
    if os.environ.get("WATCHD_SCREENSHOT_DOCS") == "1":
        shutil.copyfile(artefacts / "dashboard.png", REPO / "docs" / "dashboard.png")

    # The job's page: its clips as cards with their thumbnails, its events, its manifest.
    page.click("tr.job a")
    page.wait_for_selector("article.card img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('article.card img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    text = page.inner_text("main")
    assert "processing → clips_ready" in text and "Manifest" in text and "Forget" in text
    page.screenshot(path=str(artefacts / "dashboard-job.png"), full_page=True)
    assert tab.errors == []

    # Without script the buttons are plain forms: Forget posts (with the page's CSRF token and
    # its own Origin) and lands back on the queue, one job fewer. (The job page's live feed may
    # get there first: told the job is gone, it goes to the queue itself.)
    page.evaluate("() => document.querySelector('form.act').submit()")
    # The two navigations race: the one that loses is aborted (net::ERR_ABORTED), and both end
    # on the queue. Wait again after an abort: where the page lands is what counts.
    for attempt in range(3):
        try:
            page.wait_for_url(url, timeout=UNTIL)
            break
        except PlaywrightError:
            if attempt == 2:
                raise
    page.wait_for_selector("tr.job")
    assert "interview take 2.mp4" not in page.inner_text("#live")
    assert [j["source"] for j in env.status()] == ["podcasts/episode-12.mp4"]
    tab.close()

    # On a phone, in the dark theme the system asks for.
    phone = browser.new_context(viewport={"width": 390, "height": 700}, color_scheme="dark")
    small = phone.new_page()
    small.goto(url)
    small.wait_for_selector("tr.job img.thumb")
    background = small.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(19, 20, 23)", background
    small.screenshot(path=str(artefacts / "dashboard-phone-dark.png"), full_page=True)
    phone.close()

    # The API answers what `watchd status --json` prints; a foreign Host is refused.
    assert httpx.get(url + "api/jobs").json() == env.status()
    evil = httpx.get(url, headers={"Host": "evil.example"})
    assert evil.status_code == 403 and "episode-12" not in evil.text
    assert env.stop() == 0


class _EvilSite:
    """A page from another origin that tries to make the dashboard retry a job: a form that
    posts itself and a fetch()."""

    def __init__(self, target: str) -> None:
        body = f"""<!doctype html><html><body>
<form method="post" action="{target}"><input name="csrf_token" value="guessed"></form>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", headers: {{"X-CSRF-Token": "guessed"}}}})
  .finally(() => document.forms[0].submit());
</script></body></html>""".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, name="evil-site")

    def __enter__(self) -> _EvilSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_billing_banner_retry_and_forget_from_the_page(
    env: Env, sample_videos: list[Path], browser: Any, artefacts: Path
) -> None:
    env.emu.update(minutes=0)  # the create is refused with 402: the job parks
    env.write_config({"podcasts": RULE})
    url = start_with_dashboard(env)
    tab = Page(browser, url)
    page = tab.page
    env.drop(sample_videos[1], "podcasts/out-of-minutes.mp4")
    page.wait_for_selector(".banner-billing", timeout=UNTIL)
    tab.row_state("parked")
    assert "402" in page.inner_text(".banner-billing")
    page.screenshot(path=str(artefacts / "dashboard-billing.png"))
    (job,) = env.status()

    # Another origin cannot retry it: neither its form nor its fetch gets through.
    with _EvilSite(f"{url}api/jobs/{job['id']}/retry") as evil:
        other = browser.new_page()
        with other.expect_navigation(url=re.compile(r"/retry$")):
            other.goto(evil.url)
        assert "403" in other.inner_text("body")
        other.close()
    assert env.status()[0]["state"] == "parked"
    assert "api/jobs" not in "".join(tab.errors)

    env.emu.update(minutes=1000)  # topped up
    page.click("tr.job button.retry")
    page.wait_for_selector(".banner-billing", state="detached", timeout=UNTIL)
    tab.row_state("delivered")
    assert tab.not_reloaded()

    page.on("dialog", lambda d: d.accept())
    page.click("tr.job button.forget")
    page.wait_for_selector("tr.job", state="detached", timeout=UNTIL)
    assert env.status() == []
    assert tab.errors == []
    tab.close()
    assert env.stop() == 0


class _Feed(threading.Thread):
    """The page's live feed, without a browser: counts the ``changed`` events of /events until
    the daemon ends the stream."""

    def __init__(self, url: str) -> None:
        super().__init__(name="dashboard-feed", daemon=True)
        self.url = url
        self.changes = 0
        self.connected = threading.Event()

    def run(self) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.Client(timeout=None) as c,
            c.stream("GET", self.url + "events") as stream,
        ):
            self.connected.set()
            for line in stream.iter_lines():
                if line.startswith("event: changed"):
                    self.changes += 1


def test_a_paused_inbox_shows_as_a_banner_live(env: Env) -> None:
    env.write_config({}, daemon={"rescan_seconds": 1})
    url = start_with_dashboard(env)
    wait_for(lambda: "ready:" in env.log(), timeout=30, what="the daemon ready")
    feed = _Feed(url)
    feed.start()
    assert feed.connected.wait(10)
    fragment = url + "fragments/queue"
    assert "banner-paused" not in httpx.get(fragment).text
    env.inbox.rmdir()  # an unmounted share
    wait_for(lambda: feed.changes, timeout=30, what="a change sent to the open page")

    def banner() -> str | None:
        text = httpx.get(fragment).text
        return text if "banner-paused" in text else None

    text = wait_for(banner, timeout=30, what="the paused banner")
    assert str(env.inbox) in text and "missing" in text
    seen = feed.changes
    env.inbox.mkdir()
    wait_for(lambda: feed.changes > seen, timeout=30, what="the resume sent to the page")
    wait_for(
        lambda: "banner-paused" not in httpx.get(fragment).text,
        timeout=30,
        what="the banner gone",
    )
    assert env.stop() == 0
    feed.join(10)  # the daemon's stop ends the stream
    assert not feed.is_alive()
