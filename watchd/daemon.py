"""The daemon: watchers -> settle -> ledger -> pipeline, in one asyncio loop.

Only :meth:`Daemon.run` reads the real clock; :meth:`Daemon.tick` takes ``now``. Watchdog's event
handlers run on watchdog's thread and only enqueue paths; a full rescan at start and every
``rescan_seconds`` is the source of truth, so a missed event costs latency, never a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from watchd.carmic.errors import AuthError, CarmicError, TransientError
from watchd.clock import Clock, SystemClock
from watchd.config import Config, ConfigError, InboxConfig, load_config, resolve_preset
from watchd.ledger.db import Ledger
from watchd.ledger.states import Stage
from watchd.pipeline.identity import fingerprint
from watchd.pipeline.outcomes import Fail
from watchd.pipeline.runner import Pipeline, PipelineSettings
from watchd.pipeline.scheduler import ProcessingLimit, tier_limit
from watchd.watching.ignore import is_candidate, nfc
from watchd.watching.inbox import InboxMonitor
from watchd.watching.observer import InboxObserver
from watchd.watching.scanner import scan_inbox
from watchd.watching.settle import SettleTracker

log = logging.getLogger("watchd.daemon")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_AUTH = 3
HEARTBEAT = 1.0  # the loop wakes at least this often (schedule, watchdog ping, stop checks)
PAUSED_RESCAN = 5.0  # how often a paused inbox is scanned to see whether it is back


@dataclass
class InboxRuntime:
    config: InboxConfig
    observer: InboxObserver | None = None
    monitor: InboxMonitor = field(default_factory=lambda: InboxMonitor(Path("/")))
    paused: bool = False
    reason: str | None = None
    last_scan_at: float = 0.0

    @property
    def key(self) -> str:
        return str(self.config.path)


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
        self._metrics_server: Any = None
        self._last_ping = 0.0
        self._last_heartbeat = 0.0
        self.ledger: Ledger | None = None
        self.pipeline: Pipeline | None = None
        self.inboxes: dict[str, InboxRuntime] = {}
        self.tracker = SettleTracker(config.daemon.settle_seconds)
        self.known: dict[tuple[str, str], set[tuple[int, int]]] = {}
        self._pending_paths: set[Path] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._reload_requested = False
        self._next_rescan = 0.0
        self._last_status = ""
        self._ledger_ok = True
        self.ready = False

    # ---- lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._wake is not None:
            self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        """Open the ledger, log in, start watching. Raises CarmicError/LedgerError."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        cfg = self.config
        self.ledger = Ledger.open(cfg.daemon.state_dir, clock=self.clock)
        self.known = self.ledger.known_identities()
        if self.metrics is not None and cfg.daemon.metrics:
            self._metrics_server = self.metrics.serve(
                cfg.daemon.metrics, self.healthy, allow_non_loopback=True
            )
            log.info("metrics on %s/metrics", self._metrics_server.url)
        client = self._client or _build_client(cfg, self.clock, self.metrics)
        self._client = client
        self.notifier.status("logging in to Carmic")
        workspace = await _login_with_retry(
            client, self.clock, lambda: self._stop_requested, self.notifier
        )
        limit = ProcessingLimit(
            configured=cfg.carmic.max_processing, tier=tier_limit(workspace.tier)
        )
        settings = PipelineSettings(
            realtime=cfg.carmic.realtime,
            poll_seconds=cfg.carmic.poll_seconds,
            max_uploads=cfg.daemon.max_uploads,
            max_render_retries=cfg.daemon.max_render_retries,
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
        log.info(
            "logged in as %s, workspace %s (%s, tier %s); processing limit %s",
            cfg.carmic.email,
            workspace.name,
            workspace.id,
            workspace.tier or "unknown",
            limit.effective() or "none",
        )
        self._setup_inboxes(cfg)
        await self.rescan(self.clock.now())
        self.ready = True

    def _setup_inboxes(self, cfg: Config) -> None:
        wanted = {str(i.path): i for i in cfg.inboxes}
        assert self.ledger is not None
        last_entries = {row.path: row.entries for row in self.ledger.inboxes()}
        for key in list(self.inboxes):
            if key not in wanted:
                gone = self.inboxes.pop(key)
                if gone.observer:
                    gone.observer.stop()
                log.info("inbox %s removed from the config; no longer watched", key)
        for key, inbox in wanted.items():
            existing = self.inboxes.get(key)
            if existing is not None:
                existing.config = inbox
                continue
            rt = InboxRuntime(
                config=inbox,
                monitor=InboxMonitor(inbox.path, last_entries=last_entries.get(key)),
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

    async def stop(self) -> None:
        self.notifier.stopping()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.close)
            self._metrics_server = None
        if self.pipeline:
            await self.pipeline.stop(timeout=5.0)
        for rt in self.inboxes.values():
            if rt.observer:
                await asyncio.to_thread(rt.observer.stop)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        if self.ledger:
            self.ledger.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.start()
        except AuthError as e:
            log.error("cannot log in to Carmic: %s", e)
            await self.stop()
            return EXIT_AUTH
        except _Stopped:
            await self.stop()
            return EXIT_OK
        self.notifier.ready(self.status_line())
        log.info("ready: %s", self.status_line())
        try:
            while not self._stop_requested:
                now = self.clock.now()
                await self.tick(now)
                await self._sleep_until_next(now)
        finally:
            log.info("stopping: checkpointing in-flight work")
            await self.stop()
        log.info("stopped")
        return EXIT_OK

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

    # ---- the loop body ---------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        assert self.pipeline is not None and self.ledger is not None
        if self._reload_requested:
            self._reload_requested = False
            self.reload()
        paths, self._pending_paths = self._pending_paths, set()
        for path in paths:
            self._observe(path, now)
        if now >= self._next_rescan:
            await self.rescan(now)
        for settled in self.tracker.due(now):
            await self.intake(settled.path, settled.stat)
        self._check_observers()
        self.pipeline.schedule(now)
        self._publish_status()
        self._keepalive()

    def _keepalive(self) -> None:
        """WATCHDOG=1 from the loop itself, and only while it is healthy: a stuck loop, a dead
        observer or an unwritable ledger stops the pings and systemd restarts us."""
        assert self.ledger is not None
        mono = self.clock.monotonic()
        if mono - self._last_heartbeat >= 5.0:
            try:
                self.ledger.heartbeat(os.getpid())
                self._ledger_ok = True
            except Exception as e:
                self._ledger_ok = False
                log.error("the ledger is not writable: %s", e)
            self._last_heartbeat = mono
        interval = self.notifier.watchdog_interval()
        if interval is not None and mono - self._last_ping >= interval:
            ok, reason = self.healthy()
            if ok:
                self.notifier.watchdog()
                self._last_ping = mono
            else:
                log.warning("not pinging the systemd watchdog: %s", reason)

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
        self.tracker.observe(path, now)

    async def rescan(self, now: float) -> None:
        """Walk every inbox (in a thread: a NAS can be slow) and observe what is new."""
        assert self.ledger is not None and self.pipeline is not None
        self._next_rescan = now + self.config.daemon.rescan_seconds
        for rt in list(self.inboxes.values()):
            result = await asyncio.to_thread(scan_inbox, rt.config.path)
            health = rt.monitor.check(result, now)
            if rt.paused and not health.paused and rt.observer is not None:
                # The share is back (possibly a new mount): watch the new directory.
                await asyncio.to_thread(rt.observer.restart)
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
                self.metrics.set_inbox_paused(rt.key, rt.paused)
            if rt.paused:
                continue
            for f in result.files:
                rel = nfc(f.rel_str)
                sig = (f.stat.size, f.stat.mtime_ns)
                if sig in self.known.get((rt.key, rel), ()):
                    continue
                self.tracker.observe(f.path, now)

    async def intake(self, path: Path, stat: Any) -> None:
        """A settled file: record it in the ledger (unless it is known) as a queued job."""
        assert self.ledger is not None and self.pipeline is not None
        rt = self._inbox_of(path)
        if rt is None or rt.paused:
            return
        rel = nfc(path.relative_to(rt.config.path).as_posix())
        sig = (stat.size, stat.mtime_ns)
        if sig in self.known.get((rt.key, rel), set()):
            return
        if self.ledger.find_by_identity(rt.key, rel, stat.size, stat.mtime_ns) is not None:
            self.known.setdefault((rt.key, rel), set()).add(sig)
            return
        sidecar = path.with_name(path.name + ".toml")
        problem: str | None = None
        try:
            rule, preset = resolve_preset(
                rt.config, PurePosixPath(rel), sidecar if sidecar.exists() else None
            )
            record = preset_record(rt.config, preset)
            rule_name = rule.name
        except ConfigError as e:
            problem = str(e)
            rule_name = rt.config.rule_for(PurePosixPath(rel).parent).name
            record = {"_delivery": preset_record(rt.config, _EmptyPreset())["_delivery"]}
        try:
            fp = await asyncio.to_thread(fingerprint, path, stat.size)
        except FileNotFoundError:
            return
        job = self.ledger.add_job(
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
        self.known.setdefault((rt.key, rel), set()).add(sig)
        log.info(
            "queued %s (rule %r) as job %s",
            rel,
            rule_name,
            job.id,
            extra={"job_id": job.id, "rule": rule_name, "source_path": str(path)},
        )
        if problem is not None:
            await self.pipeline.handle_error(
                job,
                Fail(
                    "sidecar_invalid",
                    f"the sidecar {sidecar.name} is invalid: {problem}",
                    hint="Fix the sidecar .toml, then `watchd retry` the job.",
                    resume=Stage.QUEUED,
                ),
            )

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
        """Re-read the config (SIGHUP). In-flight jobs keep the preset they started with; an
        invalid new config is refused and the old one stays in force."""
        path = self.config.path
        if path is None:
            return False
        self.notifier.reloading()
        try:
            new = load_config(path, allow_missing_inboxes=True)
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            self.notifier.ready(self.status_line())
            return False
        self.config = new
        self.tracker.settle_seconds = new.daemon.settle_seconds
        self._setup_inboxes(new)
        self._next_rescan = 0.0
        from watchd.service.logsetup import setup_logging

        setup_logging(new.daemon.log_format, new.daemon.log_level)
        log.info("config reloaded from %s: %d inbox(es)", path, len(new.inboxes))
        self.notifier.ready(self.status_line())
        return True

    # ---- status ----------------------------------------------------------------------------

    def status_line(self) -> str:
        assert self.ledger is not None
        counts = self.ledger.counts_by_state()
        waiting = counts.get("queued", 0) + counts.get("probed", 0)
        uploading = counts.get("uploading", 0)
        processing = sum(counts.get(s, 0) for s in ("creating", "uploaded", "processing"))
        working = sum(
            counts.get(s, 0) for s in ("clips_ready", "rendering", "exporting", "delivering")
        )
        parked = counts.get("parked", 0)
        failed = counts.get("failed", 0)
        paused = [k for k, rt in self.inboxes.items() if rt.paused]
        line = (
            f"{waiting} queued, {uploading} uploading, {processing} processing, "
            f"{working} rendering/delivering, {parked} parked, {failed} failed, "
            f"{counts.get('delivered', 0)} delivered"
        )
        if paused:
            line += f"; {len(paused)} inbox(es) paused"
        return line

    def _publish_status(self) -> None:
        line = self.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)
            if self.metrics and self.ledger:
                self.metrics.set_jobs_by_state(self.ledger.counts_by_state())

    def _on_pipeline_event(self, kind: str, data: dict[str, Any]) -> None:
        if self.metrics and kind == "uploaded":
            self.metrics.observe_upload(data["bytes"], data["seconds"])

    def healthy(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "starting"
        if not self._ledger_ok:
            return False, "the ledger is not writable"
        for rt in self.inboxes.values():
            if rt.paused:
                continue
            if rt.observer is not None and not rt.observer.alive():
                return False, f"observer for {rt.key} is dead"
        return True, "ok"


class _EmptyPreset:
    def to_json(self) -> dict[str, Any]:
        return {}


class _Stopped(Exception):
    pass


async def _login_with_retry(
    client: Any, clock: Clock, stopping: Callable[[], bool], notifier: Any
) -> Any:
    """Log in and resolve the workspace; network trouble at boot is waited out (telling systemd
    so, and extending its start timeout), bad credentials are not (AuthError propagates)."""
    delay = 2.0
    while True:
        try:
            return await client.resolve_workspace()
        except AuthError:
            raise
        except (TransientError, OSError) as e:
            if stopping():
                raise _Stopped() from e
            log.warning("cannot reach Carmic yet (%s); retrying in %.0fs", e, delay)
            notifier.status(f"waiting for the Carmic API: {e}")
            notifier.extend_timeout(delay + 30)
            await clock.sleep(delay)
            delay = min(60.0, delay * 2)
        except CarmicError:
            raise


def _build_client(cfg: Config, clock: Clock, metrics: Any = None) -> Any:
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
        **hooks,
    )


def run_daemon(config_path: Path) -> int:
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
    setup_logging(config.daemon.log_format, config.daemon.log_level)
    daemon = Daemon(config)
    started = time.monotonic()
    code = asyncio.run(daemon.run())
    log.debug("ran for %.1fs (pid %d)", time.monotonic() - started, os.getpid())
    return code
