"""Prometheus metrics and a ``/healthz`` probe on loopback (``[daemon] metrics = "host:port"``).

:class:`Metrics` owns its own ``CollectorRegistry`` (never the process-global one), so several
daemons, or several tests, can live in one process. Recording is always on and cheap; serving is
optional: :meth:`Metrics.serve` starts a small threaded HTTP server and returns a handle whose
``close()`` stops it and joins its threads.

The endpoint is unauthenticated, so it binds to loopback unless the caller explicitly allows
another address (a reverse proxy or node-exporter-style scrape over a VPN is the operator's call).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import AF_INET, AF_INET6
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watchd import __version__
from watchd.ledger.states import Stage
from watchd.redact import redact

log = logging.getLogger(__name__)

Health = Callable[[], bool | tuple[bool, str]]
"""True when healthy; or ``(healthy, reason)`` so that ``/healthz`` can say what is wrong."""

MAX_ENDPOINTS = 64
"""Distinct ``endpoint`` label values kept before the rest count as ``other``: the client passes
route templates, and a bug passing raw paths must not grow the registry without bound."""

# Uploads go to object storage: from a slow office line to a 10 GbE datacentre link.
# The causes of a job's wait (watchd.pipeline.waits), always present in watchd_jobs_waiting.
WAIT_CAUSES = (
    "settling",
    "held",
    "duplicate",
    "create rate limit",
    "export rate limit",
    "tier limit",
    "billing",
    "inbox paused",
    "rate limit",
)
THROUGHPUT_BUCKETS = tuple(float(2**n) for n in range(17, 31, 1))  # 128 KiB/s … 1 GiB/s


class _JobsByState(Collector):
    """``watchd_jobs{state}`` from the latest snapshot, set atomically (a scrape never sees half
    of one update). Every pipeline stage is always present, 0 when empty, so alerts such as
    ``watchd_jobs{state="failed"} > 0`` work from the first scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def set(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts = {str(k): int(v) for k, v in counts.items()}

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts = dict(self._counts)
        family = GaugeMetricFamily("watchd_jobs", "Jobs in the ledger by state", labels=["state"])
        for state in [s.value for s in Stage] + sorted(set(counts) - {s.value for s in Stage}):
            family.add_metric([state], counts.get(state, 0))
        yield family


class _ProbeStats(Collector):
    """``watchd_probe_stuck`` and ``watchd_probe_timeouts_total``, read from the probe module at
    scrape time (they are process-wide counts it keeps itself); 0 until :meth:`watch` is called."""

    def __init__(self) -> None:
        self._stuck: Callable[[], int] = lambda: 0
        self._timeouts: Callable[[], int] = lambda: 0

    def watch(self, stuck: Callable[[], int], timeouts: Callable[[], int]) -> None:
        self._stuck, self._timeouts = stuck, timeouts

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "watchd_probe_stuck",
            "Probes that timed out and whose thread is still blocked (a share that hangs?)",
            value=self._stuck(),
        )
        yield CounterMetricFamily(
            "watchd_probe_timeouts",
            "Local probes of an input that timed out",
            value=self._timeouts(),
        )


class Metrics:
    """Everything the daemon reports, in a registry of its own.

    Recording methods never raise on odd input (a negative byte count, a zero duration): a
    metric is not worth a failed job.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._jobs = _JobsByState()
        r.register(self._jobs)
        self._oldest = Gauge(
            "watchd_oldest_waiting_job_age_seconds",
            "Age of the oldest job that is neither delivered nor failed (0 when none)",
            registry=r,
        )
        self._uploaded = Counter(
            "watchd_uploaded_bytes", "Bytes uploaded to Carmic storage", registry=r
        )
        self._throughput = Histogram(
            "watchd_upload_throughput_bytes_per_second",
            "Throughput of each completed upload",
            buckets=THROUGHPUT_BUCKETS,
            registry=r,
        )
        self._responses = Counter(
            "watchd_api_responses",
            "Carmic API responses by endpoint (route template) and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self._rate_limited = Counter(
            "watchd_rate_limited",
            "429 responses by endpoint (rate limits and tier concurrency limits alike)",
            ["endpoint"],
            registry=r,
        )
        self._retry_after = Gauge(
            "watchd_rate_limit_retry_after_seconds",
            "Retry-After of the latest rate limit per endpoint",
            ["endpoint"],
            registry=r,
        )
        self._waited = Counter(
            "watchd_rate_limit_wait_seconds",
            "Seconds of Retry-After the client was asked to wait, by endpoint",
            ["endpoint"],
            registry=r,
        )
        self._logins = Counter("watchd_logins", "Password logins to the Carmic API", registry=r)
        self._last_scan = Gauge(
            "watchd_inbox_last_scan_timestamp_seconds",
            "Unix time of the last complete scan of each inbox",
            ["inbox"],
            registry=r,
        )
        self._paused = Gauge(
            "watchd_inbox_paused",
            "1 while an inbox is paused (missing or suddenly empty: an unmounted share?)",
            ["inbox"],
            registry=r,
        )
        self._waiting = Gauge(
            "watchd_jobs_waiting",
            "Unfinished jobs that wait (not an error), by cause: the causes `watchd status` "
            "and systemd's STATUS= name (settling, held, duplicate, create rate limit, export "
            "rate limit, tier limit, billing)",
            ["cause"],
            registry=r,
        )
        for cause in WAIT_CAUSES:
            self._waiting.labels(cause).set(0)
        self._pause_reason = Gauge(
            "watchd_inbox_pause_reason",
            "1 for the reason a paused inbox waits (label reason), absent while it runs",
            ["inbox", "reason"],
            registry=r,
        )
        self._reasons: dict[str, str] = {}
        self._notifications = Counter(
            "watchd_notifications",
            "Attempts to deliver [[notify]] events, by notifier and outcome "
            "(delivered, failed, gone, gave_up)",
            ["notifier", "outcome"],
            registry=r,
        )
        self._probes = _ProbeStats()
        r.register(self._probes)
        Info("watchd_build", "carmic-watchd version", registry=r).info({"version": __version__})
        self._endpoints: set[str] = set()
        self._endpoints_lock = threading.Lock()

    # --- recording ------------------------------------------------------------------------

    def set_jobs_by_state(self, counts: Mapping[str, int]) -> None:
        """The ledger's job counts per state (states left out count as 0)."""
        self._jobs.set(counts)

    def set_oldest_waiting_age(self, seconds: float) -> None:
        """How long the oldest unfinished job has waited."""
        self._oldest.set(max(0.0, float(seconds)))

    def add_uploaded_bytes(self, n: int) -> None:
        """Bytes sent to storage since the last call (upload progress)."""
        if n > 0:
            self._uploaded.inc(n)

    def observe_upload(self, size: int, seconds: float) -> None:
        """A completed upload of ``size`` bytes that took ``seconds``."""
        if size > 0 and seconds > 0:
            self._throughput.observe(size / seconds)

    def api_response(self, endpoint: str, status: int | str) -> None:
        """One API response (the client's ``on_response`` hook). A 429 also counts in
        ``watchd_rate_limited_total``, whatever its cause: the client reports only true rate
        limits through :meth:`rate_limited`, not a tier's concurrency refusal."""
        label = self._endpoint(endpoint)
        self._responses.labels(label, str(status)).inc()
        if str(status) == "429":
            self._rate_limited.labels(label).inc()

    def rate_limited(self, endpoint: str, retry_after: float | None) -> None:
        """A rate limit on ``endpoint`` (the client's ``on_rate_limited`` hook), with the
        Retry-After it asked for (None if absent). The 429 itself is counted by
        :meth:`api_response`."""
        if retry_after is None:
            return
        label = self._endpoint(endpoint)
        wait = max(0.0, float(retry_after))
        self._retry_after.labels(label).set(wait)
        self._waited.labels(label).inc(wait)

    def login(self) -> None:
        """A password login (not a token refresh)."""
        self._logins.inc()

    def set_last_scan(self, inbox: str, ts: float) -> None:
        """An inbox's last complete scan finished at Unix time ``ts``."""
        self._last_scan.labels(inbox).set(ts)

    def set_inbox_paused(self, inbox: str, paused: bool, reason: str | None = None) -> None:
        """Whether an inbox is paused, and why (the same reason `watchd status` shows)."""
        self._paused.labels(inbox).set(1 if paused else 0)
        old = self._reasons.pop(inbox, None)
        if old is not None and (not paused or old != reason):
            self._pause_reason.remove(inbox, old)
        if paused:
            self._reasons[inbox] = reason or "paused"
            self._pause_reason.labels(inbox, self._reasons[inbox]).set(1)

    def set_jobs_waiting(self, counts: Mapping[str, int]) -> None:
        """Unfinished jobs that wait, by cause (causes left out count as 0)."""
        for cause in sorted(set(WAIT_CAUSES) | set(counts)):
            self._waiting.labels(cause).set(counts.get(cause, 0))

    def notification(self, notifier: str, outcome: str) -> None:
        """One attempt to deliver a notification, and how it ended."""
        self._notifications.labels(notifier, outcome).inc()

    def watch_probes(self, stuck: Callable[[], int], timeouts: Callable[[], int]) -> None:
        """Report the probe module's counters (``watchd.probe.stuck_probes``/``probe_timeouts``)
        at every scrape."""
        self._probes.watch(stuck, timeouts)

    def _endpoint(self, endpoint: str) -> str:
        with self._endpoints_lock:
            if endpoint in self._endpoints:
                return endpoint
            if len(self._endpoints) < MAX_ENDPOINTS:
                self._endpoints.add(endpoint)
                return endpoint
        return "other"

    # --- serving --------------------------------------------------------------------------

    def serve(
        self,
        address: str,
        health: Health,
        *,
        allow_non_loopback: bool = False,
        poll_interval: float = 0.5,
    ) -> MetricsServer:
        """Serve ``/metrics`` and ``/healthz`` at ``address`` (``"127.0.0.1:9108"``,
        ``"[::1]:9108"``, ``"localhost:0"`` for any free port) on a background thread.

        Raises ValueError for a malformed or non-loopback address (unless allowed) and OSError
        when the port cannot be bound. ``poll_interval`` bounds how long ``close()`` waits for
        the serving loop to notice.
        """
        host, port = parse_address(address)
        if not allow_non_loopback:
            check_loopback(host)
        return MetricsServer(host, port, self.registry, health, poll_interval=poll_interval)


def parse_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` → ``("127.0.0.1", 9108)``; IPv6 in brackets (``"[::1]:9108"``)."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"metrics address {address!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"metrics address {address!r}: expected HOST:PORT (IPv6 in [])")
    if not host:
        raise ValueError(f"metrics address {address!r}: the host is missing")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"metrics address {address!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics address {address!r}: the port must be 0-65535")
    return host, port


def check_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"metrics host {host!r} is not an IP address; use 127.0.0.1 or [::1]"
        ) from None
    if not ip.is_loopback:
        raise ValueError(f"metrics host {host} is not loopback: the endpoint has no authentication")


class MetricsServer:
    """A running ``/metrics`` + ``/healthz`` server; ``close()`` (or ``with``) stops it."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Health,
        *,
        poll_interval: float = 0.5,
    ) -> None:
        handler = _handler_class(registry, health)
        server_class = _V6Server if ":" in host else _V4Server
        self._server = server_class((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": poll_interval},
            name=f"watchd-metrics-{self.port}",
            # A forgotten close() must not keep the process alive after the daemon returns.
            daemon=True,
        )
        self._thread.start()
        self._closed = False
        log.info("metrics at %s (/metrics, /healthz)", self.url)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving, wait for requests in flight and for the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _V4Server(ThreadingHTTPServer):
    address_family = AF_INET
    # Request threads are joined on close, so a stopped server leaves no thread behind.
    daemon_threads = False
    block_on_close = True


class _V6Server(_V4Server):
    address_family = AF_INET6


def _handler_class(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # A stuck client must not hold a request thread (and close()) for long.
        timeout = 5
        server_version = "carmic-watchd"
        sys_version = ""

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def _respond(self, *, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                status, body = 200, encoder(registry)
            elif path == "/healthz":
                ok, reason = _check(health)
                content_type = "text/plain; charset=utf-8"
                status = 200 if ok else 503
                body = b"ok\n" if ok else f"unhealthy: {reason}\n".encode()
            else:
                status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics %s: " + format, self.client_address[0], *args)

    return Handler


_NO_REASON = "the daemon reports itself unhealthy"


def _check(health: Health) -> tuple[bool, str]:
    try:
        result = health()
    except Exception as exc:  # the probe must answer, not crash the request thread
        return False, redact(f"health check raised {type(exc).__name__}: {exc}")
    if isinstance(result, tuple):
        ok, reason = result
        return bool(ok), redact(str(reason)) or _NO_REASON
    return bool(result), "" if result else _NO_REASON
