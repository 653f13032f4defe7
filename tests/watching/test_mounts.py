"""mounts: sample mountinfo lines, network detection, and the real machine's answers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from watchd.watching import mounts
from watchd.watching.mounts import (
    Mount,
    find_mount,
    fs_type,
    is_network_fs,
    is_network_type,
    mount_point,
    parse_mountinfo,
)

SAMPLE = "\n".join(
    [
        "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard",
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "60 27 0:50 / /srv/nas rw,relatime shared:40 - cifs //nas/video rw,vers=3.1.1,cache=strict",
        "61 60 0:51 / /srv/nas/carmic/archive rw master:3 - nfs4 nas:/export/archive rw,vers=4.2",
        "62 27 0:52 / /mnt/remote rw,nosuid,nodev - fuse.sshfs user@host:/data rw,user_id=0",
        "63 27 8:17 / /mnt/usb rw - fuseblk /dev/sdb1 rw,user_id=0,allow_other",
        r"64 27 0:53 / /mnt/edit\040suite rw - smb3 //edit/suite\040share rw",
        "65 27 0:54 / /mnt/stack rw - ext4 /dev/sdc1 rw",
        "66 27 0:55 / /mnt/stack rw - nfs server:/x rw",
        "67 27 0:56 / /mnt/stackx rw - xfs /dev/sdd1 rw",
        "garbage line that is not mountinfo",
        "",
    ]
)


def test_parse_fields_and_escapes() -> None:
    parsed = parse_mountinfo(SAMPLE)
    assert Mount("/srv/nas", "cifs", "//nas/video") in parsed
    assert Mount("/mnt/edit suite", "smb3", "//edit/suite share") in parsed
    assert len(parsed) == 10  # the garbage and empty lines are skipped


def test_optional_fields_do_not_shift_the_type() -> None:
    line = (
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 propagate_from:2 - ext3 /dev/root rw"
    )
    assert parse_mountinfo(line) == [Mount("/mnt2", "ext3", "/dev/root")]


@pytest.mark.parametrize(
    ("path", "fs", "network", "point"),
    [
        ("/srv/nas/carmic/inbox", "cifs", True, "/srv/nas"),
        ("/srv/nas", "cifs", True, "/srv/nas"),
        ("/srv/nas/carmic/archive/2024", "nfs4", True, "/srv/nas/carmic/archive"),
        ("/srv/nasty/inbox", "ext4", False, "/"),  # a prefix of a name is not a parent
        ("/mnt/remote/in", "fuse.sshfs", True, "/mnt/remote"),
        ("/mnt/usb/in", "fuseblk", False, "/mnt/usb"),
        ("/mnt/edit suite/in", "smb3", True, "/mnt/edit suite"),
        ("/mnt/stack/in", "nfs", True, "/mnt/stack"),  # the later of two stacked mounts
        ("/mnt/stackx", "xfs", False, "/mnt/stackx"),
        ("/var/lib/carmic-watchd", "ext4", False, "/"),
    ],
)
def test_lookup(path: str, fs: str, network: bool, point: str) -> None:
    assert fs_type(path, mountinfo=SAMPLE) == fs
    assert is_network_fs(path, mountinfo=SAMPLE) is network
    assert mount_point(path, mountinfo=SAMPLE) == Path(point)


def test_symlinked_inbox_resolves_to_its_target(tmp_path: Path) -> None:
    # The link lives on the root fs; the mountinfo says its target is a share.
    target = tmp_path / "share"
    target.mkdir()
    link = tmp_path / "inbox"
    link.symlink_to(target)
    info = f"1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / {target} rw - cifs //nas/x rw"
    assert fs_type(link, mountinfo=info) == "cifs"
    assert fs_type(link / "not-yet", mountinfo=info) == "cifs"


def test_no_matching_mount_is_unknown() -> None:
    assert fs_type("/x", mountinfo="") == "unknown"
    assert find_mount("/x", []) is None


@pytest.mark.parametrize(
    ("fs", "network"),
    [
        ("cifs", True),
        ("smb3", True),
        ("smbfs", True),
        ("nfs", True),
        ("nfs4", True),
        ("fuse.rclone", True),
        ("fuse.s3fs", True),
        ("fuse", True),
        ("sshfs", True),
        ("9p", True),
        ("afs", True),
        ("ceph", True),
        ("glusterfs", True),
        ("davfs", True),
        ("fuseblk", False),
        ("ext4", False),
        ("xfs", False),
        ("btrfs", False),
        ("zfs", False),
        ("tmpfs", False),
        ("overlay", False),
    ],
)
def test_network_types(fs: str, network: bool) -> None:
    assert is_network_type(fs) is network


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_this_machine(tmp_path: Path) -> None:
    fs = fs_type(tmp_path)
    assert fs not in ("", "unknown")
    point = mount_point(tmp_path)
    assert tmp_path.resolve().is_relative_to(point)
    assert os.path.ismount(point) or point == Path("/")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs statfs")
def test_statfs_fallback_without_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fs_type(tmp_path)
    monkeypatch.setattr(mounts, "MOUNTINFO", tmp_path / "no-mountinfo")
    fs = fs_type(tmp_path / "missing" / "deeper")
    assert fs != "unknown"
    if real in ("ext2", "ext3", "ext4"):
        assert fs == "ext4"  # one magic number for the three
    elif real in mounts._MAGIC.values():
        assert fs == real
    assert tmp_path.resolve().is_relative_to(mount_point(tmp_path))
