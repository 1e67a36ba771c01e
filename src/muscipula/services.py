"""The service registry: a new protocol is a machine module plus one line here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muscipula.config import Limits, ServiceConfig
from muscipula.machine import Machine, Peer

if TYPE_CHECKING:
    from muscipula.persona import PersonaView

#: config key -> module that defines `SERVICE`
MODULES: dict[str, str] = {
    "blackhole": "muscipula.protocols.blackhole",
    # --- ftp
    "ftp": "muscipula.protocols.ftp",
    # --- tftp
    "tftp": "muscipula.protocols.tftp",
    # --- http
    "http": "muscipula.protocols.http",
    # --- mysql
    "mysql": "muscipula.protocols.mysql",
}


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What a service's machines may be built from: never sockets, never the loop."""

    name: str
    config: Any  # the service's own ServiceConfig subclass
    persona: PersonaView
    limits: Limits
    state_dir: Path


MachineFactory = Callable[[Peer], Machine]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    protocol: str
    config_model: type[ServiceConfig]
    build: Callable[[ServiceContext], MachineFactory]
    #: per-transport dionaea protocol names where they differ (SIP over UDP...)
    summary: str = ""
    #: the most bytes one machine may hold (`buffered()`), from the service's own config;
    #: the fuzz test holds every machine to it (None: DEFAULT_MAX_BUFFER)
    max_buffer: Callable[[Any], int] | None = None
    #: client inputs that look valid (a login, a request); the fuzz test mutates and splits them
    fuzz_seeds: tuple[bytes, ...] = ()

    def buffer_bound(self, config: Any) -> int:
        return self.max_buffer(config) if self.max_buffer is not None else DEFAULT_MAX_BUFFER


DEFAULT_MAX_BUFFER = 1024 * 1024


def names() -> list[str]:
    return list(MODULES)


def get(name: str) -> ServiceSpec | None:
    module = MODULES.get(name)
    if module is None:
        return None
    return importlib.import_module(module).SERVICE
