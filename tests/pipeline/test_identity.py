"""A source's identity and fingerprint, and how a presigned URL's lifetime is read and judged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from watchd.clock import FakeClock
from watchd.pipeline.identity import EDGE, FileIdentity, fingerprint, sha256_file
from watchd.pipeline.ingest import presigned_window, remember_upload_url, upload_url_expired


def test_identity_ignores_inode_and_device_but_not_size_or_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x" * 10)
    ident = FileIdentity.of(f)
    remounted = FileIdentity(ident.size, ident.mtime_ns, ident.ino + 1, ident.dev + 1)
    assert ident.same_content_as(remounted)
    assert not ident.same_content_as(FileIdentity(11, ident.mtime_ns, ident.ino, ident.dev))
    assert not ident.same_content_as(FileIdentity(10, ident.mtime_ns + 1, ident.ino, ident.dev))


def test_fingerprint_reads_head_and_tail_only(tmp_path: Path) -> None:
    size = 3 * EDGE
    base = bytearray(os.urandom(size))
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(base)
    b.write_bytes(base)
    assert fingerprint(a) == fingerprint(b) == fingerprint(a, size)
    middle = bytearray(base)
    middle[size // 2] ^= 0xFF
    b.write_bytes(middle)
    assert fingerprint(a) == fingerprint(b)  # by design: a re-drop is recognised cheaply
    tail = bytearray(base)
    tail[-1] ^= 0xFF
    b.write_bytes(tail)
    assert fingerprint(a) != fingerprint(b)
    b.write_bytes(base + b"\0")
    assert fingerprint(a) != fingerprint(b)  # the size is part of it


def test_fingerprint_of_a_small_file_covers_all_of_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"abc")
    b.write_bytes(b"abd")
    assert fingerprint(a) != fingerprint(b)
    assert sha256_file(a, chunk=2) == hashlib.sha256(b"abc").hexdigest()


SIGV4 = "https://s.test/k?X-Amz-Date=20300101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=x"
SIGNED_AT = 1_893_456_000.0  # 2030-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("url", "window"),
    [
        (SIGV4, (SIGNED_AT + 3600, 3600.0)),
        ("https://s.test/k?Expires=1893459600&Signature=x", (1_893_459_600.0, None)),
        ("https://s.test/k?token=abc", None),
        ("https://s.test/k?X-Amz-Date=garbage&X-Amz-Expires=60", None),
    ],
    ids=["sigv4", "sigv2", "unsigned", "garbage"],
)
def test_presigned_window(url: str, window: tuple[float, float | None] | None) -> None:
    assert presigned_window(url) == window


def fake_pipeline(clock: FakeClock) -> Any:
    return SimpleNamespace(clock=clock, upload_urls={})


def job_with(url: str) -> Any:
    return SimpleNamespace(id="j1", upload_url=url)


@pytest.mark.parametrize(
    ("ttl", "age", "expired"),
    [(3600, 3539, False), (3600, 3541, True), (20, 14, False), (20, 16, True)],
    ids=["hour-inside-60s-margin", "hour-past", "short-inside-quarter", "short-past"],
)
def test_a_url_this_process_received_is_judged_by_its_age(
    ttl: int, age: float, expired: bool
) -> None:
    # The signer's date is far in the past by our wall clock: only the age counts.
    url = f"https://s.test/k?X-Amz-Date=20000101T000000Z&X-Amz-Expires={ttl}&X-Amz-Signature=x"
    clock = FakeClock(start=SIGNED_AT)
    p = fake_pipeline(clock)
    remember_upload_url(cast(Any, p), "j1", url)
    clock.advance(age)
    assert upload_url_expired(cast(Any, p), job_with(url)) is expired


def test_a_url_from_an_earlier_run_is_judged_by_the_wall_clock() -> None:
    clock = FakeClock(start=SIGNED_AT + 3600 - 61)
    p = fake_pipeline(clock)
    assert not upload_url_expired(cast(Any, p), job_with(SIGV4))
    clock.advance(2)
    assert upload_url_expired(cast(Any, p), job_with(SIGV4))
    # Another URL remembered for the job does not vouch for this one.
    remember_upload_url(cast(Any, p), "j1", SIGV4 + "&other")
    assert upload_url_expired(cast(Any, p), job_with(SIGV4))


def test_a_url_without_a_known_lifetime_never_counts_as_expired() -> None:
    p = fake_pipeline(FakeClock(start=SIGNED_AT * 2))
    assert not upload_url_expired(cast(Any, p), job_with("https://s.test/k?token=abc"))
