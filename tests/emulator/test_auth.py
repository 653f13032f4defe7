"""Auth (§1, §3.1), /me, health and the envelope, over real loopback HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api
from watchd.clock import FakeClock
from watchd.emulator import Emulator, Variants
from watchd.emulator.auth import TokenError, TokenIssuer, password_problem


def _login(http: httpx.Client, email: str, password: str) -> httpx.Response:
    return http.post("/v1/auth/login", json={"email": email, "password": password})


def test_login_returns_tokens_and_user(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.api_url) as http:
        r = _login(http, emu.seed_email, emu.seed_password)
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["access"].startswith("eyJ") and data["refresh"].startswith("eyJ")
    assert data["user"]["email"] == emu.seed_email
    assert set(data["user"]) >= {"id", "email", "first_name", "last_name"}


def test_bad_password_is_401_in_the_error_envelope(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.api_url) as http:
        r = _login(http, emu.seed_email, "Wrong-pass-1")
    assert r.status_code == 401
    assert r.json() == {"error": "Invalid email or password", "code": 401}


def test_me_lists_workspaces_like_the_quickstart_reads_them(api: Api) -> None:
    r = api.get("/v1/me", ws=False)
    data = r.json()["data"]
    assert set(data) >= {"id", "email", "first_name", "last_name", "workspaces"}
    ws = data["workspaces"][0]
    assert ws["id"] == api.emu.workspace_id
    assert ws["name"] == "Demo" and ws["role"] == "OWNER" and ws["tier"] == "PROFESSIONAL"


def test_me_without_the_tier_variant_leaves_tier_and_minutes_out(make_emu: MakeEmu) -> None:
    emu = make_emu(variants=Variants(me_tier=False))
    with Api(emu) as api:
        api.login()
        (ws,) = api.get("/v1/me", ws=False).json()["data"]["workspaces"]
        assert ws["id"] == emu.workspace_id and ws["role"] == "OWNER"
        assert "tier" not in ws and "minutes_left" not in ws
        # Live: the next /me tells the tier again.
        emu.update(variants=Variants(me_tier=True))
        (ws,) = api.get("/v1/me", ws=False).json()["data"]["workspaces"]
        assert ws["tier"] == "PROFESSIONAL"


def test_missing_invalid_and_expired_tokens_are_401(make_emu: MakeEmu) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, access_ttl=60)
    with Api(emu) as api:
        assert api.http.get("/v1/me").status_code == 401
        r = api.http.get("/v1/me", headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401 and r.json()["code"] == 401
        r = api.http.get("/v1/me", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        api.login()
        assert api.get("/v1/me", ws=False).status_code == 200
        clock.advance(61)
        r = api.get("/v1/me", ws=False)
        assert r.status_code == 401
        assert "expired" in r.json()["error"]


def test_refresh_gives_a_new_access_token_and_logout_blacklists(api: Api) -> None:
    r = api.http.post("/v1/auth/refresh", json={"refresh": api.refresh})
    assert r.status_code == 200
    assert set(r.json()["data"]) == {"access"}
    api.token = r.json()["data"]["access"]
    assert api.get("/v1/me", ws=False).status_code == 200
    # An access token is not a refresh token.
    assert api.http.post("/v1/auth/refresh", json={"refresh": api.token}).status_code == 401
    r = api.post("/v1/auth/logout", ws=False, json={"refresh": api.refresh})
    assert r.status_code == 200 and r.json()["data"] == {"ok": True}
    assert api.http.post("/v1/auth/refresh", json={"refresh": api.refresh}).status_code == 401
    assert api.http.post("/v1/auth/logout", json={"refresh": api.refresh}).status_code == 401


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Short1", "at least 8"),
        ("alllower1", "uppercase"),
        ("ALLUPPER1", "lowercase"),
        ("NoDigitsHere", "digit"),
    ],
)
def test_register_enforces_password_rules(emu: Emulator, password: str, problem: str) -> None:
    with httpx.Client(base_url=emu.api_url) as http:
        r = http.post("/v1/auth/register", json={"email": "n@example.com", "password": password})
    assert r.status_code == 400
    assert problem in r.json()["error"]


def test_register_creates_an_owner_with_a_workspace_of_their_own(emu: Emulator) -> None:
    body = {"email": "New@Example.com", "password": "Good-pass-9", "first_name": "Ana"}
    with httpx.Client(base_url=emu.api_url) as http:
        r = http.post("/v1/auth/register", json=body)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert set(data) == {"access", "refresh", "user"}
        assert data["user"]["first_name"] == "Ana"
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {data['access']}"}).json()
        dup = http.post("/v1/auth/register", json={**body, "email": "new@example.com"})
        bad_email = http.post("/v1/auth/register", json={**body, "email": "nope"})
    workspaces = me["data"]["workspaces"]
    assert len(workspaces) == 1 and workspaces[0]["role"] == "OWNER"
    assert workspaces[0]["id"] != emu.workspace_id
    assert dup.status_code in (400, 409) and "exists" in dup.json()["error"]
    assert bad_email.status_code == 400


def test_login_rate_limit_per_email_with_retry_after(make_emu: MakeEmu) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock)
    with httpx.Client(base_url=emu.api_url) as http:
        codes = [_login(http, emu.seed_email, "Wrong-pass-1").status_code for _ in range(5)]
        limited = _login(http, emu.seed_email, emu.seed_password)
        other_email = _login(http, "someone@example.com", "Wrong-pass-1")
        clock.advance(60)
        after = _login(http, emu.seed_email, emu.seed_password)
    assert codes == [401] * 5
    assert limited.status_code == 429
    assert limited.json()["code"] == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert other_email.status_code == 401  # per email: another address is not limited yet
    assert after.status_code == 200


def test_login_rate_limit_per_ip(make_emu: MakeEmu) -> None:
    emu = make_emu()
    with httpx.Client(base_url=emu.api_url) as http:
        codes = [_login(http, f"u{i}@example.com", "Wrong-pass-1").status_code for i in range(11)]
    assert codes == [401] * 10 + [429]


def test_register_rate_limit_and_switching_limits_off(make_emu: MakeEmu) -> None:
    limited = make_emu()
    unlimited = make_emu(auth_rate_limits=False)
    for emu, expected in ((limited, [200, 200, 200, 429]), (unlimited, [200] * 4)):
        with httpx.Client(base_url=emu.api_url) as http:
            codes = [
                http.post(
                    "/v1/auth/register",
                    json={"email": f"user{i}@example.com", "password": "Good-pass-9"},
                ).status_code
                for i in range(4)
            ]
        assert codes == expected


def test_password_reset_is_always_ok_and_confirm_sets_the_password(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.api_url) as http:
        unknown = http.post("/v1/auth/password-reset", json={"email": "ghost@example.com"})
        known = http.post("/v1/auth/password-reset", json={"email": emu.seed_email})
        assert unknown.json() == known.json() == {"data": {"ok": True}}
        token = emu.snapshot()["password_resets"][0]["token"]
        weak = http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "x"}
        )
        assert weak.status_code == 400
        r = http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "New-pass-77"}
        )
        assert r.status_code == 200
        assert _login(http, emu.seed_email, "New-pass-77").status_code == 200
        again = http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "New-pass-78"}
        )
        assert again.status_code == 400


def test_health_is_public_and_unknown_routes_are_404_envelopes(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.api_url) as http:
        health = http.get("/v1/health")
        missing = http.get("/v1/nothing-here")
        outside = httpx.get(emu.api_url.removesuffix("/api") + "/elsewhere")
        wrong_method = http.delete("/v1/health")
    assert health.status_code == 200 and health.json()["data"]["status"] == "ok"
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found", "code": 404}
    assert outside.status_code == 404 and outside.json()["code"] == 404
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 405


def test_patch_me(api: Api) -> None:
    r = api.request("PATCH", "/v1/me", ws=False, json={"first_name": "Zoe"})
    assert r.status_code == 200 and r.json()["data"]["first_name"] == "Zoe"


# ---- units -------------------------------------------------------------------------------------


def test_jwt_round_trip_and_tampering() -> None:
    issuer = TokenIssuer(b"k" * 32)
    token = issuer.issue("u1", "access", now=1000.0, ttl=60)
    assert issuer.check(token, "access", now=1059.0).user_id == "u1"
    with pytest.raises(TokenError):
        issuer.check(token, "access", now=1060.0)
    with pytest.raises(TokenError):
        issuer.check(token, "refresh", now=1000.0)
    head, payload, sig = token.split(".")
    with pytest.raises(TokenError):
        issuer.check(f"{head}.{payload}x.{sig}", "access", now=1000.0)
    with pytest.raises(TokenError):
        TokenIssuer(b"other" * 8).check(token, "access", now=1000.0)


def test_password_rules() -> None:
    assert password_problem("Good-pass-9") is None
    assert password_problem(None) is not None
