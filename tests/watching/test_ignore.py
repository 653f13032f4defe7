"""The contract's ignore list, its look-alikes, and candidate paths."""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

import pytest

from watchd.watching.ignore import (
    VIDEO_EXTENSIONS,
    is_candidate,
    is_ignored_dir,
    is_ignored_name,
    nfc,
)

# Every pattern the contract names (§2), plus the sync/download tools we know about.
IGNORED = [
    ".hidden.mp4",
    ".ep12.mp4.Xa81kQ",  # rsync temporary
    ".syncthing.ep12.mp4.tmp",
    "~syncthing~ep12.mp4.tmp",
    "._ep12.mp4",  # AppleDouble
    ".AppleDouble",
    ".DS_Store",
    "Thumbs.db",
    "THUMBS.DB",
    "desktop.ini",
    "@eaDir",
    "~$report.docx",
    "ep12.mp4.part",
    "ep12.MP4.PART",
    "ep12.mp4.filepart",
    "ep12.mp4.crdownload",
    "ep12.mp4.tmp",
    "ep12.mp4.partial",
    "ep12.mp4.opdownload",
    "ep12.mp4.!sync",
    "ep12.mp4.!ut",
    "ep12.mp4.!qB",
    "ep12.mp4~",
    "_UNPACK_ep12",
    "_unpack_ep12.mp4",
    "$RECYCLE.BIN",
    "#recycle",
    ".snapshot",
    ".~lock.notes.odt#",
    "",
    ".",
    "..",
]

# Look-alikes that are real, finished files and must be taken.
TAKEN = [
    "my.part.mp4",
    "clip.tmp.mov",
    "part.mp4",
    "tmp.mkv",
    "~intro.mp4",
    "_intro.mp4",
    "thumbs.db.mp4",
    "eaDir.mp4",
    "DS_Store.avi",
    "ep12.syncthing.mp4",
    "UNPACK_ep12.mp4",
    "épisode 12.webm",
    "ep 12 (final).MOV",
]


@pytest.mark.parametrize("name", IGNORED)
def test_ignored_names(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize("name", TAKEN)
def test_lookalikes_are_not_ignored(name: str) -> None:
    assert not is_ignored_name(name)
    assert is_candidate(PurePosixPath(name))


@pytest.mark.parametrize(
    "name",
    [
        "_done",
        "_failed",
        "_anything",
        "@eaDir",
        ".AppleDouble",
        "#recycle",
        "$RECYCLE.BIN",
        ".snapshot",
        "lost+found",
        "@Recycle",
        ".Trash-1000",
        "_UNPACK_x",
        "System Volume Information",
    ],
)
def test_ignored_dirs(name: str) -> None:
    assert is_ignored_dir(name)


@pytest.mark.parametrize("name", ["podcasts", "2024", "clients/acme", "done", "recycle", "a_b"])
def test_ordinary_dirs_are_entered(name: str) -> None:
    assert not is_ignored_dir(name)


@pytest.mark.parametrize("ext", sorted(VIDEO_EXTENSIONS))
def test_every_video_extension_in_any_case(ext: str) -> None:
    assert is_candidate(PurePosixPath(f"a{ext}"))
    assert is_candidate(PurePosixPath(f"rule/a{ext.upper()}"))


@pytest.mark.parametrize(
    "rel",
    [
        "notes.txt",
        "ep12.mp4.toml",  # a sidecar, not an input
        "ep12.m4v",
        "ep12",
        "_done/podcasts/ep12.mp4",
        "podcasts/_failed/ep12.mp4",
        ".stfolder/ep12.mp4",
        "@eaDir/ep12.mp4/SYNOPHOTO_THUMB.mp4",
        "podcasts/.ep12.mp4.Xa81kQ",
        "../outside.mp4",
        "/abs/ep12.mp4",
        ".",
    ],
)
def test_not_candidates(rel: str) -> None:
    assert not is_candidate(PurePosixPath(rel))


def test_nested_candidate() -> None:
    assert is_candidate(PurePosixPath("clients/acme/podcasts/ep12.mp4"))


def test_nfc_composes_decomposed_names() -> None:
    nfd = unicodedata.normalize("NFD", "épisode")
    assert nfd != "épisode"
    assert nfc(nfd) == "épisode"
    assert nfc("épisode") == "épisode"


def test_nfc_keeps_undecodable_bytes() -> None:
    # Linux names need not be UTF-8; os.fsdecode keeps them as lone surrogates.
    raw = "bad-\udcff.mp4"
    assert nfc(raw) == raw
