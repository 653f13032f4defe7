"""How one attempt reaches a notifier: a signed POST, a command, or an Apprise URL.

Each sender turns whatever happened into an :class:`Answer` (never an exception): the
dispatcher decides from it what comes next. Nothing here logs a URL, a header value or the
secret; error texts are redacted before they are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import httpx
from standardwebhooks.webhooks import Webhook

from watchd.carmic.envelope import parse_retry_after
from watchd.notify.config import NotifierConfig
from watchd.notify.events import human_message
from watchd.redact import redact, register_secret

log = logging.getLogger("watchd.notify")

STDERR_TAIL = 500  # bytes of a command's stderr kept with a failed attempt
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    """``status``: ``"200"``, ``"timeout"``, ``"exit 1"``, ``"error"``, ...; ``detail``: a short,
    redacted explanation; ``retry_after``: seconds the target asked us to wait (429/503);
    ``gone``: 410 Gone, stop sending to this notifier until its config changes."""

    ok: bool
    status: str
    detail: str = ""
    retry_after: float | None = None
    gone: bool = False


@dataclass(frozen=True)
class Message:
    """What one attempt carries: the same ``msg_id`` and ``body`` in every attempt."""

    msg_id: str
    type: str
    body: str


class Sender(Protocol):
    async def send(self, message: Message) -> Answer: ...

    async def aclose(self) -> None: ...


def _short(text: str, limit: int = 300, *, tail: bool = False) -> str:
    """One redacted line of at most ``limit`` characters (its end, with ``tail``)."""
    text = redact(" ".join(text.split()))
    if len(text) <= limit:
        return text
    return "..." + text[3 - limit :] if tail else text[: limit - 3] + "..."


class WebhookSender:
    """POST of the body, signed per Standard Webhooks when the notifier has a secret. Sent with
    our httpx stack (:func:`watchd.carmic.http.make_client`): TLS verified, proxies from the
    environment, redirects never followed (a 3xx is a failed attempt)."""

    def __init__(self, config: NotifierConfig, *, client: httpx.AsyncClient | None = None) -> None:
        assert config.url is not None
        self.config = config
        self._url = config.url.reveal()
        self._signer = Webhook(config.secret.reveal()) if config.secret is not None else None
        if client is None:
            from watchd.carmic.http import make_client

            timeout = httpx.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT, config.timeout))
            client = make_client(
                timeout=timeout,
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=2),
            )
        self._client = client

    def headers(self, message: Message, now: datetime) -> dict[str, str]:
        """The request's headers. ``webhook-timestamp`` is the time of this attempt (a verifier
        refuses one more than minutes old); the body keeps the time of the event."""
        stamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message.msg_id,
            "webhook-timestamp": str(stamp),
        }
        if self._signer is not None:
            at = datetime.fromtimestamp(stamp, UTC)
            headers["webhook-signature"] = self._signer.sign(message.msg_id, at, message.body)
        for name, value in self.config.headers:
            headers[name] = value.reveal()
        return headers

    async def send(self, message: Message) -> Answer:
        headers = self.headers(message, datetime.now(UTC))
        try:
            async with asyncio.timeout(self.config.timeout + 1):
                response = await self._client.post(
                    self._url,
                    content=message.body.encode(),
                    headers=headers,
                    follow_redirects=False,
                )
        except TimeoutError:
            return Answer(False, "timeout", f"no answer within {self.config.timeout:g}s")
        except httpx.TimeoutException:
            return Answer(False, "timeout", f"no answer within {self.config.timeout:g}s")
        except (httpx.HTTPError, OSError) as e:
            return Answer(False, "error", _short(f"{type(e).__name__}: {e}"))
        code = response.status_code
        status = str(code)
        if 200 <= code < 300:
            return Answer(True, status)
        reason = response.reason_phrase or ""
        if 300 <= code < 400:
            return Answer(False, status, f"{reason}: redirects are not followed; set the final URL")
        retry_after = None
        if code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), _epoch())
        return Answer(False, status, _short(reason), retry_after=retry_after, gone=code == 410)

    async def aclose(self) -> None:
        await self._client.aclose()


def _epoch() -> float:
    return datetime.now(UTC).timestamp()


class CommandSender:
    """Runs the command with the event JSON on stdin and ``WATCHD_EVENT=<type>``,
    ``WATCHD_EVENT_ID=<webhook-id>`` in its environment; exit 0 is a delivery, anything else
    (or the timeout, which kills its process group) is retried."""

    def __init__(self, config: NotifierConfig) -> None:
        self.config = config

    async def send(self, message: Message) -> Answer:
        env = {**os.environ, "WATCHD_EVENT": message.type, "WATCHD_EVENT_ID": message.msg_id}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.config.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            return Answer(False, "error", _short(f"cannot run {self.config.command[0]}: {e}"))
        try:
            async with asyncio.timeout(self.config.timeout):
                _, err = await proc.communicate(message.body.encode())
        except TimeoutError:
            _kill(proc.pid)
            await proc.wait()
            return Answer(False, "timeout", f"still running after {self.config.timeout:g}s: killed")
        except asyncio.CancelledError:
            _kill(proc.pid)  # the daemon stops: the event is sent again after the restart
            raise
        tail = (err or b"")[-STDERR_TAIL:].decode(errors="replace")
        code = proc.returncode or 0
        if code == 0:
            return Answer(True, "exit 0")
        return Answer(False, f"exit {code}", _short(tail, tail=True) or "(no stderr)")

    async def aclose(self) -> None:
        return None


def _kill(pid: int) -> None:
    """The command and whatever it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class AppriseSender:
    """One Apprise URL: a title and one or two lines (:func:`human_message`). Apprise is
    synchronous: each attempt runs in a thread, under the notifier's timeout."""

    def __init__(self, config: NotifierConfig, dashboard: str = "") -> None:
        from watchd.notify.config import import_apprise

        self._dashboard = dashboard  # the [web] dashboard's base URL: a link to the job's page
        apprise = import_apprise()
        assert config.apprise is not None
        self.config = config
        try:
            # Our own timeout applies; Apprise's (2.x) would hand the call to a pool of its own.
            asset = apprise.AppriseAsset(service_timeout=0)
        except TypeError:  # Apprise 1.x: no such setting, no such pool
            asset = apprise.AppriseAsset()
        self._apprise = apprise.Apprise(asset=asset)
        self._apprise.add(config.apprise.reveal())
        # A thread of its own: a plugin that hangs holds this notifier's attempts, no others.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"notify-{config.name}")

    async def send(self, message: Message) -> Answer:
        title, body = human_message(message.body, self._dashboard)
        try:
            async with asyncio.timeout(self.config.timeout):
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(
                    self._pool, functools.partial(self._apprise.notify, body=body, title=title)
                )
        except TimeoutError:
            return Answer(False, "timeout", f"no answer within {self.config.timeout:g}s")
        except Exception as e:  # a plugin's own failure: one failed attempt, not a crash
            return Answer(False, "error", _short(f"{type(e).__name__}: {e}"))
        if ok:
            return Answer(True, "sent")
        return Answer(False, "failed", "Apprise could not deliver it (its log says why)")

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_sender(config: NotifierConfig, dashboard: str = "") -> Sender:
    """The sender for ``config``; its URL, secret and header values are registered with the
    log redaction first (tokens often live in a webhook's path). ``dashboard``: the ``[web]``
    dashboard's base URL, linked from Apprise's human messages ("" without ``[web]``)."""
    for secret in (config.url, config.secret, config.apprise, *(v for _, v in config.headers)):
        if secret is not None:
            register_secret(secret.reveal())
    if config.kind == "webhook":
        return WebhookSender(config)
    if config.kind == "apprise":
        return AppriseSender(config, dashboard)
    return CommandSender(config)
