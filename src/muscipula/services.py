"""The service registry: a new protocol is a machine module plus one line here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muscipula.config import Config, Limits, ServiceConfig
from muscipula.machine import Machine, Peer

if TYPE_CHECKING:
    from muscipula.persona import PersonaView

#: config key -> module that defines `SERVICE`
MODULES: dict[str, str] = {
    "blackhole": "muscipula.protocols.blackhole",
    # --- sip
    "sip": "muscipula.protocols.sip",
    # --- ftp
    "ftp": "muscipula.protocols.ftp",
    # --- tftp
    "tftp": "muscipula.protocols.tftp",
    # --- http
    "http": "muscipula.protocols.http",
    # --- mysql
    "mysql": "muscipula.protocols.mysql",
    # --- smb
    "smb": "muscipula.protocols.smb",
    # --- mssql
    "mssql": "muscipula.protocols.mssql",
    # --- epmapper
    "epmapper": "muscipula.protocols.epmapper",
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
    #: the persona OS families this service exists on (empty: all); on another persona's
    #: host it is not listened for, as such a host would not have it
    os_families: tuple[str, ...] = ()

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


def context(name: str, config: Config, state_dir: Path, *, service: ServiceConfig | None = None,
            persona: PersonaView | None = None) -> ServiceContext:
    """The context the engine gives service `name`; tests and tools build it here the same way.

    `service` stands in for the service's block of `config`, `persona` for the one
    resolved from `config` and `state_dir`; limits are the service's over the global ones.
    """
    from muscipula.persona import resolve

    svc = config.services[name] if service is None else service
    return ServiceContext(name=name, config=svc,
                          persona=resolve(config, state_dir) if persona is None else persona,
                          limits=svc.limits.apply(config.limits), state_dir=state_dir)


def factory(name: str, config: Config, state_dir: Path, *,
            service: ServiceConfig | None = None) -> MachineFactory:
    """Service `name`'s machine factory, built from `config` as the engine builds it."""
    spec = get(name)
    if spec is None:
        raise KeyError(name)
    return spec.build(context(name, config, state_dir, service=service))
