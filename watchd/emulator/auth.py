"""Users' credentials and tokens: HS256 JWTs, password rules and hashes, refresh blacklist.

Access and refresh tokens are both JWTs (as with Django Ninja JWT): ``token_type`` tells them
apart, ``exp`` bounds them, and a refresh token's ``jti`` goes on a blacklist at logout. Time
is passed in, so expiry is tested without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Claims",
    "TokenError",
    "TokenIssuer",
    "email_problem",
    "hash_password",
    "password_problem",
    "verify_password",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def password_problem(password: object) -> str | None:
    """Why ``password`` breaks the rules of §3.1 (≥8 chars, upper, lower, digit), or None."""
    if not isinstance(password, str) or len(password) < 8:
        return "Password must be at least 8 characters long"
    if not any(c.isupper() for c in password):
        return "Password must contain at least one uppercase letter"
    if not any(c.islower() for c in password):
        return "Password must contain at least one lowercase letter"
    if not any(c.isdigit() for c in password):
        return "Password must contain at least one digit"
    return None


def email_problem(email: object) -> str | None:
    """Why ``email`` is not an address, or None."""
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        return "Enter a valid email address"
    return None


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted PBKDF2 hash (few rounds: this is an emulator, but no plain text in memory)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return f"{salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result (constant time)."""
    salt_hex, _, _ = stored.partition("$")
    candidate = hash_password(password, salt=bytes.fromhex(salt_hex))
    return hmac.compare_digest(candidate, stored)


class TokenError(Exception):
    """A token that is malformed, badly signed, expired, revoked or of the wrong type."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    user_id: str
    token_type: str
    exp: float
    jti: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Signs and checks HS256 JWTs; remembers revoked refresh tokens."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._revoked: set[str] = set()

    def issue(self, user_id: str, token_type: str, *, now: float, ttl: float) -> str:
        """A signed JWT for ``user_id`` valid ``ttl`` seconds from ``now``."""
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "token_type": token_type,
            "user_id": user_id,
            "iat": int(now),
            # Rounded up: a token never expires before the ``ttl`` it was issued for.
            "exp": math.ceil(now + ttl),
            "jti": secrets.token_hex(16),
        }
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        signature = hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def check(self, token: str, token_type: str, *, now: float) -> Claims:
        """The claims of a valid, unexpired, unrevoked ``token_type`` token; else TokenError."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("Token is invalid or expired")
        signing_input = f"{parts[0]}.{parts[1]}"
        expected = hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()
        try:
            signature = _unb64(parts[2])
            header: Any = json.loads(_unb64(parts[0]))
            payload: Any = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            raise TokenError("Token is invalid or expired") from None
        if not hmac.compare_digest(signature, expected) or not isinstance(payload, dict):
            raise TokenError("Token is invalid or expired")
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise TokenError("Token is invalid or expired")
        try:
            claims = Claims(
                user_id=str(payload["user_id"]),
                token_type=str(payload["token_type"]),
                exp=float(payload["exp"]),
                jti=str(payload["jti"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError("Token is invalid or expired") from None
        if claims.token_type != token_type:
            raise TokenError(f"Token has wrong type (expected {token_type})")
        if now >= claims.exp:
            raise TokenError("Token is invalid or expired")
        if claims.jti in self._revoked:
            raise TokenError("Token is blacklisted")
        return claims

    def revoke(self, claims: Claims) -> None:
        """Blacklist a refresh token (logout)."""
        self._revoked.add(claims.jti)
