"""Where a fetched body goes: the store, cut at `max_bytes`, counted for the rate guard."""

from __future__ import annotations

from muscipula.capture.download.errors import FetchError
from muscipula.store import Capture, Store, Stored


class Body:
    """Opened lazily (a refused or failed fetch leaves nothing behind)."""

    def __init__(self, store: Store, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.received = 0
        #: "max_bytes" or "store quota" when the file was cut short
        self.cut: str | None = None
        self._capture: Capture | None = None

    def open(self) -> None:
        if self._capture is None:
            self._capture = self.store.open()
            if self._capture is None:
                raise FetchError("store", "quota or open-file cap reached")

    def write(self, data: bytes) -> bool:
        """Keep `data`; False once the file is cut short (the sender should stop)."""
        self.open()
        assert self._capture is not None
        self.received += len(data)
        room = self.max_bytes - self._capture.size
        if len(data) > room:
            data = data[:room]
            self.cut = "max_bytes"
        if not self._capture.write(data):
            self.cut = "store quota"
        return self.cut is None

    def finish(self) -> Stored:
        self.open()
        assert self._capture is not None
        capture, self._capture = self._capture, None
        return capture.finish()

    def abort(self) -> None:
        if self._capture is not None:
            self._capture.abort()
            self._capture = None
