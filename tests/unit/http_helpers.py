"""Building the HTTP machine as the engine does, for unit tests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from muscipula import config as configmod
from muscipula import services
from muscipula.machine import CaptureData, CaptureEnd, Close, Emit, Peer, Send, Wake

NOW = 1_700_000_000.0


def factory(preset: str = "debian-12", transport: str = "tcp", **http: Any):
    cfg = configmod.load(extra={"persona": {"preset": preset}, "services": {"http": http}})
    make = services.factory("http", cfg, Path(tempfile.mkdtemp(prefix="http-unit-")))
    port = 443 if transport == "tls" else 80
    return lambda: make(Peer("127.0.0.1", port, "127.0.0.9", 40000, transport))


class Conn:
    """One machine and everything it did, split by kind."""

    def __init__(self, preset: str = "debian-12", transport: str = "tcp", **http: Any) -> None:
        self.m = factory(preset, transport, **http)()
        self.actions: list[Any] = list(self.m.start(NOW))
        self.now = NOW

    def send(self, data: bytes, dt: float = 0.0) -> bytes:
        self.now += dt
        acts = self.m.receive(data, self.now)
        self.actions += acts
        return b"".join(a.data for a in acts if isinstance(a, Send))

    def tick(self, dt: float) -> list[Any]:
        self.now += dt
        acts = self.m.timer(self.now)
        self.actions += acts
        return acts

    def emitted(self, name: str) -> list[dict[str, Any]]:
        return [dict(a.fields) for a in self.actions if isinstance(a, Emit) and a.name == name]

    @property
    def closed(self) -> bool:
        return any(isinstance(a, Close) for a in self.actions)

    def captures(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for a in self.actions:
            if isinstance(a, CaptureData):
                out[a.stream] = out.get(a.stream, b"") + a.data
        return out

    def capture_urls(self) -> dict[str, str]:
        return {a.stream: a.url for a in self.actions if isinstance(a, CaptureEnd)}

    def wakes(self) -> list[float | None]:
        return [a.at for a in self.actions if isinstance(a, Wake)]


def split(data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], [tuple(x.split(": ", 1)) for x in lines[1:]], body  # type: ignore[misc]
