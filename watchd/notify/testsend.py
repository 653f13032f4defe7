"""``watchd notify test``: one test event to each notifier (or to one), and what it answered.

Nothing is recorded in the ledger: the event is of type ``watchd.test`` and is sent once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
