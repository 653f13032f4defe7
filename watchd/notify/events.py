"""What a notification says: the event types, the JSON body, the human message.

Pure functions of a job row (or an inbox) and the time: the body is built once, when the event
is recorded in the ledger, and sent byte for byte the same in every attempt.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

JOB_QUEUED: Final = "job.queued"
JOB_DELIVERED: Final = "job.delivered"
JOB_PARTIAL: Final = "job.partial"
JOB_FAILED: Final = "job.failed"
JOB_PARKED: Final = "job.parked"
INBOX_PAUSED: Final = "inbox.paused"
INBOX_RESUMED: Final = "inbox.resumed"
EVENT_TYPES: Final = (
    JOB_QUEUED,
    JOB_DELIVERED,
    JOB_PARTIAL,
    JOB_FAILED,
    JOB_PARKED,
    INBOX_PAUSED,
    INBOX_RESUMED,
)
# `watchd notify test` sends this one; it is never recorded in the ledger.
TEST_EVENT: Final = "watchd.test"

PARK_HINTS: Final = {
    "billing": (
        "Add processing minutes or upgrade the Carmic plan; parked jobs resume by themselves "
        "(or run `watchd retry {job_id}`)."
    ),
    "tier_limit": "The plan's processing limit is reached; the job resumes when a slot frees.",
}


@dataclass(frozen=True)
class Event:
    """One recorded event: ``msg_id`` is the ``webhook-id`` of every attempt, ``body`` the
    exact bytes sent."""

    msg_id: str
    type: str
    at: float
    body: str
    job_id: str | None = None
    inbox: str | None = None
    rule: str | None = None


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(12)


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def encode(type_: str, at: float, data: dict[str, Any]) -> str:
    """The body, in the Standard Webhooks shape ``{type, timestamp, data}``."""
    doc = {"type": type_, "timestamp": iso(at), "data": data}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def outbox_relative(outbox_dir: str | None, outbox_root: str | None) -> str | None:
    """The delivery folder relative to the inbox's outbox (POSIX), or None."""
    if not outbox_dir:
        return None
    if not outbox_root:
        return Path(outbox_dir).name
    rel = Path(os.path.relpath(outbox_dir, outbox_root))
    return Path(outbox_dir).name if rel.parts[:1] == ("..",) else rel.as_posix()


def read_manifest(outbox_dir: str | None) -> dict[str, Any] | None:
    """The delivery's manifest.json, or None when it cannot be read."""
    if not outbox_dir:
        return None
    try:
        with open(Path(outbox_dir) / "manifest.json", "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def park_error(reason: str | None, job_id: str) -> dict[str, str]:
    text = reason or "parked"
    code = "billing" if text.startswith("billing") else "tier_limit" if "tier" in text else "parked"
    hint = PARK_HINTS.get(code, "Run `watchd retry {job_id}` once the cause is fixed.")
    return {"code": code, "message": text, "hint": hint.format(job_id=job_id)}


def fail_error(code: str | None, message: str | None, hint: str | None) -> dict[str, str]:
    return {"code": code or "failed", "message": message or "", "hint": hint or ""}


def job_data(
    *,
    job_id: str,
    inbox: str,
    rule: str,
    name: str,
    rel_path: str,
    size: int,
    sha256: str | None,
    state: str,
    project_id: str | None,
    outbox: str | None,
    manifest: dict[str, Any] | None,
    error: dict[str, str] | None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "inbox": inbox,
        "rule": rule,
        "source": {"name": name, "path": rel_path, "size": size, "sha256": sha256},
        "state": state,
        "project_id": project_id,
        "outbox": outbox,
        "manifest": manifest,
        "error": error,
    }


def inbox_data(inbox: str, reason: str | None) -> dict[str, Any]:
    return {"inbox": inbox, "reason": reason}


def human_message(body: str, dashboard: str = "") -> tuple[str, str]:
    """A title and one or two lines (what, where, what to do) for chat and email targets; with
    ``dashboard`` (the ``[web]`` dashboard's base URL), a job's message ends with its page."""
    doc = json.loads(body)
    data = doc.get("data") or {}
    title, text = _human_message(doc.get("type", ""), data)
    if dashboard and data.get("job_id"):
        text += f"\n{dashboard.rstrip('/')}/jobs/{data['job_id']}"
    return title, text


def _human_message(type_: str, data: dict[str, Any]) -> tuple[str, str]:
    if type_.startswith("inbox."):
        inbox = data.get("inbox", "")
        if type_ == INBOX_PAUSED:
            return (
                f"watchd: inbox {inbox} paused",
                f"{data.get('reason') or 'paused'}. Nothing is taken from it until it is back "
                "(check the share or mount).",
            )
        return f"watchd: inbox {inbox} resumed", "Files dropped into it are taken again."
    if type_ == TEST_EVENT:
        return "watchd: test notification", "This notifier is set up and reachable."
    source = data.get("source") or {}
    name, path = source.get("name", "?"), source.get("path", "?")
    where = f"{path} in inbox {data.get('inbox', '?')}"
    error = data.get("error") or {}
    if type_ in (JOB_DELIVERED, JOB_PARTIAL):
        manifest = data.get("manifest") or {}
        clips = len(manifest.get("clips") or [])
        what = "delivered" if type_ == JOB_DELIVERED else "partly delivered"
        line = f"{where}: {clips} clip(s) in outbox folder {data.get('outbox')}."
        if type_ == JOB_PARTIAL:
            line += " Some items were skipped: see the manifest."
        return f"watchd: {name} {what}", line
    if type_ in (JOB_FAILED, JOB_PARKED):
        what = "failed" if type_ == JOB_FAILED else "is parked"
        line = f"{where}: {error.get('message', '')}"
        hint = error.get("hint") or f"Run `watchd retry {data.get('job_id')}` once fixed."
        return f"watchd: {name} {what}", f"{line}\n{hint}"
    return f"watchd: {name} queued", f"{where} was taken (job {data.get('job_id')})."
