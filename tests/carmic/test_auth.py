"""Auth through the client: login, cached tokens, refresh then re-login, single-flight, pacing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.carmic.fakeapi import EMAIL, PASSWORD, WS_ID, FakeApi, err, make_client, ok
from watchd.carmic.auth import Session, token_lifetime
from watchd.carmic.errors import AuthError, RateLimited, TransientError
from watchd.carmic.retry import RetryPolicy
from watchd.clock import FakeClock


def _api_with_status_route() -> FakeApi:
    api = FakeApi()
    api.routes[("GET", "/v1/projects/p1/status")] = lambda r: ok({"status": "PROCESSING"})
    return api


async def test_login_once_then_tokens_and_workspace_on_every_call() -> None:
    api = _api_with_status_route()
    async with make_client(api) as client:
        await client.project_status("p1")
        await client.project_status("p1")
    assert api.logins == 1
    me, s1, s2 = api.log[1:]
    assert me.url.path == "/api/v1/me" and "X-Workspace-ID" not in me.headers
    for r in (s1, s2):
        assert r.headers["Authorization"] == "Bearer access-1"
        assert r.headers["X-Workspace-ID"] == WS_ID
    login = api.log[0]
    assert "Authorization" not in login.headers
    assert login.headers["Content-Type"] == "application/json"


async def test_expired_access_token_is_refreshed_once() -> None:
    api = _api_with_status_route()
    async with make_client(api) as client:
        await client.project_status("p1")
        api.expire_all()
        st = await client.project_status("p1")
    assert st.status == "PROCESSING"
    assert (api.logins, api.refreshes) == (1, 1)
    assert api.log[-1].headers["Authorization"] == "Bearer access-2"


async def test_refused_refresh_falls_back_to_login() -> None:
    api = _api_with_status_route()
    async with make_client(api) as client:
        await client.project_status("p1")
        api.expire_all()
        api.refresh_allowed = False
        await client.project_status("p1")
    assert (api.logins, api.refreshes) == (2, 1)


async def test_refresh_that_does_not_help_leads_to_login_then_auth_error() -> None:
    """Refresh succeeds but the server still says 401: log in again; still 401: give up."""
    api = _api_with_status_route()
    api.routes[("GET", "/v1/projects/p1/status")] = lambda r: err(401, "Token revoked")
    async with make_client(api) as client:
        with pytest.raises(AuthError, match="still refuses our token") as ei:
            await client.project_status("p1")
    assert ei.value.status == 401
    assert (api.logins, api.refreshes) == (2, 1)
    assert api.count("GET", "/v1/projects/p1/status") == 3


async def test_concurrent_401s_cause_a_single_refresh() -> None:
    api = _api_with_status_route()
    async with make_client(api) as client:
        await client.project_status("p1")
        api.expire_all()
        results = await asyncio.gather(*(client.project_status("p1") for _ in range(10)))
    assert all(r.status == "PROCESSING" for r in results)
    assert api.refreshes == 1
    assert api.logins == 1


async def test_concurrent_first_calls_log_in_once() -> None:
    api = _api_with_status_route()
    async with make_client(api) as client:
        await asyncio.gather(*(client.project_status("p1") for _ in range(10)))
    assert api.logins == 1
    assert api.count("GET", "/v1/me") == 1


async def test_bad_credentials_give_a_clear_auth_error_without_the_password() -> None:
    api = _api_with_status_route()
    api.password = "something-else"
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        with pytest.raises(AuthError) as ei:
            await client.project_status("p1")
        text = str(ei.value)
        assert EMAIL in text and "password" in text.lower()
        assert PASSWORD not in text
        assert "Invalid email or password" in text
        # The same password will fail again: no second login inside the cooldown.
        with pytest.raises(AuthError):
            await client.project_status("p1")
        assert api.logins == 1
        clock.advance(61)
        with pytest.raises(AuthError):
            await client.project_status("p1")
        assert api.logins == 2
    assert all(PASSWORD not in repr(r.headers) for r in api.log[1:])


async def test_logins_are_paced() -> None:
    """Every call needs a fresh login (refresh refused, tokens expire at once): the 4th login
    within a minute waits for the window instead of hitting the server's 5/min limit."""
    api = _api_with_status_route()
    api.refresh_allowed = False
    clock = FakeClock()
    api.clock = clock
    async with make_client(api, clock=clock, logins_per_minute=3) as client:
        for _ in range(4):
            await client.project_status("p1")
            api.expire_all()
    t = api.login_times
    assert len(t) == 4
    assert t[2] - t[0] < 1
    assert t[3] - t[0] >= 60


async def test_login_429_waits_retry_after_then_succeeds() -> None:
    api = _api_with_status_route()
    clock = FakeClock()
    answers = [err(429, "Too many login attempts", **{"Retry-After": "42"})]

    def login(request: httpx.Request) -> httpx.Response:
        if answers:
            return answers.pop()
        api.login_override = None
        return api._login(request)

    api.login_override = login
    limited: list[tuple[str, float | None]] = []
    async with make_client(
        api, clock=clock, on_rate_limited=lambda e, ra: limited.append((e, ra))
    ) as client:
        await client.project_status("p1")
    assert 42 in clock.sleeps
    assert limited == [("/v1/auth/login", 42.0)]


async def test_login_429_beyond_patience_raises_rate_limited() -> None:
    api = _api_with_status_route()
    api.login_override = lambda r: err(429, "slow down", **{"Retry-After": "3600"})
    async with make_client(api) as client:
        with pytest.raises(RateLimited) as ei:
            await client.project_status("p1")
    assert ei.value.retry_after == 3600


def _fail_logins(api: FakeApi, failures: list[Exception]) -> None:
    """The login raises each of ``failures`` in turn, then answers as usual."""

    def login(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        api.login_override = None
        return api._login(request)

    api.login_override = login


async def test_login_network_error_is_transient_and_retried() -> None:
    api = _api_with_status_route()
    _fail_logins(api, [httpx.ConnectError("connection refused")])
    async with make_client(api) as client:
        st = await client.project_status("p1")
    assert st.status == "PROCESSING"


async def test_login_answer_without_token_is_a_server_error() -> None:
    api = _api_with_status_route()
    api.login_override = lambda r: ok({"user": {}})
    async with make_client(api) as client:
        with pytest.raises(TransientError, match="no access token"):
            await client.project_status("p1")


async def test_secret_wrapper_is_revealed_only_for_login() -> None:
    class Secret:
        def __init__(self, value: str) -> None:
            self._v = value

        def reveal(self) -> str:
            return self._v

        def __repr__(self) -> str:
            return "Secret(***)"

    sent: list[dict[str, str]] = []

    async def post(route: str, body: dict[str, str]) -> dict[str, str]:
        sent.append(body)
        return {"access": "a", "refresh": "r"}

    s = Session(EMAIL, Secret("pw-123456"), post=post, clock=FakeClock())
    assert await s.token() == "a"
    assert sent == [{"email": EMAIL, "password": "pw-123456"}]
    assert "pw-123456" not in repr(s)


async def test_rotating_refresh_tokens_are_kept() -> None:
    calls: list[tuple[str, dict[str, str]]] = []
    answers = iter(
        [{"access": "a1", "refresh": "r1"}, {"access": "a2", "refresh": "r2"}, {"access": "a3"}]
    )

    async def post(route: str, body: dict[str, str]) -> dict[str, str]:
        calls.append((route, body))
        return next(answers)

    s = Session(EMAIL, "pw-123456", post=post, clock=FakeClock())
    await s.token()
    assert await s.recover("a1") == "a2"
    assert await s.recover("a2") == "a3"
    assert calls[1] == ("/v1/auth/refresh", {"refresh": "r1"})
    assert calls[2] == ("/v1/auth/refresh", {"refresh": "r2"})
    # A stale failure after someone else refreshed: no call, the newer token.
    assert await s.recover("a1") == "a3"
    assert len(calls) == 3


# ---- refresh ahead of expiry ---------------------------------------------------------------


async def test_a_jwt_is_refreshed_ahead_of_its_expiry_without_a_401() -> None:
    api = _api_with_status_route()
    api.jwt_lifetime = 100
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        await client.project_status("p1")
        clock.advance(79)
        await client.project_status("p1")
        assert api.refreshes == 0  # still young
        clock.advance(2)  # past 80 % of its lifetime
        await client.project_status("p1")
        assert api.refreshes == 1
        clock.advance(79)  # the new token is 79 s old: young again
        await client.project_status("p1")
    assert (api.logins, api.refreshes) == (1, 1)
    assert api.count("GET", "/v1/projects/p1/status") == 4  # no call was refused and repeated


async def test_a_failed_refresh_ahead_keeps_the_token_until_a_401() -> None:
    api = _api_with_status_route()
    api.jwt_lifetime = 100
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        await client.project_status("p1")
        first = api.log[-1].headers["Authorization"]
        api.refresh_allowed = False
        clock.advance(90)
        await client.project_status("p1")  # the refresh is refused: the old token still works
        assert api.log[-1].headers["Authorization"] == first
    assert (api.logins, api.refreshes) == (1, 1)


def test_token_lifetime_reads_jwt_claims_only() -> None:
    api = FakeApi()
    api.jwt_lifetime = 300
    access, _ = api._issue()
    assert token_lifetime(access) == 300
    assert token_lifetime("access-1") is None
    assert token_lifetime("a.b.c") is None
    assert token_lifetime("a.e30.c") is None  # {} has no exp/iat


async def test_failed_connections_do_not_use_up_the_login_pace() -> None:
    """An API that cannot be reached is asked again at the retry policy's pace: the logins that
    never reached it do not make the next one wait for the login window."""
    api = _api_with_status_route()
    _fail_logins(api, [httpx.ConnectError("connection refused") for _ in range(4)])
    clock = FakeClock()
    async with make_client(api, clock=clock, retry=RetryPolicy(attempts=8, base=1, jitter=0)) as c:
        st = await c.project_status("p1")
    assert st.status == "PROCESSING"
    # Only the retry policy's pauses: no wait for the login window (3 a minute) in between.
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]


def test_a_token_given_back_is_free_again() -> None:
    from watchd.carmic.pacing import TokenBucket

    bucket = TokenBucket(1, clock=FakeClock())
    assert bucket.try_acquire() and bucket.wait_time() > 0
    bucket.give_back()
    assert bucket.wait_time() == 0
