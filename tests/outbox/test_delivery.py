"""Outbox folders, FAILED.txt, verification, and the source's disposition."""

from __future__ import annotations

import errno
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from watchd.outbox.delivery import (
    FAILED_TXT,
    choose_outbox_folder,
    dispose_source,
    failed_text,
    sidecar_of,
    verify_delivery,
    write_failed_txt,
)
from watchd.outbox.manifest import (
    ClipEntry,
    ExportEntry,
    SourceInfo,
    build_manifest,
    write_manifest,
)

# -- folders --------------------------------------------------------------------------------


def test_folder_is_created_under_the_rule(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    f = choose_outbox_folder(out, PurePosixPath("podcasts"), "ep12")
    assert f == out / "podcasts" / "ep12"
    assert f.is_dir()
    assert choose_outbox_folder(out, PurePosixPath("."), "ep12") == out / "ep12"
    assert choose_outbox_folder(out, PurePosixPath(""), "ep12") == out / "ep12 (2)"


def test_existing_folders_are_numbered(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    names = [choose_outbox_folder(out, PurePosixPath("a/b"), "ep12.final").name for _ in range(3)]
    assert names == ["ep12.final", "ep12.final (2)", "ep12.final (3)"]


def test_an_empty_unclaimed_folder_is_taken_again(tmp_path: Path) -> None:
    # A crash between the mkdir and the job's record of it left "ep12/" empty and owned by no
    # one: the restarted job delivers there, not into "ep12 (2)/" beside it (seen in the soak).
    out = tmp_path / "outbox"
    rel = PurePosixPath("podcasts")
    left = choose_outbox_folder(out, rel, "ep12")
    assert choose_outbox_folder(out, rel, "ep12", unclaimed=lambda f: True) == left
    # Claimed by another job, or not empty, or no one to ask: a new folder.
    claimed = {left}
    second = choose_outbox_folder(out, rel, "ep12", unclaimed=lambda f: f not in claimed)
    assert second.name == "ep12 (2)"
    claimed.add(second)
    (left / "manifest.json").write_text("{}")
    claimed.remove(left)
    third = choose_outbox_folder(out, rel, "ep12", unclaimed=lambda f: f not in claimed)
    assert third.name == "ep12 (3)"
    assert choose_outbox_folder(out, rel, "ep12").name == "ep12 (4)"
    asked: list[Path] = []
    (out / "podcasts" / "ep13").write_text("a file, not a folder")
    got = choose_outbox_folder(out, rel, "ep13", unclaimed=lambda f: asked.append(f) or True)
    assert got.name == "ep13 (2)" and asked == []


def test_hostile_stem_and_folder_names(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    f = choose_outbox_folder(out, PurePosixPath("Q&A: live"), "../../CON")
    assert f == out / "Q&A- live" / "-..-CON"
    f = choose_outbox_folder(out, PurePosixPath("x"), "...")
    assert f == out / "x" / "untitled"
    with pytest.raises(ValueError):
        choose_outbox_folder(out, PurePosixPath("../escape"), "a")
    with pytest.raises(ValueError):
        choose_outbox_folder(out, PurePosixPath("/abs"), "a")


def test_concurrent_choices_never_share_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    with ThreadPoolExecutor(max_workers=8) as pool:
        folders = list(
            pool.map(lambda _: choose_outbox_folder(out, PurePosixPath("r"), "same"), range(32))
        )
    assert len(set(folders)) == 32


# -- FAILED.txt -----------------------------------------------------------------------------


def test_failed_txt_tells_a_person_what_to_do(tmp_path: Path) -> None:
    path = write_failed_txt(
        tmp_path,
        source_name="ep12.mp4",
        error_code="probe_invalid",
        message="not a video: moov atom not found",
        hint="Fix the file and drop it again.",
        job_id="j-42",
    )
    assert path == tmp_path / FAILED_TXT
    text = path.read_text("utf-8")
    assert text.startswith("FAILED: ep12.mp4\n")
    assert "not a video: moov atom not found" in text
    assert "(error code: probe_invalid)" in text
    assert "Fix the file and drop it again." in text
    assert "journalctl -u carmic-watchd JOB_ID=j-42" in text
    assert os.listdir(tmp_path) == [FAILED_TXT]


def test_failed_txt_default_hints_and_redaction() -> None:
    billing = failed_text(
        source_name="a.mp4",
        error_code="BillingRequired",
        message="insufficient minutes; see https://s3.example/x.mp4?X-Amz-Signature=abc123",
        hint="",
        job_id="j-1",
        log_hint="/var/log/watchd.log",
    )
    assert "Top up processing minutes" in billing and "`watchd retry j-1`" in billing
    assert "abc123" not in billing and "https://s3.example/x.mp4?<redacted>" in billing
    assert "log:    /var/log/watchd.log" in billing
    other = failed_text(source_name="a.mp4", error_code="x", message="", hint=None, job_id="j-2")
    assert "drop it into the inbox again" in other and "(no details)" in other


# -- disposition ----------------------------------------------------------------------------


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    (root / "podcasts" / "2024").mkdir(parents=True)
    return root


def drop(inbox: Path, rel: str, data: bytes = b"video", sidecar: str | None = None) -> Path:
    p = inbox / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if sidecar is not None:
        sidecar_of(p).write_text(sidecar)
    return p


def test_move_done_and_failed(inbox: Path) -> None:
    src = drop(inbox, "podcasts/2024/ep.mp4", sidecar='title = "x"\n')
    new = dispose_source(src, inbox, "podcasts", "move", "done")
    assert new == inbox / "_done" / "podcasts" / "ep.mp4"
    assert new.read_bytes() == b"video"
    assert sidecar_of(new).read_text() == 'title = "x"\n'
    assert not src.exists() and not sidecar_of(src).exists()
    src = drop(inbox, "root.mov")
    assert dispose_source(src, inbox, "", "move", "failed") == inbox / "_failed" / "root.mov"


def test_move_numbers_collisions_with_the_sidecar(inbox: Path) -> None:
    done = inbox / "_done" / "podcasts"
    first = dispose_source(drop(inbox, "podcasts/ep.mp4", b"1"), inbox, "podcasts", "move", "done")
    second = dispose_source(
        drop(inbox, "podcasts/2024/ep.mp4", b"2", sidecar="a"), inbox, "podcasts", "move", "done"
    )
    # a stale sidecar holds "ep (3).mp4.toml": the pair moves on to (4)
    (done / "ep (3).mp4.toml").write_text("stale")
    third = dispose_source(
        drop(inbox, "podcasts/ep.mp4", b"3", sidecar="b"), inbox, "podcasts", "move", "done"
    )
    assert [first, second, third] == [done / "ep.mp4", done / "ep (2).mp4", done / "ep (4).mp4"]
    assert first is not None and second is not None and third is not None
    assert [p.read_bytes() for p in (first, second, third)] == [b"1", b"2", b"3"]
    assert sidecar_of(second).read_text() == "a"
    assert sidecar_of(third).read_text() == "b"
    assert sorted(os.listdir(done)) == [
        "ep (2).mp4",
        "ep (2).mp4.toml",
        "ep (3).mp4.toml",
        "ep (4).mp4",
        "ep (4).mp4.toml",
        "ep.mp4",
    ]


def test_a_repeated_move_leaves_the_source_where_the_first_one_put_it(inbox: Path) -> None:
    # The daemon recorded the new path, then was killed before it marked the job delivered:
    # after the restart the same disposal runs again on the moved file (seen in the soak).
    src = drop(inbox, "podcasts/ep.mp4", b"1", sidecar="s")
    done = dispose_source(src, inbox, "podcasts", "move", "done")
    assert done == inbox / "_done" / "podcasts" / "ep.mp4"
    assert dispose_source(done, inbox, "podcasts", "move", "done") == done
    assert sorted(os.listdir(done.parent)) == ["ep.mp4", "ep.mp4.toml"]
    assert done.read_bytes() == b"1" and sidecar_of(done).read_text() == "s"
    # A retried job that failed before is still moved from _failed to _done.
    failed = dispose_source(drop(inbox, "podcasts/x.mp4"), inbox, "podcasts", "move", "failed")
    assert failed is not None
    assert dispose_source(failed, inbox, "podcasts", "move", "failed") == failed
    assert dispose_source(failed, inbox, "podcasts", "move", "done") == done.with_name("x.mp4")
    assert not failed.exists()


def test_keep_and_delete(inbox: Path) -> None:
    src = drop(inbox, "a.mp4", sidecar="s")
    assert dispose_source(src, inbox, "", "keep", "done") == src
    assert src.exists() and sidecar_of(src).exists()
    assert dispose_source(src, inbox, "", "delete", "done") is None
    assert not src.exists() and not sidecar_of(src).exists()
    assert not (inbox / "_done").exists()


def test_bad_arguments(inbox: Path) -> None:
    src = drop(inbox, "a.mp4")
    with pytest.raises(ValueError):
        dispose_source(src, inbox, "", "archive", "done")
    with pytest.raises(ValueError):
        dispose_source(src, inbox, "", "move", "later")
    with pytest.raises(ValueError):
        dispose_source(src, inbox, "../../etc", "move", "done")
    with pytest.raises(FileNotFoundError):
        dispose_source(inbox / "gone.mp4", inbox, "", "move", "done")
    assert src.exists()
    assert not (inbox / "_done").exists() or os.listdir(inbox / "_done") == []


def test_move_across_filesystems_copies_then_unlinks(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = drop(inbox, "podcasts/ep.mp4", os.urandom(100_000), sidecar="s")
    os.utime(src, (1_600_000_000, 1_600_000_000))
    data = src.read_bytes()
    real = os.replace

    def no_cross_device_rename(a: Any, b: Any) -> None:
        if Path(a).parent != Path(b).parent:  # a move, not a temp-file rename
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(a, b)

    monkeypatch.setattr(os, "replace", no_cross_device_rename)
    new = dispose_source(src, inbox, "podcasts", "move", "done")
    assert new is not None
    assert new.read_bytes() == data
    assert new.stat().st_mtime == 1_600_000_000
    assert sidecar_of(new).read_text() == "s"
    assert not src.exists() and not sidecar_of(src).exists()
    assert sorted(os.listdir(new.parent)) == ["ep.mp4", "ep.mp4.toml"]


def test_failed_move_leaves_the_source_and_no_placeholder(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = drop(inbox, "a.mp4", sidecar="s")

    def broken(a: Any, b: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="I/O error"):
        dispose_source(src, inbox, "", "move", "done")
    assert src.read_bytes() == b"video"
    assert os.listdir(inbox / "_done") == []


def _other_filesystem(near: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != near.stat().st_dev:
        return shm
    return None


def test_real_cross_filesystem_move(tmp_path: Path) -> None:
    other = _other_filesystem(tmp_path)
    if other is None:
        pytest.skip("no second writable filesystem")
    src = other / f"watchd-test-{os.getpid()}-{tmp_path.name}.mp4"
    src.write_bytes(b"x" * 5000)
    try:
        new = dispose_source(src, tmp_path, "", "move", "done")
        assert new == tmp_path / "_done" / src.name
        assert new.read_bytes() == b"x" * 5000
        assert not src.exists()
    finally:
        src.unlink(missing_ok=True)


# -- verification ---------------------------------------------------------------------------


def delivered(folder: Path) -> dict[str, Any]:
    (folder / "01 - A.mp4").write_bytes(b"clip-a")
    (folder / "01 - A.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    exp = folder / "exports" / "01 - A" / "premiere"
    exp.mkdir(parents=True)
    (exp / "project.xml").write_text("<xml/>")
    doc = build_manifest(
        status="delivered",
        source=SourceInfo("ep.mp4", 5, "ab"),
        rule="",
        project_id="p",
        clips=[
            ClipEntry(
                "c1",
                "A",
                0.0,
                1.0,
                90,
                file="01 - A.mp4",
                captions="01 - A.srt",
                sha256=hashlib.sha256(b"clip-a").hexdigest(),
                exports=[ExportEntry("premiere", "exports/01 - A/premiere/")],
            )
        ],
        skipped=[],
        error=None,
        completed_at="2026-01-01T00:00:00Z",
    )
    write_manifest(folder, doc)
    return doc


def test_a_good_delivery_verifies(tmp_path: Path) -> None:
    assert verify_delivery(tmp_path, delivered(tmp_path)) == []


def test_missing_wrong_and_empty_files_are_reported(tmp_path: Path) -> None:
    doc = delivered(tmp_path)
    (tmp_path / "01 - A.mp4").write_bytes(b"clip-b")
    (tmp_path / "01 - A.srt").write_bytes(b"")
    (tmp_path / "exports" / "01 - A" / "premiere" / "project.xml").unlink()
    assert verify_delivery(tmp_path, doc) == [
        "01 - A.mp4: sha256 differs from the manifest's",
        "01 - A.srt: empty (captions of 01 - A.mp4)",
        "exports/01 - A/premiere/: empty (export premiere of 01 - A.mp4)",
    ]
    (tmp_path / "01 - A.mp4").unlink()
    (tmp_path / "01 - A.srt").unlink()
    (tmp_path / "exports" / "01 - A" / "premiere").rmdir()
    assert verify_delivery(tmp_path, doc) == [
        "01 - A.mp4: missing",
        "01 - A.srt: missing (captions of 01 - A.mp4)",
        "exports/01 - A/premiere/: missing (export premiere of 01 - A.mp4)",
    ]


def test_sizes_are_checked_when_the_manifest_has_them(tmp_path: Path) -> None:
    doc = delivered(tmp_path)
    doc["clips"][0]["size"] = 999
    write_manifest(tmp_path, doc)
    assert verify_delivery(tmp_path, doc) == ["01 - A.mp4: 6 bytes, expected 999"]


def test_a_link_is_not_a_delivered_file(tmp_path: Path) -> None:
    doc = delivered(tmp_path)
    (tmp_path / "elsewhere").write_bytes(b"clip-a")
    (tmp_path / "01 - A.mp4").unlink()
    (tmp_path / "01 - A.mp4").symlink_to(tmp_path / "elsewhere")
    assert verify_delivery(tmp_path, doc) == ["01 - A.mp4: missing"]


def test_manifest_on_disk_is_checked(tmp_path: Path) -> None:
    doc = delivered(tmp_path)
    (tmp_path / "manifest.json").unlink()
    assert verify_delivery(tmp_path, doc) == ["manifest.json: missing"]
    write_manifest(tmp_path, {**doc, "status": "partial"})
    assert verify_delivery(tmp_path, doc) == ["manifest.json: differs from the manifest written"]
    (tmp_path / "manifest.json").write_text("{")
    assert "not JSON" in verify_delivery(tmp_path, doc)[0]


def test_unsafe_paths_are_reported_and_not_opened(tmp_path: Path) -> None:
    doc = {"clips": [{"file": "../../etc/passwd"}]}
    assert verify_delivery(tmp_path, doc) == ["clips[0].file '../../etc/passwd': leaves the folder"]


def test_failed_txt_beside_a_long_name_fits_and_stays_apart(tmp_path: Path) -> None:
    from watchd.outbox.delivery import failed_txt_beside, write_failed_txt_beside

    short = failed_txt_beside(tmp_path / "ep12.mp4")
    assert short.name == "ep12.mp4.FAILED.txt"
    a = failed_txt_beside(tmp_path / ("a" * 246 + ".mp4"))  # 250 bytes: ".FAILED.txt" won't fit
    b = failed_txt_beside(tmp_path / ("a" * 246 + ".mkv"))
    assert len(os.fsencode(a.name)) <= 255 and a.name.endswith(".FAILED.txt")
    assert a != b  # two long names never share one text
    assert a == failed_txt_beside(tmp_path / ("a" * 246 + ".mp4"))  # found again to remove it
    written = write_failed_txt_beside(
        tmp_path / ("é" * 125 + ".mp4"),
        source_name="x.mp4",
        error_code="probe_truncated",
        message="m",
        hint=None,
        job_id="j3f9a0c2b71",
    )
    assert written.exists()
