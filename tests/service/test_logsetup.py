"""Logging formats, structured fields, journald fields and redaction."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watchd.redact import RedactingFilter, register_secret
from watchd.service.logsetup import (
    NOISY_LOGGERS,
    FieldRedactingFilter,
    JsonFormatter,
    TextFormatter,
    describe,
    job_logger,
    journal_field_name,
    journal_stream_matches,
    parse_level,
    resolve_format,
    setup_logging,
    syslog_priority,
    teardown_logging,
    utc_timestamp,
)

PRESIGNED = (
    "https://storage.example/bucket/u/ep12.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA%2F20261129&X-Amz-Signature=deadbeefcafe"
)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl"
FIXED = 1_795_953_600.25  # 2026-11-29T12:00:00.250Z

log = logging.getLogger("watchd.test.logsetup")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    teardown_logging()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


class FakeJournal:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def send(self, message: str, **fields: Any) -> None:
        self.entries.append({"MESSAGE": message, **fields})


def record(
    msg: str = "uploading → uploaded",
    *args: object,
    level: int = logging.INFO,
    exc: bool = False,
    **extra: Any,
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"PUT {PRESIGNED} failed")
        except RuntimeError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("watchd.job", level, __file__, 42, msg, args or None, exc_info)
    rec.created = FIXED
    rec.__dict__.update(extra)
    return rec


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


# --- text ---------------------------------------------------------------------------------


def test_text_line_shape() -> None:
    rec = record(job_id="j-ab12", source_path="/srv/inbox/podcasts/ep12.mp4")
    assert TextFormatter().format(rec) == (
        "2026-11-29T12:00:00Z INFO  job j-ab12 ep12.mp4: uploading → uploaded"
    )


def test_text_appends_other_key_fields() -> None:
    rec = record(
        "clips ready",
        job_id="j-ab12",
        source_path="/in/ep12.mp4",
        project_id="p-9",
        rule="",
        state="clips_ready",
        clips=3,
        note="two words",
    )
    line = TextFormatter().format(rec)
    assert line.endswith(
        'job j-ab12 ep12.mp4: clips ready [project_id=p-9 rule="" state=clips_ready clips=3 '
        'note="two words"]'
    )


def test_text_without_job_is_just_the_message() -> None:
    assert TextFormatter().format(record("scan of %s done", "/in", level=logging.WARNING)) == (
        "2026-11-29T12:00:00Z WARNING scan of /in done"
    )


def test_text_is_one_line_per_record_even_with_a_traceback() -> None:
    line = TextFormatter().format(record("first\nsecond", exc=True))
    assert "\n" not in line
    assert "first\\nsecond" in line
    assert "Traceback (most recent call last):\\n" in line
    assert "RuntimeError" in line


def test_text_syslog_prefix_for_the_journal_stream() -> None:
    rec = record("disk full", level=logging.ERROR, job_id="j-1")
    assert TextFormatter(syslog_prefix=True).format(rec) == "<3>ERROR job j-1: disk full"


# --- json ---------------------------------------------------------------------------------


def test_json_fields() -> None:
    rec = record(
        "state %s",
        "uploaded",
        job_id="j-ab12",
        project_id="p-9",
        rule="podcasts",
        state="uploaded",
        source_path="/in/podcasts/ep12.mp4",
        bytes=1234,
    )
    doc = json.loads(JsonFormatter().format(rec))
    assert doc == {
        "ts": "2026-11-29T12:00:00.250Z",
        "level": "INFO",
        "logger": "watchd.job",
        "msg": "state uploaded",
        "job_id": "j-ab12",
        "project_id": "p-9",
        "rule": "podcasts",
        "state": "uploaded",
        "source_path": "/in/podcasts/ep12.mp4",
        "bytes": 1234,
    }


def test_json_end_to_end_with_exception() -> None:
    buf = io.StringIO()
    setup_logging("json", "info", stream=buf, env={})
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("probe failed", extra={"job_id": "j-1", "path": Path("/in/a.mp4")})
    (doc,) = json_lines(buf)
    assert doc["msg"] == "probe failed"
    assert doc["level"] == "ERROR"
    assert doc["job_id"] == "j-1"
    assert doc["path"] == "/in/a.mp4"
    assert "ValueError: bad" in doc["exc"]


# --- journal ------------------------------------------------------------------------------


def test_journal_fields() -> None:
    journal = FakeJournal()
    setup_logging("journal", "info", journal_send=journal.send, env={})
    log.warning(
        "uploading → uploaded",
        extra={
            "job_id": "j-ab12",
            "project_id": "p-9",
            "rule": "podcasts",
            "state": "uploaded",
            "source_path": "/in/podcasts/ep12.mp4",
            "attempt": 2,
            "odd-name": "x",
            "_private": "hidden",
        },
    )
    (entry,) = journal.entries
    assert entry["MESSAGE"] == "job j-ab12 ep12.mp4: uploading → uploaded"
    assert entry["PRIORITY"] == "4"
    assert entry["LOGGER"] == "watchd.test.logsetup"
    assert entry["SYSLOG_IDENTIFIER"] == "carmic-watchd"
    assert entry["JOB_ID"] == "j-ab12"
    assert entry["PROJECT_ID"] == "p-9"
    assert entry["RULE"] == "podcasts"
    assert entry["STATE"] == "uploaded"
    assert entry["SOURCE_PATH"] == "/in/podcasts/ep12.mp4"
    assert entry["ATTEMPT"] == "2"
    assert entry["ODD_NAME"] == "x"
    assert isinstance(entry["CODE_LINE"], int) and entry["CODE_LINE"] > 0
    assert entry["CODE_FUNC"] == "test_journal_fields"  # the journal keeps where it was logged
    assert "_PRIVATE" not in entry
    assert all(k == k.upper() for k in entry)


def test_journal_message_carries_the_redacted_traceback() -> None:
    journal = FakeJournal()
    setup_logging("journal", "info", journal_send=journal.send, env={})
    try:
        raise RuntimeError(f"PUT {PRESIGNED} failed")
    except RuntimeError:
        log.exception("upload failed", extra={"job_id": "j-1"})
    (entry,) = journal.entries
    assert entry["MESSAGE"].startswith("job j-1: upload failed\nTraceback")
    assert "X-Amz-Signature" not in entry["MESSAGE"]
    assert entry["PRIORITY"] == "3"


def test_journal_send_errors_do_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(message: str, **fields: Any) -> None:
        raise OSError("no journal socket")

    monkeypatch.setattr(logging, "raiseExceptions", False)
    setup_logging("journal", "info", journal_send=broken, env={})
    log.error("still fine")


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("job_id", "JOB_ID"),
        ("source_path", "SOURCE_PATH"),
        ("odd-name", "ODD_NAME"),
        ("_x", None),
        ("1st", None),
        ("x" * 65, None),
    ],
)
def test_journal_field_name(key: str, name: str | None) -> None:
    assert journal_field_name(key) == name


def test_syslog_priorities() -> None:
    assert [syslog_priority(lv) for lv in (10, 20, 30, 40, 50, 25)] == [7, 6, 4, 3, 2, 6]


# --- choosing the format ------------------------------------------------------------------


def journal_env_for(path: Path) -> dict[str, str]:
    st = path.stat()
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_auto_picks_journal_only_on_the_journal_stream(tmp_path: Path) -> None:
    target = tmp_path / "stderr"
    target.touch()
    other = tmp_path / "other"
    other.touch()
    with target.open("w") as stream:
        env = journal_env_for(target)
        assert journal_stream_matches(stream, env)
        assert resolve_format("auto", stream=stream, env=env, journal_available=True) == "journal"
        assert resolve_format("auto", stream=stream, env=env, journal_available=False) == "text"
        moved = journal_env_for(other)  # stderr redirected elsewhere: the variable is stale
        assert resolve_format("auto", stream=stream, env=moved, journal_available=True) == "text"
        assert resolve_format("auto", stream=stream, env={}, journal_available=True) == "text"
    buf = io.StringIO()  # no fileno at all
    assert resolve_format("auto", stream=buf, env=env, journal_available=True) == "text"
    assert not journal_stream_matches(buf, {"JOURNAL_STREAM": "garbage"})


def test_explicit_formats() -> None:
    buf = io.StringIO()
    assert resolve_format("json", stream=buf, env={}, journal_available=False) == "json"
    assert resolve_format("text", stream=buf, env={}, journal_available=True) == "text"
    assert resolve_format("journal", stream=buf, env={}, journal_available=True) == "journal"
    with pytest.raises(ValueError, match="log format"):
        resolve_format("xml", stream=buf, env={}, journal_available=True)


def test_auto_end_to_end_uses_the_journal(tmp_path: Path) -> None:
    target = tmp_path / "stderr"
    journal = FakeJournal()
    with target.open("w") as stream:
        setup_logging(
            "auto", "info", stream=stream, env=journal_env_for(target), journal_send=journal.send
        )
        log.info("hello", extra={"job_id": "j-2"})
    assert journal.entries[0]["JOB_ID"] == "j-2"
    assert target.read_text() == ""


def test_text_on_the_journal_stream_gets_priority_prefixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # systemd-python not installed
    target = tmp_path / "stderr"
    with target.open("w") as stream:
        setup_logging("auto", "info", stream=stream, env=journal_env_for(target))
        log.warning("careful", extra={"job_id": "j-3"})
    assert target.read_text() == "<4>WARNING job j-3: careful\n"


def test_json_on_the_journal_stream_gets_priority_prefixes(tmp_path: Path) -> None:
    target = tmp_path / "stderr"
    with target.open("w") as stream:
        setup_logging("json", "info", stream=stream, env=journal_env_for(target))
        log.error("bad", extra={"job_id": "j-4"})
    line = target.read_text()
    assert line.startswith("<3>{")
    assert json.loads(line.removeprefix("<3>"))["job_id"] == "j-4"


def test_journal_without_systemd_python_falls_back_to_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)
    buf = io.StringIO()
    setup_logging("journal", "info", stream=buf, env={})
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARNING" in lines[0]
    assert "systemd-python" in lines[0]


def test_levels() -> None:
    assert parse_level("INFO") == logging.INFO
    assert parse_level(" debug ") == logging.DEBUG
    with pytest.raises(ValueError, match="log level"):
        parse_level("verbose")


def test_level_filters_records() -> None:
    buf = io.StringIO()
    setup_logging("text", "warning", stream=buf, env={})
    log.info("quiet")
    log.warning("loud")
    assert [line.split(" ", 2)[2] for line in buf.getvalue().splitlines()] == ["loud"]


# --- handlers -----------------------------------------------------------------------------


def test_setup_twice_replaces_only_its_own_handler() -> None:
    foreign = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    setup_logging("text", "info", stream=first, env={})
    setup_logging("json", "debug", stream=second, env={})
    log.info("once")
    assert first.getvalue() == ""
    assert json_lines(second)[0]["msg"] == "once"
    assert foreign in root.handlers
    assert root.level == logging.DEBUG
    teardown_logging()
    assert foreign in root.handlers
    root.removeHandler(foreign)


@pytest.mark.parametrize("fmt", ["text", "json", "journal"])
def test_every_handler_carries_the_redacting_filter(fmt: str) -> None:
    setup_logging(fmt, "info", stream=io.StringIO(), env={}, journal_send=FakeJournal().send)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_watchd_owned", False)]
    assert len(ours) == 1
    assert any(isinstance(f, RedactingFilter) for f in ours[0].filters)


# --- redaction ----------------------------------------------------------------------------


def test_message_extras_and_traceback_are_redacted() -> None:
    register_secret("hunter2-the-password")
    buf = io.StringIO()
    setup_logging("json", "info", stream=buf, env={})
    try:
        raise RuntimeError(f"PUT {PRESIGNED} -> 403")
    except RuntimeError:
        log.exception(
            "upload to %s with Bearer %s",
            PRESIGNED,
            JWT,
            extra={
                "job_id": "j-1",
                "url": PRESIGNED,
                "detail": {"auth": f"Bearer {JWT}", "urls": [PRESIGNED]},
                "note": "password was hunter2-the-password",
            },
        )
    raw = buf.getvalue()
    for secret in ("X-Amz-Signature", "deadbeefcafe", JWT, "hunter2-the-password"):
        assert secret not in raw
    (doc,) = json_lines(buf)
    assert doc["url"] == "https://storage.example/bucket/u/ep12.mp4?<redacted>"
    assert doc["detail"]["urls"] == ["https://storage.example/bucket/u/ep12.mp4?<redacted>"]
    assert "storage.example/bucket/u/ep12.mp4" in doc["exc"]


def test_redaction_runs_once_per_record() -> None:
    rec = record("get %s", PRESIGNED, url=PRESIGNED)
    f = FieldRedactingFilter()
    f.filter(rec)
    f.filter(rec)  # a second handler on the same record
    assert rec.getMessage() == "get https://storage.example/bucket/u/ep12.mp4?<redacted>"
    assert rec.__dict__["url"] == "https://storage.example/bucket/u/ep12.mp4?<redacted>"


def test_stack_info_is_redacted() -> None:
    rec = record("x")
    rec.stack_info = f'  File "x.py", line 1, in f\n    get("{PRESIGNED}")'
    FieldRedactingFilter().filter(rec)
    assert "X-Amz-Signature" not in (rec.stack_info or "")


def test_httpx_is_capped_at_warning_unless_debug() -> None:
    buf = io.StringIO()
    setup_logging("text", "info", stream=buf, env={})
    logging.getLogger("httpx").info("HTTP Request: GET %s", PRESIGNED)
    logging.getLogger("httpcore.http11").debug("send_request_headers")
    logging.getLogger("httpx").warning("retrying")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("retrying")


def test_httpx_at_debug_is_shown_redacted() -> None:
    buf = io.StringIO()
    setup_logging("text", "debug", stream=buf, env={})
    logging.getLogger("httpx").info('HTTP Request: PUT %s "HTTP/1.1 200 OK"', PRESIGNED)
    out = buf.getvalue()
    assert "HTTP Request: PUT https://storage.example/bucket/u/ep12.mp4?<redacted>" in out
    assert "X-Amz" not in out


# --- job_logger ---------------------------------------------------------------------------


def test_job_logger_adds_fields_and_call_site_extra_wins() -> None:
    buf = io.StringIO()
    setup_logging("json", "info", stream=buf, env={})
    jl = job_logger("j-ab12", source_path="/in/ep12.mp4", rule="podcasts", state="queued")
    jl.info("probed")
    jl.info("state change", extra={"state": "probed"})
    jl.bind(project_id="p-9").info("created")
    docs = json_lines(buf)
    assert docs[0]["job_id"] == "j-ab12" and docs[0]["state"] == "queued"
    assert docs[0]["logger"] == "watchd.job"
    assert docs[1]["state"] == "probed"
    assert docs[2]["project_id"] == "p-9" and docs[2]["rule"] == "podcasts"


def test_job_logger_on_a_given_logger() -> None:
    buf = io.StringIO()
    setup_logging("text", "info", stream=buf, env={})
    job_logger("j-1", logger=log).info("hi")
    assert re.fullmatch(r"\S+Z INFO  job j-1: hi\n", buf.getvalue())


def test_a_url_redacted_once_stays_as_it_is() -> None:
    from watchd.redact import redact, redact_url

    url = redact_url("http://127.0.0.1:9/bucket/src.mp4?X-Amz-Signature=abc&X-Amz-Date=1")
    assert url == "http://127.0.0.1:9/bucket/src.mp4?<redacted>"
    assert redact(url) == url
    assert redact(f"PUT {url} -> 200") == f"PUT {url} -> 200"
    sneaky = "http://h/p?<redacted>&X-Amz-Credential=AKIA/2026"
    assert redact(sneaky) == "http://h/p?<redacted>"


def test_timestamps_are_right_across_seconds_and_back() -> None:
    # Each second is formatted once and reused: the reuse must follow the clock both ways.
    base = 1_795_954_000.0
    for t in (base, base + 0.999, base + 1.0, base - 0.5, base + 3600.25, base + 0.5):
        assert utc_timestamp(t) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    assert utc_timestamp(base + 1.25, millis=True).endswith(":41.250Z")


def test_the_who_part_names_the_file_whatever_the_path() -> None:
    def who(source: str) -> str:
        record = logging.LogRecord("watchd.job", logging.INFO, "", 0, "m", None, None)
        record.job_id = "j1"
        record.source_path = source
        return describe(record)

    assert who("/srv/in/podcasts/ep 1.mp4") == "job j1 ep 1.mp4: m"
    assert who("ep1.mp4") == "job j1 ep1.mp4: m"


def test_text_and_json_records_skip_the_stack_walk() -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        for fmt in ("text", "json"):
            setup_logging(fmt, "info", stream=io.StringIO(), env={})
            log.info("x")
    finally:
        logging.getLogger().removeHandler(keep)
        teardown_logging()
    # No format but the journal's shows where a record was made: logging does not look it up.
    assert [r.funcName for r in seen] == ["(unknown function)"] * 2
