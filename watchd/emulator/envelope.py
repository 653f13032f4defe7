"""The reference's JSON envelopes (§4.1, §4.2) and request-body reading.

Handlers return :func:`ok` and raise :class:`ApiError`; the dispatcher turns the error into
``{"error": "<message>", "code": <status>}`` with the same HTTP status.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

__all__ = [
    "ApiError",
    "Dropped",
    "drop",
    "error_response",
    "ok",
    "opt_bool",
    "opt_number",
    "opt_str",
    "read_json",
    "req_str",
]

JSON = dict[str, Any]


class ApiError(Exception):
    """An error answer: HTTP ``status`` and a human ``message`` (safe to show)."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Dropped(Exception):
    """The connection was cut on purpose (a fault): there is nobody left to answer."""


def drop(request: web.Request) -> Dropped:
    """Reset the client's connection; raise the returned exception to end the handler."""
    if request.transport is not None:
        request.transport.abort()
    return Dropped()


def ok(data: Any, *, meta: JSON | None = None, status: int = 200) -> web.Response:
    """A success envelope: ``{"data": ..., "meta"?: {...}}``."""
    body: JSON = {"data": data}
    if meta is not None:
        body["meta"] = meta
    return web.json_response(body, status=status)


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The error envelope ``{"error": message, "code": status}``."""
    return web.json_response({"error": message, "code": status}, status=status, headers=headers)


async def read_json(request: web.Request, *, required: bool = True) -> JSON:
    """The request body as a JSON object; an empty body is ``{}`` unless ``required``.

    The reference asks callers for ``Content-Type: application/json`` but (like Django Ninja)
    the body is parsed whatever the header says; what matters is that it is a JSON object.
    """
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, "Request body required (a JSON object)")
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "Invalid JSON body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return body


def req_str(body: JSON, name: str, *, max_len: int = 1024) -> str:
    """A required non-empty string field."""
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ApiError(400, f"{name}: field required")
    if not isinstance(value, str):
        raise ApiError(400, f"{name}: must be a string")
    if len(value) > max_len:
        raise ApiError(400, f"{name}: at most {max_len} characters")
    return value


def opt_str(body: JSON, name: str, *, max_len: int = 4096) -> str | None:
    """An optional string field (None when absent or null)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name}: must be a string")
    if len(value) > max_len:
        raise ApiError(400, f"{name}: at most {max_len} characters")
    return value


def opt_number(
    body: JSON, name: str, *, minimum: float | None = None, integer: bool = False
) -> float | None:
    """An optional finite number field (booleans are not numbers)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{name}: must be a number")
    if integer and float(value) != int(value):
        raise ApiError(400, f"{name}: must be a whole number")
    if minimum is not None and value < minimum:
        raise ApiError(400, f"{name}: must be at least {minimum:g}")
    return float(value)


def opt_bool(body: JSON, name: str, default: bool = False) -> bool:
    """An optional boolean field."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name}: must be true or false")
    return value
