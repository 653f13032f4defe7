"""``[[notify]]`` through ``watchd run``: a real receiver on loopback, real files, the emulator.

The receiver verifies every signature with the ``standardwebhooks`` verifier; retries are
shrunk with ``retry_first_seconds`` so that nothing waits on the real backoff.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.e2e.harness import Env, wait_for
from tests.notify.receiver import Receiver, Request, verify
from tests.ports import free_port

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
RULE = {"video_type": "podcast", "render": {"min_score": 0, "max_clips": 1}}
FAST = {"retry_first_seconds": 0.2, "retry_max_seconds": 1.0, "timeout": 2}


def secret_file(env: Env) -> str:
    path = env.root / "webhook-secret"
    path.write_text(SECRET + "\n")
    os.chmod(path, 0o600)
    return str(path)


def broken_video(env: Env, rel: str) -> None:
    dest = env.inbox / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"this is not a video at all" * 100)


def types_by_job(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(
        (e["type"], e["data"]["source"]["path"]) for e in events if "source" in e["data"]
    )


def test_signed_events_one_per_delivered_and_failed_file(
    env: Env, sample_videos: list[Path]
) -> None:
    with Receiver() as rx:
        env.write_config(
            {"podcasts": RULE},
            inbox={"name": "studio-a"},
            notify=[
                {"url": rx.url, "secret_file": secret_file(env), "headers": {"X-Team": "team-7731"}}
            ],
        )
        env.start()
        env.drop(sample_videos[0], "podcasts/ep1.mp4")
        env.drop(sample_videos[1], "ep2.mp4")
        broken_video(env, "podcasts/bad.mp4")
        jobs = env.wait_states(
            {"podcasts/ep1.mp4": "delivered", "ep2.mp4": "delivered", "podcasts/bad.mp4": "failed"}
        )
        wait_for(lambda: len(rx.events()) >= 6, timeout=30, what="six events")
        time.sleep(0.5)  # anything extra (a duplicate) would arrive now
        for req in rx.received():
            assert verify(SECRET, req)["type"].startswith("job.")
            assert req.headers["x-team"] == "team-7731"
            assert req.headers["content-type"] == "application/json"
        counts = types_by_job(rx.events())
        assert counts == Counter(
            {
                ("job.queued", "podcasts/ep1.mp4"): 1,
                ("job.queued", "ep2.mp4"): 1,
                ("job.queued", "podcasts/bad.mp4"): 1,
                ("job.delivered", "podcasts/ep1.mp4"): 1,
                ("job.delivered", "ep2.mp4"): 1,
                ("job.failed", "podcasts/bad.mp4"): 1,
            }
        ), counts
        ids = {j["source"]: j["id"] for j in jobs}
        delivered = next(
            e
            for e in rx.events("job.delivered")
            if e["data"]["source"]["path"] == "podcasts/ep1.mp4"
        )
        d = delivered["data"]
        assert d["job_id"] == ids["podcasts/ep1.mp4"]
        assert d["inbox"] == "studio-a" and d["rule"] == "podcasts" and d["state"] == "delivered"
        assert d["outbox"] == "podcasts/ep1"
        assert d["manifest"] == env.manifest("podcasts/ep1")
        assert d["source"]["name"] == "ep1.mp4" and d["source"]["sha256"]
        assert d["error"] is None and d["project_id"]
        assert delivered["timestamp"].endswith("Z")
        failed = rx.events("job.failed")[0]["data"]
        assert failed["job_id"] == ids["podcasts/bad.mp4"]
        assert set(failed["error"]) == {"code", "message", "hint"}
        assert failed["error"]["code"].startswith("probe_") and failed["error"]["hint"]
        root = next(
            e for e in rx.events("job.delivered") if e["data"]["source"]["path"] == "ep2.mp4"
        )
        assert root["data"]["rule"] == "" and root["data"]["outbox"] == "ep2"
        assert len({r.headers["webhook-id"] for r in rx.received()}) == 6
        assert env.stop() == 0
    # The secret and the header's value never reach the log.
    log = env.log()
    assert SECRET not in log and SECRET[6:] not in log and "team-7731" not in log


def test_retries_share_webhook_id_and_body_until_the_receiver_recovers(
    env: Env, sample_videos: list[Path]
) -> None:
    failing = {"n": 3}

    def flaky(req: Request, n: int) -> tuple[int, dict[str, str]]:
        return (500, {}) if n < failing["n"] else (200, {})

    with Receiver(flaky) as rx:
        env.write_config(
            {},
            notify=[
                {
                    "url": rx.url,
                    "secret_file": secret_file(env),
                    "events": ["job.delivered"],
                    **FAST,
                }
            ],
        )
        env.start()
        started = time.monotonic()
        env.drop(sample_videos[0], "ep.mp4")
        env.wait_states({"ep.mp4": "delivered"})
        took = time.monotonic() - started
        reqs = wait_for(
            lambda: len(rx.received()) >= 4 and rx.received(), timeout=30, what="4 tries"
        )
        time.sleep(1.0)
        reqs = rx.received()
        assert len(reqs) == 4, [r.headers["webhook-id"] for r in reqs]
        assert len({r.headers["webhook-id"] for r in reqs}) == 1
        assert len({r.body for r in reqs}) == 1
        for r in reqs:
            verify(SECRET, r)
        # The first retry soon, each further one later (backoff), all within a few seconds here.
        gaps = [b.at - a.at for a, b in itertools.pairwise(reqs)]
        assert all(g > 0.05 for g in gaps), gaps
        assert took < 60
        assert env.stop() == 0
    assert "not delivered (attempt 1): 500" in env.log()


def test_410_stops_the_notifier_until_its_config_changes(
    env: Env, sample_videos: list[Path]
) -> None:
    with Receiver(lambda r, n: (410, {})) as gone, Receiver() as fresh:
        notify = {"name": "hook", "url": gone.url, "events": ["job.queued"], **FAST}
        env.write_config({}, notify=[notify])
        env.start()
        env.drop(sample_videos[0], "a.mp4")
        wait_for(lambda: gone.received(), timeout=30, what="the first POST")
        env.drop(sample_videos[1], "b.mp4")
        env.wait_states({"a.mp4": "delivered", "b.mp4": "delivered"})
        time.sleep(1.5)  # many retry periods: nothing more is sent to it
        assert len(gone.received()) == 1
        assert "410 Gone" in env.log()
        status = env.cli("status").stdout
        assert "hook" in status and "410" in status, status
        # A new URL: what waited is sent there.
        env.write_config({}, notify=[{**notify, "url": fresh.url}])
        assert env.proc is not None
        env.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(fresh.events("job.queued")) == 2, timeout=30, what="both queued")
        assert len(gone.received()) == 1
        assert env.stop() == 0


def test_a_receiver_that_never_answers_does_not_delay_the_pipeline(
    env: Env, sample_videos: list[Path]
) -> None:
    with Receiver(lambda r, n: None) as hung:
        env.write_config({}, notify=[{"url": hung.url, **FAST, "timeout": 1}])
        env.start()
        started = time.monotonic()
        for i in range(3):
            env.drop(sample_videos[i], f"v{i}.mp4")
        env.wait_states(3)
        took = time.monotonic() - started
        wait_for(lambda: len(hung.received()) >= 3, timeout=30, what="attempts")
        assert took < 45
        assert "timeout" in env.log()
        assert env.stop() == 0


def test_sigkill_with_undelivered_events_then_restart_delivers_them(
    env: Env, sample_videos: list[Path]
) -> None:
    answer = {"status": 503}

    def later(req: Request, n: int) -> tuple[int, dict[str, str]]:
        return answer["status"], {"Retry-After": "1"}

    with Receiver(later) as rx:
        env.write_config({}, notify=[{"url": rx.url, "events": ["job.delivered"], **FAST}])
        env.start()
        env.drop(sample_videos[0], "ep.mp4")
        env.wait_states({"ep.mp4": "delivered"})
        wait_for(lambda: rx.received(), timeout=30, what="a first attempt")
        env.kill()
        msg_id = rx.received()[0].headers["webhook-id"]
        body = rx.received()[0].body
        answer["status"] = 200
        seen = len(rx.received())
        env.start()
        wait_for(lambda: len(rx.received()) > seen, timeout=30, what="delivery after restart")
        assert rx.received()[-1].headers["webhook-id"] == msg_id
        assert rx.received()[-1].body == body
        time.sleep(1.5)
        assert len(rx.received()) == seen + 1  # answered 200: not sent again
        assert env.stop() == 0


def test_command_hook_gets_the_event_on_stdin(env: Env, sample_videos: list[Path]) -> None:
    out = env.root / "hook-out"
    out.mkdir()
    script = env.root / "hook.py"
    script.write_text(
        "import os, sys, pathlib\n"
        f"d = pathlib.Path({str(out)!r})\n"
        "body = sys.stdin.read()\n"
        "(d / (os.environ['WATCHD_EVENT_ID'] + '.json')).write_text(body)\n"
        "(d / (os.environ['WATCHD_EVENT_ID'] + '.type')).write_text(os.environ['WATCHD_EVENT'])\n"
    )
    env.write_config({}, notify=[{"command": [sys.executable, str(script)], **FAST}])
    env.start()
    env.drop(sample_videos[0], "ep.mp4")
    env.wait_states({"ep.mp4": "delivered"})
    wait_for(lambda: len(list(out.glob("*.type"))) >= 2, timeout=30, what="two events")
    types = sorted(p.read_text() for p in out.glob("*.type"))
    assert types == ["job.delivered", "job.queued"]
    bodies = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert {b["type"] for b in bodies} == {"job.queued", "job.delivered"}
    assert env.stop() == 0


def test_apprise_json_target_reaches_the_receiver(env: Env, sample_videos: list[Path]) -> None:
    with Receiver() as rx:
        target = rx.url.replace("http://", "json://")
        env.write_config({}, notify=[{"apprise": target, "events": ["job.delivered"], **FAST}])
        port = free_port()
        with env.config_path.open("a") as f:  # with [web] on, the message links the job's page
            f.write(f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
        env.start()
        env.drop(sample_videos[0], "ep.mp4")
        env.wait_states({"ep.mp4": "delivered"})
        msgs = wait_for(lambda: rx.events(), timeout=30, what="an Apprise message")
        assert "ep.mp4" in msgs[0]["title"] and "delivered" in msgs[0]["title"]
        assert "ep.mp4" in msgs[0]["message"]
        job_id = env.status()[0]["id"]
        assert f"http://127.0.0.1:{port}/jobs/{job_id}" in msgs[0]["message"]
        assert env.stop() == 0


def test_402_gives_job_parked(env: Env, sample_videos: list[Path]) -> None:
    env.emu.update(minutes=1)
    with Receiver() as rx:
        env.write_config({"podcasts": RULE}, notify=[{"url": rx.url, "events": ["job.parked"]}])
        env.start()
        env.drop(sample_videos[0], "podcasts/ep.mp4")
        parked = wait_for(lambda: rx.events("job.parked"), timeout=60, what="job.parked")[0]
        err = parked["data"]["error"]
        assert err["code"] == "billing" and "billing" in err["message"] and err["hint"]
        assert parked["data"]["state"] == "parked"
        assert env.stop() == 0


def test_unmounted_inbox_pauses_then_resumes(env: Env, sample_videos: list[Path]) -> None:
    with Receiver() as rx:
        env.write_config(
            {},
            inbox={"on_success": "keep"},
            daemon={"rescan_seconds": 1},
            notify=[{"url": rx.url, "events": ["inbox.paused", "inbox.resumed"]}],
        )
        env.drop(sample_videos[0], "a.mp4")
        env.start()
        env.wait_states({"a.mp4": "delivered"})
        away = env.root / "share-offline"
        env.inbox.rename(away)
        env.inbox.mkdir()
        paused = wait_for(lambda: rx.events("inbox.paused"), timeout=30, what="paused")[0]
        assert paused["data"] == {"inbox": "inbox", "reason": paused["data"]["reason"]}
        assert paused["data"]["reason"]
        env.inbox.rmdir()
        away.rename(env.inbox)
        resumed = wait_for(lambda: rx.events("inbox.resumed"), timeout=30, what="resumed")[0]
        assert resumed["data"]["inbox"] == "inbox"
        assert [e["type"] for e in rx.events()] == ["inbox.paused", "inbox.resumed"]
        assert env.stop() == 0


def test_a_bad_notify_table_stops_the_start_with_exit_2(env: Env) -> None:
    loose = env.root / "loose-secret"
    loose.write_text(SECRET)
    os.chmod(loose, 0o644)
    env.write_config({}, notify=[{"url": "http://127.0.0.1:9/", "events": ["job.fialed"]}])
    proc = env.start()
    assert proc.wait(timeout=60) == 2
    assert 'notify[0].events: unknown event "job.fialed", did you mean "job.failed"?' in env.log()
    # A secret others may read is worth a warning, not a refusal.
    env.write_config({}, notify=[{"url": "http://127.0.0.1:9/", "secret_file": str(loose)}])
    env.start()
    wait_for(lambda: "readable by group and others" in env.log(), timeout=60, what="warning")
    assert SECRET not in env.log()
    assert env.stop() == 0
