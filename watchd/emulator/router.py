"""A small explicit route table: (method, path template) -> handler, with the access each
route needs. Unknown paths are 404 and known paths with another method 405, both in the
reference's error envelope; a trailing slash is optional everywhere."""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from watchd.emulator.envelope import ApiError

__all__ = ["Access", "Route", "Router"]

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


class Access(enum.Enum):
    """What a route requires of its caller."""

    PUBLIC = "public"  # no credentials
    USER = "user"  # a valid access JWT
    WORKSPACE = "workspace"  # a valid JWT and an X-Workspace-ID the user belongs to
    TICKET = "ticket"  # ``?ticket=`` from /v1/sse-ticket (SSE streams)


_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route(Generic[H]):
    """One entry of the table."""

    method: str
    template: str
    handler: H
    access: Access
    pattern: re.Pattern[str]


class Router(Generic[H]):
    """First match wins, so static paths are added before parametrised siblings."""

    def __init__(self) -> None:
        self.routes: list[Route[H]] = []

    def add(self, method: str, template: str, handler: H, access: Access) -> None:
        """Route ``method`` on ``template`` (``{name}`` matches one path segment)."""
        regex = _PARAM.sub(r"(?P<\1>[^/]+)", template.rstrip("/"))
        pattern = re.compile(f"^{regex}/?$")
        self.routes.append(Route(method.upper(), template, handler, access, pattern))

    def match(self, method: str, path: str) -> tuple[Route[H], dict[str, str]]:
        """The route and its path parameters; ApiError 404/405 otherwise."""
        allowed: list[str] = []
        for route in self.routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, m.groupdict()
            allowed.append(route.method)
        if allowed:
            raise ApiError(
                405,
                f"Method {method} not allowed",
                headers={"Allow": ", ".join(sorted(set(allowed)))},
            )
        raise ApiError(404, "Not Found")
