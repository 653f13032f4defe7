"""``watchd emulator``: options to settings, and the command as a process (banner, SIGTERM)."""

from __future__ import annotations

import argparse
import io
import os
import select
import signal
import subprocess
import sys
import time

import httpx
import pytest

from watchd.emulator.cli import DEMO_TIMINGS, add_arguments, build_settings, run
from watchd.emulator.settings import Timings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_follow_the_contract() -> None:
    s = build_settings(_parse())
    assert (s.host, s.port, s.storage_port) == ("127.0.0.1", 8765, 0)
    assert (s.seed_email, s.seed_password) == ("demo@carmic.local", "Demo-pass-1")
    assert s.timings == Timings() and s.inspect is False and s.store_uploads is True


def test_knobs() -> None:
    s = build_settings(
        _parse(
            "--port",
            "9000",
            "--email",
            "a@b.io",
            "--password",
            "Pw-12345",
            "--tier",
            "FREE",
            "--minutes",
            "5",
            "--access-ttl",
            "60",
            "--inspect",
            "--speed",
            "2",
            "--timing",
            "render=0",
            "--fault",
            "error_rate=0.25",
            "--fault",
            "fail_project=FAILED",
            "--variant",
            "sse_ticket=bare",
            "--variant",
            "tier_limit_status=409",
            "--no-store-uploads",
            "--lenient-media",
            "--no-auth-rate-limits",
            "--seed",
            "4",
        )
    )
    assert (s.port, s.seed_email, s.tier, s.minutes, s.access_ttl) == (
        9000,
        "a@b.io",
        "FREE",
        5,
        60,
    )
    assert s.timings.step == DEMO_TIMINGS.step / 2 and s.timings.render == 0
    assert s.faults.error_rate == 0.25 and s.faults.fail_project == "FAILED"
    assert s.variants.sse_ticket == "bare" and s.variants.tier_limit_status == 409
    assert not s.store_uploads and not s.strict_media and not s.auth_rate_limits and s.seed == 4


@pytest.mark.parametrize(
    "argv",
    [
        ("--fault", "no_such=1"),
        ("--fault", "error_rate=lots"),
        ("--variant", "sse_ticket=xml"),
        ("--timing", "step=-1"),
        ("--speed", "0"),
        ("--port", "70000"),
    ],
)
def test_bad_values_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_parse(*argv), out=io.StringIO()) == 2
    assert "watchd emulator:" in capsys.readouterr().err


def test_a_malformed_assignment_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        _parse("--fault", "error_rate")


def _banner(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> dict[str, str]:
    """The ``key: value`` lines printed at start (read without blocking past ``timeout``)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while b"inspect: " not in buffer:
        assert time.monotonic() < deadline, f"no banner; got {buffer!r}"
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"the emulator exited early ({proc.poll()})"
            buffer += chunk
    pairs = (line.partition(": ") for line in buffer.decode().splitlines())
    return {key: value for key, _, value in pairs}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_until_a_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watchd",
            "emulator",
            "--port",
            "0",
            "--inspect",
            "--email",
            "ops@example.com",
            "--password",
            "Ops-pass-42",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        banner = _banner(proc)
        assert banner["api_url"].startswith("http://127.0.0.1:") and banner["api_url"].endswith(
            "/api"
        )
        assert banner["storage_url"].startswith("http://127.0.0.1:")
        assert banner["storage_url"] != banner["api_url"].removesuffix("/api")
        assert (banner["email"], banner["password"]) == ("ops@example.com", "Ops-pass-42")
        assert banner["workspace"] == "Demo" and banner["workspace_id"]
        with httpx.Client(base_url=banner["api_url"]) as http:
            assert http.get("/v1/health").status_code == 200
            login = http.post(
                "/v1/auth/login", json={"email": "ops@example.com", "password": "Ops-pass-42"}
            )
            assert login.status_code == 200
            assert http.get("/_emulator/state").status_code == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
