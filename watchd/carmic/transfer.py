"""Moving bytes to and from presigned storage URLs (Cloudflare R2 in production).

Upload: one PUT of the whole file with an exact ``Content-Length`` (R2 refuses chunked transfer
encoding on a presigned PUT), the URL sent byte for byte (the signature covers the query string
exactly as it was issued: ``%2F`` re-encoded as ``/`` breaks it), no ``Authorization`` header,
the file read in large chunks in a worker thread and hashed as it goes, memory flat whatever the
size. A file that changes while it is being sent aborts the upload (the storage sees a short body
and keeps nothing) with :class:`SourceChanged`.

Download: streamed to a hidden temporary file beside the destination (the outbox's own temporary
names, see :mod:`watchd.outbox.atomic`), length checked, fsynced, renamed into place and the
directory fsynced, so nothing incomplete ever carries the final name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlsplit

import httpx

from watchd.carmic.envelope import parse_retry_after
from watchd.carmic.errors import (
    CarmicError,
    RateLimited,
    ServerError,
    SourceChanged,
    TransferError,
    UrlExpired,
)
from watchd.carmic.http import (
    ResponseHook,
    build_request,
    exact_in_place,
    send,
    translate_errors,
)
from watchd.outbox import atomic
from watchd.redact import redact, redact_url
from watchd.watching.regular import NotRegularFile, open_regular

log = logging.getLogger("watchd.carmic.transfer")

# Chosen by measurement (tests/carmic/bench_transfer.py: 1 GiB over loopback, median of 5):
# 256 KiB 614 MB/s and 2.5 s CPU, 1 MiB 843 MB/s and 2.0 s, 4 MiB 878 MB/s and 1.95 s. Per-chunk
# costs (a thread hop, an fstat) vanish at 1 MiB; 4 MiB buys ~4% for four times the buffer.
CHUNK_SIZE = 1 << 20

UPLOAD_ENDPOINT = "storage:PUT"
DOWNLOAD_ENDPOINT = "storage:GET"

ProgressCallback = Callable[[int, int], None]


class ExpectedFile(Protocol):
    """What the caller saw of the file when it decided to upload it (the pipeline's
    ``FileIdentity`` fits). Inodes are not compared against it: they change across remounts."""

    @property
    def size(self) -> int: ...

    @property
    def mtime_ns(self) -> int: ...


@dataclass(frozen=True)
class UploadResult:
    size: int
    sha256: str


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str


def exact_url(url: str) -> httpx.URL:
    """An httpx URL whose request target is exactly the path and query of ``url`` as given.

    httpx normalises URLs it parses (percent-encoding what it deems unsafe); a presigned
    signature covers the bytes as issued, so they are pinned here. Only ASCII URLs are pinned:
    anything else must be percent-encoded by someone, and then httpx's encoding is as good as any.
    """
    fast = exact_in_place(url)
    if fast is not None:
        return fast  # ASCII, nothing httpx would re-encode: exact as written, origin parsed once
    parsed = httpx.URL(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        raw = target.encode("ascii")
    except UnicodeEncodeError:
        return parsed
    if parts.path and parsed.raw_path == raw:
        return parsed  # already exact (the usual case): spare a second parse
    return parsed.copy_with(raw_path=raw)


_XML_CODE = re.compile(r"<Code>([^<]*)</Code>", re.IGNORECASE)
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>", re.IGNORECASE)


def storage_error(response: httpx.Response, *, what: str, url: str, now: float) -> CarmicError:
    """The exception for a storage error response (body read): S3-style XML or anything else."""
    text = response.content[:4096].decode("utf-8", errors="replace")
    code = _XML_CODE.search(text)
    message = _XML_MESSAGE.search(text)
    detail = " ".join(m.group(1).strip() for m in (code, message) if m) or text.strip()[:200]
    detail = redact(detail)
    status = response.status_code
    where = redact_url(url)
    full = f"storage refused the {what} of {where}: {detail}" if detail else f"{what} failed"
    if status == 403 and "expired" in text.lower():
        return UrlExpired(f"the presigned URL has expired ({where})", status=status)
    if status == 429 or (status == 503 and "slow down" in text.lower()):
        ra = parse_retry_after(response.headers.get("Retry-After"), now)
        return RateLimited(full, status=status, retry_after=ra)
    if status >= 500:
        return ServerError(full, status=status)
    return TransferError(full, status=status)


# ---- upload ------------------------------------------------------------------------------------


class _Source:
    """The file being uploaded: read in a worker thread, hashed, watched for changes.

    Every chunk is followed by an ``fstat`` of the open descriptor (a growing or rewritten file
    changes size or mtime), and before the last chunk leaves, the path is checked to still name
    the same inode (rsync and editors replace files by renaming over them).
    """

    def __init__(self, path: Path, expect: ExpectedFile | None, chunk_size: int) -> None:
        self.path = path
        self.chunk_size = chunk_size
        # Never through a symbolic link, never a FIFO or a device (closed by close()).
        try:
            self.file: IO[bytes] = open_regular(path, buffering=0)
        except NotRegularFile as e:
            raise SourceChanged(f"{path.name} is no longer a regular file ({e.strerror})") from None
        try:
            st = os.fstat(self.file.fileno())
            if expect is not None and (st.st_size, st.st_mtime_ns) != (
                expect.size,
                expect.mtime_ns,
            ):
                raise SourceChanged(
                    f"{path.name} changed since it was checked (size {expect.size} -> {st.st_size})"
                )
        except BaseException:
            self.file.close()
            raise
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.inode = (st.st_dev, st.st_ino)
        self.sent = 0
        self.hash = hashlib.sha256()

    def close(self) -> None:
        self.file.close()

    def _changed(self, why: str) -> SourceChanged:
        return SourceChanged(f"{self.path.name} changed during the upload: {why}")

    def read_chunk(self) -> bytes:
        """The next chunk, hashed (runs in a worker thread; hashlib releases the GIL)."""
        want = min(self.chunk_size, self.size - self.sent)
        block = self.file.read(want) or b""
        # FileIO.read is one read(2): a network filesystem may return less than asked.
        while len(block) < want:
            more = self.file.read(want - len(block))
            if not more:
                raise self._changed(f"it shrank below {self.size} bytes")
            block += more
        st = os.fstat(self.file.fileno())
        if st.st_size != self.size:
            raise self._changed(f"its size went from {self.size} to {st.st_size} bytes")
        if st.st_mtime_ns != self.mtime_ns:
            raise self._changed("it was written to")
        self.hash.update(block)
        self.sent += want
        if self.sent == self.size:
            self.check_path()
            self.file.close()  # here, in the worker thread: no hand-off of its own
        return block

    @classmethod
    def open(
        cls, path: Path, expect: ExpectedFile | None, chunk_size: int
    ) -> tuple[_Source, bytes]:
        """The source opened, checked and its first chunk read: one hand-off to a worker thread
        for all of a small file (an empty one is checked and closed at once)."""
        source = cls(path, expect, chunk_size)
        try:
            if source.size == 0:
                source.check_path()
                source.file.close()
                return source, b""
            return source, source.read_chunk()
        except BaseException:
            source.close()
            raise

    def check_path(self) -> None:
        """The path still names the very file we read, unchanged."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            raise self._changed("it was removed or renamed") from None
        if (st.st_dev, st.st_ino) != self.inode:
            raise self._changed("another file was put in its place")
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            raise self._changed("it was modified")


def _safe_progress(progress: ProgressCallback | None) -> ProgressCallback | None:
    if progress is None:
        return None
    failed = False

    def call(sent: int, total: int) -> None:
        nonlocal failed
        try:
            progress(sent, total)
        except Exception:  # a progress display must never abort a multi-GB upload
            if not failed:
                log.exception("upload progress callback failed; upload continues")
            failed = True

    return call


async def upload_file(
    http: httpx.AsyncClient,
    url: str,
    path: Path,
    content_type: str,
    *,
    expect: ExpectedFile | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
    now: Callable[[], float],
    on_response: ResponseHook | None = None,
) -> UploadResult:
    """PUT ``path`` to the presigned ``url``; returns its size and SHA-256.

    Raises :class:`SourceChanged` when the file differs from ``expect`` or changes while it is
    read, :class:`UrlExpired` when the signature has expired, :class:`TransferError` on other
    refusals, and transient errors (network, 5xx) that the caller may retry.
    """
    source, first = await asyncio.to_thread(_Source.open, path, expect, chunk_size)
    report = _safe_progress(progress)
    try:

        async def body() -> AsyncIterator[bytes]:
            if first:
                yield first
                if report is not None:
                    report(source.sent, source.size)
            while source.sent < source.size:
                block = await asyncio.to_thread(source.read_chunk)
                yield block
                if report is not None:
                    report(source.sent, source.size)

        request = build_request(
            http,
            "PUT",
            exact_url(url),
            content=body(),
            # An explicit Content-Length makes httpx frame the stream by length, not chunks.
            headers={"Content-Length": str(source.size), "Content-Type": content_type},
        )
        _strip_credentials(request)
        if report is not None:
            report(0, source.size)
        response = await send(http, request, endpoint=UPLOAD_ENDPOINT, on_response=on_response)
    finally:
        if not source.file.closed:  # the upload ended before the last chunk was read
            await asyncio.to_thread(source.close)
    if not response.is_success:
        raise storage_error(response, what="upload", url=url, now=now())
    if source.sent != source.size:  # pragma: no cover - the server answered before the body ended
        raise TransferError(
            f"storage answered {response.status_code} before the upload was complete "
            f"({source.sent} of {source.size} bytes) ({redact_url(url)})"
        )
    return UploadResult(size=source.size, sha256=source.hash.hexdigest())


def _strip_credentials(request: httpx.Request) -> None:
    """Storage URLs carry their own signature; our bearer token must never travel there."""
    for name in ("Authorization", "X-Workspace-ID", "Cookie"):
        if name in request.headers:
            del request.headers[name]


# ---- download ----------------------------------------------------------------------------------


# Blocks of a download are handed to the worker thread in batches of this size: a small file
# (a thumbnail, a short clip) is then opened, written, synced and renamed in one hand-off.
WRITE_BATCH = 1 << 20


async def save_response(
    response: httpx.Response,
    dest: Path,
    *,
    url: str,
    expected_size: int | None = None,
) -> DownloadResult:
    """Stream an open successful response into ``dest`` atomically; closes the response.

    The length is checked against ``Content-Length`` and ``expected_size`` before the file gets
    its final name; on any failure the temporary file is removed and ``dest`` is untouched.
    """
    declared = response.headers.get("Content-Length")
    length = int(declared) if declared and declared.isdigit() else None
    if (
        "Content-Encoding" in response.headers
        and response.headers["Content-Encoding"] != "identity"
    ):
        length = None  # the declared length is of the encoded body
    # The outbox's temporary names: hidden, skipped by scanners, swept after a crash.
    sink = _Sink(dest)
    batch: list[bytes] = []
    batched = 0
    done = False
    try:
        with translate_errors(DOWNLOAD_ENDPOINT, url):
            async for block in response.aiter_bytes():
                batch.append(block)
                batched += len(block)
                if batched >= WRITE_BATCH:
                    await asyncio.to_thread(sink.write, batch)
                    batch, batched = [], 0
        size = sink.size + batched
        for name, want in (("Content-Length", length), ("the expected size", expected_size)):
            if want is not None and size != want:
                raise TransferError(
                    f"download of {redact_url(url)} is {size} bytes, {name} says {want}"
                )
        await asyncio.to_thread(sink.finish, batch)
        done = True
    finally:
        await response.aclose()
        if not done:
            await asyncio.to_thread(sink.discard)
    return DownloadResult(path=dest, size=size, sha256=sink.digest.hexdigest())


class _Sink:
    """A download's temporary file (:class:`~watchd.outbox.atomic.TempFile`): created at the
    first write, hashed as written (runs in a worker thread)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.tmp: atomic.TempFile | None = None
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, blocks: list[bytes]) -> None:
        if self.tmp is None:
            self.tmp = atomic.TempFile(self.dest)
        for block in blocks:
            self.tmp.file.write(block)
            self.digest.update(block)
            self.size += len(block)

    def finish(self, blocks: list[bytes]) -> None:
        """The last blocks written, the file synced and renamed into place."""
        self.write(blocks)
        assert self.tmp is not None
        self.tmp.commit()

    def discard(self) -> None:
        if self.tmp is not None:
            self.tmp.discard()


async def download_file(
    http: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    now: Callable[[], float],
    on_response: ResponseHook | None = None,
) -> DownloadResult:
    """GET a storage ``url`` into ``dest`` (atomically), with no credentials of ours."""
    request = build_request(
        http,
        "GET",
        exact_url(url),
        # Bytes as stored: a transparently decompressed body would not match its length.
        headers={"Accept-Encoding": "identity"},
    )
    _strip_credentials(request)
    response = await send(
        http,
        request,
        endpoint=DOWNLOAD_ENDPOINT,
        stream=True,
        follow_redirects=True,
        on_response=on_response,
    )
    if not response.is_success:
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise storage_error(response, what="download", url=url, now=now())
    return await save_response(response, dest, url=url, expected_size=expected_size)
