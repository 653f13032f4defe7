"""What counts as an input: the ignore list and the accepted extensions (docs/configuration.md).

Copy tools, sync clients, NAS firmware and desktops leave temporaries and metadata beside the
files people drop. Taking one of those as a video would bill a project for garbage, so every
name is checked here, on every path component, before anything else looks at it.

Decisions on look-alikes (tested in ``tests/watching/test_ignore.py``): only the *end* of a
name marks a temporary, so ``my.part.mp4`` and ``clip.tmp.mov`` are finished videos and are
taken, while ``my.mp4.part`` is not. ``~$`` marks an Office lock file but a plain leading
``~`` does not (``~intro.mp4`` is taken). A file name starting with ``_`` is taken; a *folder*
starting with ``_`` is never entered (``_done``, ``_failed``, SABnzbd's ``_UNPACK_``).
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".mov", ".avi", ".webm", ".mkv", ".mpeg", ".mpg", ".flv"}
)

# Whole names (compared lower-case) left by desktops and NAS firmware.
_IGNORED_NAMES = frozenset(
    {
        "thumbs.db",  # Windows Explorer thumbnails
        "ehthumbs.db",
        "ehthumbs_vista.db",
        "desktop.ini",
        "icon\r",  # macOS custom folder icon
        "@eadir",  # Synology thumbnails/metadata
        "#recycle",  # Synology recycle bin
        "#snapshot",  # Synology snapshots
        "$recycle.bin",  # Windows recycle bin on SMB shares
        "system volume information",
        "lost+found",
        "@recycle",  # QNAP recycle bin
        "@recently-snapshot",  # QNAP snapshots
        "@sharebin",
        "@tmp",
    }
)

# Prefixes (compared lower-case). A leading "." covers every hidden name: rsync's
# ".name.XXXXXX", Syncthing's ".syncthing.name.tmp", AppleDouble "._name", ".DS_Store",
# ".AppleDouble", ".snapshot", ".Trash-1000", LibreOffice's ".~lock.name#".
_IGNORED_PREFIXES = (
    ".",
    "~$",  # Microsoft Office owner/lock files
    "~syncthing~",  # Syncthing temporaries on filesystems without hidden names
    "_unpack_",  # SABnzbd unpacking in progress
    "_failed_",  # SABnzbd failed unpack
)

# Suffixes (compared lower-case): downloads and transfers still in progress.
_IGNORED_SUFFIXES = (
    ".part",  # Firefox, wget2, Nextcloud, Transmit
    ".partial",  # rclone, Safari
    ".filepart",  # WinSCP
    ".crdownload",  # Chrome / Edge
    ".opdownload",  # Opera
    ".download",  # Safari bundles
    ".tmp",
    ".temp",
    ".!ut",  # uTorrent
    ".!qb",  # qBittorrent
    ".!sync",  # Resilio Sync
    ".swp",
    "~",  # editor and `cp --backup` copies
)


def nfc(s: str) -> str:
    """Return ``s`` in Unicode NFC form.

    macOS clients write decomposed (NFD) names over SMB/AFP while Linux tools write composed
    ones; the ledger and the outbox compare and print names in one form so that the same
    visible name is the same key.
    """
    return unicodedata.normalize("NFC", s)


def is_ignored_name(name: str) -> bool:
    """True if a file (or any entry) called ``name`` must be left alone."""
    if not name or name in (".", ".."):
        return True
    low = name.lower()
    return (
        low in _IGNORED_NAMES
        or low.startswith(_IGNORED_PREFIXES)
        or low.endswith(_IGNORED_SUFFIXES)
    )


def is_ignored_dir(name: str) -> bool:
    """True if a folder called ``name`` must never be entered.

    Besides every ignored name this covers folders starting with ``_`` (the daemon's own
    ``_done`` and ``_failed``) and ``.`` (snapshots, recycle bins, ``.AppleDouble``).
    """
    return name.startswith("_") or is_ignored_name(name)


def is_candidate(rel: PurePosixPath) -> bool:
    """True if the inbox-relative path ``rel`` names an acceptable video input.

    It must end in a video extension (any case) and none of its components may be ignored.
    Absolute paths and paths with ``..`` are never candidates.
    """
    parts = rel.parts
    if not parts or rel.is_absolute():
        return False
    name = parts[-1]
    if PurePosixPath(name).suffix.lower() not in VIDEO_EXTENSIONS:
        return False
    if is_ignored_name(name):
        return False
    return not any(part == ".." or is_ignored_dir(part) for part in parts[:-1])
