"""``[web]``: where the dashboard listens and the bearer token that guards it.

Off unless ``listen`` is set. A bare port means loopback. A ``listen`` that is not loopback needs
``token_file`` (a config error otherwise): the dashboard can retry and forget jobs.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchd.secrets import Secret, loose_permissions, read_secret_file

WEB_KEYS: tuple[str, ...] = ("listen", "token_file")
EXAMPLE_LISTEN = "127.0.0.1:8377"


@dataclass(frozen=True)
class WebConfig:
    """``listen`` is ``""`` (off) or ``HOST:PORT``; ``token`` is read from ``token_file``."""

    listen: str = ""
    token_file: str = ""
    token: Secret | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    def base_url(self) -> str:
        """``http://HOST:PORT`` of the dashboard, for links in notifications; "" when it is off
        or its port is chosen at start (port 0)."""
        host, _, port = self.listen.rpartition(":")
        return f"http://{host}:{port}" if self.listen and port != "0" else ""


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (the config's own test)."""
    from watchd.config import _is_loopback

    return _is_loopback(host)


def describe(web: WebConfig) -> str:
    """One line for ``watchd check``: where the dashboard will be and how it is guarded."""
    host, _, port = web.listen.rpartition(":")
    where = f"http://{host}:{port}/"
    if not is_loopback(host.strip("[]")):
        return f"dashboard on {where} (network address: every page needs the token)"
    token = f"bearer token from {web.token_file}" if web.token_file else "no bearer token"
    return f"dashboard on {where} (loopback; {token})"


def parse_web(t: Any, base: Path, *, check_paths: bool = True) -> WebConfig:
    """Read the ``[web]`` table ``t`` (a ``watchd.config._Table``), reporting problems on it."""
    from watchd.service.metrics import parse_address

    t.unknown(WEB_KEYS)
    listen = t.string("listen", "").strip()
    token_file = t.string("token_file", "").strip()
    if not listen:
        return WebConfig()
    address = f"127.0.0.1:{listen}" if listen.isdigit() else listen
    try:
        host, _port = parse_address(address)
    except ValueError as e:
        message = str(e).replace("metrics address", "address")
        t.error("listen", f'{message}; e.g. "{EXAMPLE_LISTEN}"')
        return WebConfig()
    if not is_loopback(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            t.error("listen", f'host {host!r} must be an IP address or "localhost"')
            return WebConfig()
        if not token_file:
            t.error(
                "listen",
                f"{host} is not a loopback address: set [web] token_file to a file holding a "
                f'long random token (or listen on "{EXAMPLE_LISTEN}" and put a reverse proxy '
                "with TLS in front)",
            )
            return WebConfig()
        t.warn("listen", f"{host} is not loopback: the dashboard speaks plain HTTP; prefer TLS")
    token: Secret | None = None
    if token_file:
        path = Path(os.path.expanduser(token_file))
        if not path.is_absolute():
            path = base / path
        token_file = str(path)
        if check_paths:
            try:
                token, _ = read_secret_file(path)
                st = path.stat()
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                t.error("token_file", f"cannot read the dashboard token from {path}: {reason}")
                return WebConfig()
            if len(token.reveal()) < 16:
                t.error(
                    "token_file", f"the token in {path} is too short: use 16 characters or more"
                )
                return WebConfig()
            warning = loose_permissions(path, st, "the dashboard's token")
            if warning:
                t.warn("token_file", warning)
    return WebConfig(listen=address, token_file=token_file, token=token)
