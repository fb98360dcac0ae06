"""Where the stand-in keeps bytes: one file per asset in a private temporary directory.

Files, not memory, so a 1 GiB chunked upload never sits in RAM: request bodies are spooled to disk
by the form parser, chunks are written at their offset into one assembly file, and an asset is
only registered once its file is complete (a request cut short stores nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

COPY_BLOCK = 1024 * 1024


@dataclass
class StoredAsset:
    """One stored original, keyed by (resource_type, type, public_id) like Cloudinary's assets."""

    public_id: str
    resource_type: str
    path: Path
    size: int
    version: int
    format: str
    content_type: str
    created_at: str
    etag: str  # MD5 of the bytes, as Cloudinary's `etag`
    sha256: str
    delivery_type: str = "upload"
    width: int | None = None
    height: int | None = None
    original_filename: str = ""

    @property
    def type(self) -> str:
        return self.delivery_type

    @property
    def data(self) -> bytes:
        """The whole file (tests of small assets); large ones: open()."""
        return self.path.read_bytes()

    def open(self) -> IO[bytes]:
        return self.path.open("rb")


def hash_file(path: Path) -> tuple[str, str]:
    """(md5, sha256) hex digests of a file, read in blocks."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(COPY_BLOCK):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def read_head(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def copy_stream(source: IO[bytes], target: IO[bytes]) -> int:
    """Copy a stream in blocks; the number of bytes copied."""
    copied = 0
    while block := source.read(COPY_BLOCK):
        target.write(block)
        copied += len(block)
    return copied


def write_at(fd: int, offset: int, source: IO[bytes]) -> int:
    """Write a stream into an open file at `offset` (positional writes: parallel chunks of one
    upload never share a file position); the number of bytes written."""
    written = 0
    while block := source.read(COPY_BLOCK):
        view = memoryview(block)
        while view:
            done = os.pwrite(fd, view, offset + written)
            written += done
            view = view[done:]
    return written


class FileArea:
    """A private temporary directory for asset and assembly files, removed on close()."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cloudinary-standin-"))
        self._counter = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, True)

    def new_path(self, suffix: str) -> Path:
        with self._lock:
            self._counter += 1
            return self.root / f"{self._counter:08d}{suffix}"

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def close(self) -> None:
        self._finalizer()


@dataclass
class ChunkedUpload:
    """A chunked upload in progress (X-Unique-Upload-Id): invisible until its last chunk.

    `ranges` holds the byte ranges received whole, keyed by start → end (inclusive).
    """

    upload_id: str
    resource_type: str  # as in the upload URL (may be "auto")
    params: dict[str, str]  # the signed parameters that govern the asset (first chunk's)
    public_id: str
    path: Path
    fd: int
    filename: str = ""
    total: int | None = None
    ranges: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    touched: float = 0.0  # the stand-in's clock at the last chunk

    @property
    def received(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges.items())

    def overlapping(self, start: int, end: int) -> tuple[int, int] | None:
        """A received range that overlaps [start, end] without being exactly it."""
        for other_start, other_end in self.ranges.items():
            if (other_start, other_end) == (start, end):
                continue
            if start <= other_end and other_start <= end:
                return other_start, other_end
        return None

    def missing(self, total: int) -> list[tuple[int, int]]:
        """Byte ranges of [0, total) not received yet."""
        gaps: list[tuple[int, int]] = []
        position = 0
        for start in sorted(self.ranges):
            if start > position:
                gaps.append((position, start - 1))
            position = max(position, self.ranges[start] + 1)
        if position < total:
            gaps.append((position, total - 1))
        return gaps

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def describe(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "public_id": self.public_id,
            "received": self.received,
            "total": self.total,
        }
