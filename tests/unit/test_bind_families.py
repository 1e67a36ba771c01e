"""The default listens on 0.0.0.0 and ::; a host without IPv6 still runs on IPv4."""

from __future__ import annotations

import pytest

from muscipula import config, engine, services
from muscipula.net import listeners


def _engine(addresses: list[str]) -> engine.Engine:
    cfg = config.load(extra={"services": {
        name: {"enabled": name == "blackhole"} for name in services.names()}})
    return engine.Engine(cfg, state_dir=None, port_offset=30000,  # type: ignore[arg-type]
                         addresses=addresses)


def _no_ipv6(real):
    def bind(ep, backlog=1024):
        if ":" in ep.host:
            raise listeners.FamilyUnavailable(f"{ep.service}: cannot bind [::]")
        return real(ep, backlog)
    return bind


def test_missing_ipv6_wildcard_is_left_out(monkeypatch):
    monkeypatch.setattr(engine, "bind", _no_ipv6(listeners.bind))
    bound = _engine(["127.0.0.1", "::"]).bind_all()
    try:
        assert {ep.host for ep, _ in bound} == {"127.0.0.1"}
        assert len(bound) == 2  # blackhole's default tcp and udp port
    finally:
        for _, sock in bound:
            sock.close()


def test_nothing_bound_is_an_error(monkeypatch):
    monkeypatch.setattr(engine, "bind", _no_ipv6(listeners.bind))
    with pytest.raises(listeners.BindError, match="nothing to listen on"):
        _engine(["::"]).bind_all()
