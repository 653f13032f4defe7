"""Uploads and downloads against a real loopback storage origin (tests/carmic/storage_stub.py)."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.carmic.fakeapi import FakeApi, err, make_client
from tests.carmic.storage_stub import StorageStub, StoredObject
from tests.handoffs import count_hand_offs
from watchd.carmic.client import CarmicClient
from watchd.carmic.errors import (
    NetworkError,
    NotFound,
    SourceChanged,
    TransferError,
    TransientError,
    UrlExpired,
)
from watchd.carmic.transfer import download_file, exact_url, upload_file
from watchd.clock import FakeClock


@pytest.fixture
async def storage() -> AsyncIterator[StorageStub]:
    stub = await StorageStub().start()
    try:
        yield stub
    finally:
        await stub.stop()


@pytest.fixture
async def client() -> AsyncIterator[CarmicClient]:
    """The API is a MockTransport; storage traffic goes over real sockets (the client's own
    storage httpx client, as in production)."""
    c = CarmicClient(
        "https://api.test/api",
        "svc@example.com",
        "Sup3r-secret-pw",
        http=httpx.AsyncClient(transport=httpx.MockTransport(FakeApi())),
        clock=FakeClock(),
    )
    try:
        yield c
    finally:
        await c.aclose()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@dataclass(frozen=True)
class Ident:
    size: int
    mtime_ns: int


def _ident(path: Path) -> Ident:
    st = os.stat(path)
    return Ident(st.st_size, st.st_mtime_ns)


# ---- upload -------------------------------------------------------------------------------


async def test_upload_exact_bytes_length_and_url(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)  # not a multiple of the chunk size
    src = _write(tmp_path / "ep12.mp4", data)
    url = storage.presign("PUT", "projects/p1/source.mp4", "video/quicktime")
    progress: list[tuple[int, int]] = []
    res = await client.upload(
        url,
        src,
        "video/quicktime",
        expect=_ident(src),
        progress=lambda s, t: progress.append((s, t)),
    )
    assert res.size == len(data)
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    obj = storage.objects["projects/p1/source.mp4"]
    assert obj.data == data and obj.sha256 == res.sha256
    (seen,) = storage.seen
    assert seen.status == 200
    # Byte-identical request target (the %2F of the credential survived).
    assert seen.raw_path == url.removeprefix(storage.url)
    assert "%2F20260101%2Fauto" in seen.raw_path
    assert seen.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in seen.headers
    assert seen.headers["Content-Type"] == "video/quicktime"
    assert "Authorization" not in seen.headers and "X-Workspace-ID" not in seen.headers
    assert progress[0] == (0, len(data)) and progress[-1] == (len(data), len(data))
    assert [s for s, _ in progress] == sorted(s for s, _ in progress)


async def test_empty_file_uploads_with_content_length_zero(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "empty.mp4", b"")
    res = await client.upload(storage.presign("PUT", "e.mp4"), src, "video/mp4")
    assert res.size == 0 and res.sha256 == hashlib.sha256(b"").hexdigest()
    assert storage.seen[0].headers["Content-Length"] == "0"


async def test_a_small_upload_is_read_in_one_hand_off_to_a_thread(
    storage: StorageStub, client: CarmicClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(200_000)
    src = _write(tmp_path / "short.mp4", data)
    handed = count_hand_offs(monkeypatch)
    res = await client.upload(storage.presign("PUT", "s.mp4"), src, "video/mp4")
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.objects["s.mp4"].data == data
    assert handed == ["open"]  # opened, checked, read and closed in one go


def test_exact_url_keeps_the_query_bytes() -> None:
    url = "https://r2.test/b/a%20b.mp4?X-Amz-Credential=k%2F2026%2Fauto&s=a%3Db&t=~*'()!"
    assert (
        exact_url(url).raw_path == b"/b/a%20b.mp4?X-Amz-Credential=k%2F2026%2Fauto&s=a%3Db&t=~*'()!"
    )


async def test_expired_url(storage: StorageStub, client: CarmicClient, tmp_path: Path) -> None:
    storage.expired = True
    src = _write(tmp_path / "a.mp4", b"x" * 1000)
    with pytest.raises(UrlExpired) as ei:
        await client.upload(storage.presign("PUT", "a.mp4"), src, "video/mp4")
    assert "X-Amz-Signature" not in str(ei.value) and "<redacted>" in str(ei.value)


async def test_expiry_refused_before_a_large_body_is_read_is_still_url_expired(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    """Storage answers 403 at the headers; the client must report the answer, not the broken
    pipe of the body it was still sending (the pipeline recreates the project on UrlExpired)."""
    storage.expired = True
    src = tmp_path / "a.mp4"
    with open(src, "wb") as f:
        f.truncate(16 << 20)
    with pytest.raises(UrlExpired):
        await client.upload(storage.presign("PUT", "a.mp4"), src, "video/mp4")


async def test_signature_mismatch_is_a_transfer_error_not_expiry(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "a.mp4", b"x" * 1000)
    bad = storage.presign("PUT", "a.mp4").replace("%2F20260101", "/20260101")
    with pytest.raises(TransferError, match="SignatureDoesNotMatch") as ei:
        await client.upload(bad, src, "video/mp4")
    assert not isinstance(ei.value, UrlExpired)
    assert ei.value.status == 403


async def test_expectation_mismatch_before_sending(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "a.mp4", b"x" * 1000)
    stale = Ident(999, _ident(src).mtime_ns)
    with pytest.raises(SourceChanged, match="changed since it was checked"):
        await client.upload(storage.presign("PUT", "a.mp4"), src, "video/mp4", expect=stale)
    assert storage.seen == []


async def test_a_symbolic_link_is_never_read_for_an_upload(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    real = _write(tmp_path / "real.mp4", b"x" * 1000)
    link = tmp_path / "x.mp4"
    link.symlink_to(real)
    with pytest.raises(SourceChanged, match="no longer a regular file"):
        await client.upload(storage.presign("PUT", "x.mp4"), link, "video/mp4")
    assert storage.seen == []


async def test_growth_during_upload_aborts_and_nothing_is_stored(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "growing.mp4", os.urandom(4 << 20))

    def append_once(sent: int, total: int) -> None:
        if 0 < sent < total and src.stat().st_size == total:
            with open(src, "ab") as f:
                f.write(b"more bytes from a slow copy")

    with pytest.raises(SourceChanged, match="size went from"):
        await client.upload(storage.presign("PUT", "g.mp4"), src, "video/mp4", progress=append_once)
    assert "g.mp4" not in storage.objects


async def test_rewrite_in_place_during_upload_is_noticed(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "a.mp4", os.urandom(3 << 20))

    def rewrite(sent: int, total: int) -> None:
        if sent == 1 << 20:
            with open(src, "r+b") as f:
                f.write(b"X")
            st = src.stat()
            os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    with pytest.raises(SourceChanged, match="written to"):
        await client.upload(storage.presign("PUT", "a.mp4"), src, "video/mp4", progress=rewrite)
    assert "a.mp4" not in storage.objects


async def test_replacement_by_rename_during_upload_is_noticed(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    """rsync's way: a new file renamed over the old one. The open descriptor still reads the
    old content, so only the final check of the path can tell."""
    data = os.urandom(2 << 20)
    src = _write(tmp_path / "a.mp4", data)

    def replace(sent: int, total: int) -> None:
        if sent == 1 << 20:
            other = _write(tmp_path / ".a.mp4.XXXX", data)
            os.replace(other, src)

    with pytest.raises(SourceChanged, match="another file"):
        await client.upload(storage.presign("PUT", "a.mp4"), src, "video/mp4", progress=replace)
    assert "a.mp4" not in storage.objects


async def test_a_failing_progress_callback_does_not_abort(
    storage: StorageStub, client: CarmicClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _write(tmp_path / "a.mp4", b"y" * 5000)

    def broken(sent: int, total: int) -> None:
        raise RuntimeError("display gone")

    res = await client.upload(storage.presign("PUT", "a.mp4"), src, "video/mp4", progress=broken)
    assert res.size == 5000
    assert sum("progress callback failed" in r.getMessage() for r in caplog.records) == 1


async def test_connection_refused_is_a_transient_network_error(
    client: CarmicClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "a.mp4", b"y" * 10)
    with pytest.raises(NetworkError, match="cannot connect") as ei:
        await client.upload("http://127.0.0.1:9/bucket/a.mp4?X-Amz-Signature=zzz", src, "video/mp4")
    assert "zzz" not in str(ei.value)


async def test_storage_5xx_is_transient(tmp_path: Path) -> None:
    def storage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, text="<Error><Code>SlowDown</Code><Message>Slow Down</Message></Error>"
        )

    src = _write(tmp_path / "a.mp4", b"y" * 10)
    async with make_client(FakeApi(), storage=storage) as c:
        with pytest.raises(TransientError):
            await c.upload("https://r2.test/b/a?sig=1", src, "video/mp4")


def _reset_peak_rss() -> bool:
    """Reset the kernel's VmHWM for this process (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


async def test_multi_gigabyte_sparse_upload_keeps_memory_flat(tmp_path: Path) -> None:
    """2 GiB over loopback, the storage side only hashing: the process's peak resident memory
    (VmHWM, reset before the upload) grows by a few chunks at most, whatever the file size."""
    size = 2 << 30
    src = tmp_path / "huge.mp4"
    with open(src, "wb") as f:
        f.truncate(size)
    stub = await StorageStub(keep_bytes=False).start()
    try:
        async with httpx.AsyncClient() as http:
            url = stub.presign("PUT", "huge.mp4")
            if not _reset_peak_rss():
                pytest.skip("cannot reset VmHWM here")
            before = _vm("VmRSS")
            started = time.perf_counter()
            res = await upload_file(http, url, src, "video/mp4", now=time.time)
            elapsed = time.perf_counter() - started
            growth = _vm("VmHWM") - before
    finally:
        await stub.stop()
    # The stub hashed what it received on its own: both sides agree on every byte.
    assert stub.objects["huge.mp4"] == StoredObject(size, res.sha256, None, "video/mp4")
    assert res.size == size
    print(
        f"2 GiB: {elapsed:.1f}s, {size / elapsed / 1e6:.0f} MB/s, peak RSS +{growth / 1e6:.1f} MB"
    )
    assert growth < 32 << 20


async def test_upload_allocations_stay_within_a_few_chunks(tmp_path: Path) -> None:
    """The same property by tracemalloc, on a smaller file (tracing slows every allocation)."""
    size = 256 << 20
    src = tmp_path / "big.mp4"
    with open(src, "wb") as f:
        f.truncate(size)
    stub = await StorageStub(keep_bytes=False).start()
    try:
        async with httpx.AsyncClient() as http:
            url = stub.presign("PUT", "big.mp4")
            tracemalloc.start()
            try:
                res = await upload_file(http, url, src, "video/mp4", now=time.time)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        await stub.stop()
    assert res.size == size
    assert peak < 16 << 20


# ---- download -----------------------------------------------------------------------------


async def test_download_exact_bytes_and_sha256(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    data = os.urandom((2 << 20) + 7)
    storage.objects["clips/c1.mp4"] = StoredObject(len(data), "", data, "video/mp4")
    dest = tmp_path / "out" / "01 - Title.mp4"
    dest.parent.mkdir()
    res = await client.download(
        storage.presign("GET", "clips/c1.mp4"), dest, expected_size=len(data)
    )
    assert dest.read_bytes() == data
    assert (res.path, res.size, res.sha256) == (dest, len(data), hashlib.sha256(data).hexdigest())
    assert os.listdir(dest.parent) == ["01 - Title.mp4"]
    (seen,) = storage.seen
    assert "Authorization" not in seen.headers
    assert seen.headers.get("Accept-Encoding") == "identity"


@pytest.mark.parametrize(
    ("size", "cut_at"),
    [
        (1 << 20, 1000),  # cut before anything was written
        (3 << 20, (5 << 20) // 2),  # cut after the temporary file was written to
    ],
)
async def test_partial_download_leaves_no_file_under_the_final_name(
    storage: StorageStub, tmp_path: Path, size: int, cut_at: int
) -> None:
    data = os.urandom(size)
    storage.objects["c.mp4"] = StoredObject(len(data), "", data, "video/mp4")
    storage.truncate_get_at = cut_at
    dest = tmp_path / "c.mp4"
    async with httpx.AsyncClient() as http:
        with pytest.raises(NetworkError):
            await download_file(http, storage.presign("GET", "c.mp4"), dest, now=time.time)
    assert os.listdir(tmp_path) == []


async def test_a_small_download_is_written_in_one_hand_off_to_a_thread(
    storage: StorageStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(300_000)  # several network blocks
    storage.objects["t.jpg"] = StoredObject(len(data), "", data, "image/jpeg")
    handed = count_hand_offs(monkeypatch)
    dest = tmp_path / "t.jpg"
    async with httpx.AsyncClient() as http:
        res = await download_file(http, storage.presign("GET", "t.jpg"), dest, now=time.time)
    assert dest.read_bytes() == data and res.sha256 == hashlib.sha256(data).hexdigest()
    assert handed == ["finish"]


async def test_partial_download_is_retried_by_the_client(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    storage.objects["c.mp4"] = StoredObject(len(data), "", data, "video/mp4")
    storage.truncate_get_at = 1000
    storage.truncations_left = 2
    dest = tmp_path / "c.mp4"
    res = await client.download(storage.presign("GET", "c.mp4"), dest)
    assert res.size == len(data) and dest.read_bytes() == data
    assert [s.method for s in storage.seen] == ["GET"] * 3
    assert sorted(os.listdir(tmp_path)) == ["c.mp4"]


async def test_size_mismatch_with_expectation_leaves_nothing(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    storage.objects["z.zip"] = StoredObject(10, "", b"0123456789", "application/zip")
    dest = tmp_path / "z.zip"
    with pytest.raises(TransferError, match="expected size says 11"):
        await client.download(storage.presign("GET", "z.zip"), dest, expected_size=11)
    assert os.listdir(tmp_path) == []


async def test_download_expired_and_missing(
    storage: StorageStub, client: CarmicClient, tmp_path: Path
) -> None:
    with pytest.raises(TransferError, match="NoSuchKey") as ei:
        await client.download(storage.presign("GET", "nope"), tmp_path / "n")
    assert ei.value.status == 404
    storage.expired = True
    with pytest.raises(UrlExpired):
        await client.download(storage.presign("GET", "nope"), tmp_path / "n")
    assert os.listdir(tmp_path) == []


async def test_clip_video_redirect_to_real_storage_without_credentials(
    storage: StorageStub, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    storage.objects["clips/c9.mp4"] = StoredObject(len(data), "", data, "video/mp4")
    api = FakeApi()
    location = storage.presign("GET", "clips/c9.mp4")
    api.routes[("GET", "/v1/clips/c9/video")] = lambda r: httpx.Response(
        302, headers={"Location": location}
    )
    c = CarmicClient(
        "https://api.test/api",
        "svc@example.com",
        "Sup3r-secret-pw",
        http=httpx.AsyncClient(transport=httpx.MockTransport(api)),
        clock=FakeClock(),
    )
    try:
        res = await c.download_clip_video("c9", tmp_path / "c9.mp4")
    finally:
        await c.aclose()
    assert res.size == len(data) and (tmp_path / "c9.mp4").read_bytes() == data
    (seen,) = storage.seen
    assert "Authorization" not in seen.headers and "X-Workspace-ID" not in seen.headers
    assert seen.raw_path == location.removeprefix(storage.url)
    # The API call itself did carry them.
    video = next(r for r in api.log if r.url.path.endswith("/video"))
    assert video.headers["Authorization"].startswith("Bearer ")


async def test_clip_video_404_before_render(tmp_path: Path) -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/clips/c1/video")] = lambda r: err(404, "not rendered")
    async with make_client(api) as c:
        with pytest.raises(NotFound):
            await c.download_clip_video("c1", tmp_path / "c1.mp4")
    assert os.listdir(tmp_path) == []
