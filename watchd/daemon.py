"""The daemon: watchers -> settle -> ledger -> pipeline, in one asyncio loop.

Only :meth:`Daemon.run` reads the real clock; :meth:`Daemon.tick` takes ``now``. Watchdog's event
handlers run on watchdog's thread and only enqueue paths; a full rescan at start and every
``rescan_seconds`` is the source of truth, so a missed event costs latency, never a file.

Under systemd (``Type=notify``) it reports ``READY=1`` once it has logged in and finished its
first scan, keeps ``STATUS=`` current, pings ``WATCHDOG=1`` from a task on the main loop only
while :meth:`Daemon.alive` holds, wraps reloads in ``RELOADING=1``/``READY=1`` and sends
``STOPPING=1`` on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from watchd import presetcheck
from watchd.carmic.errors import AuthError, CarmicError, TransientError
from watchd.carmic.retry import RetryPolicy
from watchd.clock import Clock, SystemClock
from watchd.cluster.errors import DatabaseUnavailable, TakenElsewhere
from watchd.config import Config, ConfigError, InboxConfig, load_config, resolve_preset
from watchd.ledger.db import Ledger, LedgerError
from watchd.ledger.health import check_or_raise
from watchd.ledger.opening import OpenedLedger, open_for_daemon
from watchd.ledger.protocol import LedgerAPI

if TYPE_CHECKING:
    from watchd.cluster.lease import LeaseKeeper
    from watchd.cluster.ledger import ClusterLedger
from watchd.ledger.rebuild import any_manifest, rebuild
from watchd.ledger.states import NEEDS_SOURCE, Stage
from watchd.pipeline.identity import fingerprint
from watchd.pipeline.outcomes import Fail
from watchd.pipeline.runner import Pipeline, PipelineSettings
from watchd.pipeline.scheduler import ProcessingLimit, tier_limit
from watchd.redact import redact
from watchd.service import eventloop, startup
from watchd.service.liveness import Liveness
from watchd.status_view import summary_line
from watchd.watching import regular
from watchd.watching.entries import ERROR, EntryBook, settling_row
from watchd.watching.folders import make_folders
from watchd.watching.ignore import is_candidate, nfc
from watchd.watching.inbox import InboxMonitor
from watchd.watching.observer import InboxObserver
from watchd.watching.scanner import scan_inbox
from watchd.watching.settle import SettleTracker

log = logging.getLogger("watchd.daemon")

T = TypeVar("T")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_AUTH = 3
EXIT_FAILED = 1
HEARTBEAT = 1.0  # the loop wakes at least this often (schedule, stop checks)
PAUSED_RESCAN = 5.0  # how often a paused inbox is scanned to see whether it is back
LOGIN_RETRY_FIRST = 2.0
START_EXTEND_EVERY = 15.0  # while logging in at start, EXTEND_TIMEOUT_USEC this often ...
START_EXTEND_BY = 45.0  # ... by this much (from the moment systemd receives it)
LOGIN_RETRY_MAX = 60.0
METRICS_REFRESH = 1.0  # derived gauges (jobs by state, oldest age) at most this often
# Job transitions wake the loop (STATUS=, a freed slot) at most this often: a burst of a thousand
# files makes ten thousand transitions, and each tick reads the ledger (a step per transition
# was 40 % of the daemon's CPU in the burst benchmark).
TRANSITION_WAKE = 0.05
STYLES_TIMEOUT = 10.0  # listing the workspace's templates (at start and on reload)

# Settings a reload cannot change in a running daemon: they shape objects built at start.
RESTART_ONLY = {
    "carmic": (
        "api_url",
        "email",
        "workspace",
        "password_source",
        "creates_per_minute",
        "exports_per_minute",
        "max_processing",
        "ca_file",
    ),
    "daemon": ("state_dir", "scan", "poll_interval", "max_uploads", "metrics"),
    "web": ("listen", "token_file"),
}


@dataclass
class InboxRuntime:
    config: InboxConfig
    observer: InboxObserver | None = None
    monitor: InboxMonitor = field(default_factory=lambda: InboxMonitor(Path("/")))
    paused: bool = False
    reason: str | None = None
    last_scan_at: float = 0.0
    cluster: bool = False  # with [cluster], the inbox is known by its name

    @property
    def key(self) -> str:
        return inbox_key(self.config, self.cluster)


def inbox_key(inbox: InboxConfig, cluster: bool) -> str:
    """How the ledger names an inbox: its path on one host; with [cluster], its name (the same
    on every host, where the path may differ)."""
    return inbox.name if cluster else str(inbox.path)


def preset_record(inbox: InboxConfig, preset: Any) -> dict[str, Any]:
    """What the ledger stores for a job: the resolved rule keys plus where its results go, so a
    job keeps the preset it started with across reloads and restarts."""
    data: dict[str, Any] = dict(preset.to_json())
    data["_delivery"] = {
        "inbox": str(inbox.path),
        "outbox": str(inbox.outbox),
        "on_success": inbox.on_success,
        "on_failure": inbox.on_failure,
    }
    return data


class Daemon:
    """The running daemon. ``notifier`` (sd_notify) and ``metrics`` are built from the
    environment and the config when not given; ``client`` and ``probe_fn`` are seams for tests.

    ``tick_retry_base`` and ``login_retry_first`` are attributes so that tests can shrink them,
    and so are the limits of ``liveness``.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        client: Any = None,
        probe_fn: Callable[..., Any] | None = None,
        notifier: Any = None,
        metrics: Any = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._client = client
        self._probe_fn = probe_fn
        if notifier is None:
            from watchd.service.notify import Notifier

            notifier = Notifier()
        self.notifier = notifier
        if metrics is None and config.daemon.metrics:
            from watchd.service.metrics import Metrics

            metrics = Metrics()
        self.metrics = metrics
        self.metrics_server: Any = None
        self.web: Any = None  # the dashboard (watchd/web/), when [web] listen is set
        self.liveness = Liveness(self.notifier, self.clock)
        self.tick_retry_base = 2.0  # first pause after a failed step of the main loop
        self.login_retry_first = LOGIN_RETRY_FIRST
        self._next_metrics = 0.0
        self._upload_seen: dict[str, int] = {}
        self.ledger: Ledger | ClusterLedger | None = None
        self.keeper: LeaseKeeper | None = None  # with [cluster]: this node's leases
        self._cluster_tasks: list[asyncio.Task[None]] = []
        self.wakeups: Any = None  # with [cluster]: LISTEN/NOTIFY (watchd/cluster/wakeup.py)
        self._db_waits = 0  # main-loop steps in a row the ledger database did not answer
        self.notify: Any = None  # watchd.notify.service.NotifyService once started
        self.opened: OpenedLedger | None = None  # the ledger with its lock (see start)
        self.debug = config.daemon.log_level == "debug"  # tracebacks for start-up errors
        self.pipeline: Pipeline | None = None
        self.inboxes: dict[str, InboxRuntime] = {}
        self.tracker = SettleTracker(config.daemon.settle_seconds)
        self.entries = EntryBook()  # inbox entries that are not jobs, for `watchd status`
        self.known: dict[tuple[str, str], set[tuple[int, int]]] = {}
        self._pending_paths: set[Path] = set()
        self._forgot_after = 0  # the last ledger event looked at for `watchd forget`s
        self._wake: asyncio.Event | None = None
        self._wake_later: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._reload_requested = False
        self._next_rescan = 0.0
        self._last_status = ""
        self.ready = False
        self.workspace_styles: frozenset[str] | None = None  # template names; None: unknown
        # `watchd run` (a process of its own) holds SIGTERM/SIGINT back once stopped; a
        # Daemon run inside another program (the tests) leaves its signals alone.
        self.hold_signals_when_stopped = False

    # ---- lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: finish the current step, checkpoint, exit (call on the loop)."""
        self._stop_requested = True
        for event in (self._wake, self._stopped):
            if event is not None:
                event.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config at the next tick (call on the loop)."""
        self._reload_requested = True
        if self._wake is not None:
            self._wake.set()

    def _events(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._stopped is None:
            self._stopped = asyncio.Event()
            if self._stop_requested:
                self._stopped.set()

    async def start(self) -> None:
        """Open the ledger, log in, start watching, scan once. Raises CarmicError/LedgerError."""
        self._loop = asyncio.get_running_loop()
        self._events()
        cfg = self.config
        # One daemon per state_dir (a lock held until stop()); a damaged ledger is refused.
        self.opened = open_for_daemon(cfg.daemon.state_dir, clock=self.clock)
        self.ledger = self.opened.ledger
        checking = asyncio.ensure_future(asyncio.to_thread(check_or_raise, self.opened.path))
        checking.add_done_callback(lambda f: f.cancelled() or f.exception())
        if cfg.cluster is not None:
            # The jobs are the cluster's (PostgreSQL); this host's SQLite ledger keeps what
            # only this host sees. The outboxes are read back by nobody: the shared ledger
            # remembers what every host delivered.
            self.ledger = await self._join_cluster(cfg, self.opened.ledger)
        elif self.opened.fresh:  # a new or emptied ledger: what the outboxes say was delivered
            await self._read_back_outboxes(cfg)
        # Notifications after the read-back: jobs read back from manifests are history, not news.
        from watchd.notify.service import NotifyService

        on_result = self.metrics.notification if self.metrics is not None else None
        self.notify = NotifyService(self.opened.ledger, cfg, self.clock, on_result)
        self.known = self.ledger.known_identities()
        self._forgot_after, _ = self.ledger.forgotten_since(None)
        if self.metrics is not None and cfg.daemon.metrics:
            try:
                self.metrics_server = self.metrics.serve(
                    cfg.daemon.metrics, self.healthy, allow_non_loopback=True
                )
            except OSError as e:
                raise startup.cannot_serve_metrics(cfg.daemon.metrics, e) from e
            # MetricsServer logs its real URL, also when the config asked for any free port.
            from watchd.probe import probe_timeouts, stuck_probes

            self.metrics.watch_probes(stuck_probes, probe_timeouts)
        if cfg.web.enabled and self.web is None:
            from watchd.web.app import start_for_daemon

            self.web = await start_for_daemon(self)
        if cfg.cluster is not None:
            from watchd.carmic.http import set_node

            set_node(cfg.cluster.node)
        factory = None
        if self.keeper is not None:
            from watchd.cluster.pace import shared_buckets

            # The workspace's pace is the cluster's: every host's creates and exports count.
            ledger = self.keeper.ledger
            factory = shared_buckets(ledger, owner=f"{ledger.node}:{ledger.instance}")
        client = self._client or _build_client(
            cfg, self.clock, self.metrics, bucket_factory=factory
        )
        self._client = client
        self.notifier.status(f"logging in to Carmic at {cfg.carmic.api_url}")
        # One login attempt may itself take a minute (the client retries and paces logins),
        # and a network that is down at boot may take much longer: keep pushing systemd's start
        # timeout out while the loop is alive and still trying.
        extender = asyncio.create_task(self._extend_start_timeout(), name="watchd-extend-start")
        try:
            workspace = await _login_with_retry(
                client,
                self.clock,
                lambda: self._stop_requested,
                self.notifier,
                first_delay=self.login_retry_first,
            )
        finally:
            extender.cancel()
        shared_limit = None
        if self.keeper is not None:
            from watchd.cluster.pace import SharedProcessingLimit

            # A limit learned from a refusal holds for every host on the workspace.
            shared_limit = SharedProcessingLimit(self.keeper.ledger, workspace.id, clock=self.clock)
        limit = ProcessingLimit(
            configured=cfg.carmic.max_processing,
            tier=tier_limit(workspace.tier),
            shared=shared_limit,
        )
        settings = PipelineSettings(
            realtime=cfg.carmic.realtime,
            poll_seconds=cfg.carmic.poll_seconds,
            max_uploads=cfg.daemon.max_uploads,
            max_render_retries=cfg.daemon.max_render_retries,
            settle_seconds=cfg.daemon.settle_seconds,
            hold_seconds=cfg.daemon.hold_seconds,
        )
        self.pipeline = Pipeline(
            self.ledger,
            client,
            settings=settings,
            clock=self.clock,
            probe_fn=self._probe_fn,
            limit=limit,
            on_event=self._on_pipeline_event,
        )
        await self._refresh_styles()
        problems = presetcheck.config_style_problems(cfg, self.workspace_styles)
        if problems:
            raise ConfigError(problems)
        log.info(
            "logged in as %s, workspace %s (%s, tier %s); processing limit %s",
            cfg.carmic.email,
            workspace.name,
            workspace.id,
            workspace.tier or "unknown",
            limit.effective() or "none",
        )
        self.notifier.status("scanning the inboxes")
        self._setup_inboxes(cfg)
        if self.keeper is not None:
            self.keeper.ledger.paused = self.pipeline.paused_inboxes
            self._start_cluster(client)
        try:
            await self.rescan(self.clock.now())
        finally:
            # PRAGMA quick_check, run beside the login and the first scan (which only look):
            # done before the first tick, so before anything is taken or billed. A damaged
            # ledger is told as such, whatever the scan ran into.
            await checking
        self.ready = True

    # ---- several hosts ([cluster]) ------------------------------------------------------------

    async def _join_cluster(self, cfg: Config, local: Ledger) -> ClusterLedger:
        """Open the shared ledger (schema brought up to date under a lock), and record this
        node as live (refused when another live host uses its name)."""
        from watchd import __version__

        # psycopg is imported only here: one host needs no PostgreSQL driver installed.
        from watchd.cluster.lease import LeaseKeeper
        from watchd.cluster.ledger import ClusterLedger

        cluster = cfg.cluster
        assert cluster is not None
        self.notifier.status(f"opening the cluster's ledger at {cluster.shown}")
        password = cluster.password.reveal() if cluster.password is not None else None
        delay, told = 2.0, False
        extender = asyncio.create_task(self._extend_start_timeout(), name="watchd-extend-start")
        try:
            while True:
                try:
                    ledger = await asyncio.to_thread(
                        ClusterLedger,
                        cluster.database,
                        local=local,
                        node=cluster.node,
                        lease_seconds=cluster.lease_seconds,
                        inboxes=[inbox_key(i, True) for i in cfg.inboxes],
                        password=password,
                    )
                    break
                except LedgerError as e:
                    if not database_may_come_back(str(e)):
                        raise  # a wrong password, no such database: the config's to fix
                    if not told:
                        log.warning("%s; waiting for it (trying again, backing off)", e)
                        told = True
                    self.notifier.status(f"waiting for the ledger database: {e}")
                    await self._wait_stop(delay)
                    if self._stop_requested:
                        raise _Stopped() from None
                    delay = min(30.0, delay * 2)
        finally:
            extender.cancel()
        try:
            ledger.register(__version__)
            ledger.adopt_paths({str(i.path): inbox_key(i, True) for i in cfg.inboxes})
        except BaseException:
            ledger.close()
            raise
        self.keeper = LeaseKeeper(ledger, self.clock)
        log.info(
            "node %s joined the cluster at %s (leases of %.0f s)",
            cluster.node,
            cluster.shown,
            cluster.lease_seconds,
        )
        return ledger

    def _start_cluster(self, client: Any) -> None:
        """Lease renewals, the lease gate before every request and stage, and wake-ups."""
        from watchd.cluster.wakeup import Wakeups

        assert self.keeper is not None and self.pipeline is not None
        ledger = self.keeper.ledger
        cluster = self.config.cluster
        assert cluster is not None
        ledger.on_lost = self.pipeline.lease_lost
        self.pipeline.lease_gate = self.keeper.gate
        if hasattr(client, "before_request"):
            client.before_request = self.keeper.gate
        self._cluster_tasks.append(
            asyncio.create_task(self.keeper.run(), name="watchd-lease-keeper")
        )
        password = cluster.password.reveal() if cluster.password is not None else None

        def woken() -> None:  # another node freed a slot or let jobs go: look at once
            ledger.look_again()
            self._wake_threadsafe()

        self.wakeups = Wakeups(cluster.database, woken, password=password)
        self.wakeups.start()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._wake is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake.set)

    async def _leave_cluster(self) -> None:
        """A clean stop: the jobs this node holds are let go at once (not after the lease)."""
        for task in self._cluster_tasks:
            task.cancel()
        self._cluster_tasks.clear()
        if self.wakeups is not None:
            await asyncio.to_thread(self.wakeups.stop)
            self.wakeups = None
        if self.keeper is not None:
            try:
                self.keeper.ledger.stop()
            except LedgerError as e:
                log.warning("could not let this node's jobs go (they lapse by lease): %s", e)

    async def _read_back_outboxes(self, cfg: Config) -> None:
        """Rebuild a new ledger from the outbox manifests (hashing the sources it finds may
        take a while: systemd's start timeout is pushed out meanwhile)."""
        assert self.opened is not None
        if not await asyncio.to_thread(any_manifest, cfg.inboxes):
            return  # a first start: nothing delivered yet
        self.notifier.status("reading the outbox manifests back into a new ledger")
        extender = asyncio.create_task(self._extend_start_timeout(), name="watchd-extend-start")
        try:
            report = await asyncio.to_thread(
                rebuild, self.opened.ledger, cfg.inboxes, should_stop=lambda: self._stop_requested
            )
        finally:
            extender.cancel()
        if report.recorded or report.problems:
            log.warning("ledger %s was new or empty: %s", self.opened.path, report.summary())

    async def _extend_start_timeout(self) -> None:
        while True:
            self.notifier.extend_timeout(START_EXTEND_BY)
            await asyncio.sleep(START_EXTEND_EVERY)

    def _setup_inboxes(self, cfg: Config) -> None:
        cluster = cfg.cluster is not None
        wanted = {inbox_key(i, cluster): i for i in cfg.inboxes}
        assert self.ledger is not None
        last_entries = {row.path: row.entries for row in self.ledger.inboxes()}
        for key in list(self.inboxes):
            if key not in wanted:
                gone = self.inboxes.pop(key)
                if gone.observer:
                    gone.observer.stop()
                if self.pipeline is not None:
                    self.pipeline.paused_inboxes.discard(key)
                self.entries.begin_scan(key)  # an inbox no longer watched reports nothing
                self.entries.end_scan(key)
                log.info("inbox %s removed from the config; no longer watched", key)
        for key, inbox in wanted.items():
            make_folders(inbox)  # rule folders and the outbox, where they can be made
            existing = self.inboxes.get(key)
            if existing is not None:
                existing.config = inbox
                continue
            rt = InboxRuntime(
                config=inbox,
                monitor=InboxMonitor(inbox.path, last_entries=last_entries.get(key)),
                cluster=cluster,
            )
            rt.observer = InboxObserver(
                inbox.path,
                "poll" if cfg.daemon.scan == "poll" else "events",
                self._enqueue_threadsafe,
                poll_interval=cfg.daemon.poll_interval,
            )
            rt.observer.start()
            self.inboxes[key] = rt
            log.info("watching %s (%s) -> %s", inbox.path, rt.observer.effective_mode, inbox.outbox)
        if cluster and self.pipeline is not None:
            self.pipeline.inbox_paths = {k: rt.config.path for k, rt in self.inboxes.items()}
            self.pipeline.outbox_paths = {k: rt.config.outbox for k, rt in self.inboxes.items()}
        if self.keeper is not None:
            shared = self.keeper.ledger
            shared.inbox_names = list(self.inboxes)
            if self.pipeline is not None:
                shared.paused = self.pipeline.paused_inboxes  # the same set, kept current

    async def stop(self) -> None:
        """Stop taking work, cancel the pipeline's steps (the ledger has their checkpoints),
        stop the observers and the metrics server, close the client and the ledger."""
        self.notifier.stopping("stopping: checkpointing in-flight work")
        if self.pipeline:
            await self.pipeline.stop(timeout=5.0)
        await self._leave_cluster()
        for rt in self.inboxes.values():
            if rt.observer:
                await asyncio.to_thread(rt.observer.stop)
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
            self.metrics_server = None
        if self.web is not None:
            await self.web.close()
            self.web = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        if self.notify is not None:
            await self.notify.aclose()
        if self.ledger:
            with contextlib.suppress(Exception):  # files settling are not settling any more
                self.entries.set_settling([])
                self.entries.sync(self.ledger, self.clock.now(), force=True)
            self.ledger.close()
            if self.opened is not None and self.ledger is not self.opened.ledger:
                self.opened.ledger.close()
        if self.opened is not None:
            self.opened.lock.release()

    async def run(self) -> int:
        """Start, then tick until SIGTERM/SIGINT. Returns the process exit code."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._events()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        keepalive = asyncio.create_task(
            self.liveness.keep_alive(lambda: self.ledger, self._watched_observers),
            name="watchd-keepalive",
        )
        try:
            try:
                await self._unless_stopped(self.start())
            except AuthError as e:
                log.error("cannot log in to Carmic: %s", e)
                await self.stop()
                return EXIT_AUTH
            except ConfigError as e:
                log.error("bad config %s: %s", cfg_path(self.config), e)
                await self.stop()
                return EXIT_CONFIG
            except _Stopped:
                log.info("stopped while starting")
                await self.stop()
                return EXIT_OK
            except (LedgerError, startup.StartupError) as e:
                startup.log_failure(log, str(e), e, debug=self.debug)
                await self.stop()
                return EXIT_CONFIG
            except Exception as e:
                what = f"cannot start: {startup.describe_unexpected(e)}"
                if not self.debug:
                    what += " (run with --debug for the traceback)"
                startup.log_failure(log, what, e, debug=self.debug)
                await self.stop()
                return EXIT_FAILED
            self.notifier.ready(self.status_line())
            log.info("ready: %s", self.status_line())
            try:
                while not self._stop_requested:
                    now = self.clock.now()
                    self.liveness.step_started()
                    try:
                        await self.tick(now)
                    except DatabaseUnavailable as e:
                        # A wait, not a failure: watching goes on (events are kept for the next
                        # step), nothing new starts, the next step tries again, backing off.
                        self.liveness.step_finished(True)
                        self._db_waits += 1
                        pause = min(30.0, 2.0 ** min(self._db_waits, 5))
                        if self._db_waits == 1:
                            log.warning(
                                "%s; waiting for it (watching goes on, nothing new starts; "
                                "trying again every %.0f s at most)",
                                e,
                                30.0,
                            )
                        self.notifier.status(f"waiting for the ledger database: {e}")
                        await self._wait_stop(pause)
                        continue
                    except Exception:
                        # A locked or full ledger, a NAS error we did not foresee: log it and
                        # try again, backing off; alive() turns false if it keeps failing.
                        self.liveness.step_finished(False)
                        failed = self.liveness.failed_steps
                        log.exception("a step of the main loop failed (%d in a row)", failed)
                        await self._wait_stop(min(30.0, self.tick_retry_base * 2 ** (failed - 1)))
                        continue
                    self.liveness.step_finished(True)
                    if self._db_waits:
                        log.info("the ledger database answers again after %d tries", self._db_waits)
                        self._db_waits = 0
                        self._next_rescan = 0.0  # files that settled meanwhile: look again
                    await self._sleep_until_next(now)
            finally:
                log.info("stopping: checkpointing in-flight work")
                await self.stop()
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
                if self.hold_signals_when_stopped and sig != signal.SIGHUP:
                    # Stopped: the process only exits now. Without the loop's handler a second
                    # SIGTERM (a supervisor, an impatient operator) would kill it by the
                    # signal, not a clean stop: ignored from here on.
                    signal.signal(sig, signal.SIG_IGN)
        log.info("stopped")
        return EXIT_OK

    async def _wait_stop(self, seconds: float) -> None:
        assert self._stopped is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _unless_stopped(self, work: Awaitable[T]) -> T:
        """``await work`` unless a stop is requested first (then cancel it, raise _Stopped):
        a login that hangs or waits out an outage must not hold up SIGTERM."""
        assert self._stopped is not None
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise _Stopped()

    async def _sleep_until_next(self, now: float) -> None:
        assert self._wake is not None
        waits = [HEARTBEAT, max(0.0, self._next_rescan - now)]
        settle_in = self.tracker.next_due_in(now)
        if settle_in is not None:
            waits.append(max(0.01, settle_in))
        if self.ledger is not None:
            due = self.ledger.next_due_at()
            if due is not None and due > now:
                waits.append(due - now)
        timeout = max(0.01, min(waits))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    # ---- liveness --------------------------------------------------------------------------

    def _watched_observers(self) -> list[tuple[str, Any]]:
        return [(k, rt.observer) for k, rt in list(self.inboxes.items()) if not rt.paused]

    def alive(self) -> tuple[bool, str]:
        """Liveness, what the watchdog ping stands for (see :class:`Liveness`). Safe to call
        from any thread."""
        return self.liveness.check(self._watched_observers())

    def healthy(self) -> tuple[bool, str]:
        """Readiness, for ``/healthz``: started (logged in, first scan done) and alive."""
        if not self.ready:
            return False, "starting"
        return self.alive()

    # ---- the loop body ---------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        """One step of the main loop: reload if asked, observe, rescan when due, take settled
        files, schedule the pipeline, publish the status."""
        assert self.pipeline is not None and self.ledger is not None
        if self._reload_requested:
            self._reload_requested = False
            await self._refresh_styles()
            self.reload()
        paths, self._pending_paths = self._pending_paths, set()
        for path in paths:
            with self._per_entry(path, now):
                self._observe(path, now)
        if now >= self._next_rescan:
            await self.rescan(now)
        for settled in self.tracker.due(now):
            with self._per_entry(settled.path, now):
                await self.intake(settled.path, settled.stat)
        self._sync_entries(now)
        self._check_observers()
        self.pipeline.schedule(now)
        self._publish_status(now)

    def _take_forgotten(self) -> None:
        """Files whose jobs `watchd forget` dropped are new again: one that comes back into
        the inbox is taken at once, not only after a restart. Asked at each rescan and when a
        settled file looks known (never per tick: it costs a query)."""
        assert self.ledger is not None
        self._forgot_after, gone = self.ledger.forgotten_since(self._forgot_after)
        for inbox, rel, size, mtime_ns in gone:
            self.known.get((inbox, rel), set()).discard((size, mtime_ns))
            rt = self.inboxes.get(inbox)
            if rt is not None:
                self._observe(rt.config.path / rel, self.clock.now())

    def _enqueue_threadsafe(self, path: Path) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._enqueue, path)

    def _enqueue(self, path: Path) -> None:
        self._pending_paths.add(path)
        if self._wake is not None:
            self._wake.set()

    def _inbox_of(self, path: Path) -> InboxRuntime | None:
        for rt in self.inboxes.values():
            try:
                path.relative_to(rt.config.path)
            except ValueError:
                continue
            return rt
        return None

    def _observe(self, path: Path, now: float) -> None:
        rt = self._inbox_of(path)
        if rt is None or rt.paused:
            return
        rel = PurePosixPath(path.relative_to(rt.config.path).as_posix())
        if not is_candidate(rel):
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.tracker.forget(path)
            self.entries.gone(rt.key, rel.as_posix())
            return
        kind = regular.special_kind(st.st_mode)
        if kind is not None:
            self.tracker.forget(path)
            self._not_taken(rt, path, rel.as_posix(), "not_regular", regular.not_taken_reason(kind))
        elif not self._bad_name(rt, path, rel.as_posix(), now):
            self.entries.regular(rt.key, nfc(rel.as_posix()))
            self.tracker.observe(path, now)

    # ---- entries that are not taken ------------------------------------------------------

    @contextlib.contextmanager
    def _per_entry(self, path: Path, now: float) -> Iterator[None]:
        """One entry's trouble stays with it: recorded against the entry (logged once, shown
        in `watchd status`), and the loop goes on with the others."""
        try:
            yield
        except DatabaseUnavailable:
            raise  # not this entry's trouble: the main loop waits for the database
        except Exception as e:
            rt = self._inbox_of(path)
            if rt is None:
                log.exception("cannot handle %s", regular.printable(str(path))[0])
                return
            self.tracker.forget(path)
            self._not_taken(
                rt,
                path,
                path.relative_to(rt.config.path).as_posix(),
                ERROR,
                f"not taken: {type(e).__name__}: {e}",
                exc_info=True,
            )

    def _not_taken(
        self, rt: InboxRuntime, path: Path, rel: str, code: str, reason: str, **kw: Any
    ) -> tuple[str, str]:
        rule = rt.config.rule_for(PurePosixPath(rel).parent).name
        return self.entries.not_taken(
            rt.key,
            str(path),
            rel,
            rule=rule,
            code=code,
            reason=reason,
            now=self.clock.now(),
            **kw,
        )

    def _bad_name(self, rt: InboxRuntime, path: Path, rel: str, now: float) -> bool:
        """A name that is not valid UTF-8 cannot be stored or shown as it is: reported, not
        taken (its row shows it with the bad bytes escaped)."""
        if not regular.printable(rel)[1]:
            return False
        self._not_taken(rt, path, rel, "bad_name", "the name is not valid UTF-8: rename it")
        return True

    def _sync_entries(self, now: float, *, force: bool = False) -> None:
        """Mirror the files settling and the entries not taken into the ledger (batched)."""
        assert self.ledger is not None
        if not (force or self.entries.due(now)):
            return  # batched: a burst of files is not a write per observation
        settling = []
        wait = self.tracker.settle_seconds
        for path, st, since, writing in self.tracker.waiting():
            rt = self._inbox_of(path)
            if rt is None:
                continue
            rel = nfc(path.relative_to(rt.config.path).as_posix())
            rule = rt.config.rule_for(PurePosixPath(rel).parent).name
            settling.append(
                settling_row(
                    rt.key,
                    str(path),
                    rel,
                    rule=rule,
                    since=since,
                    wait=wait,
                    size=st.size,
                    now=now,
                    writing=writing,
                )
            )
        self.entries.set_settling(settling)
        self.entries.sync(self.ledger, now, force=True)

    async def rescan(self, now: float) -> None:
        """Walk every inbox (in a thread: a NAS can be slow) and observe what is new."""
        assert self.ledger is not None and self.pipeline is not None
        self._next_rescan = now + self.config.daemon.rescan_seconds
        self._take_forgotten()
        for rt in list(self.inboxes.values()):
            result = await asyncio.to_thread(scan_inbox, rt.config.path)
            if self.inboxes.get(rt.key) is not rt:
                continue  # removed by a reload while it was being scanned
            health = rt.monitor.check(result, now)
            if rt.paused and not health.paused and rt.observer is not None:
                # The share is back (possibly a new mount): watch the new directory.
                await asyncio.to_thread(rt.observer.restart)
                await asyncio.to_thread(make_folders, rt.config)
            rt.paused, rt.reason = health.paused, (health.reason or None)
            if rt.paused:
                # Only a full scan resumes an inbox: look again soon rather than in rescan_seconds.
                self._next_rescan = min(self._next_rescan, now + PAUSED_RESCAN)
            rt.last_scan_at = now
            if rt.paused:
                self.pipeline.paused_inboxes.add(rt.key)
            else:
                self.pipeline.paused_inboxes.discard(rt.key)
            self.ledger.set_inbox(
                rt.key, paused=rt.paused, reason=rt.reason, entries=result.entries, last_scan_at=now
            )
            if self.metrics:
                self.metrics.set_last_scan(rt.key, now)
                self.metrics.set_inbox_paused(rt.key, rt.paused, rt.reason)
            if rt.paused:
                continue
            self.entries.begin_scan(rt.key)
            for f in result.files:
                rel = nfc(f.rel_str)
                sig = (f.stat.size, f.stat.mtime_ns)
                if sig in self.known.get((rt.key, rel), ()):
                    continue
                with self._per_entry(f.path, now):
                    if not self._bad_name(rt, f.path, rel, now):
                        self.entries.regular(rt.key, rel)
                        self.tracker.observe(f.path, now)
            for skip in result.skipped:
                reason = regular.not_taken_reason(skip.kind)
                self._not_taken(rt, Path(skip.path), skip.rel, "not_regular", reason)
            self.entries.end_scan(rt.key)

    async def intake(self, path: Path, stat: Any) -> None:
        """A settled file: record it in the ledger (unless it is known) as a queued job."""
        assert self.ledger is not None and self.pipeline is not None
        rt = self._inbox_of(path)
        if rt is None or rt.paused:
            return
        rel = nfc(path.relative_to(rt.config.path).as_posix())
        if self._bad_name(rt, path, rel, self.clock.now()):
            return
        sig = (stat.size, stat.mtime_ns)
        if sig in self.known.get((rt.key, rel), set()):
            self._take_forgotten()
            if sig in self.known.get((rt.key, rel), set()):
                return
        if self.ledger.find_by_identity(rt.key, rel, stat.size, stat.mtime_ns) is not None:
            self.known.setdefault((rt.key, rel), set()).add(sig)
            return
        if takes_changes(self.ledger.active_at_path(rt.key, rel), self.clock.now(), self.ledger):
            # Its job has not sent the file yet (held, or waiting for a slot): it takes the
            # change itself, settling again; a second job would split one video in two.
            self.known.setdefault((rt.key, rel), set()).add(sig)
            return
        problem, rule_name, record = self._resolve(rt, path, rel)
        try:
            fp = await asyncio.to_thread(fingerprint, path, stat.size, expect=(stat.dev, stat.ino))
        except FileNotFoundError:
            return
        except regular.NotRegularFile:
            self._observe(path, self.clock.now())  # replaced since it settled: look again
            return
        except OSError as e:
            fp = ""  # worked out when the job is retried and the file can be read
            problem = problem or _unreadable(e)
        # Lost to a power cut, the file is found again by the start-up scan: nothing is sent
        # before the next durable write (the create intent) puts this one on disk too.
        try:
            job = self._add_job(
                inbox=rt.key,
                rel_path=rel,
                path=str(path),
                rule=rule_name,
                preset=record,
                size=stat.size,
                mtime_ns=stat.mtime_ns,
                inode=stat.ino,
                dev=stat.dev,
                fingerprint=fp,
            )
        except TakenElsewhere as e:
            log.debug("%s", e)  # another node's job from now on
            self.known.setdefault((rt.key, rel), set()).add(sig)
            self.entries.gone(rt.key, rel)
            return
        self.known.setdefault((rt.key, rel), set()).add(sig)
        self.entries.gone(rt.key, rel)
        log.info(
            "queued %s (rule %r) as job %s",
            rel,
            rule_name,
            job.id,
            extra={
                "job_id": job.id,
                "rule": rule_name,
                "state": job.state,
                "source_path": str(path),
            },
        )
        if problem is not None:
            await self.pipeline.handle_error(job, problem)

    def _add_job(self, **job: Any) -> Any:
        assert self.ledger is not None
        with self.ledger.relaxed():
            return self.ledger.add_job(**job)

    def _resolve(
        self, rt: InboxRuntime, path: Path, rel: str
    ) -> tuple[Fail | None, str, dict[str, Any]]:
        """The file's rule and preset record, with its sidecar when it has one; a sidecar that
        cannot be used is the job's failure (returned, with the rule's name and a bare record)."""
        try:
            sidecar = regular.find_sidecar(path)
            rule, preset = resolve_preset(rt.config, PurePosixPath(rel), sidecar)
            return None, rule.name, preset_record(rt.config, preset)
        except regular.NameTooLong as e:
            problem = Fail(
                "name_too_long",
                f"{e}: a file name may have at most {e.limit} bytes here",
                hint=f"Rename the file to at most {e.limit} bytes, then drop it again.",
                resume=Stage.QUEUED,
            )
        except (ConfigError, OSError) as e:
            detail = (e.strerror if isinstance(e, OSError) else None) or str(e)
            problem = Fail(
                "sidecar_invalid",
                f"the sidecar {path.name}{regular.SIDECAR_SUFFIX} is invalid: {detail}",
                hint="Fix the sidecar .toml (a regular file), then `watchd retry` the job.",
                resume=Stage.QUEUED,
            )
        rule_name = rt.config.rule_for(PurePosixPath(rel).parent).name
        bare = {"_delivery": preset_record(rt.config, _EmptyPreset())["_delivery"]}
        return problem, rule_name, bare

    def _check_observers(self) -> None:
        for rt in self.inboxes.values():
            if rt.paused:
                continue  # a missing share cannot be watched; the resume restarts it
            if rt.observer is not None and not rt.observer.alive():
                log.error("observer for %s died; restarting it (a rescan covers the gap)", rt.key)
                rt.observer.restart()
                self._next_rescan = 0.0

    # ---- reload ----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config (SIGHUP). Inboxes and rules added, changed or removed take effect
        at once; in-flight jobs keep the preset the ledger stored for them; an invalid new
        config is refused with the reason logged, and the old one stays in force."""
        path = self.config.path
        if path is None:
            log.warning("reload requested, but the config was not read from a file")
            return False
        self.notifier.reloading(f"reloading {path}")
        try:
            new = load_config(path, allow_missing_inboxes=True)
            if (new.cluster is None) != (self.config.cluster is None):
                raise ConfigError(
                    "[cluster] was added or removed: that takes a restart (`systemctl restart "
                    "carmic-watchd`)"
                )
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            self.notifier.ready(self.status_line())
            return False
        except OSError as e:
            log.error("reload refused, cannot read %s (%s); keeping the running config", path, e)
            self.notifier.ready(self.status_line())
            return False
        problems = presetcheck.config_style_problems(new, self.workspace_styles)
        if problems:
            log.error("reload refused, keeping the running config: %s", ConfigError(problems))
            self.notifier.ready(self.status_line())
            return False
        old, self.config = self.config, new
        for name in restart_only_changes(old, new):
            log.warning("%s changed: it takes effect at the next restart", name)
        self.tracker.settle_seconds = new.daemon.settle_seconds
        if self.pipeline is not None:
            s = self.pipeline.settings
            s.realtime = new.carmic.realtime
            s.poll_seconds = new.carmic.poll_seconds
            s.max_render_retries = new.daemon.max_render_retries
            s.settle_seconds = new.daemon.settle_seconds
            s.hold_seconds = new.daemon.hold_seconds
        self._setup_inboxes(new)
        if self.notify is not None:
            self.notify.reload(new)
        self._next_rescan = 0.0
        from watchd.service.logsetup import setup_logging

        setup_logging(new.daemon.log_format, new.daemon.log_level)
        log.info(
            "config reloaded from %s: %d inbox(es), %d rule(s)",
            path,
            len(new.inboxes),
            sum(len(i.rules) for i in new.inboxes),
        )
        self.notifier.ready(self.status_line())
        return True

    async def _refresh_styles(self) -> None:
        """Ask the workspace for its template names (the caption styles it takes besides the
        built-ins); when it cannot be asked, the last answer stays in force."""
        try:
            async with asyncio.timeout(STYLES_TIMEOUT):
                self.workspace_styles = await presetcheck.workspace_styles(self._client)
        except (CarmicError, OSError, TimeoutError) as e:
            what = (
                "checked against the last list"
                if self.workspace_styles is not None
                else "that are not built in cannot be checked until it answers"
            )
            log.warning(
                "could not list the workspace's templates (%s); caption styles %s",
                redact(str(e)),
                what,
            )
        if self.pipeline is not None:
            self.pipeline.workspace_styles = self.workspace_styles

    # ---- status ----------------------------------------------------------------------------

    def status_line(self) -> str:
        """The one-line summary systemd shows (``STATUS=``), e.g. ``3 queued, 1 uploading 42%,
        2 processing, 0 rendering/delivering, 1 parked (billing), 0 failed, 7 delivered``."""
        assert self.ledger is not None
        paused = sum(1 for rt in self.inboxes.values() if rt.paused)
        return summary_line(self.ledger, paused_inboxes=paused)

    def _publish_status(self, now: float) -> None:
        line = self.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)
        mono = self.clock.monotonic()
        if self.metrics is not None and mono >= self._next_metrics:
            self._next_metrics = mono + METRICS_REFRESH
            self._refresh_metrics(now)

    def _refresh_metrics(self, now: float) -> None:
        assert self.ledger is not None and self.metrics is not None
        self.metrics.set_jobs_by_state(self.ledger.counts_by_state())
        self.metrics.set_jobs_waiting(self.ledger.wait_counts())
        waiting = [j.created_at for j in self.ledger.active_jobs()]
        self.metrics.set_oldest_waiting_age(now - min(waiting) if waiting else 0.0)
        # Bytes sent so far, from the progress the upload writes to the ledger: the counter
        # moves during a long upload, not only when it completes.
        uploading = {j.id: j.bytes_uploaded for j in self.ledger.jobs([Stage.UPLOADING])}
        for job_id, sent in uploading.items():
            seen = self._upload_seen.get(job_id, 0)
            if sent < seen:
                seen = 0  # the upload started again from the first byte
            if sent > seen:
                self.metrics.add_uploaded_bytes(sent - seen)
            self._upload_seen[job_id] = sent
        for job_id in set(self._upload_seen) - set(uploading):
            del self._upload_seen[job_id]

    def _on_pipeline_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "uploaded" and self.metrics is not None:
            seen = self._upload_seen.pop(data["job_id"], 0)
            self.metrics.add_uploaded_bytes(data["bytes"] - seen)
            self.metrics.observe_upload(data["bytes"], data["seconds"])
        if kind == "source_removed":
            rt = self.inboxes.get(data["inbox"])
            if rt is not None:
                rt.monitor.note_removed()
        if kind == "transition" and self._wake_later is None and self._loop is not None:
            # A job moved: bring STATUS= and the schedule up to date soon, not at the next beat.
            self._wake_later = self._loop.call_later(TRANSITION_WAKE, self._transition_wake)

    def _transition_wake(self) -> None:
        self._wake_later = None
        if self._wake is not None:
            self._wake.set()


def takes_changes(job: Any, now: float, ledger: LedgerAPI) -> bool:
    """Whether ``job`` (the unfinished job at a path that changed) has not sent its file yet and
    so takes the change itself; if so it is woken to look at the file now."""
    if job is None:
        return False
    stage = Stage(job.resume_stage or job.state) if job.stage is Stage.PARKED else job.stage
    if stage not in NEEDS_SOURCE:
        return False
    if job.stage is Stage.QUEUED and job.next_attempt_at > now:
        ledger.update(job.id, next_attempt_at=now)
    return True


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The ``section.key`` names whose change a reload cannot apply (see RESTART_ONLY)."""
    out = []
    for section, keys in RESTART_ONLY.items():
        a, b = getattr(old, section), getattr(new, section)
        for key in keys:
            if getattr(a, key) != getattr(b, key):
                out.append(f"[{section}] {key}")
    if _cluster_key(old) != _cluster_key(new):
        out.append("[cluster]")
    a_pw, b_pw = old.carmic.password, new.carmic.password
    if (a_pw is None) != (b_pw is None) or (
        a_pw is not None and b_pw is not None and a_pw.reveal() != b_pw.reveal()
    ):
        out.append("[carmic] password")
    return out


# A refusal at connect that waiting does not cure: the config (or the database's set-up) must
# change. Anything else (refused, timed out, the server starting up) may come back.
_DATABASE_FOR_GOOD = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "newer than this watchd",
    "permission denied",
)


def database_may_come_back(message: str) -> bool:
    return not any(m in message for m in _DATABASE_FOR_GOOD)


def _cluster_key(cfg: Config) -> tuple[Any, ...] | None:
    c = cfg.cluster
    if c is None:
        return None
    password = c.password.reveal() if c.password is not None else None
    return (c.database, c.node, c.lease_seconds, password)


def cfg_path(cfg: Config) -> str:
    return str(cfg.path) if cfg.path is not None else "(not from a file)"


def _unreadable(e: OSError) -> Fail:
    """The failure of a settled file that cannot be read."""
    if isinstance(e, PermissionError):
        user = _user_name()
        return Fail(
            "unreadable",
            f"cannot read: permission denied for user {user}",
            hint=f"Let user {user} read the file (chmod/chown), then `watchd retry` the job.",
            resume=Stage.QUEUED,
        )
    return Fail(
        "unreadable",
        f"cannot read: {e.strerror or e}",
        hint="Check the file and the share, then `watchd retry` the job.",
        resume=Stage.QUEUED,
    )


def _user_name() -> str:
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class _EmptyPreset:
    def to_json(self) -> dict[str, Any]:
        return {}


class _Stopped(Exception):
    pass


async def _login_with_retry(
    client: Any,
    clock: Clock,
    stopping: Callable[[], bool],
    notifier: Any,
    *,
    first_delay: float = LOGIN_RETRY_FIRST,
) -> Any:
    """Log in and resolve the workspace; network trouble at boot is waited out (telling systemd
    so, and extending its start timeout), bad credentials are not (AuthError propagates)."""
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        # One try per round: this loop retries (and says so) itself, at once, not after the
        # client's own retries.
        once = getattr(client, "retrying_as", None)
        try:
            with once(RetryPolicy(attempts=1)) if once else contextlib.nullcontext():
                return await client.resolve_workspace()
        except AuthError:
            raise
        except (TransientError, OSError) as e:
            if stopping():
                raise _Stopped() from e
            reason = redact(str(e))
            log.warning("cannot reach Carmic yet (%s); retrying in %.0fs", reason, delay)
            notifier.status(
                f"waiting for the Carmic API (attempt {attempt}, next in {delay:.0f}s): {reason}"
            )
            # Time for the wait plus the next attempt's own timeouts, counted from now.
            notifier.extend_timeout(delay + 30)
            await clock.sleep(delay)
            delay = min(LOGIN_RETRY_MAX, delay * 2)
        except CarmicError:
            raise


def _build_client(
    cfg: Config, clock: Clock, metrics: Any = None, *, bucket_factory: Any = None
) -> Any:
    from watchd.carmic.client import CarmicClient

    c = cfg.carmic
    hooks: dict[str, Any] = {}
    if metrics is not None:
        hooks = {
            "on_response": metrics.api_response,
            "on_rate_limited": metrics.rate_limited,
            "on_login": metrics.login,
        }
    return CarmicClient(
        c.api_url,
        c.email,
        c.require_password(),
        workspace=c.workspace,
        clock=clock,
        creates_per_minute=c.creates_per_minute,
        exports_per_minute=c.exports_per_minute,
        ca_file=c.ca_file,
        bucket_factory=bucket_factory,
        **hooks,
    )


def run_daemon(config_path: Path, *, debug: bool = False) -> int:
    """``watchd run``: load the config (exit 2 when bad), then run until SIGTERM/SIGINT.

    An inbox missing at start (a share not mounted yet) is not a config error: it pauses."""
    from watchd.service.logsetup import setup_logging

    setup_logging("auto", "info")
    try:
        config = load_config(config_path, allow_missing_inboxes=True)
        config.carmic.require_password()
    except ConfigError as e:
        log.error("bad config %s: %s", config_path, e)
        return EXIT_CONFIG
    setup_logging(config.daemon.log_format, "debug" if debug else config.daemon.log_level)
    try:
        loop = eventloop.choose()
    except eventloop.EventLoopError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    log.info("password from %s; event loop %s", config.carmic.password_source, loop.name)
    daemon = Daemon(config)
    daemon.debug = daemon.debug or debug
    daemon.hold_signals_when_stopped = True
    started = time.monotonic()
    code = eventloop.run(daemon.run(), loop)
    log.debug("ran for %.1fs (pid %d)", time.monotonic() - started, os.getpid())
    return code
