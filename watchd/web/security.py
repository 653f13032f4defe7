"""The dashboard's guard: every request passes the Host allowlist (against DNS rebinding), every
answer carries strict security headers, and every POST proves it comes from the token holder
(``Authorization: Bearer``) or from the dashboard page itself (its CSRF token, and an
``Origin``, when sent, of the dashboard's own).

When the dashboard listens on an address other than loopback, pages and answers need the token
too: a bearer header, or the cookie the ``/login`` form sets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "watchd_session"
# No inline script or style; htmx reads its settings from a <meta> tag.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it a browser sends "Origin: null" on the page's own POSTs.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
OPEN_PATHS = ("/login", "/static/")  # reachable without the token on a non-loopback bind


def allowed_hosts(listen_host: str, port: int) -> frozenset[str]:
    """The ``Host`` values accepted: the listen address, ``localhost`` and the loopback
    addresses, each with the port."""
    names = {listen_host, "localhost", "127.0.0.1", "[::1]"}
    if ":" in listen_host and not listen_host.startswith("["):
        names.add(f"[{listen_host}]")
    return frozenset(f"{n.lower()}:{port}" for n in names)


@dataclass
class Guard:
    hosts: frozenset[str]
    token: str | None = None
    pages_need_token: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def host_ok(self, request: web.Request) -> bool:
        host = request.headers.get("Host", "").strip().lower()
        return host in self.hosts

    def bearer_ok(self, request: web.Request) -> bool | None:
        """True/False for a bearer header with the right/wrong token; None without one."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def token_ok(self, sent: str) -> bool:
        """``sent`` is the token (compared in constant time); never without a token_file."""
        if self.token is None:
            return False
        return hmac.compare_digest(sent.encode(), self.token.encode())

    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"watchd-web-session", hashlib.sha256).hexdigest()

    def session_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return False
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())

    def same_origin(self, request: web.Request) -> bool:
        """An ``Origin`` (or, without it, a ``Referer``) naming another site is refused; a
        request naming neither passes on its CSRF token alone."""
        for name in ("Origin", "Referer"):
            value = request.headers.get(name)
            if value is None:
                continue
            if value == "null":
                return False
            parts = urlsplit(value)
            return parts.scheme in ("http", "https") and parts.netloc.lower() in self.hosts
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")

    async def csrf_ok(self, request: web.Request) -> bool:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if not sent:
            return False
        return hmac.compare_digest(sent.encode(), self.csrf.encode()) and self.same_origin(request)


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


def _open(path: str, extra: Iterable[str] = OPEN_PATHS) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in extra)


def guard_middleware(guard: Guard) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _checked(guard, request, handler)
        except web.HTTPException as e:  # a 404 or 503 raised by a handler: headers too
            response = web.Response(status=e.status, body=e.body, headers=e.headers)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # The pages change all the time; the static files only with a release (their links
        # carry the version).
        static = request.path.startswith("/static/") and response.status == 200
        response.headers.setdefault("Cache-Control", "max-age=86400" if static else "no-store")
        return response

    return middleware


async def _checked(guard: Guard, request: web.Request, handler: Handler) -> web.StreamResponse:
    if not guard.host_ok(request):
        return _refuse(403, "403: this Host is not the dashboard's address (DNS rebinding guard)")
    bearer = guard.bearer_ok(request)
    if bearer is False:
        return _refuse(401, "401: wrong bearer token")
    authed = bearer is True or guard.session_ok(request)
    if guard.pages_need_token and not authed and not _open(request.path):
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            return web.Response(status=303, headers={"Location": "/login"})
        return _refuse(401, "401: the dashboard needs its token (Authorization: Bearer ...)")
    changes = request.method not in ("GET", "HEAD", "OPTIONS") and request.path != "/login"
    if changes and not (bearer is True or await guard.csrf_ok(request)):
        return _refuse(
            403,
            "403: a change needs the dashboard page's CSRF token or Authorization: Bearer <token>",
        )
    return await handler(request)
