"""The vendored scripts are the pinned releases, and are served from the package."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from tests.web.helpers import StaticSource, serve
from watchd.web import app

STATIC = Path(app.__file__).parent / "static"
PINNED = {
    "htmx.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    "htmx-ext-sse.js": "3b5992a541619babefc4c169505af474df5c3039da51e59b96ccf9241ecd61d2",
}


def test_vendored_scripts_match_their_recorded_hashes() -> None:
    recorded = (STATIC / "VENDORED.md").read_text()
    for name, digest in PINNED.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest
        assert digest in recorded and name in recorded
    assert app.HTMX_VERSION in recorded


async def test_static_files_are_served_with_their_types() -> None:
    async with (
        serve(StaticSource(None)) as server,
        httpx.AsyncClient(base_url=server.url.rstrip("/")) as c,
    ):
        js = await c.get("/static/htmx.min.js")
        css = await c.get("/static/app.css")
        outside = await c.get("/static/../app.py")
        page = await c.get("/")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert js.headers["X-Content-Type-Options"] == "nosniff"
    assert js.headers["Cache-Control"] == "max-age=86400"
    assert page.headers["Cache-Control"] == "no-store"
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert outside.status_code in (403, 404)
    assert page.status_code == 503  # no ledger open yet
