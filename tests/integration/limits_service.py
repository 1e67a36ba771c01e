"""A test-only service that talks back and opens child channels, for the limits the
blackhole cannot reach (buffered output, child caps). Registered only inside tests."""

from __future__ import annotations

from muscipula.config import ServiceConfig
from muscipula.machine import Action, BaseMachine, ChildEvent, ChildListen, Emit, Send
from muscipula.services import ServiceContext, ServiceSpec

INCIDENT = "test.child"


class Chatty(BaseMachine):
    """`F` -> 256 KiB reply; `L` -> ask for a child listener; anything else is echoed in
    upper case; child outcomes -> incidents."""

    protocol = "chatty"

    def __init__(self) -> None:
        self.n = 0

    def receive(self, data: bytes, now: float) -> list[Action]:
        out: list[Action] = []
        for byte in data:
            if byte == ord("F"):
                out.append(Send(b"x" * 256 * 1024))
            elif byte == ord("L"):
                self.n += 1
                out.append(ChildListen(f"c{self.n}", "tcp"))
            else:
                out.append(Send(bytes([byte]).upper()))
        return out

    def child(self, event: ChildEvent, now: float) -> list[Action]:
        return [Emit(INCIDENT, {"event": type(event).__name__, "tag": event.tag,
                                "reason": getattr(event, "reason", "")})]


def build(ctx: ServiceContext):
    return lambda peer: Chatty()


SERVICE = ServiceSpec("chatty", "chatty", ServiceConfig, build, "test only")
