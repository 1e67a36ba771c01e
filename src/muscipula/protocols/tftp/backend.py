"""The read-only file root that RRQs are served from, confined like a chroot.

A requested name is never joined to the root as it came: it is split into
components, `.` and empty ones dropped, `..` popped without ever climbing out
of the root (as tftpd-hpa --secure resolves it inside its chroot), each
component checked, and the result resolved (symlinks too) and required to lie
inside the root. Anything outside is simply "not found".
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from muscipula.protocols.tftp import wire


class Reader:
    """One open file, read front to back."""

    __slots__ = ("_fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    def read(self, n: int) -> bytes:
        if self._fd < 0:
            return b""
        try:
            return os.read(self._fd, n)
        except OSError:
            return b""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a name cannot be read or written: the ERROR packet's code and text."""

    code: int
    text: str


NOT_FOUND = Refusal(wire.ENOTFOUND, wire.DEFAULT_TEXT[wire.ENOTFOUND])
IS_DIR = Refusal(wire.EUNDEF, wire.IS_A_DIRECTORY)
DENIED = Refusal(wire.EUNDEF, wire.PERMISSION_DENIED)


def components(name: bytes) -> list[bytes]:
    """The path inside the root that `name` means, resolved as inside a chroot."""
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


class ReadOnlyRoot:
    """Looks names up under one directory; opens files for reading only."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def _inside(self, parts: list[bytes]) -> Path | None:
        path = self.root
        for part in parts:
            if b"/" in part or b"\0" in part or part in (b".", b".."):
                return None
            path = path / os.fsdecode(part)
        real = Path(os.path.realpath(path))
        if real != self.root and self.root not in real.parents:
            return None  # a symlink that leads out of the root
        return real

    def kind(self, name: bytes) -> str:
        """"file", "dir" or "missing": what a write to `name` would meet."""
        path = self._inside(components(name))
        if path is None:
            return "missing"
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            return "missing"
        return "dir" if stat.S_ISDIR(mode) else "file"

    def open(self, name: bytes) -> Reader | Refusal:
        path = self._inside(components(name))
        if path is None:
            return NOT_FOUND
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return NOT_FOUND
        if stat.S_ISDIR(st.st_mode):
            return IS_DIR
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IROTH:
            return DENIED  # what tftpd-hpa, running as nobody, meets
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
        except PermissionError:
            return DENIED
        except OSError:
            return NOT_FOUND
        return Reader(fd, st.st_size)
