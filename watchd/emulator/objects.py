"""The storage origin's objects: files under ``data_dir``, plus lazily produced ones.

Uploaded sources are streamed to disk by the storage handler and committed here with their
size and hashes. Derived objects (thumbnails, previews, proxies) are registered as *lazy*: a
producer writes them the first time somebody fetches them, in a worker thread, so that listing
a project with twelve clips costs no video work at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["BodySink", "ObjectStore", "StoredObject", "file_digests"]

Producer = Callable[[Path], None]


@dataclass(frozen=True)
class StoredObject:
    """One object. ``path`` is None when the bytes were only hashed (``store_uploads=False``)."""

    key: str
    content_type: str
    size: int
    sha256: str
    md5: str
    path: Path | None
    created_at: float

    @property
    def etag(self) -> str:
        """S3's ETag of a single-part upload: the quoted MD5."""
        return f'"{self.md5}"'

    def describe(self) -> dict[str, object]:
        """The object for the inspection state."""
        return {
            "key": self.key,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "stored": self.path is not None,
        }


def file_digests(path: Path, chunk: int = 1 << 20) -> tuple[int, str, str]:
    """(size, sha256 hex, md5 hex) of a file. Blocking."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return size, sha.hexdigest(), md5.hexdigest()


class BodySink:
    """Hashes (and, given a path, writes) a request body in a worker thread.

    Chunks are batched and handed over one batch behind the network, so receiving, hashing and
    writing overlap (hashlib and file writes release the GIL): about twice the throughput of
    doing all three on the event loop.
    """

    BATCH = 1 << 20

    def __init__(self, path: Path | None, executor: Executor) -> None:
        self._file = path.open("wb") if path is not None else None
        self._executor = executor
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._batch: list[bytes] = []
        self._batched = 0
        self._pending: asyncio.Future[list[None]] | None = None
        self.size = 0

    def _sha_and_write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._sha.update(chunk)
            if self._file is not None:
                self._file.write(chunk)

    def _md5_of(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._md5.update(chunk)

    async def _hand_over(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._batch:
            batch, self._batch, self._batched = self._batch, [], 0
            loop = asyncio.get_running_loop()
            # Two workers: MD5 (the ETag) is the slowest of the three jobs on its own.
            jobs = (self._sha_and_write, self._md5_of)
            self._pending = asyncio.gather(
                *(loop.run_in_executor(self._executor, job, batch) for job in jobs)
            )

    async def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body."""
        self.size += len(chunk)
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= self.BATCH:
            await self._hand_over()

    async def finish(self) -> tuple[int, str, str]:
        """Everything consumed and the file closed: (size, sha256 hex, md5 hex)."""
        await self._hand_over()
        await self.aclose()
        return self.size, self._sha.hexdigest(), self._md5.hexdigest()

    async def aclose(self) -> None:
        """Wait for the worker, then close the file (also after a failure; idempotent)."""
        if self._pending is not None:
            try:
                await self._pending
            finally:
                self._pending = None
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class _Lazy:
    content_type: str
    producer: Producer


class ObjectStore:
    """Objects by key. Used from the event loop only; blocking work goes to ``executor``."""

    def __init__(self, root: Path, executor: Executor) -> None:
        self.root = root
        self._objects_dir = root / "objects"
        self._tmp_dir = root / "tmp"
        self._objects_dir.mkdir(parents=True, exist_ok=True)
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._executor = executor
        self._objects: dict[str, StoredObject] = {}
        self._lazy: dict[str, _Lazy] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- paths --------------------------------------------------------------------------------

    def _path_for(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or any(p in ("..", ".", "") for p in parts) or key.startswith("/"):
            raise ValueError(f"unsafe object key {key!r}")
        return self._objects_dir.joinpath(*parts)

    def temp_path(self) -> Path:
        """A fresh temporary file name inside the store (same filesystem: rename is atomic)."""
        return self._tmp_dir / f"{uuid.uuid4().hex}.part"

    # ---- writing ------------------------------------------------------------------------------

    def commit(
        self,
        key: str,
        tmp: Path | None,
        *,
        content_type: str,
        size: int,
        sha256: str,
        md5: str,
        now: float,
    ) -> StoredObject:
        """Make a written temporary file (or, with ``tmp=None``, just its hashes) the object."""
        path: Path | None = None
        if tmp is not None:
            path = self._path_for(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        obj = StoredObject(key, content_type, size, sha256, md5, path, now)
        self._objects[key] = obj
        self._lazy.pop(key, None)
        return obj

    async def put_file(
        self, key: str, produce: Producer, content_type: str, now: float
    ) -> StoredObject:
        """Run ``produce(tmp_path)`` in the executor and commit its output as ``key``."""
        tmp = self.temp_path()

        def work() -> tuple[int, str, str]:
            produce(tmp)
            return file_digests(tmp)

        try:
            size, sha, md5 = await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.commit(
            key, tmp, content_type=content_type, size=size, sha256=sha, md5=md5, now=now
        )

    def add_lazy(self, key: str, content_type: str, producer: Producer) -> None:
        """Register ``key`` to be produced on its first fetch (unless it exists already)."""
        self._path_for(key)  # validate now, not at fetch time
        if key not in self._objects:
            self._lazy[key] = _Lazy(content_type, producer)

    # ---- reading ------------------------------------------------------------------------------

    def get(self, key: str) -> StoredObject | None:
        """The object if it exists (lazy objects not yet produced do not count)."""
        return self._objects.get(key)

    def known(self, key: str) -> bool:
        """True when ``key`` exists or can be produced."""
        return key in self._objects or key in self._lazy

    async def fetch(self, key: str, *, now: float) -> StoredObject | None:
        """The object, producing a lazy one first; None when there is no such key."""
        if key in self._objects:
            return self._objects[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._objects:
                return self._objects[key]
            lazy = self._lazy.get(key)
            if lazy is None:
                return None
            return await self.put_file(key, lazy.producer, lazy.content_type, now)

    def keys(self) -> Iterator[str]:
        """The keys of the objects that exist."""
        yield from self._objects

    # ---- deleting -----------------------------------------------------------------------------

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object (and lazy registration) whose key starts with ``prefix``."""
        doomed = [k for k in self._objects if k.startswith(prefix)]
        for key in doomed:
            obj = self._objects.pop(key)
            if obj.path is not None:
                obj.path.unlink(missing_ok=True)
        for key in [k for k in self._lazy if k.startswith(prefix)]:
            del self._lazy[key]
        return len(doomed)

    def close(self, *, remove: bool) -> None:
        """Forget everything; with ``remove`` delete the whole folder too."""
        self._objects.clear()
        self._lazy.clear()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
