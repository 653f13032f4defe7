"""Metrics: what the registry exposes, the HTTP endpoint, /healthz and address checks."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from watchd.ledger.states import Stage
from watchd.service.metrics import (
    MAX_ENDPOINTS,
    Metrics,
    MetricsServer,
    check_loopback,
    parse_address,
)

FAST = 0.01  # the serving loop's poll interval: how long close() may wait


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    value = m.registry.get_sample_value(name, labels or None)
    return value


def get(server: MetricsServer, path: str, **headers: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def served(
    metrics: Metrics,
) -> Iterator[tuple[Metrics, MetricsServer, list[bool | tuple[bool, str]]]]:
    state: list[bool | tuple[bool, str]] = [True]
    server = metrics.serve("127.0.0.1:0", lambda: state[0], poll_interval=FAST)
    try:
        yield metrics, server, state
    finally:
        server.close()


# --- recording ----------------------------------------------------------------------------


def test_jobs_by_state_lists_every_stage(metrics: Metrics) -> None:
    assert sample(metrics, "watchd_jobs", state="failed") == 0
    metrics.set_jobs_by_state({"queued": 3, "uploading": 1})
    assert sample(metrics, "watchd_jobs", state="queued") == 3
    assert sample(metrics, "watchd_jobs", state="uploading") == 1
    metrics.set_jobs_by_state({"failed": 2})
    assert sample(metrics, "watchd_jobs", state="queued") == 0  # a whole snapshot, not a merge
    assert sample(metrics, "watchd_jobs", state="failed") == 2
    for stage in Stage:
        assert sample(metrics, "watchd_jobs", state=stage.value) is not None


def test_jobs_by_state_accepts_unknown_states(metrics: Metrics) -> None:
    metrics.set_jobs_by_state({"future_state": 1})
    assert sample(metrics, "watchd_jobs", state="future_state") == 1


def test_gauges_and_counters(metrics: Metrics) -> None:
    metrics.set_oldest_waiting_age(12.5)
    metrics.add_uploaded_bytes(1000)
    metrics.add_uploaded_bytes(24)
    metrics.add_uploaded_bytes(-5)  # ignored, never raises
    metrics.login()
    metrics.set_last_scan("/srv/in", 1_800_000_000.0)
    metrics.set_inbox_paused("/srv/in", True)
    metrics.set_inbox_paused("/srv/other", False)
    assert sample(metrics, "watchd_oldest_waiting_job_age_seconds") == 12.5
    assert sample(metrics, "watchd_uploaded_bytes_total") == 1024
    assert sample(metrics, "watchd_logins_total") == 1
    assert sample(metrics, "watchd_inbox_last_scan_timestamp_seconds", inbox="/srv/in") == 1.8e9
    assert sample(metrics, "watchd_inbox_paused", inbox="/srv/in") == 1
    assert sample(metrics, "watchd_inbox_paused", inbox="/srv/other") == 0
    metrics.set_inbox_paused("/srv/in", False)
    assert sample(metrics, "watchd_inbox_paused", inbox="/srv/in") == 0


def test_upload_throughput(metrics: Metrics) -> None:
    metrics.observe_upload(10 * 2**20, 2.0)  # 5 MiB/s
    metrics.observe_upload(100, 0.0)  # no duration: not observable, not an error
    name = "watchd_upload_throughput_bytes_per_second"
    assert sample(metrics, name + "_count") == 1
    assert sample(metrics, name + "_sum") == 5 * 2**20
    assert sample(metrics, name + "_bucket", le="4.194304e+06") == 0
    assert sample(metrics, name + "_bucket", le="8.388608e+06") == 1


def test_api_responses_and_rate_limits(metrics: Metrics) -> None:
    metrics.api_response("/v1/projects/{id}/status", 200)
    metrics.api_response("/v1/projects/{id}/status", 200)
    metrics.api_response("/v1/projects/create", "429")
    metrics.rate_limited("/v1/projects/create", 30)
    metrics.rate_limited("/v1/auth/login", None)
    assert (
        sample(
            metrics, "watchd_api_responses_total", endpoint="/v1/projects/{id}/status", status="200"
        )
        == 2
    )
    assert (
        sample(metrics, "watchd_api_responses_total", endpoint="/v1/projects/create", status="429")
        == 1
    )
    # Every 429 counts once, from the response; the Retry-After comes from the client's hook.
    assert sample(metrics, "watchd_rate_limited_total", endpoint="/v1/projects/create") == 1
    assert sample(metrics, "watchd_rate_limited_total", endpoint="/v1/auth/login") is None
    assert (
        sample(metrics, "watchd_rate_limit_retry_after_seconds", endpoint="/v1/projects/create")
        == 30
    )
    metrics.rate_limited("/v1/projects/create", 12.5)
    assert (
        sample(metrics, "watchd_rate_limit_wait_seconds_total", endpoint="/v1/projects/create")
        == 42.5
    )


def test_endpoint_labels_are_bounded(metrics: Metrics) -> None:
    for i in range(MAX_ENDPOINTS + 10):
        metrics.api_response(f"/v1/projects/{i}", 200)
    assert sample(metrics, "watchd_api_responses_total", endpoint="other", status="200") == 10
    metrics.api_response("/v1/projects/0", 200)  # a known one keeps its label
    assert (
        sample(metrics, "watchd_api_responses_total", endpoint="/v1/projects/0", status="200") == 2
    )


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.login()
    assert sample(a, "watchd_logins_total") == 1
    assert sample(b, "watchd_logins_total") == 0


def test_build_info(metrics: Metrics) -> None:
    from watchd import __version__

    assert sample(metrics, "watchd_build_info", version=__version__) == 1


# --- serving ------------------------------------------------------------------------------


def test_metrics_endpoint(
    served: tuple[Metrics, MetricsServer, list[bool | tuple[bool, str]]],
) -> None:
    metrics, server, _ = served
    metrics.set_jobs_by_state({"queued": 4})
    status, ctype, body = get(server, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    queued = [s for s in families["watchd_jobs"].samples if s.labels == {"state": "queued"}]
    assert queued[0].value == 4
    assert "watchd_uploaded_bytes" in families


def test_openmetrics_on_request(
    served: tuple[Metrics, MetricsServer, list[bool | tuple[bool, str]]],
) -> None:
    _, server, _ = served
    status, ctype, body = get(server, "/metrics", Accept="application/openmetrics-text")
    assert status == 200
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_healthz_follows_the_health_callable(
    served: tuple[Metrics, MetricsServer, list[bool | tuple[bool, str]]],
) -> None:
    _, server, state = served
    assert get(server, "/healthz")[0::2] == (200, "ok\n")
    state[0] = False
    status, _, body = get(server, "/healthz")
    assert status == 503 and body.startswith("unhealthy: ")
    state[0] = (False, "inbox /srv/in paused: missing (unmounted share?)")
    assert get(server, "/healthz")[0::2] == (
        503,
        "unhealthy: inbox /srv/in paused: missing (unmounted share?)\n",
    )
    state[0] = (True, "")
    assert get(server, "/healthz")[0] == 200


def test_healthz_when_the_check_raises(metrics: Metrics) -> None:
    def broken() -> bool:
        raise RuntimeError("ledger locked; token=abcdef123")

    with metrics.serve("127.0.0.1:0", broken, poll_interval=FAST) as server:
        status, _, body = get(server, "/healthz")
    assert status == 503
    assert "RuntimeError" in body and "abcdef123" not in body


def test_head_and_unknown_paths(
    served: tuple[Metrics, MetricsServer, list[bool | tuple[bool, str]]],
) -> None:
    _, server, _ = served
    assert get(server, "/nope")[0] == 404
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request("HEAD", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
    finally:
        conn.close()


def test_close_stops_the_server_and_its_threads(metrics: Metrics) -> None:
    before = set(threading.enumerate())
    server = metrics.serve("127.0.0.1:0", lambda: True, poll_interval=FAST)
    for _ in range(3):
        assert get(server, "/metrics")[0] == 200
    server.close()
    server.close()  # idempotent
    assert set(threading.enumerate()) <= before
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()


def test_ipv6_loopback(metrics: Metrics) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        server = metrics.serve("[::1]:0", lambda: True, poll_interval=FAST)
    except OSError as exc:  # ::1 not configured in this container
        pytest.skip(f"cannot bind ::1: {exc}")
    with server:
        assert server.url.startswith("http://[::1]:")
        assert get(server, "/healthz")[0] == 200


def test_port_in_use_raises(
    served: tuple[Metrics, MetricsServer, list[bool | tuple[bool, str]]],
) -> None:
    _, server, _ = served
    with pytest.raises(OSError):
        Metrics().serve(f"127.0.0.1:{server.port}", lambda: True)


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        (" localhost:0 ", ("localhost", 0)),
        ("[::1]:9108", ("::1", 9108)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address", ["9108", ":9108", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", "::1:9108", "[::1]"]
)
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="metrics address"):
        parse_address(address)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_non_loopback_is_refused(metrics: Metrics, host: str) -> None:
    with pytest.raises(ValueError, match="metrics host"):
        check_loopback(host)
    address = f"[{host}]:0" if ":" in host else f"{host}:0"
    with pytest.raises(ValueError):
        metrics.serve(address, lambda: True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_is_accepted(host: str) -> None:
    check_loopback(host)


def test_non_loopback_when_explicitly_allowed(metrics: Metrics) -> None:
    with metrics.serve(
        "0.0.0.0:0", lambda: True, allow_non_loopback=True, poll_interval=FAST
    ) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
        finally:
            conn.close()


def test_probe_counters_are_read_at_scrape_time() -> None:
    m = Metrics()
    assert sample(m, "watchd_probe_stuck") == 0
    assert sample(m, "watchd_probe_timeouts_total") == 0
    counts = {"stuck": 1, "timeouts": 3}
    m.watch_probes(lambda: counts["stuck"], lambda: counts["timeouts"])
    assert sample(m, "watchd_probe_stuck") == 1
    counts["stuck"], counts["timeouts"] = 0, 4
    assert sample(m, "watchd_probe_stuck") == 0
    assert sample(m, "watchd_probe_timeouts_total") == 4


def test_waits_by_cause_and_the_reason_an_inbox_is_paused(metrics: Metrics) -> None:
    # Every cause is there from the first scrape, 0 when nothing waits on it.
    assert sample(metrics, "watchd_jobs_waiting", cause="export rate limit") == 0
    assert sample(metrics, "watchd_jobs_waiting", cause="held") == 0
    metrics.set_jobs_waiting({"duplicate": 2, "export rate limit": 1})
    assert sample(metrics, "watchd_jobs_waiting", cause="duplicate") == 2
    assert sample(metrics, "watchd_jobs_waiting", cause="export rate limit") == 1
    metrics.set_jobs_waiting({})
    assert sample(metrics, "watchd_jobs_waiting", cause="duplicate") == 0
    reason = "inbox /srv/in is missing (unmounted share?)"
    metrics.set_inbox_paused("/srv/in", True, reason)
    assert sample(metrics, "watchd_inbox_pause_reason", inbox="/srv/in", reason=reason) == 1
    metrics.set_inbox_paused("/srv/in", False)
    assert sample(metrics, "watchd_inbox_pause_reason", inbox="/srv/in", reason=reason) is None


def test_notifications_by_notifier_and_outcome(metrics: Metrics) -> None:
    metrics.notification("hooks", "delivered")
    metrics.notification("hooks", "delivered")
    metrics.notification("hooks", "failed")
    assert sample(metrics, "watchd_notifications_total", notifier="hooks", outcome="delivered") == 2
    assert sample(metrics, "watchd_notifications_total", notifier="hooks", outcome="failed") == 1
