"""Captured files, kept by content hash under a quota.

Bytes stream into an anonymous temp file and are hashed on the way; when the
capture ends the file is renamed atomically to its md5 (as the reference system's binaries
folder names them). No name or path from the network ever reaches the disk.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Stored:
    md5: str
    sha256: str
    size: int
    path: Path
    new: bool
    truncated: bool


def stored_incidents(url: str, stored: Stored, complete: bool
                     ) -> list[tuple[str, dict[str, object]]]:
    """The incidents a finished capture raises, as the reference's store handler did:
    complete, then hash, then unique or again (the last two share one fields object)."""
    base: dict[str, object] = {"url": url, "md5": stored.md5, "sha256": stored.sha256,
                               "size": stored.size}
    return [("download.complete", {**base, "path": str(stored.path),
                                   "complete": complete and not stored.truncated}),
            ("download.complete.hash", base),
            ("download.complete.unique" if stored.new else "download.complete.again", base)]


class Capture:
    """One file being captured. Not thread-safe; one per stream per connection."""

    __slots__ = ("_fd", "_md5", "_sha256", "_store", "_tmp", "size", "truncated")

    def __init__(self, store: Store, tmp: Path, fd: int) -> None:
        self._store = store
        self._tmp = tmp
        self._fd = fd
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size = 0
        self.truncated = False

    def write(self, data: bytes) -> bool:
        """Append; False once the per-file or total quota cut the file short."""
        if self.truncated or self._fd < 0:
            return False
        room = min(self._store.max_file_bytes - self.size, self._store.room())
        if len(data) > room:
            data = data[: max(room, 0)]
            self.truncated = True
        if data:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            self._md5.update(data)
            self._sha256.update(data)
            self.size += len(data)
            self._store.used += len(data)
        return not self.truncated

    def finish(self) -> Stored:
        os.close(self._fd)
        self._fd = -1
        self._store.open_files -= 1
        md5 = self._md5.hexdigest()
        final = self._store.dir / md5
        new = not final.exists()
        if new:
            os.replace(self._tmp, final)
        else:
            self._tmp.unlink(missing_ok=True)
            self._store.used -= self.size
        return Stored(md5, self._sha256.hexdigest(), self.size, final, new, self.truncated)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._store.open_files -= 1
            self._store.used -= self.size
            self._tmp.unlink(missing_ok=True)


class Store:
    def __init__(self, directory: Path, max_file_bytes: int, max_total_bytes: int,
                 max_open_files: int = 1024) -> None:
        self.dir = directory
        self.tmp_dir = directory / ".incoming"
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_open_files = max_open_files
        self.open_files = 0
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.iterdir():
            stale.unlink(missing_ok=True)
        self.used = sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file())

    def room(self) -> int:
        return max(self.max_total_bytes - self.used, 0)

    def open(self) -> Capture | None:
        """A new capture, or None when the quota or the open-file cap is reached."""
        if self.open_files >= self.max_open_files or self.room() <= 0:
            return None
        tmp = self.tmp_dir / secrets.token_hex(12)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.open_files += 1
        return Capture(self, tmp, fd)

    def put(self, data: bytes) -> Stored | None:
        capture = self.open()
        if capture is None:
            return None
        capture.write(data)
        return capture.finish()
