"""The daemon's side of notifications: the recorder on the ledger and the dispatcher's task,
built from the config, reconfigured on reload, stopped with the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from watchd.clock import Clock
from watchd.config import Config
from watchd.ledger.db import Ledger
from watchd.notify.dispatcher import Dispatcher, ResultHook
from watchd.notify.recorder import Recorder
from watchd.notify.senders import make_sender


def inbox_names(config: Config) -> dict[str, str]:
    """Inbox key (its path, as the ledger stores it) -> its name."""
    return {str(i.path): i.name or i.path.name for i in config.inboxes}


class NotifyService:
    """Started on the running loop; ``on_result`` feeds the metrics."""

    def __init__(
        self, ledger: Ledger, config: Config, clock: Clock, on_result: ResultHook | None = None
    ) -> None:
        self.ledger = ledger
        dashboard = config.web.base_url()
        self.dispatcher = Dispatcher(
            ledger,
            config.notify,
            clock=clock,
            on_result=on_result,
            sender_factory=functools.partial(make_sender, dashboard=dashboard),
        )
        self.recorder = Recorder(config.notify, inbox_names(config), clock, self.dispatcher.wake)
        ledger.observer = self.recorder
        self.task = asyncio.create_task(self.dispatcher.run(), name="watchd-notify")

    def reload(self, config: Config) -> None:
        self.recorder.configure(config.notify, inbox_names(config))
        self.dispatcher.configure(config.notify)

    async def aclose(self) -> None:
        self.ledger.observer = None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.dispatcher.aclose()
