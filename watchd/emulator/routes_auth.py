"""Auth (§1, §3.1), the profile (§3.2) and health (§3.12).

Rate limits are exactly those of §1.4 and count every attempt that gets past them, like
Django's throttles; ``auth_rate_limits=False`` switches them off.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from watchd.emulator.auth import TokenError, email_problem, hash_password, password_problem
from watchd.emulator.call import Call, Handler
from watchd.emulator.envelope import ApiError, ok, opt_str
from watchd.emulator.ratelimit import Limit
from watchd.emulator.router import Access, Router
from watchd.emulator.state import User
from watchd.emulator.views import iso

__all__ = ["register"]

REGISTER_LIMIT = Limit(3, 15 * 60)
LOGIN_IP_LIMIT = Limit(10, 60)
LOGIN_EMAIL_LIMIT = Limit(5, 60)
RESET_LIMIT = Limit(3, 3600)


def _rate_limit(call: Call, rule: str, email: Any, ip_limit: Limit, email_limit: Limit) -> None:
    if not call.core.settings.auth_rate_limits:
        return
    checks = [(f"{rule}:ip", call.ip, ip_limit)]
    if isinstance(email, str) and email.strip():
        checks.append((f"{rule}:email", email.strip(), email_limit))
    call.throttle(checks, "Too many requests. Please try again later.")


def _tokens(call: Call, user: User) -> dict[str, Any]:
    s, now = call.core.settings, call.now()
    return {
        "access": call.core.tokens.issue(user.id, "access", now=now, ttl=s.access_ttl),
        "refresh": call.core.tokens.issue(user.id, "refresh", now=now, ttl=s.refresh_ttl),
        "user": user.public(),
    }


async def _register_user(call: Call) -> web.StreamResponse:
    body = await call.json()
    email, password = body.get("email"), body.get("password")
    _rate_limit(call, "register", email, REGISTER_LIMIT, REGISTER_LIMIT)
    problem = email_problem(email) or password_problem(password)
    if problem is not None:
        raise ApiError(400, problem)
    assert isinstance(email, str) and isinstance(password, str)
    state, settings = call.core.state, call.core.settings
    if state.user_by_email(email) is not None:
        raise ApiError(400, "A user with this email already exists")
    user, _ = state.add_user(
        email,
        password,
        now=call.now(),
        tier=settings.new_user_tier or settings.tier,
        minutes=settings.minutes,
        first_name=opt_str(body, "first_name", max_len=150) or "",
        last_name=opt_str(body, "last_name", max_len=150) or "",
    )
    call.core.inspection.count("registers")
    return ok(_tokens(call, user))


async def _login(call: Call) -> web.StreamResponse:
    body = await call.json()
    email, password = body.get("email"), body.get("password")
    _rate_limit(call, "login", email, LOGIN_IP_LIMIT, LOGIN_EMAIL_LIMIT)
    if not isinstance(email, str) or not email.strip():
        raise ApiError(400, "email: field required")
    if not isinstance(password, str) or not password:
        raise ApiError(400, "password: field required")
    user = call.core.state.user_by_email(email)
    if user is None or not user.check_password(password):
        call.core.inspection.count("login_failures")
        raise ApiError(401, "Invalid email or password")
    call.core.inspection.count("logins")
    return ok(_tokens(call, user))


def _refresh_claims(call: Call, body: dict[str, Any]) -> Any:
    token = body.get("refresh")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "refresh: field required")
    try:
        return call.core.tokens.check(token, "refresh", now=call.now())
    except TokenError as e:
        raise ApiError(401, str(e)) from None


async def _refresh(call: Call) -> web.StreamResponse:
    claims = _refresh_claims(call, await call.json())
    if claims.user_id not in call.core.state.users:
        raise ApiError(401, "User not found")
    call.core.inspection.count("refreshes")
    s = call.core.settings
    access = call.core.tokens.issue(claims.user_id, "access", now=call.now(), ttl=s.access_ttl)
    return ok({"access": access})


async def _logout(call: Call) -> web.StreamResponse:
    claims = _refresh_claims(call, await call.json())
    if claims.user_id != call.me.id:
        raise ApiError(403, "The refresh token belongs to another user")
    call.core.tokens.revoke(claims)
    call.core.inspection.count("logouts")
    return ok({"ok": True})


async def _password_reset(call: Call) -> web.StreamResponse:
    body = await call.json()
    email = body.get("email")
    _rate_limit(call, "password-reset", email, RESET_LIMIT, RESET_LIMIT)
    user = call.core.state.user_by_email(email) if isinstance(email, str) else None
    if user is not None:
        # Mailed in real life; here it is visible to tests through the inspection state.
        call.core.state.reset_tokens[secrets.token_urlsafe(24)] = user.id
    call.core.inspection.count("password_resets")
    return ok({"ok": True})


async def _password_reset_confirm(call: Call) -> web.StreamResponse:
    body = await call.json()
    token, new_password = body.get("token"), body.get("new_password")
    state = call.core.state
    user_id = state.reset_tokens.get(token) if isinstance(token, str) else None
    if user_id is None or user_id not in state.users:
        raise ApiError(400, "Invalid or expired reset token")
    problem = password_problem(new_password)
    if problem is not None:
        raise ApiError(400, problem)
    assert isinstance(new_password, str) and isinstance(token, str)
    del state.reset_tokens[token]
    state.users[user_id].password_hash = hash_password(new_password)
    return ok({"ok": True})


def _me(call: Call) -> dict[str, Any]:
    user = call.me
    state = call.core.state
    with_tier = call.core.settings.variants.me_tier
    return {
        **user.public(),
        "avatar_url": user.avatar_url,
        "workspaces": [
            {
                "id": ws.id,
                "name": ws.name,
                "role": ws.members[user.id],
                **({"tier": ws.tier, "minutes_left": ws.minutes_left} if with_tier else {}),
            }
            for ws in state.workspaces_of(user.id)
        ],
    }


async def _get_me(call: Call) -> web.StreamResponse:
    return ok(_me(call))


async def _patch_me(call: Call) -> web.StreamResponse:
    body = await call.json()
    for name in ("first_name", "last_name", "avatar_url"):
        value = opt_str(body, name, max_len=2048)
        if value is not None:
            setattr(call.me, name, value)
    return ok(_me(call))


async def _health(call: Call) -> web.StreamResponse:
    return ok({"status": "ok", "postgres": "ok", "redis": "ok", "time": iso(call.now())})


def register(router: Router[Handler]) -> None:
    router.add("POST", "/v1/auth/register", _register_user, Access.PUBLIC)
    router.add("POST", "/v1/auth/login", _login, Access.PUBLIC)
    router.add("POST", "/v1/auth/refresh", _refresh, Access.PUBLIC)
    router.add("POST", "/v1/auth/logout", _logout, Access.USER)
    router.add("POST", "/v1/auth/password-reset", _password_reset, Access.PUBLIC)
    router.add("POST", "/v1/auth/password-reset/confirm", _password_reset_confirm, Access.PUBLIC)
    router.add("GET", "/v1/me", _get_me, Access.USER)
    router.add("PATCH", "/v1/me", _patch_me, Access.USER)
    router.add("GET", "/v1/health", _health, Access.PUBLIC)
