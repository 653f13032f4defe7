"""Bundle extraction: zip-slip, links, devices, bombs and corrupt files stay out."""

from __future__ import annotations

import io
import logging
import os
import stat
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchd.outbox import bundles
from watchd.outbox.bundles import BundleError, extract_bundle, member_parts


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def tree(folder: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(folder):
        for n in dirs + files:
            p = Path(dirpath, n)
            out.append(p.relative_to(folder).as_posix() + ("/" if p.is_dir() else ""))
    return sorted(out)


def test_a_normal_bundle(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "b.zip",
        [
            ("project.prproj", b"<xml/>"),
            ("media/", b""),
            ("media/clip.mp4", b"video"),
            ("Windows\\style.xml", b"w"),
            ("./a/./b.txt", b"b"),
        ],
    )
    dest = tmp_path / "out" / "exports" / "01 - A" / "premiere"
    res = extract_bundle(z, dest)
    assert sorted(res.written) == [
        "Windows/style.xml",
        "a/b.txt",
        "media/clip.mp4",
        "project.prproj",
    ]
    assert res.skipped == []
    assert (dest / "media" / "clip.mp4").read_bytes() == b"video"
    assert (dest / "Windows" / "style.xml").read_bytes() == b"w"
    assert not any(n.startswith(".") for n in tree(dest))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.txt", "parent folder reference (..)"),
        ("a/../../evil.txt", "parent folder reference (..)"),
        ("..\\..\\evil.txt", "parent folder reference (..)"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\x", "absolute path"),
        ("C:\\Windows\\x.dll", "drive letter"),
        ("C:evil", "drive letter"),
        ("./", "empty name"),
    ],
)
def test_hostile_member_names_are_refused(name: str, reason: str) -> None:
    assert member_parts(name) == reason


def test_member_names_are_sanitised() -> None:
    assert member_parts("CON.xml") == ["CON_.xml"]
    assert member_parts("ab:c/d?.txt") == ["ab-c", "d.txt"]
    assert member_parts("dir\\sub\\f") == ["dir", "sub", "f"]
    assert member_parts(".hidden/x") == ["hidden", "x"]


def test_zip_slip_members_are_skipped_and_nothing_escapes(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "slip.zip",
        [
            ("../escape.txt", b"x"),
            ("..\\escape2.txt", b"x"),
            ("/tmp/abs.txt", b"x"),
            ("C:/abs.txt", b"x"),
            ("ok.txt", b"ok"),
        ],
    )
    dest = tmp_path / "dest"
    res = extract_bundle(z, dest)
    assert res.written == ["ok.txt"]
    assert {s.name for s in res.skipped} == {
        "../escape.txt",
        "..\\escape2.txt",
        "/tmp/abs.txt",
        "C:/abs.txt",
    }
    assert tree(tmp_path) == ["dest/", "dest/ok.txt", "slip.zip"]


def test_links_and_devices_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    z = make_zip(
        tmp_path / "links.zip",
        [
            (special("link", stat.S_IFLNK | 0o777), b"/etc/passwd"),
            (special("dirlink", stat.S_IFLNK | 0o777), b".."),
            (special("dev", stat.S_IFCHR | 0o666), b""),
            (special("fifo", stat.S_IFIFO | 0o666), b""),
            (special("plain", stat.S_IFREG | 0o644), b"plain"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="watchd.outbox.bundles"):
        res = extract_bundle(z, tmp_path / "d")
    assert res.written == ["plain"]
    assert {(s.name, s.reason) for s in res.skipped} == {
        ("link", "symbolic link"),
        ("dirlink", "symbolic link"),
        ("dev", "device or special file"),
        ("fifo", "device or special file"),
    }
    assert tree(tmp_path / "d") == ["plain"]
    assert "skipped 'link': symbolic link" in caplog.text


def test_encrypted_members_are_skipped(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "e.zip", [("secret", b"s"), ("open", b"o")])
    with zipfile.ZipFile(z) as zf:
        infos = zf.infolist()
    # Set the "encrypted" flag bit in both headers of the first member.
    data = bytearray(z.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        data[at + off] |= 0x1
    z.write_bytes(bytes(data))
    assert infos[0].filename == "secret"
    res = extract_bundle(z, tmp_path / "d")
    assert res.written == ["open"]
    assert res.skipped[0].reason == "encrypted"


def test_duplicates_and_conflicts(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "dup.zip",
        [
            ("A.xml", b"1"),
            ("a.xml", b"2"),
            ("x", b"file"),
            ("x/y", b"under a file"),
            ("d/f", b"f"),
            ("d", b"a file where a folder is"),
        ],
    )
    res = extract_bundle(z, tmp_path / "d")
    assert sorted(res.written) == ["A.xml", "d/f", "x"]
    assert {(s.name, s.reason) for s in res.skipped} == {
        ("a.xml", "duplicate name"),
        ("x/y", "a file of the bundle is in the way"),
        ("d", "a folder of the bundle is in the way"),
    }
    assert (tmp_path / "d" / "A.xml").read_bytes() == b"1"


def test_a_planted_link_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "media").symlink_to(outside)
    z = make_zip(tmp_path / "b.zip", [("media/clip.mp4", b"v"), ("ok", b"o")])
    res = extract_bundle(z, dest)
    assert res.written == ["ok"]
    assert res.skipped[0].reason == "a file or link is in the way"
    assert list(outside.iterdir()) == []


def test_a_planted_link_at_a_file_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f").symlink_to(victim)
    extract_bundle(make_zip(tmp_path / "b.zip", [("f", b"new")]), dest)
    assert victim.read_bytes() == b"precious"
    assert not (dest / "f").is_symlink()
    assert (dest / "f").read_bytes() == b"new"


def test_existing_files_are_replaced_on_a_second_run(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    extract_bundle(make_zip(tmp_path / "1.zip", [("p.xml", b"old")]), dest)
    extract_bundle(make_zip(tmp_path / "2.zip", [("p.xml", b"new")]), dest)
    assert (dest / "p.xml").read_bytes() == b"new"
    assert tree(dest) == ["p.xml"]


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"<html>Access Denied</html>")
    with pytest.raises(BundleError, match="not a usable zip"):
        extract_bundle(bad, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_empty_or_useless_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no usable file"):
        extract_bundle(make_zip(tmp_path / "e.zip", []), tmp_path / "d")
    with pytest.raises(BundleError, match=r"no usable file .*symbolic link"):
        extract_bundle(
            make_zip(tmp_path / "l.zip", [(special("l", stat.S_IFLNK | 0o777), b"/")]),
            tmp_path / "d",
        )
    assert not (tmp_path / "d").exists()


def test_zip_bomb_ratio(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "bomb.zip", [("zeros", bytes(4 << 20))])
    with pytest.raises(BundleError, match="zip bomb"):
        extract_bundle(z, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_small_repetitive_files_are_not_bombs(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "ok.zip", [("a.xml", b"<a/>" * 10_000)])
    assert extract_bundle(z, tmp_path / "d").written == ["a.xml"]


def test_total_size_and_file_count_caps(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "big.zip", [("a", os.urandom(5000)), ("b", os.urandom(5000))])
    with pytest.raises(BundleError, match="more than the cap of 8000"):
        extract_bundle(z, tmp_path / "d", max_total_bytes=8000)
    with pytest.raises(BundleError, match="more than the cap of 1"):
        extract_bundle(z, tmp_path / "d", max_files=1)
    assert not (tmp_path / "d").exists()


def test_actual_bytes_are_capped_even_if_headers_lie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "_check_caps", lambda *a, **k: None)
    z = make_zip(tmp_path / "big.zip", [("a", os.urandom(5000)), ("b", os.urandom(5000))])
    with pytest.raises(BundleError, match="more than its declared size"):
        extract_bundle(z, tmp_path / "out" / "d", max_total_bytes=8000)
    assert tree(tmp_path / "out") == []  # "a" was written, then removed again


def test_corrupt_member_undoes_what_was_written(tmp_path: Path) -> None:
    z = tmp_path / "c.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("first/one.txt", b"one")
        zf.writestr("second.txt", b"THE-PAYLOAD")
    data = z.read_bytes().replace(b"THE-PAYLOAD", b"THE-PAYLOAX")
    z.write_bytes(data)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "theirs").write_bytes(b"kept")
    with pytest.raises(BundleError, match="corrupt bundle"):
        extract_bundle(z, tmp_path / "d")
    assert tree(tmp_path / "d") == ["theirs"]


def test_unsupported_compression_is_skipped(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "u.zip", [("odd", b"x" * 100), ("ok", b"o")])
    # Claim compression method 9 (deflate64, which zipfile cannot read) for the first member.
    data = bytearray(z.read_bytes())
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(sig)
        data[at + off : at + off + 2] = (9).to_bytes(2, "little")
    z.write_bytes(bytes(data))
    res = extract_bundle(z, tmp_path / "d")
    assert res.written == ["ok"]
    assert "compression" in res.skipped[0].reason


name_alphabet = st.sampled_from(["a", "b", "é", ".", "..", "/", "\\", ":", "C", "con", " ", "\x01"])


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(name_alphabet, min_size=1, max_size=8).map("".join), max_size=8))
def test_any_member_names_stay_inside(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicates we want
            for i, n in enumerate(names):
                zf.writestr(n, f"member {i}")
        (root / "b.zip").write_bytes(buf.getvalue())
        dest = root / "box" / "dest"
        try:
            res = extract_bundle(root / "b.zip", dest)
        except BundleError as e:
            assert "no usable file" in str(e)
            assert not (root / "box").exists()
            return
        real = dest.resolve()
        for dirpath, dirs, files in os.walk(root / "box"):
            for n in dirs + files:
                p = Path(dirpath, n)
                assert not p.is_symlink()
                assert p.resolve().is_relative_to(real)
                assert not n.startswith(".")
        files_on_disk = sorted(t for t in tree(dest) if not t.endswith("/"))
        assert files_on_disk == sorted(res.written)
