"""blackhole: accept, record, never answer (TCP and UDP), until the idle timeout."""

from __future__ import annotations

from muscipula.config import Port, ServiceConfig
from muscipula.machine import Action, BaseMachine, Emit
from muscipula.services import ServiceContext, ServiceSpec


class BlackholeConfig(ServiceConfig):
    tcp_ports: list[Port] = [23, 53]
    udp_ports: list[Port] = [53, 123]


class Blackhole(BaseMachine):
    protocol = "blackhole"
    __slots__ = ()

    def receive(self, data: bytes, now: float) -> list[Action]:
        return [Emit("blackhole.data", {"size": len(data)})]


_SHARED = Blackhole()


def build(ctx: ServiceContext):
    # The machine keeps no state, so every connection shares one.
    return lambda peer: _SHARED


SERVICE = ServiceSpec("blackhole", "blackhole", BlackholeConfig, build,
                      "accepts and records, never answers")
