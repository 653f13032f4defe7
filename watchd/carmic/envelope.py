"""Decoding Carmic answers: ``{data, meta}`` on success, ``{error, code}`` on failure.

The reference is loose in places and tolerated here: a success body that is not an envelope at
all (the SSE ticket comes bare as ``{"ticket": ...}``), Django Ninja's own ``{"detail": ...}``
errors, an error envelope served with a 2xx status, and error pages that are not JSON at all
(a proxy's HTML 502). Tier concurrency limits arrive under several statuses (429, 402, 403, 409)
and are recognised by their message.
"""

from __future__ import annotations

import email.utils
import html
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from watchd.carmic.errors import (
    CarmicError,
    ConcurrencyLimited,
    ServerError,
    error_for_status,
)
from watchd.carmic.models import JSON
from watchd.redact import redact

# Statuses under which the service has been seen to report the tier's concurrency limit.
CONCURRENCY_STATUSES = frozenset({402, 403, 409, 429})
_CONCURRENCY = re.compile(
    r"concurren|simultaneous|plan limit|tier limit|processing limit|"
    r"(too many|max(imum)?) (videos?|projects?) (are )?(processing|in progress)",
    re.IGNORECASE,
)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
MAX_MESSAGE = 300


@dataclass(frozen=True)
class Envelope:
    """A decoded success: the payload (``data``, or the whole body when it was not wrapped) and
    the listing ``meta`` when present."""

    data: Any
    meta: JSON | None = None


def talks_about_concurrency(message: str) -> bool:
    """Does an error message describe the tier's concurrent-processing limit?"""
    return bool(_CONCURRENCY.search(message))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; a naive one came from a sloppy server
        return None
    return max(0.0, when.timestamp() - now)


def _json_body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


_NOT_JSON = object()


def _text_snippet(response: httpx.Response) -> str:
    """A short, readable, redacted line from a non-JSON body (an HTML error page, say)."""
    try:
        text = response.content.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:
        text = response.content.decode("utf-8", errors="replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        text = title.group(1)
    text = _SPACE.sub(" ", html.unescape(_TAGS.sub(" ", text))).strip()
    return redact(text[:MAX_MESSAGE])


def _message_of(body: Any) -> str | None:
    """The human message of an error body: ``error`` (the reference), ``detail`` (Django Ninja,
    a string or a list of validation items) or ``message``."""
    if not isinstance(body, dict):
        return None
    for key in ("error", "detail", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            inner = _message_of(value)
            if inner:
                return inner
        if isinstance(value, list) and value:
            parts = []
            for item in value:
                if isinstance(item, dict):
                    msg = item.get("msg") or item.get("message") or json.dumps(item)
                    loc = item.get("loc")
                    if isinstance(loc, list) and loc:
                        msg = f"{'.'.join(str(x) for x in loc)}: {msg}"
                    parts.append(str(msg))
                else:
                    parts.append(str(item))
            joined = "; ".join(p for p in parts if p)
            if joined:
                return joined
    return None


def _embedded_error_status(body: Any) -> int | None:
    """An error envelope served with a 2xx status: ``{"error": "...", "code": 409}``."""
    if not isinstance(body, dict) or "data" in body or "error" not in body:
        return None
    code = body.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


def error_for(
    status: int,
    message: str,
    *,
    endpoint: str,
    retry_after: float | None = None,
) -> CarmicError:
    """The exception for an HTTP error status and its message (concurrency reading applied)."""
    if status in CONCURRENCY_STATUSES and talks_about_concurrency(message):
        return ConcurrencyLimited(
            message, status=status, endpoint=endpoint, retry_after=retry_after
        )
    return error_for_status(status)(
        message, status=status, endpoint=endpoint, retry_after=retry_after
    )


def _retry_after_of(response: httpx.Response, body: Any, now: float) -> float | None:
    ra = parse_retry_after(response.headers.get("Retry-After"), now)
    if ra is None and isinstance(body, dict):
        # Some rate limiters (django-ratelimit add-ons, DRF throttles) say it in the body.
        for key in ("retry_after", "retryAfter", "wait"):
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return max(0.0, float(value))
    return ra


def error_from_response(response: httpx.Response, *, endpoint: str, now: float) -> CarmicError:
    """The exception for an error response (the body must have been read)."""
    body = _json_body(response)
    status = response.status_code
    if response.is_success:
        status = _embedded_error_status(body) or status
    message = None if body is _NOT_JSON else _message_of(body)
    if message is None:
        snippet = _text_snippet(response) if body is _NOT_JSON else ""
        reason = response.reason_phrase or "error"
        message = f"{reason}: {snippet}" if snippet and snippet != reason else reason
    message = redact(message[:MAX_MESSAGE])
    return error_for(
        status, message, endpoint=endpoint, retry_after=_retry_after_of(response, body, now)
    )


def decode(response: httpx.Response, *, endpoint: str, now: float) -> Envelope:
    """A read response into an :class:`Envelope`, or raise the matching :class:`CarmicError`."""
    if not response.is_success:
        raise error_from_response(response, endpoint=endpoint, now=now)
    body = _json_body(response)
    if body is _NOT_JSON:
        ctype = response.headers.get("Content-Type", "?")
        raise ServerError(
            f"the API answered {response.status_code} with a body that is not JSON ({ctype}): "
            f"{_text_snippet(response)}",
            status=response.status_code,
            endpoint=endpoint,
        )
    if _embedded_error_status(body) is not None:
        raise error_from_response(response, endpoint=endpoint, now=now)
    if isinstance(body, dict) and "data" in body:
        meta = body.get("meta")
        return Envelope(body["data"], meta if isinstance(meta, dict) else None)
    return Envelope(body)
