"""openfiles: real descriptors in this process and a child, and a synthetic /proc tree."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from watchd.watching.openfiles import SharedWalks, is_open_for_write, open_for_write

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


@pytest.fixture
def video(tmp_path: Path) -> Path:
    p = tmp_path / "ep12.mp4"
    p.write_bytes(b"\0" * 16)
    return p


@linux_only
def test_open_for_write_in_this_process(video: Path) -> None:
    assert not is_open_for_write(video)
    with video.open("ab"):
        assert is_open_for_write(video)
    assert not is_open_for_write(video)


@linux_only
def test_read_write_counts_and_read_only_does_not(video: Path) -> None:
    with video.open("rb"):
        assert not is_open_for_write(video)
    fd = os.open(video, os.O_RDWR)
    try:
        assert is_open_for_write(video)
    finally:
        os.close(fd)


@linux_only
def test_other_file_open_does_not_count(video: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"
    with other.open("wb"):
        assert not is_open_for_write(video)


@linux_only
def test_writer_in_another_process(video: Path) -> None:
    code = "import sys; f = open(sys.argv[1], 'ab'); print('open', flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(video)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        assert is_open_for_write(video)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
    assert not is_open_for_write(video)


@linux_only
def test_same_name_elsewhere_does_not_count(video: Path, tmp_path: Path) -> None:
    twin = tmp_path / "other" / video.name
    twin.parent.mkdir()
    with twin.open("wb"):
        assert not is_open_for_write(video)


@linux_only
def test_symlinked_file_written_under_its_target_name(tmp_path: Path) -> None:
    target = tmp_path / "render-output.mov"
    target.write_bytes(b"")
    link = tmp_path / "inbox.mov"
    link.symlink_to(target)
    with target.open("ab"):
        assert is_open_for_write(link)


def test_missing_file_is_not_open(tmp_path: Path) -> None:
    assert not is_open_for_write(tmp_path / "gone.mp4")


def _fake_proc(root: Path, pid: str, fd: str, target: str, flags: str) -> None:
    (root / pid / "fd").mkdir(parents=True, exist_ok=True)
    (root / pid / "fdinfo").mkdir(parents=True, exist_ok=True)
    os.symlink(target, root / pid / "fd" / fd)
    (root / pid / "fdinfo" / fd).write_text(f"pos:\t0\nflags:\t{flags}\nmnt_id:\t21\n")


@pytest.mark.parametrize(
    ("flags", "writing"),
    [("0100000", False), ("0100001", True), ("0100002", True), ("02100001", True), ("0", False)],
)
@linux_only
def test_flags_from_fdinfo(tmp_path: Path, video: Path, flags: str, writing: bool) -> None:
    proc = tmp_path / "proc"
    _fake_proc(proc, "42", "3", str(video), flags)
    assert is_open_for_write(video, proc=proc) is writing


@linux_only
def test_synthetic_proc_skips_noise(tmp_path: Path, video: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)  # not a pid
    (proc / "7").mkdir()  # a process whose fd dir we cannot list
    _fake_proc(proc, "8", "0", "socket:[1234]", "02")
    _fake_proc(proc, "8", "1", str(tmp_path / "vanished"), "01")
    _fake_proc(proc, "9", "5", str(video), "garbage")
    assert not is_open_for_write(video, proc=proc)
    _fake_proc(proc, "10", "5", str(video), "0100001")
    assert is_open_for_write(video, proc=proc)


@linux_only
def test_no_proc_means_no_evidence(video: Path, tmp_path: Path) -> None:
    assert not is_open_for_write(video, proc=tmp_path / "no-proc")


@linux_only
def test_cost_is_small(video: Path) -> None:
    # Informational bound: one scan of this machine's /proc must stay cheap.
    t0 = time.perf_counter()
    for _ in range(5):
        is_open_for_write(video)
    per_call = (time.perf_counter() - t0) / 5
    assert per_call < 0.5, per_call


@linux_only
def test_one_walk_answers_for_many_files(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}.mp4" for i in range(5)]
    for f in files:
        f.write_bytes(b"x")
    same_name = tmp_path / "sub" / "f1.mp4"  # the name of one, another inode
    same_name.parent.mkdir()
    same_name.write_bytes(b"y")
    with files[1].open("ab"), files[3].open("r+b"), files[4].open("rb"):
        assert open_for_write([*files, same_name, tmp_path / "gone.mp4"]) == {files[1], files[3]}
        assert open_for_write([str(files[3])]) == {str(files[3])}
    assert open_for_write(files) == set()
    assert open_for_write([]) == set()


async def test_shared_walks_answer_concurrent_askers_together(tmp_path: Path) -> None:
    walks: list[list[Path]] = []

    def check(paths: list[Path]) -> set[Path]:
        walks.append(sorted(paths))
        return {p for p in paths if p.name.startswith("busy")}

    shared = SharedWalks(check)
    names = [f"f{i}.mp4" for i in range(20)] + ["busy.mp4"]
    paths = [tmp_path / n for n in names]
    answers = await asyncio.gather(*(shared.is_open_for_write(p) for p in paths))
    assert answers == [p.name == "busy.mp4" for p in paths]
    # The first asker started a walk; everyone who asked meanwhile shared the next one.
    assert len(walks) <= 2 and sorted(p for w in walks for p in w) == sorted(paths)
    assert await shared.is_open_for_write(paths[0]) is False  # a later question: a new walk


async def test_shared_walks_pass_a_failure_to_every_asker(tmp_path: Path) -> None:
    def check(paths: list[Path]) -> set[Path]:
        raise OSError("proc is gone")

    shared = SharedWalks(check)
    results = await asyncio.gather(
        *(shared.is_open_for_write(tmp_path / f"{i}.mp4") for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, OSError) for r in results)


@linux_only
async def test_shared_walks_see_a_real_writer(video: Path) -> None:
    shared = SharedWalks()
    assert await shared.is_open_for_write(video) is False
    with video.open("ab"):
        assert await shared.is_open_for_write(video) is True
