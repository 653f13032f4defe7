"""The session: JWTs cached, refreshed once on a 401, re-login after that, all single-flight.

Carmic has no API keys: the daemon logs in as a service user (email + password), caches the
short-lived access token and the long-lived refresh token, and on a 401 refreshes; when the
refresh is refused it logs in again. Many requests fail with 401 at the same moment when the
access token expires; they all wait on one lock and the first one through does the work, the
others find a token newer than the one that failed them and just use it.

Logins are paced by a :class:`TokenBucket` well under the server's 5 per minute per email, so our
own retries can never lock the account out, and a 429 on login waits its Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from watchd.carmic.errors import (
    AuthError,
    BadRequest,
    CarmicError,
    Forbidden,
    NetworkError,
    NotFound,
    RateLimited,
    ServerError,
)
from watchd.carmic.models import JSON, Tokens
from watchd.carmic.pacing import TokenBucket
from watchd.clock import Clock

log = logging.getLogger("watchd.carmic.auth")

LOGIN_ROUTE = "/v1/auth/login"
REFRESH_ROUTE = "/v1/auth/refresh"

# Refresh ahead of expiry once this share of the token's lifetime has passed (saves every request
# in flight at the expiry a 401 and a second round trip).
REFRESH_AT = 0.8


def token_lifetime(access: str) -> float | None:
    """The lifetime (``exp - iat``, seconds) a JWT access token claims, or None when it is not
    a JWT with both. Only the difference is used, measured on our own monotonic clock, so a
    server clock far from ours does not matter; the signature is the server's business."""
    try:
        payload = access.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        lifetime = float(claims["exp"]) - float(claims["iat"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    return lifetime if lifetime > 0 else None


# POST a JSON body to a public route without a token; returns the envelope's data.
PostJson = Callable[[str, JSON], Awaitable[Any]]


class Revealable(Protocol):
    """A secret wrapper (``watchd.secrets.Secret``) that only shows its value on request."""

    def reveal(self) -> str: ...


Password = str | Revealable

# Statuses that mean "these credentials (or this refresh token) are not accepted".
_REJECTED = (AuthError, BadRequest, Forbidden, NotFound)


class Session:
    """Access and refresh tokens for one user, kept fresh.

    ``post`` performs the unauthenticated login/refresh POSTs (the client's plumbing), so this
    class holds only the policy. ``on_login`` is a metrics hook called for every password login.
    """

    def __init__(
        self,
        email: str,
        password: Password,
        *,
        post: PostJson,
        clock: Clock,
        logins_per_minute: float = 3,
        login_attempts: int = 3,
        max_login_wait: float = 300.0,
        rejected_cooldown: float = 60.0,
        on_login: Callable[[], None] | None = None,
    ) -> None:
        self.email = email
        self._password = password
        self._post = post
        self._clock = clock
        self._bucket = TokenBucket(logins_per_minute, clock=clock)
        self._login_attempts = max(1, login_attempts)
        self._max_login_wait = max_login_wait
        self._rejected_cooldown = rejected_cooldown
        self._on_login = on_login
        self._tokens: Tokens | None = None
        self._stale_at: float | None = None  # monotonic time to refresh ahead of expiry
        self._rejected: AuthError | None = None
        self._rejected_at = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0
        self.refreshes = 0

    def __repr__(self) -> str:
        state = "logged in" if self._tokens else "logged out"
        return f"<Session {self.email} {state}>"

    @property
    def access(self) -> str | None:
        """The current access token, if any (never log it)."""
        return self._tokens.access if self._tokens else None

    async def token(self) -> str:
        """A usable access token, logging in first if there is none, refreshed ahead of its
        expiry when its lifetime is known."""
        tokens = self._tokens
        if tokens is not None:
            if self._stale_at is None or self._clock.monotonic() < self._stale_at:
                return tokens.access
            return await self._refresh_ahead(tokens)
        async with self._lock:
            if self._tokens is None:
                await self._login()
            assert self._tokens is not None
            return self._tokens.access

    async def recover(self, failed: str, *, relogin: bool = False) -> str:
        """After a 401 with the token ``failed``: refresh (or, with ``relogin`` or no refresh
        token, log in again) unless another task already did; returns the token to retry with."""
        async with self._lock:
            current = self._tokens
            if current is not None and current.access != failed:
                return current.access
            if not relogin and current is not None and current.refresh:
                try:
                    await self._refresh(current.refresh)
                    assert self._tokens is not None
                    return self._tokens.access
                except _REJECTED as e:
                    log.info("token refresh refused (%s); logging in again", e.message)
            await self._login()
            assert self._tokens is not None
            return self._tokens.access

    async def _refresh_ahead(self, stale: Tokens) -> str:
        async with self._lock:
            # Unless another task refreshed (or logged out) while we waited for the lock.
            if self._tokens is stale and stale.refresh:
                try:
                    await self._refresh(stale.refresh)
                except CarmicError as e:  # the 401 path recovers later; this was a courtesy
                    log.info("early token refresh failed (%s); using the token till then", e)
                    self._stale_at = None
            if self._tokens is None:
                await self._login()
            assert self._tokens is not None
            return self._tokens.access

    def _fresh(self, tokens: Tokens) -> None:
        """Adopt ``tokens`` and note when to refresh them ahead of their expiry."""
        self._tokens = tokens
        lifetime = token_lifetime(tokens.access)
        # Without a refresh token there is nothing to refresh ahead with: the 401 path logs in.
        self._stale_at = (
            self._clock.monotonic() + lifetime * REFRESH_AT
            if lifetime is not None and tokens.refresh
            else None
        )

    def forget(self) -> None:
        """Drop the cached tokens (the next call logs in)."""
        self._tokens = None
        self._stale_at = None

    async def _refresh(self, refresh: str) -> None:
        data = await self._post(REFRESH_ROUTE, {"refresh": refresh})
        fresh = Tokens.from_api(data if isinstance(data, dict) else {})
        if not fresh.access:
            raise ServerError("the refresh answer carried no access token", endpoint=REFRESH_ROUTE)
        # Rotating refresh tokens come back with the access token; otherwise keep the old one.
        self._fresh(Tokens(access=fresh.access, refresh=fresh.refresh or refresh))
        self.refreshes += 1
        log.debug("access token refreshed")

    def _reveal(self) -> str:
        p = self._password
        return p if isinstance(p, str) else p.reveal()

    async def _login(self) -> None:
        if self._rejected is not None:
            if self._clock.monotonic() - self._rejected_at < self._rejected_cooldown:
                # The same password will be refused again: do not spend the login budget on it.
                raise self._rejected
            self._rejected = None
        for attempt in range(1, self._login_attempts + 1):
            waited = await self._bucket.acquire()
            if waited >= 1.0:
                log.info(
                    "waited %.0fs for the login pace (at most %s per minute)",
                    waited,
                    self._bucket.per_minute,
                )
            try:
                data = await self._post(
                    LOGIN_ROUTE, {"email": self.email, "password": self._reveal()}
                )
            except NetworkError as e:
                if _never_sent(e):
                    # Not a login the server saw: an API that cannot be reached does not use
                    # up the pace (the first warning comes in seconds, not after a minute).
                    self._bucket.give_back()
                raise
            except RateLimited as e:
                wait = e.retry_after if e.retry_after is not None else 60.0
                if attempt >= self._login_attempts or wait > self._max_login_wait:
                    raise
                log.warning("login rate-limited by Carmic; waiting %.0fs", wait)
                self._bucket.block_for(wait)
                continue
            except _REJECTED as e:
                self._tokens = None
                self._rejected = AuthError(
                    f"Carmic refused the login for {self.email}: {e.message}. "
                    "Check the email and password in the [carmic] config",
                    status=e.status,
                    endpoint=LOGIN_ROUTE,
                )
                self._rejected_at = self._clock.monotonic()
                raise self._rejected from None
            self._accept_login(data)
            return
        raise AssertionError("unreachable")  # pragma: no cover

    def _accept_login(self, data: Any) -> None:
        tokens = Tokens.from_api(data if isinstance(data, dict) else {})
        if not tokens.access:
            raise ServerError("the login answer carried no access token", endpoint=LOGIN_ROUTE)
        self._fresh(tokens)
        self.logins += 1
        log.info("logged in to Carmic as %s", self.email)
        if self._on_login is not None:
            self._on_login()


def _never_sent(e: NetworkError) -> bool:
    """Whether the request failed before it reached the server (no connection was made)."""
    cause = e.__cause__
    return isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout) or e.message.startswith(
        "cannot connect"
    )
