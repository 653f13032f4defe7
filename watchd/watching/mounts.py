"""Which filesystem holds a path, and is it a network one?

inotify only reports changes made through this machine's kernel. On an SMB, NFS or FUSE share,
files written by another client arrive without a single event, so the observer polls there
instead. The answer comes from ``/proc/self/mountinfo`` (the longest mount point that contains
the path; the last of several stacked on one point wins) and, where that cannot be read, from
``statfs``'s filesystem magic number.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

NETWORK_FS_TYPES: frozenset[str] = frozenset(
    {
        "cifs",
        "smb3",
        "smbfs",
        "smb2",
        "nfs",
        "nfs4",
        "sshfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "davfs",
        "ncpfs",
        "coda",
        "lustre",
        "beegfs",
        "gpfs",
        "ocfs2",
        "gfs2",
        "fuse",  # unknown FUSE filesystem (statfs cannot tell which)
    }
)

# fuseblk is a FUSE driver for a local block device (ntfs-3g, exfat): writes pass through this
# kernel, so inotify sees them. Every other FUSE type (fuse.sshfs, fuse.rclone, fuse.s3fs,
# fuse.gvfsd-fuse, ...) is treated as remote.
_LOCAL_FUSE = frozenset({"fuseblk"})

# statfs f_type magic numbers (linux/magic.h and the filesystems' own headers).
_MAGIC: dict[int, str] = {
    0x6969: "nfs",
    0x517B: "smbfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x00C36400: "ceph",
    0x5346414F: "afs",
    0x73757245: "coda",
    0x564C: "ncpfs",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
}

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where, what type, from which source."""

    mount_point: str
    fs_type: str
    source: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse ``/proc/<pid>/mountinfo`` text (see proc(5)); malformed lines are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mount_point = _unescape(fields[4])
            fs_type = fields[sep + 1]
            source = _unescape(fields[sep + 2]) if len(fields) > sep + 2 else ""
        except (ValueError, IndexError):
            continue
        mounts.append(Mount(mount_point, fs_type, source))
    return mounts


def find_mount(path: Path | str, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path`` (already absolute and resolved), or None."""
    p = os.fspath(path)
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point
        contains = mp == "/" or p == mp or p.startswith(mp + "/")
        # ">=": of several mounts stacked on one point, the later one is visible.
        if contains and (best is None or len(mp) >= len(best.mount_point)):
            best = m
    return best


def fs_type(path: Path | str, *, mountinfo: str | None = None) -> str:
    """The filesystem type of ``path`` (e.g. ``ext4``, ``cifs``, ``fuse.sshfs``).

    The path need not exist (an unmounted inbox still names the filesystem it would be on).
    ``mountinfo`` replaces the contents of ``/proc/self/mountinfo`` (for tests). Returns
    ``"unknown"`` when neither mountinfo nor statfs can tell.
    """
    mount = _lookup(path, mountinfo)
    if mount is not None:
        return mount.fs_type
    if mountinfo is None:
        return _statfs_type(_existing_ancestor(_resolve(path)))
    return "unknown"


def is_network_fs(path: Path | str, *, mountinfo: str | None = None) -> bool:
    """True if ``path`` is on a network (or FUSE) filesystem, where inotify misses changes."""
    return is_network_type(fs_type(path, mountinfo=mountinfo))


def is_network_type(fs: str) -> bool:
    """True for a network filesystem type name as mountinfo or :func:`fs_type` gives it."""
    if fs in _LOCAL_FUSE:
        return False
    return fs in NETWORK_FS_TYPES or fs.startswith(("fuse.", "nfs", "smb"))


def mount_point(path: Path | str, *, mountinfo: str | None = None) -> Path:
    """The mount point of the filesystem that holds ``path``.

    Falls back to walking up the tree until the device number changes when mountinfo is
    unavailable.
    """
    mount = _lookup(path, mountinfo)
    if mount is not None:
        return Path(mount.mount_point)
    p = Path(_existing_ancestor(_resolve(path)))
    while p != p.parent and not os.path.ismount(p):
        p = p.parent
    return p


def _lookup(path: Path | str, mountinfo: str | None) -> Mount | None:
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    return find_mount(_resolve(path), parse_mountinfo(mountinfo))


def _resolve(path: Path | str) -> str:
    # Symlinks resolved as far as they exist: an inbox may be a link onto a NAS mount.
    return os.path.realpath(os.path.abspath(path))


def _existing_ancestor(path: str) -> str:
    p = path
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040, \011, \012, \134.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


class _StatfsBuf(ctypes.Structure):
    # Only f_type (the first member, a word on every Linux ABI) is read; the rest of the
    # structure is room for the kernel to write into.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


def _statfs_type(path: str) -> str:
    if not sys.platform.startswith("linux"):
        return "unknown"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = _StatfsBuf()
        if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
            return "unknown"
    except (OSError, AttributeError):
        return "unknown"
    magic = buf.f_type & 0xFFFFFFFF
    return _MAGIC.get(magic, f"0x{magic:x}")
