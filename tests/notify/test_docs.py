"""docs/notifications.md stays true: its verification snippets accept what watchd signs and
refuse a tampered body; every event type and key is documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from watchd.notify.config import NOTIFY_KEYS, NotifierConfig
from watchd.notify.events import EVENT_TYPES, JOB_FAILED, encode
from watchd.notify.senders import Message, WebhookSender
from watchd.secrets import Secret

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def signed() -> tuple[dict[str, str], bytes]:
    cfg = NotifierConfig(
        index=0, name="w", kind="webhook", url=Secret("http://x/"), secret=Secret(SECRET)
    )
    sender = WebhookSender(cfg, client=object())  # type: ignore[arg-type]
    body = encode(JOB_FAILED, 1_800_000_000, {"job_id": "j1"})
    return sender.headers(Message("msg_1", JOB_FAILED, body), datetime.now(UTC)), body.encode()


def test_every_event_and_key_is_documented() -> None:
    text = DOC.read_text()
    for name in (*EVENT_TYPES, *NOTIFY_KEYS):
        assert f"`{name}`" in text, name


def test_the_python_snippets_verify_a_signed_body() -> None:
    headers, body = signed()
    library, stdlib = blocks("python")
    ns: dict[str, Any] = {}
    exec(stdlib, ns)
    assert ns["verify"](SECRET, headers, body)
    assert not ns["verify"](SECRET, headers, body + b" ")
    code = library.replace('open("/etc/carmic-watchd/webhook-secret").read()', repr(SECRET))
    ns = {"body": body, "headers": headers}
    exec(code, ns)
    assert ns["event"]["type"] == JOB_FAILED


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_shell_snippet_verifies_a_signed_body(tmp_path: Path) -> None:
    headers, body = signed()
    script = tmp_path / "verify.sh"
    script.write_text(blocks("sh")[0])
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    args = [
        "sh",
        str(script),
        str(secret),
        headers["webhook-id"],
        headers["webhook-timestamp"],
        headers["webhook-signature"],
    ]
    ok = subprocess.run(args, input=body, capture_output=True, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == b"valid", ok.stderr
    bad = subprocess.run(args, input=body + b"x", capture_output=True, check=False)
    assert bad.returncode == 1
