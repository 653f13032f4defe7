"""A routing function that plays the Carmic API for ``httpx.MockTransport`` (httpx's own style).

``FakeApi`` issues and checks tokens like the real service (login, refresh, 401 on a stale
token, 403 without ``X-Workspace-ID``) and dispatches the rest to per-test route handlers, so a
test states only the behaviour it is about.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

import httpx

from watchd.carmic.client import CarmicClient
from watchd.carmic.retry import RetryPolicy
from watchd.clock import FakeClock

API = "https://api.test/api"
EMAIL = "svc@example.com"
PASSWORD = "Sup3r-secret-pw"
WS_ID = "11111111-2222-3333-4444-555555555555"
WS2_ID = "99999999-8888-7777-6666-555555555555"

Route = Callable[[httpx.Request], httpx.Response]


def ok(
    data: Any, *, status: int = 200, meta: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    body: dict[str, Any] = {"data": data}
    if meta is not None:
        body["meta"] = meta
    return httpx.Response(status, json=body, headers=headers)


def err(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message, "code": status}, headers=headers)


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


class FakeApi:
    """The API origin. ``routes[(method, path)]`` answers authorised, workspace-checked calls
    (path relative to ``/api``); ``log`` records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.log: list[httpx.Request] = []
        self.logins = 0
        self.refreshes = 0
        self.valid_access: set[str] = set()
        self.valid_refresh: set[str] = set()
        self.password = PASSWORD
        self.workspaces = [
            {"id": WS_ID, "name": "Studio", "role": "OWNER", "tier": "BUSINESS"},
            {"id": WS2_ID, "name": "Archive", "role": "EDITOR", "tier": "FREE"},
        ]
        self.refresh_allowed = True
        self.login_override: Route | None = None
        self.clock: FakeClock | None = None  # when set, login_times records each login
        self.login_times: list[float] = []
        self.ticket_shape = "data"  # "data": {"data": {"ticket"}}; "bare": {"ticket"}
        self.tickets: dict[str, bool] = {}  # ticket -> used
        self._n = 0
        self.jwt_lifetime: int | None = None  # when set, access tokens are JWT-shaped

    # ---- token machinery ---------------------------------------------------------------

    def _issue(self) -> tuple[str, str]:
        self._n += 1
        access, refresh = f"access-{self._n}", f"refresh-{self._n}"
        if self.jwt_lifetime is not None:
            claims = {"sub": "u1", "n": self._n, "iat": 1_700_000_000}
            claims["exp"] = claims["iat"] + self.jwt_lifetime
            payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            access = f"eyJhbGciOiJIUzI1NiJ9.{payload}.sig"
        self.valid_access.add(access)
        self.valid_refresh.add(refresh)
        return access, refresh

    def expire_all(self) -> None:
        """Every access token issued so far stops working (they all expired)."""
        self.valid_access.clear()

    def _login(self, request: httpx.Request) -> httpx.Response:
        self.logins += 1
        if self.clock is not None:
            self.login_times.append(self.clock.monotonic())
        if self.login_override is not None:
            return self.login_override(request)
        body = body_of(request)
        if body.get("email") != EMAIL or body.get("password") != self.password:
            return err(401, "Invalid email or password")
        access, refresh = self._issue()
        return ok({"access": access, "refresh": refresh, "user": {"id": "u1", "email": EMAIL}})

    def _refresh(self, request: httpx.Request) -> httpx.Response:
        self.refreshes += 1
        token = body_of(request).get("refresh")
        if not self.refresh_allowed or token not in self.valid_refresh:
            return err(401, "Token is invalid or expired")
        access, _ = self._issue()
        return ok({"access": access})

    # ---- dispatch ------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        path = request.url.path.removeprefix("/api")
        key = (request.method, path)
        if key == ("POST", "/v1/auth/login"):
            return self._login(request)
        if key == ("POST", "/v1/auth/refresh"):
            return self._refresh(request)
        if key == ("GET", "/v1/health"):
            return self.routes[key](request) if key in self.routes else ok({"status": "ok"})
        if path.endswith("/stream"):
            # SSE is ticket-auth (EventSource cannot send headers): the route checks the ticket.
            return self._route(key, request)
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_access:
            return err(401, "Missing or invalid JWT")
        if key == ("GET", "/v1/me"):
            return self.routes[key](request) if key in self.routes else ok(self.me())
        if request.headers.get("X-Workspace-ID") not in {w["id"] for w in self.workspaces}:
            return err(403, "Workspace context required (X-Workspace-ID)")
        if key == ("POST", "/v1/sse-ticket") and key not in self.routes:
            return self._ticket()
        return self._route(key, request)

    def _route(self, key: tuple[str, str], request: httpx.Request) -> httpx.Response:
        handler = self.routes.get(key)
        if handler is None:
            return err(404, f"no route {key}")
        return handler(request)

    def _ticket(self) -> httpx.Response:
        self._n += 1
        ticket = f"tk-{self._n}"
        self.tickets[ticket] = False
        if self.ticket_shape == "bare":
            return httpx.Response(200, json={"ticket": ticket})
        return ok({"ticket": ticket})

    def take_ticket(self, request: httpx.Request) -> bool:
        """Is the request's ``?ticket=`` one we issued and not used yet? (It is now used.)"""
        ticket = request.url.params.get("ticket", "")
        if self.tickets.get(ticket, True):
            return False
        self.tickets[ticket] = True
        return True

    def me(self) -> dict[str, Any]:
        return {
            "id": "u1",
            "email": EMAIL,
            "first_name": "",
            "last_name": "",
            "workspaces": self.workspaces,
        }

    def count(self, method: str, path: str) -> int:
        return sum(
            1 for r in self.log if r.method == method and r.url.path.removeprefix("/api") == path
        )


def make_client(
    api: Callable[[httpx.Request], httpx.Response],
    *,
    storage: Callable[[httpx.Request], httpx.Response] | None = None,
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    **kwargs: Any,
) -> CarmicClient:
    """A client over MockTransports, with a FakeClock and a seeded, jitter-free retry policy."""
    return CarmicClient(
        API,
        EMAIL,
        PASSWORD,
        kwargs.pop("workspace", ""),
        http=httpx.AsyncClient(transport=httpx.MockTransport(api)),
        storage_http=httpx.AsyncClient(
            transport=httpx.MockTransport(storage or (lambda r: httpx.Response(500)))
        ),
        clock=clock or FakeClock(),
        retry=retry or RetryPolicy(attempts=4, base=1, factor=2, jitter=0),
        rng=random.Random(0),
        **kwargs,
    )
