"""`watchd run` as systemd runs it: a real subprocess against the emulator, with systemd's side
faked only where systemd itself would be (a NOTIFY_SOCKET that records, a credentials folder, a
journal stream and a stand-in systemd-python that writes journal entries to a file).

Covers the notify sequence (READY after login and first scan, STATUS as jobs move, WATCHDOG at
half WATCHDOG_USEC, RELOADING/READY around SIGHUP, STOPPING on SIGTERM), credentials from
$CREDENTIALS_DIRECTORY, reloads (inbox and rule added, rule changed under an in-flight job, inbox
removed, broken config refused), logs (JSON lines and journald fields, one INFO line per state
change, HTTP detail at DEBUG, upload and processing progress, no secret anywhere), metrics and
/healthz, and `watchd status`."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Env, wait_for
from tests.service.fakesystemd import NotifyRecorder, fake_systemd_python, journal_stream_of
from watchd.emulator import Faults
from watchd.ledger.db import DB_NAME, Ledger

SYSTEMD_VARS = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
    "JOURNAL_STREAM",
    "WATCHD_CARMIC_PASSWORD",
)
PODCASTS = {
    "video_type": "podcast",
    "caption_style": "BUBBLE",
    "render": {"min_score": 0, "max_clips": 1},
    "exports": ["premiere"],
    "template": {"style": {"captionFont": "Montserrat"}},
}


# ---- helpers ---------------------------------------------------------------------------------


def start_service(env: Env, **extra: str) -> subprocess.Popen[bytes]:
    """``watchd run`` with the variables systemd would set (and none inherited from ours)."""
    return env.start(drop=SYSTEMD_VARS, **extra)


def read_config(env: Env) -> dict[str, Any]:
    return tomllib.loads(env.config_path.read_text())


def write_config(env: Env, cfg: dict[str, Any]) -> None:
    # Write next to it and rename, as an editor or config management would: the daemon must
    # never read half a file.
    tmp = env.config_path.with_suffix(".tmp")
    tmp.write_bytes(tomli_w.dumps(cfg).encode())
    tmp.replace(env.config_path)


def add_inbox(env: Env, cfg: dict[str, Any], name: str, **keys: Any) -> Path:
    inbox, outbox = env.root / name, env.root / f"{name}-out"
    inbox.mkdir(exist_ok=True)
    outbox.mkdir(exist_ok=True)
    cfg["inbox"].append(
        {"path": str(inbox), "outbox": str(outbox), "on_success": "keep", "rules": {}, **keys}
    )
    return inbox


def log_since(env: Env, mark: int) -> str:
    return env.log()[mark:]


def wait_log(env: Env, pattern: str, *, after: int = 0, timeout: float = 30.0) -> re.Match[str]:
    def found() -> re.Match[str] | None:
        if env.proc is not None and env.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {env.proc.returncode}:\n{env.log()[-4000:]}")
        return re.search(pattern, env.log()[after:])

    match: re.Match[str] = wait_for(found, timeout=timeout, what=f"log line /{pattern}/")
    return match


def reload(env: Env) -> int:
    """SIGHUP; returns the log offset from which to look for its outcome."""
    mark = len(env.log())
    assert env.proc is not None
    env.proc.send_signal(signal.SIGHUP)
    return mark


def metrics_url(env: Env) -> str:
    return wait_log(env, r"metrics at (http://127\.0\.0\.1:\d+)").group(1)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def json_records(env: Env) -> list[dict[str, Any]]:
    """Every line the daemon wrote, parsed: a line that is not JSON fails the test."""
    records = []
    for line in env.log().splitlines():
        if not line.strip() or line.startswith("===== run "):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return records


def assert_no_secrets(text: str, password: str, where: str) -> None:
    assert password not in text, f"the password is in {where}"
    for needle in ("eyJ", "X-Amz-", "x-amz-", "ticket=", "Bearer "):
        i = text.find(needle)
        assert i < 0, f"{needle!r} in {where}: ...{text[max(0, i - 200) : i + 200]}..."


def ledger_transitions(env: Env, job_id: str) -> list[tuple[str, str]]:
    ledger = Ledger(env.state / DB_NAME, readonly=True)
    try:
        return [
            (e.from_state, e.to_state)
            for e in ledger.events(job_id)
            if e.from_state and e.to_state and e.from_state != e.to_state
        ]
    finally:
        ledger.close()


@pytest.fixture
def systemd() -> Iterator[NotifyRecorder]:
    with NotifyRecorder() as recorder:
        yield recorder


def first_index(fields: list[str], pred: Callable[[str], bool], start: int = 0) -> int:
    return next(i for i in range(start, len(fields)) if pred(fields[i]))


# ---- the notify sequence ---------------------------------------------------------------------


def test_notify_sequence(env: Env, systemd: NotifyRecorder, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": PODCASTS}, daemon={"metrics": "127.0.0.1:0"})
    # Every request takes a while: the login cannot be over before we have looked.
    env.emu.update(faults=Faults(slow_seconds=1.0))
    start_service(env, **systemd.env(WATCHDOG_USEC="400000"))

    systemd.wait(lambda s: any(x.startswith("logging in to Carmic") for x in s.statuses()))
    base = metrics_url(env)
    assert http_get(base + "/healthz") == (503, "unhealthy: starting\n")
    assert "READY=1" not in systemd.fields()
    assert "logged in as" not in env.log()
    # ... and systemd is asked for more time to start, as it would be during a long outage.
    systemd.wait(lambda s: any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in s.fields()))
    assert "READY=1" not in systemd.fields()
    env.emu.update(faults=Faults())

    systemd.wait(lambda s: "READY=1" in s.fields())
    log = env.log()
    # READY followed the login and the first scan.
    assert log.index("logged in as") < log.index("ready: ")
    ledger = Ledger(env.state / DB_NAME, readonly=True)
    try:
        (inbox,) = ledger.inboxes()
        assert inbox.last_scan_at is not None
    finally:
        ledger.close()
    assert http_get(base + "/healthz") == (200, "ok\n")

    # STATUS follows a job through the pipeline.
    env.drop(sample_videos[0], "podcasts/ep1.mp4")
    env.wait_states({"podcasts/ep1.mp4": "delivered"})
    systemd.wait(lambda s: any(x.endswith("1 delivered") for x in s.statuses()))
    statuses = systemd.statuses()
    queued = first_index(statuses, lambda x: x.startswith("1 queued"))
    moving = first_index(statuses, lambda x: "1 processing" in x or "1 uploading" in x, queued)
    first_index(statuses, lambda x: x.endswith("1 delivered"), moving)

    # WATCHDOG=1 every WATCHDOG_USEC/2 (0.2 s), from the start on.
    pings = systemd.times("WATCHDOG=1")
    assert len(pings) >= 5
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert 0.15 <= statistics.median(gaps) <= 0.3, gaps
    # (A loaded CI machine can starve the process for a moment; a stuck loop stops for good.)
    assert max(gaps) < 2.0, gaps

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, which we share), then READY=1.
    n = len(systemd.messages())
    sent_at = time.monotonic_ns() // 1000
    reload(env)
    systemd.wait(lambda s: any("READY=1" in m for _, m in s.messages()[n:]))
    after = [m for _, m in systemd.messages()[n:] if "WATCHDOG=1" not in m]
    reloading = next(m for m in after if "RELOADING=1" in m)
    usec = int(next(f for f in reloading if f.startswith("MONOTONIC_USEC=")).split("=")[1])
    assert sent_at <= usec <= sent_at + 10_000_000
    assert after.index(reloading) < next(i for i, m in enumerate(after) if "READY=1" in m)

    # SIGTERM: STOPPING=1 and a clean exit.
    assert env.stop() == 0
    stopping = [m for _, m in systemd.messages() if "STOPPING=1" in m]
    assert len(stopping) == 1
    # Neither sender is systemd-python's here (not installed): the pure-Python one spoke.
    assert not any(f.startswith("X_VIA=") for f in systemd.fields())


# ---- credentials -----------------------------------------------------------------------------


def test_password_from_the_systemd_credential(env: Env, systemd: NotifyRecorder) -> None:
    env.write_config()
    cfg = read_config(env)
    del cfg["carmic"]["password_file"]
    write_config(env, cfg)
    creds = env.root / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "carmic-password").write_text(env.emu.seed_password + "\n")
    (creds / "carmic-password").chmod(0o400)
    start_service(env, CREDENTIALS_DIRECTORY=str(creds), **systemd.env())
    systemd.wait(lambda s: "READY=1" in s.fields())
    assert re.search(r"INFO +password from (the )?systemd credential carmic-password", env.log())
    assert env.stop() == 0
    assert_no_secrets(env.log(), env.emu.seed_password, "the log")


def test_without_the_credential_the_config_is_refused(env: Env) -> None:
    env.write_config()
    cfg = read_config(env)
    del cfg["carmic"]["password_file"]
    write_config(env, cfg)
    start_service(env, CREDENTIALS_DIRECTORY=str(env.root / "nothing-here"))
    assert env.proc is not None and env.proc.wait(timeout=30) == 2
    assert "carmic-password" in env.log()


# ---- reloads ---------------------------------------------------------------------------------


def test_reload_refuses_a_broken_config_then_adds_and_removes(
    env: Env, systemd: NotifyRecorder, sample_videos: list[Path]
) -> None:
    env.write_config({})
    cfg = read_config(env)
    second = add_inbox(env, cfg, "second")
    write_config(env, cfg)
    start_service(env, **systemd.env())
    systemd.wait(lambda s: "READY=1" in s.fields())
    pid = env.proc.pid if env.proc else 0

    # A broken config is refused with the reason, and the running one stays in force.
    broken = json.loads(json.dumps(cfg))
    broken["inbox"][0]["on_success"] = "moev"
    write_config(env, broken)
    mark = reload(env)
    refused = wait_log(env, r"reload refused, keeping the running config: (.*)", after=mark)
    assert "on_success" in refused.group(1) and "move" in refused.group(1), refused.group(1)
    systemd.wait(lambda s: s.count("READY=1") == 2)
    write_config(env, cfg)  # `watchd status` reads the file too, and would refuse it
    env.drop(sample_videos[0], "root.mp4")
    env.wait_states({"root.mp4": "delivered"})

    # Add a rule and an inbox, remove another inbox: all without a restart.
    new = json.loads(json.dumps(cfg))
    new["inbox"][0]["rules"] = {"podcasts": PODCASTS}
    new["inbox"] = [i for i in new["inbox"] if i["path"] != str(second)]
    third = add_inbox(env, new, "third")
    write_config(env, new)
    mark = reload(env)
    wait_log(env, r"config reloaded from .*: 2 inbox\(es\)", after=mark)
    assert re.search(rf"inbox {re.escape(str(second))} removed from the config", env.log())
    env.drop(sample_videos[1], "podcasts/ep.mp4")
    (third / "b.mp4").write_bytes(sample_videos[2].read_bytes())
    (second / "c.mp4").write_bytes(sample_videos[3].read_bytes())
    jobs = env.wait_states({"podcasts/ep.mp4": "delivered", "b.mp4": "delivered"})
    by_source = {j["source"]: j for j in jobs}
    assert by_source["podcasts/ep.mp4"]["rule"] == "podcasts"
    assert by_source["b.mp4"]["inbox"] == str(third)
    assert "c.mp4" not in by_source, "a removed inbox is still taken"
    assert env.proc is not None and env.proc.pid == pid and env.runs == 1
    assert env.stop() == 0


def test_an_in_flight_job_keeps_its_preset_across_a_reload(
    env: Env, systemd: NotifyRecorder, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": PODCASTS})
    env.emu.update(minutes=0)  # the create is refused (402): the job parks, in flight
    start_service(env, **systemd.env())
    env.drop(sample_videos[0], "podcasts/old.mp4")
    (old,) = env.wait_states({"podcasts/old.mp4": "parked"}, terminal=False)
    systemd.wait(lambda s: any("1 parked (billing)" in x for x in s.statuses()))

    cfg = read_config(env)
    cfg["inbox"][0]["rules"]["podcasts"] = {
        **PODCASTS,
        "video_type": "tutorial",
        "caption_style": "KARAOKE",
        "template": {"style": {"captionFont": "Inter"}},
    }
    cfg["daemon"]["log_level"] = "debug"  # logging follows the reload too
    write_config(env, cfg)
    mark = reload(env)
    wait_log(env, r"config reloaded", after=mark)
    env.emu.update(minutes=1000)
    # A plain retry would give the job the rule's new preset; the reload alone does not.
    assert env.cli("retry", "--keep-preset", old["id"]).returncode == 0
    env.drop(sample_videos[1], "podcasts/new.mp4")
    jobs = env.wait_states({"podcasts/old.mp4": "delivered", "podcasts/new.mp4": "delivered"})

    projects = {p["id"]: p for p in env.emu.snapshot()["projects"]}
    by_source = {j["source"]: projects[j["project_id"]] for j in jobs}
    assert by_source["podcasts/old.mp4"]["video_type"] == "podcast"
    assert by_source["podcasts/new.mp4"]["video_type"] == "tutorial"
    old_clip = by_source["podcasts/old.mp4"]["clips"][0]["template_config"]
    new_clip = by_source["podcasts/new.mp4"]["clips"][0]["template_config"]
    assert (old_clip["caption_style"], old_clip["style"]["captionFont"]) == ("BUBBLE", "Montserrat")
    assert (new_clip["caption_style"], new_clip["style"]["captionFont"]) == ("KARAOKE", "Inter")
    assert " DEBUG " not in env.log()[:mark]
    assert re.search(
        r" DEBUG POST http://127\.0\.0\.1:\d+/api/v1/projects/create -> ", log_since(env, mark)
    )
    assert env.stop() == 0


# ---- logs ------------------------------------------------------------------------------------


def check_job_logs(records: list[dict[str, Any]], env: Env, jobs: list[dict[str, Any]]) -> None:
    """Each job's records carry its fields; each state change has its INFO line."""
    for job in jobs:
        mine = [r for r in records if r.get("job_id") == job["id"]]
        assert mine, f"no log records for job {job['id']}"
        # The source moves to _done/ on delivery, and the path in the records with it.
        paths = {job["path"], str(Path(job["inbox"]) / job["source"])}
        for r in mine:
            assert r["rule"] == job["rule"] and r["source_path"] in paths, r
            assert r["state"], r
            if r["state"] not in ("queued", "probed", "creating"):
                assert r.get("project_id") == job["project_id"], r
        info = [r["msg"] for r in mine if r["level"] in ("INFO", "WARNING", "ERROR")]
        for src, dst in ledger_transitions(env, job["id"]):
            if (src, dst) == ("probed", "creating"):
                # The slot grant in the scheduler (runner.py) logs nothing itself; the next
                # line, "creating -> uploading", names the project. Reported to the lead.
                continue
            # Alone, or with what the step achieved ("uploading -> uploaded: ep1.mp4 (...)").
            lines = [m for m in info if m == f"{src} -> {dst}" or m.startswith(f"{src} -> {dst}: ")]
            assert len(lines) == 1, (src, dst, info)


def test_json_logs_at_debug(env: Env, systemd: NotifyRecorder, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": PODCASTS}, daemon={"log_format": "json", "log_level": "debug"})
    start_service(env, **systemd.env())
    env.drop(sample_videos[0], "podcasts/ep1.mp4")
    jobs = env.wait_states({"podcasts/ep1.mp4": "delivered"})
    assert env.stop() == 0

    records = json_records(env)
    check_job_logs(records, env, jobs)
    msgs = [r["msg"] for r in records]
    # HTTP detail at DEBUG: method, URL without its query string, status, time.
    http = [r["msg"] for r in records if r["logger"] == "watchd.carmic" and r["level"] == "DEBUG"]
    create = re.compile(r"POST http://127\.0\.0\.1:\d+/api/v1/projects/create -> 20\d \(\d+ ms\)")
    assert any(create.fullmatch(m) for m in http), http[:20]
    upload = re.compile(
        r"PUT http://127\.0\.0\.1:\d+/\S+/source\.mp4\?<redacted> -> 200 \(\d+ ms\)"
    )
    assert any(upload.fullmatch(m) for m in http), http
    # Progress at INFO: the upload's end with its rate, each processing step on the way, and the
    # end of processing on its transition's line.
    uploaded = r"uploading -> uploaded: \d+ bytes at [\d.]+ MB/s"
    assert any(re.fullmatch(uploaded, m) for m in msgs), msgs
    steps = [m for m in msgs if m.startswith("processing: ")]
    assert len(steps) >= 2 and not any("CLIPS_READY" in m for m in steps), steps
    ready = r"processing -> clips_ready: \d+ clip\(s\) found, \d+ chosen"
    assert any(re.fullmatch(ready, m) for m in msgs), msgs
    assert_no_secrets(env.log(), env.emu.seed_password, "the JSON log")


def test_journal_fields_with_systemd_python(
    env: Env, systemd: NotifyRecorder, sample_videos: list[Path]
) -> None:
    journal = env.root / "journal.jsonl"
    site = fake_systemd_python(env.root / "site", journal)
    env.write_config({"podcasts": PODCASTS}, daemon={"log_level": "debug"})  # log_format auto
    env.log_path.touch()
    start_service(
        env,
        PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        JOURNAL_STREAM=journal_stream_of(env.log_path),
        **systemd.env(),
    )
    env.drop(sample_videos[0], "podcasts/ep1.mp4")
    jobs = env.wait_states({"podcasts/ep1.mp4": "delivered"})
    assert env.stop() == 0
    (job,) = jobs

    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert all(e["SYSLOG_IDENTIFIER"] == "carmic-watchd" for e in entries)
    mine = [e for e in entries if e.get("JOB_ID") == job["id"]]
    assert mine
    paths = {job["path"], str(env.inbox / job["source"])}
    for e in mine:
        assert e["RULE"] == "podcasts" and e["SOURCE_PATH"] in paths and e["STATE"]
    assert any(e.get("PROJECT_ID") == job["project_id"] for e in mine)
    assert {e["STATE"] for e in mine} >= {"queued", "uploading", "processing", "delivered"}
    assert {e["PRIORITY"] for e in entries} >= {"6", "7"}  # INFO and DEBUG
    # Nothing went to stderr but the harness's own header: the journal had it all.
    assert env.log().strip() == "===== run 1 ====="
    # systemd-python's notify was the sender (the stand-in tags what it sends).
    assert "X_VIA=systemd-python" in systemd.fields() and "READY=1" in systemd.fields()
    assert_no_secrets(journal.read_text(), env.emu.seed_password, "the journal")


# ---- metrics ---------------------------------------------------------------------------------


def test_metrics_and_health_from_a_real_run(
    env: Env, systemd: NotifyRecorder, sample_videos: list[Path]
) -> None:
    from watchd.emulator import Timings

    # Two creates at once against a tier that allows one: the second is refused with a 429.
    env.emu.update(timings=Timings(step=0.3, render=0.05, export=0.05, keepalive=1))
    env.write_config(
        {"podcasts": PODCASTS},
        carmic={"max_processing": 2},
        daemon={"metrics": "127.0.0.1:0"},
    )
    start_service(env, **systemd.env())
    base = metrics_url(env)
    systemd.wait(lambda s: "READY=1" in s.fields())
    assert http_get(base + "/healthz") == (200, "ok\n")
    env.drop(sample_videos[0], "podcasts/a.mp4")
    env.drop(sample_videos[1], "podcasts/b.mp4")
    wait_for(
        lambda: (sample(scrape(base), "watchd_oldest_waiting_job_age_seconds") or 0) > 0,
        timeout=30,
        what="an oldest waiting age",
    )
    env.wait_states({"podcasts/a.mp4": "delivered", "podcasts/b.mp4": "delivered"}, timeout=120)
    m = wait_for(
        lambda: (s := scrape(base)) and sample(s, "watchd_jobs", state="delivered") == 2 and s,
        timeout=10,
        what="the delivered count",
    )
    assert sample(m, "watchd_jobs", state="failed") == 0
    assert sample(m, "watchd_oldest_waiting_job_age_seconds") == 0
    sizes = sum(p.stat().st_size for p in sample_videos[:2])
    assert sample(m, "watchd_uploaded_bytes_total") == sizes
    assert sample(m, "watchd_upload_throughput_bytes_per_second_count") == 2
    assert (sample(m, "watchd_logins_total") or 0) >= 1
    create = "/v1/projects/create"
    assert (sample(m, "watchd_api_responses_total", endpoint=create, status="201") or 0) + (
        sample(m, "watchd_api_responses_total", endpoint=create, status="200") or 0
    ) == 2, {k: v for k, v in m.items() if k[0] == "watchd_api_responses_total"}
    assert (sample(m, "watchd_api_responses_total", endpoint=create, status="429") or 0) >= 1
    assert (sample(m, "watchd_rate_limited_total", endpoint=create) or 0) >= 1
    inbox = str(env.inbox)
    assert (sample(m, "watchd_inbox_last_scan_timestamp_seconds", inbox=inbox) or 0) > 0
    assert sample(m, "watchd_inbox_paused", inbox=inbox) == 0
    assert sample(m, "watchd_probe_stuck") == 0
    assert sample(m, "watchd_probe_timeouts_total") == 0
    assert env.stop() == 0


# ---- watchd status ---------------------------------------------------------------------------


def test_status_shows_the_daemon_and_its_jobs(
    env: Env, systemd: NotifyRecorder, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": PODCASTS})
    start_service(env, **systemd.env())
    systemd.wait(lambda s: "READY=1" in s.fields())
    env.drop(sample_videos[0], "podcasts/ep1.mp4")
    (job,) = env.wait_states({"podcasts/ep1.mp4": "delivered"})
    assert env.proc is not None
    out = wait_for(
        lambda: (
            (r := env.cli("status")).returncode == 0
            and f"pid {env.proc.pid}" in r.stdout
            and r.stdout
        ),
        timeout=15,
        what="status naming the running daemon",
    )
    assert "running" in out.splitlines()[0]
    assert job["id"] in out and "delivered" in out and "podcasts/ep1.mp4" in out
    assert env.stop() == 0
    out = env.cli("status").stdout
    assert "not running" in out.splitlines()[0]
