"""Atomic writes: no temp file left on success, no final file after a crash, SMB retries."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from watchd.outbox.atomic import (
    TempFile,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temps,
    copy_into_place,
    fsync_dir,
    is_tmp_name,
    replace_with_retry,
    tmp_path_for,
)
from watchd.outbox.names import utf8_len


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_tmp_name_shape(tmp_path: Path) -> None:
    final = tmp_path / "01 - Title.mp4"
    tmp = tmp_path_for(final)
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".01 - Title.mp4.watchd-")
    assert tmp.name.endswith(".tmp")
    assert is_tmp_name(tmp.name)
    assert tmp_path_for(final) != tmp
    assert not is_tmp_name("01 - Title.mp4")
    assert not is_tmp_name(".x.watchd-zz.tmp")


def test_tmp_name_of_a_long_name_fits(tmp_path: Path) -> None:
    final = tmp_path / ("é" * 125 + ".mp4")
    tmp = tmp_path_for(final)
    assert utf8_len(tmp.name) <= 255
    assert is_tmp_name(tmp.name)
    tmp.write_bytes(b"ok")  # the filesystem accepts it


def test_write_bytes_text_json(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "c.json", {"k": "ü", "n": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\n".encode()
    text = (tmp_path / "c.json").read_text("utf-8")
    assert text.endswith("}\n") and "ü" in text
    assert json.loads(text) == {"k": "ü", "n": [1, 2]}
    assert listing(tmp_path) == ["a.bin", "b.txt", "c.json"]


def test_write_replaces_existing_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["f"]


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def _crash(*_a: object, **_k: object) -> None:
    raise OSError(errno.EIO, "simulated crash")


def test_crash_before_rename_leaves_no_final_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(tmp_path / "f.mp4", b"data")
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "manifest.json", {})
    assert listing(tmp_path) == []


def test_crash_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"old")
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]


def test_unserialisable_json_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"n": float("nan")})
    assert listing(tmp_path) == []


def test_fsync_is_called_on_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_bytes(tmp_path / "f", b"x")
    assert len(synced) == 2
    assert is_tmp_name(Path(synced[0]).name)
    assert synced[1] == str(tmp_path)


def test_fsync_dir_tolerates_filesystems_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int) -> None:
        raise OSError(errno.EINVAL, "not supported")

    monkeypatch.setattr(os, "fsync", refuse)
    fsync_dir(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "disk error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk error"):
        fsync_dir(tmp_path)


class FlakyReplace:
    """os.replace that fails ``failures`` times with ``code`` first."""

    def __init__(self, failures: int, code: int) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0
        self.real = os.replace

    def __call__(self, src: object, dst: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(self.code, os.strerror(self.code))
        self.real(src, dst)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [errno.EBUSY, errno.EACCES, errno.EPERM, errno.ETXTBSY])
def test_busy_destination_is_retried_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    flaky = FlakyReplace(3, code)
    monkeypatch.setattr(os, "replace", flaky)
    (tmp_path / "a").write_bytes(b"a")
    sleeps: list[float] = []
    replace_with_retry(tmp_path / "a", tmp_path / "b", sleep=sleeps.append)
    assert (tmp_path / "b").read_bytes() == b"a"
    assert flaky.calls == 4
    assert sleeps == [0.1, 0.2, 0.4]


def test_busy_destination_gives_up_after_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", FlakyReplace(99, errno.EBUSY))
    sleeps: list[float] = []
    with pytest.raises(OSError) as info:
        replace_with_retry(tmp_path / "a", tmp_path / "b", attempts=3, sleep=sleeps.append)
    assert info.value.errno == errno.EBUSY
    assert len(sleeps) == 2


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with pytest.raises(FileNotFoundError):
        replace_with_retry(tmp_path / "missing", tmp_path / "b", sleep=sleeps.append)
    assert sleeps == []


def test_atomic_write_survives_a_busy_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", FlakyReplace(1, errno.EBUSY))
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    atomic_write_text(tmp_path / "x.srt", "1\n")
    assert listing(tmp_path) == ["x.srt"]
    assert sleeps == [0.1]


def test_copy_into_place(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = os.urandom(3 << 20) + b"tail"
    src.write_bytes(data)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    (tmp_path / "out").mkdir()
    copy_into_place(src, tmp_path / "out" / "a.bin")
    copy_into_place(src, tmp_path / "out" / "b.bin", keep_metadata=True)
    assert (tmp_path / "out" / "a.bin").read_bytes() == data
    assert (tmp_path / "out" / "b.bin").read_bytes() == data
    assert (tmp_path / "out" / "b.bin").stat().st_mtime == 1_600_000_000
    assert listing(tmp_path / "out") == ["a.bin", "b.bin"]


def test_copy_falls_back_when_sendfile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_a: object) -> int:
        raise OSError(errno.EINVAL, "no sendfile here")

    monkeypatch.setattr(os, "sendfile", refuse)
    (tmp_path / "src").write_bytes(b"x" * 100_000)
    copy_into_place(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b"x" * 100_000


def test_copy_crash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError):
        copy_into_place(tmp_path / "src", tmp_path / "out" / "dst")
    assert listing(tmp_path / "out") == []


def test_clean_stale_temps_removes_only_ours(tmp_path: Path) -> None:
    sub = tmp_path / "exports" / "01 - A" / "premiere"
    sub.mkdir(parents=True)
    ours = [tmp_path_for(tmp_path / "01 - A.mp4"), tmp_path_for(sub / "project.xml")]
    for p in ours:
        p.write_bytes(b"partial")
    theirs = [
        tmp_path / "01 - A.mp4",
        tmp_path / ".hidden",
        tmp_path / "notes.tmp",
        tmp_path / ".x.watchd-nothex.tmp",
        sub / "project.xml",
    ]
    for p in theirs:
        p.write_bytes(b"keep")
    outside = tmp_path.parent / f"outside-{tmp_path.name}"
    outside.mkdir()
    stale_outside = tmp_path_for(outside / "y")
    stale_outside.write_bytes(b"")
    (tmp_path / "link").symlink_to(outside)
    try:
        removed = clean_stale_temps(tmp_path)
        assert sorted(removed) == sorted(ours)
        assert all(p.exists() for p in theirs)
        assert stale_outside.exists()
    finally:
        stale_outside.unlink()
        outside.rmdir()
    assert clean_stale_temps(tmp_path / "missing") == []


def test_temp_file_filled_over_several_calls_then_committed_or_discarded(tmp_path: Path) -> None:
    final = tmp_path / "clip.mp4"
    tmp = TempFile(final)
    tmp.file.write(b"ab")
    tmp.file.write(b"cd")
    assert os.listdir(tmp_path) == [tmp.path.name] and is_tmp_name(tmp.path.name)
    tmp.commit()
    assert final.read_bytes() == b"abcd" and os.listdir(tmp_path) == ["clip.mp4"]
    gone = TempFile(tmp_path / "other.mp4")
    gone.file.write(b"x")
    gone.discard()
    assert os.listdir(tmp_path) == ["clip.mp4"]
