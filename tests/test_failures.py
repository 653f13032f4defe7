"""The failure table: each code has one message and one hint, and they do not repeat each other."""

from __future__ import annotations

import random
import re
import typing
from pathlib import Path

import pytest

from watchd.failures import BY_STATUS, FAILURES, OTHER, failure, hint, log_hint, under_systemd
from watchd.media import make_sample_video
from watchd.outbox.delivery import failed_text
from watchd.probe import ProbeCode, ProbeError, probe_file

ADVICE = re.compile(r"\b(again|convert|check|drop|split|compress|retry|copy it)\b", re.I)


def sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"[.;:—]", text) if s.strip()]


@pytest.mark.parametrize("code", [*FAILURES, *(f"http_{s}" for s in BY_STATUS), "other"])
def test_every_code_has_one_message_and_one_hint(code: str) -> None:
    entry = BY_STATUS[int(code[5:])] if code.startswith("http_") else FAILURES.get(code, OTHER)
    assert entry.message.endswith(".") and entry.hint.endswith(".")
    assert entry.message[0].isupper() or entry.message.startswith("watchd")
    # The message says what went wrong, the hint what to do: neither repeats the other.
    assert not set(sentences(entry.message)) & set(sentences(entry.hint))
    assert len(sentences(entry.hint)) == len(set(sentences(entry.hint)))


def test_every_probe_code_that_fails_a_job_is_in_the_table() -> None:
    codes = set(typing.get_args(ProbeCode)) - {"timeout"}  # a timeout is tried again
    assert {f"probe_{c}" for c in codes} <= set(FAILURES)


def test_hints_name_the_job_and_fall_back_by_http_status() -> None:
    assert hint("render_failed", "j0123456789").startswith("Run `watchd retry j0123456789` ")
    assert failure("no_such_code", 404) is BY_STATUS[404]
    assert failure("no_such_code") is OTHER
    assert "{job_id}" not in hint("validation_error", "j1", 422)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    good = root / "good.mp4"
    make_sample_video(good, seconds=4.0, width=64, height=36, fps=10, audio=False)
    whole = good.read_bytes()
    files = {
        "empty": b"",
        "truncated": whole[: len(whole) // 2],
        "not_video": random.Random(1).randbytes(100_000),
    }
    out = {}
    for code, data in files.items():
        (root / f"{code}.mp4").write_bytes(data)
        out[code] = root / f"{code}.mp4"
    (root / "notes.txt").write_bytes(b"hello")
    out["unsupported"] = root / "notes.txt"
    return out


@pytest.mark.parametrize("code", ["empty", "truncated", "not_video", "unsupported"])
def test_what_a_person_reads_says_each_thing_once(code: str, bad_files: dict[str, Path]) -> None:
    with pytest.raises(ProbeError) as got:
        probe_file(bad_files[code])
    err = got.value
    assert err.code == code
    # The probe's message carries the details and no advice; the table's hint the advice.
    assert not ADVICE.search(err.message), err.message
    told = f"{err.message} — {hint(f'probe_{code}', 'j1')}"
    assert len(sentences(told)) == len(set(sentences(told))), told
    text = failed_text(
        source_name=bad_files[code].name,
        error_code=f"probe_{code}",
        message=err.message,
        hint=hint(f"probe_{code}", "j1"),
        job_id="j1",
    )
    assert text.count(hint(f"probe_{code}", "j1")) == 1


def test_random_bytes_are_told_they_are_not_a_readable_video(bad_files: dict[str, Path]) -> None:
    with pytest.raises(ProbeError) as got:
        probe_file(bad_files["not_video"])
    assert "not a readable video" in got.value.message
    assert "Only video files" not in hint("probe_not_video", "j1")
    assert ".mp4 .mov" not in hint("probe_not_video", "j1")


def test_log_advice_fits_how_the_daemon_runs() -> None:
    assert under_systemd({"INVOCATION_ID": "abc"}) and under_systemd({"JOURNAL_STREAM": "8:9"})
    assert not under_systemd({})
    assert log_hint("j1", {"INVOCATION_ID": "abc"}) == "journalctl -u carmic-watchd JOB_ID=j1"
    foreground = log_hint("j1", {})
    assert "journalctl" not in foreground and '"job j1"' in foreground
