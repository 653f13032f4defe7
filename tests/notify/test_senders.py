"""Each sender against a real or mock target: what goes on the wire, what comes back."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.notify.receiver import Receiver
from tests.notify.test_recorder import notifier
from watchd.notify.config import NotifierConfig
from watchd.notify.events import JOB_FAILED, encode
from watchd.notify.senders import (
    AppriseSender,
    CommandSender,
    Message,
    WebhookSender,
    make_sender,
)
from watchd.redact import redact
from watchd.secrets import Secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = encode(
    JOB_FAILED,
    1_800_000_000,
    {
        "job_id": "j1",
        "inbox": "studio-a",
        "source": {"name": "ep.mp4", "path": "ep.mp4"},
        "error": {"code": "probe_invalid", "message": "not a video", "hint": "Check the file."},
    },
)
MESSAGE = Message("msg_1", JOB_FAILED, BODY)


def webhook(handler: httpx.MockTransport | None = None, **kw: object) -> WebhookSender:
    cfg = NotifierConfig(
        index=0,
        name="w",
        kind="webhook",
        url=Secret("https://hooks.example.com/in?token=abc"),
        secret=Secret(SECRET),
        headers=(("X-Team", Secret("post")),),
        **kw,
    )
    client = httpx.AsyncClient(transport=handler) if handler else None
    return WebhookSender(cfg, client=client)


async def test_a_signed_post_that_the_standard_verifier_accepts() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sender = webhook(httpx.MockTransport(handle))
    answer = await sender.send(MESSAGE)
    await sender.aclose()
    assert answer.ok and answer.status == "204"
    req = seen[0]
    assert req.content == BODY.encode()
    assert Webhook(SECRET).verify(req.content, dict(req.headers))["type"] == JOB_FAILED
    assert req.headers["webhook-id"] == "msg_1" and req.headers["x-team"] == "post"
    assert req.headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    ("response", "status", "retry_after", "gone"),
    [
        (httpx.Response(500), "500", None, False),
        (httpx.Response(429, headers={"Retry-After": "7"}), "429", 7.0, False),
        (httpx.Response(503, headers={"Retry-After": "3"}), "503", 3.0, False),
        (httpx.Response(410), "410", None, True),
        (
            httpx.Response(302, headers={"Location": "https://elsewhere.example/"}),
            "302",
            None,
            False,
        ),
    ],
)
async def test_answers_that_are_not_2xx(
    response: httpx.Response, status: str, retry_after: float | None, gone: bool
) -> None:
    sender = webhook(httpx.MockTransport(lambda r: response))
    answer = await sender.send(MESSAGE)
    await sender.aclose()
    assert (answer.ok, answer.status, answer.retry_after, answer.gone) == (
        False,
        status,
        retry_after,
        gone,
    )
    if status == "302":
        assert "redirects are not followed" in answer.detail


async def test_a_network_error_never_shows_the_url_token() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    sender = webhook(httpx.MockTransport(fail))
    answer = await sender.send(MESSAGE)
    await sender.aclose()
    assert not answer.ok and answer.status == "error"
    assert "token=abc" not in answer.detail


async def test_a_receiver_that_never_answers_times_out() -> None:
    with Receiver(lambda r, n: None) as rx:
        cfg = NotifierConfig(index=0, name="w", kind="webhook", url=Secret(rx.url), timeout=1)
        sender = WebhookSender(cfg)
        answer = await sender.send(MESSAGE)
        await sender.aclose()
    assert (answer.ok, answer.status) == (False, "timeout")


def command(tmp_path: Path, code: str, **kw: object) -> CommandSender:
    script = tmp_path / "hook.py"
    script.write_text(code)
    return CommandSender(notifier(command=(sys.executable, str(script)), **kw))


async def test_a_command_gets_the_body_and_the_event_type(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    code = (
        f"import os,sys,json; open({str(out)!r},'w')"
        ".write(json.dumps([os.environ['WATCHD_EVENT'], sys.stdin.read()]))"
    )
    answer = await command(tmp_path, code).send(MESSAGE)
    assert answer.ok and answer.status == "exit 0"
    assert json.loads(out.read_text()) == [JOB_FAILED, BODY]


async def test_a_failing_command_keeps_its_stderr_tail(tmp_path: Path) -> None:
    code = "import sys; sys.stderr.write('x' * 2000 + 'the end'); sys.exit(3)"
    answer = await command(tmp_path, code).send(MESSAGE)
    assert (answer.ok, answer.status) == (False, "exit 3")
    assert answer.detail.endswith("the end") and len(answer.detail) <= 300


async def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    code = "import time; time.sleep(60)"
    started = asyncio.get_running_loop().time()
    answer = await command(tmp_path, code, timeout=1.0).send(MESSAGE)
    assert (answer.ok, answer.status) == (False, "timeout")
    assert asyncio.get_running_loop().time() - started < 10


async def test_apprise_json_target_gets_title_and_lines() -> None:
    with Receiver() as rx:
        cfg = NotifierConfig(
            index=0, name="a", kind="apprise", apprise=Secret(rx.url.replace("http", "json", 1))
        )
        answer = await AppriseSender(cfg).send(MESSAGE)
        msg = rx.events()[0]
    assert answer.ok
    assert msg["title"] == "watchd: ep.mp4 failed"
    assert msg["message"] == "ep.mp4 in inbox studio-a: not a video\nCheck the file."


async def test_a_command_is_killed_when_the_daemon_stops(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    task = asyncio.ensure_future(command(tmp_path, code, timeout=60.0).send(MESSAGE))
    for _ in range(500):
        if pidfile.exists() and pidfile.read_text():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(500):
            os.kill(pid, 0)  # reaped by the sender's wait? then gone; else still a zombie
            await asyncio.sleep(0.01)


def test_make_sender_registers_the_url_for_redaction() -> None:
    url = "https://hooks.example.com/services/T000/B000/secretpart-9876"
    cfg = NotifierConfig(index=0, name="w", kind="webhook", url=Secret(url))
    make_sender(cfg)
    assert "secretpart-9876" not in redact(f"failed: {url}")


def test_a_human_message_links_the_job_page_when_the_dashboard_is_on() -> None:
    from watchd.notify.events import human_message

    body = json.dumps(
        {"type": "job.failed", "data": {"job_id": "j3f9a0c2b71", "source": {"name": "a.mp4"}}}
    )
    assert "/jobs/" not in human_message(body)[1]
    _, text = human_message(body, "http://127.0.0.1:8377")
    assert text.endswith("\nhttp://127.0.0.1:8377/jobs/j3f9a0c2b71")
    inbox = json.dumps({"type": "inbox.paused", "data": {"inbox": "a", "reason": "gone"}})
    assert "http" not in human_message(inbox, "http://127.0.0.1:8377")[1]
