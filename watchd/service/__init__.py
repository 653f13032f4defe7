"""Running under systemd: readiness and watchdog notifications, logging, metrics.

The daemon builds these once at start-up and calls them; each is usable (and a no-op where it
should be) outside systemd too::

    setup_logging(config.daemon.log_format, config.daemon.log_level)
    notifier = Notifier()
    metrics = Metrics()
    server = metrics.serve(config.daemon.metrics, health) if config.daemon.metrics else None
    notifier.ready("watching 2 inboxes")
"""

from watchd.service.liveness import Liveness
from watchd.service.logsetup import JobLogger, job_logger, setup_logging, teardown_logging
from watchd.service.metrics import Metrics, MetricsServer, check_loopback, parse_address
from watchd.service.notify import Notifier

__all__ = [
    "JobLogger",
    "Liveness",
    "Metrics",
    "MetricsServer",
    "Notifier",
    "check_loopback",
    "job_logger",
    "parse_address",
    "setup_logging",
    "teardown_logging",
]
