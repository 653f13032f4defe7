"""``watchd notify test``: one test event to each notifier (or to one), and what it answered.

Nothing is recorded in the ledger: the event is of type ``watchd.test`` and is sent once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from watchd.clock import Clock, SystemClock
from watchd.notify.config import NotifierConfig
from watchd.notify.events import TEST_EVENT, encode, new_msg_id
from watchd.notify.senders import Answer, Message, make_sender


async def send_tests(
    notifiers: Sequence[NotifierConfig],
    *,
    clock: Clock | None = None,
) -> list[tuple[NotifierConfig, Answer]]:
    """Send one test event to each of ``notifiers`` at once; their answers, in order."""
    now = (clock or SystemClock()).now()

    async def one(n: NotifierConfig) -> tuple[NotifierConfig, Answer]:
        body = encode(TEST_EVENT, now, {"notifier": n.name, "message": "a test from watchd"})
        sender = make_sender(n)
        try:
            return n, await sender.send(Message(new_msg_id(), TEST_EVENT, body))
        finally:
            await sender.aclose()

    return list(await asyncio.gather(*(one(n) for n in notifiers)))


def describe(answer: Answer) -> str:
    if answer.ok:
        return f"ok ({answer.status})"
    return f"FAILED: {answer.status} {answer.detail}".rstrip()


def notify_test(config_path: Path, name: str | None, out: TextIO = sys.stdout) -> int:
    """``watchd notify test``: 0 when every notifier tried answered well, 1 when one did not
    (or NAME names none), 2 on a bad config."""
    from watchd.config import ConfigError, load_config

    try:
        cfg = load_config(config_path, allow_missing_inboxes=True, log_warnings=False)
    except ConfigError as e:
        print(f"watchd: bad config {config_path}: {e}", file=sys.stderr)
        return 2
    notifiers: list[NotifierConfig] = list(cfg.notify)
    if not notifiers:
        print(f"watchd notify test: no [[notify]] in {config_path}", file=sys.stderr)
        return 1
    if name is not None:
        notifiers = [n for n in notifiers if n.name == name]
        if not notifiers:
            names = ", ".join(n.name for n in cfg.notify)
            print(
                f"watchd notify test: no notifier named {name!r} (there are: {names})",
                file=sys.stderr,
            )
            return 1
    results = asyncio.run(send_tests(notifiers))
    for n, answer in results:
        out.write(f"{n.describe()}: {describe(answer)}\n")
    return 0 if all(a.ok for _, a in results) else 1
