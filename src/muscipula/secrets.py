"""Per-install values, made once at first use and kept in the state directory.

Nothing a scanner could match across installs lives in the code: names, GUIDs,
salts, id bases and keys are drawn here from the OS's random source, then reused
on every restart so the host keeps looking like the same machine.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALNUM_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def random_text(length: int, alphabet: str = ALNUM_UPPER) -> str:
    return "".join(_random.choice(alphabet) for _ in range(length))


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Secrets:
    """A JSON file of generated values; `get` creates a value the first time it is asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()  # a value may be made from another
        self._values: dict[str, Any] = {}
        if path.exists():
            try:
                loaded = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"{path}: unreadable secrets file: {exc}") from None
            if isinstance(loaded, dict):
                self._values = loaded

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._values:
                self._values[key] = make()
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, json.dumps(self._values, indent=1).encode())
            return self._values[key]

    def token(self, key: str, nbytes: int = 16) -> bytes:
        """Random bytes kept per install (challenges, salts)."""
        return bytes.fromhex(self.get(key, lambda: _random.token_hex(nbytes)))

    def number(self, key: str, low: int, high: int) -> int:
        return int(self.get(key, lambda: low + _random.randbelow(high - low + 1)))
