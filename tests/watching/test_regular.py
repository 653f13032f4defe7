"""Regular files only: opening a source never follows a link nor blocks on a FIFO; names that
are not valid UTF-8 are printable; a name too long for its sidecar is told as such."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from watchd.pipeline.identity import fingerprint, sha256_file
from watchd.watching import regular
from watchd.watching.settle import SettleTracker


@pytest.fixture
def real(tmp_path: Path) -> Path:
    p = tmp_path / "real.mp4"
    p.write_bytes(b"video bytes")
    return p


def test_a_regular_file_opens_and_reads(real: Path) -> None:
    st = real.stat()
    with regular.open_regular(real, expect=(st.st_dev, st.st_ino)) as f:
        assert f.read() == b"video bytes"
    # A hard link is the same regular file: allowed.
    os.link(real, real.with_name("hard.mp4"))
    with regular.open_regular(real.with_name("hard.mp4"), expect=(st.st_dev, st.st_ino)) as f:
        assert f.read() == b"video bytes"


def test_a_symbolic_link_is_never_opened(real: Path, tmp_path: Path) -> None:
    link = tmp_path / "secret.mp4"
    link.symlink_to("/etc/passwd")
    with pytest.raises(regular.NotRegularFile, match="symbolic link"):
        regular.open_regular(link)
    for read in (fingerprint, sha256_file):
        with pytest.raises(regular.NotRegularFile):
            read(link)
    to_real = tmp_path / "x.mp4"
    to_real.symlink_to(real)
    with pytest.raises(regular.NotRegularFile):
        regular.open_regular(to_real)


def test_a_fifo_neither_blocks_nor_opens(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    # Without O_NONBLOCK this open would wait for a writer forever.
    with pytest.raises(regular.NotRegularFile, match="FIFO"):
        regular.open_regular(fifo)
    with pytest.raises(regular.NotRegularFile):
        regular.open_regular("/dev/null")


def test_another_file_in_its_place_is_refused(real: Path, tmp_path: Path) -> None:
    st = real.stat()
    other = tmp_path / "other.mp4"
    other.write_bytes(b"other")
    os.replace(other, real)
    with pytest.raises(regular.NotRegularFile, match="another file"):
        regular.open_regular(real, expect=(st.st_dev, st.st_ino))


def test_special_kinds(tmp_path: Path, real: Path) -> None:
    link = tmp_path / "l"
    link.symlink_to(real)
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        kinds = [regular.special_kind(os.lstat(p).st_mode) for p in (link, fifo, sock_path)]
    assert kinds == [regular.SYMLINK, regular.FIFO, regular.SOCKET]
    assert regular.special_kind(os.lstat("/dev/null").st_mode) == regular.CHAR_DEVICE
    assert regular.special_kind(os.lstat(real).st_mode) is None
    assert regular.special_kind(os.lstat(tmp_path).st_mode) is None


def test_printable_names() -> None:
    bad = os.fsdecode(b"bad\xff.mp4")
    assert regular.printable(bad) == ("bad\\xff.mp4", True)
    assert regular.printable("caf\u00e9.mp4") == ("caf\u00e9.mp4", False)
    shown, _ = regular.printable(os.fsdecode("é".encode() + b"\xc3.mp4"))
    assert shown == "é\\xc3.mp4"
    shown.encode("utf-8")  # storable


def test_sidecar_lookup(tmp_path: Path, real: Path) -> None:
    assert regular.find_sidecar(real) is None
    sidecar = tmp_path / "real.mp4.toml"
    sidecar.write_text('title = "x"\n')
    assert regular.find_sidecar(real) == sidecar
    sidecar.unlink()
    sidecar.symlink_to("/etc/passwd")
    with pytest.raises(regular.NotRegularFile, match="symbolic link"):
        regular.find_sidecar(real)
    sidecar.unlink()
    sidecar.mkdir()  # a folder of that name is no sidecar
    assert regular.find_sidecar(real) is None


def test_a_name_too_long_for_its_sidecar(tmp_path: Path) -> None:
    video = tmp_path / ("v" * 247 + ".mp4")  # 251 bytes: the sidecar's would be 256
    video.write_bytes(b"x")
    with pytest.raises(regular.NameTooLong) as info:
        regular.find_sidecar(video)
    assert info.value.nbytes == 251 and info.value.limit == 250
    assert str(info.value) == "the name is too long for a sidecar (251 bytes)"


def test_the_settle_tracker_never_follows_a_link(tmp_path: Path, real: Path) -> None:
    link = tmp_path / "x.mp4"
    link.symlink_to(real)
    tracker = SettleTracker(1.0, open_for_write=lambda paths: set())
    tracker.observe(link, 0.0)
    tracker.observe(real, 0.0)
    assert [p for p, _, _, _ in tracker.waiting()] == [real]
    assert [s.path for s in tracker.due(2.0)] == [real]
