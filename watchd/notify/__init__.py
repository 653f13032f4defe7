"""Notifications (``[[notify]]``): signed webhooks, Apprise URLs and command hooks.

Events come from the state machine (:mod:`.recorder`, inside the ledger's transactions), wait
in the ledger's durable queue (:mod:`.queue`) and are sent by the daemon's :mod:`.dispatcher`
through :mod:`.senders`; :mod:`.events` builds what they say and :mod:`.config` reads the
tables. ``watchd status`` and the dashboard ask :func:`failing_notifiers`.

Not to be confused with :mod:`watchd.service.notify` (systemd's sd_notify).
"""

from watchd.notify.events import EVENT_TYPES
from watchd.notify.queue import NotifierHealth, failing_notifiers, health

__all__ = ["EVENT_TYPES", "NotifierHealth", "failing_notifiers", "health"]
