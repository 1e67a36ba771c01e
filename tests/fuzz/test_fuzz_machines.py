"""Every registered machine, driven with random and mutated input the way the drivers drive it.

The harness knows nothing of any protocol: it builds each service from its
ServiceSpec with the default config, a temp state dir and a resolved persona,
then plays a fake driver: bytes in (random, mutated seeds, seeds cut at random
points), wake-ups when asked for, child channel outcomes for the channels the
machine asked for, and `closed()`. It checks the contract, not the answers: no
exception escapes, every action is one of machine.py's types with sane fields,
every incident name is registered, and `buffered()` stays within the bound the
service declares (ServiceSpec.max_buffer, 1 MiB by default).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muscipula import config as configmod
from muscipula import incidents, services
from muscipula.machine import (
    Action,
    CaptureData,
    CaptureEnd,
    ChildClose,
    ChildClosed,
    ChildConnect,
    ChildConnected,
    ChildData,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Close,
    Emit,
    Peer,
    Send,
    StartTLS,
    Wake,
)
from muscipula.persona import PRESETS

EXAMPLES = 80  # per (service, transport, persona); keeps ~6 services well under a minute
FLOOD_CAP = 2 * 1024 * 1024

# Inputs that look like the start of some protocol; each service adds its own through
# ServiceSpec.fuzz_seeds. Mutating and cutting these reaches deeper states than noise.
GENERIC_SEEDS: tuple[bytes, ...] = (
    b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"USER anonymous\r\nPASS a@b\r\nPASV\r\nPORT 127,0,0,1,4,1\r\nSTOR ../x\r\nRETR x\r\n",
    b"AUTH TLS\r\nFEAT\r\nSYST\r\nCWD /\r\nLIST\r\nQUIT\r\n",
    b"\x00\x01evil.exe\x00octet\x00blksize\x001428\x00",
    b"\x00\x02up.bin\x00octet\x00tsize\x00100\x00",
    b"\x00\x03\x00\x01" + b"A" * 512,
    # a MySQL handshake response (with SSL flag) and a COM_QUERY
    b"\x20\x00\x00\x01\x8d\xa6\x0f\x00\x00\x00\x00\x01\x21" + b"\x00" * 23 + b"root\x00\x00",
    b"\x09\x00\x00\x00\x03select 1",
    # TLS ClientHello record head
    b"\x16\x03\x01\x00\x31\x01\x00\x00\x2d\x03\x03" + b"\x11" * 32
    + b"\x00\x00\x02\x00\x2f\x01\x00",
    b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n",
    b"\x00\x00\x00\x2f\xffSMBr\x00\x00\x00\x00\x18\x53\xc8" + b"\x00" * 20 + b"\x02NT LM 0.12\x00",
    b"\r\n" * 8,
)

ACTION_TYPES = (Send, Close, Emit, Wake, StartTLS, CaptureData, CaptureEnd, ChildListen,
                ChildConnect, ChildSend, ChildClose)


# ------------------------------------------------------------------ building


@dataclass
class Built:
    spec: services.ServiceSpec
    config: Any
    factory: services.MachineFactory
    bound: int
    seeds: tuple[bytes, ...]


_BUILT: dict[tuple[str, str], Built] = {}
_STATE = Path(tempfile.mkdtemp(prefix="fuzz-state-"))


def built(name: str, preset: str) -> Built:
    """The service's factory, made once per (service, persona) as the engine makes it."""
    key = (name, preset)
    if key not in _BUILT:
        spec = services.get(name)
        assert spec is not None, name
        cfg = configmod.load(extra={"persona": {"preset": preset}})
        svc = cfg.services.get(name) or spec.config_model()
        state = _STATE / f"{name}-{preset}"
        state.mkdir(parents=True, exist_ok=True)
        ctx = services.context(name, cfg, state, service=svc)
        _BUILT[key] = Built(spec, svc, spec.build(ctx), spec.buffer_bound(svc),
                            tuple(spec.fuzz_seeds) + GENERIC_SEEDS)
    return _BUILT[key]


def transports(name: str) -> list[str]:
    spec = services.get(name)
    assert spec is not None
    cfg = configmod.load()
    svc = cfg.services.get(name) or spec.config_model()
    out = [t for t, ports in (("tcp", svc.tcp_ports), ("tls", svc.tls_ports),
                              ("udp", svc.udp_ports)) if ports]
    return out or ["tcp"]


CASES = [(name, transport, preset)
         for name in services.names() for transport in transports(name) for preset in PRESETS]


def peer_for(transport: str) -> Peer:
    return Peer("127.0.0.1", 2100, "127.0.0.7", 40123, transport)


# -------------------------------------------------------------- fake driver


@dataclass
class FakeDriver:
    """Carries out actions as net/ would, but in memory, and checks each one."""

    b: Built
    machine: Any
    transport: str
    now: float = 1_700_000_000.0
    wake: float | None = None
    closing: bool = False
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    emitted: list[str] = field(default_factory=list)

    def call(self, method: str, *args: Any) -> None:
        if self.closing and method != "closed":
            return
        actions = getattr(self.machine, method)(*args, self.now)
        self.check(method, actions)

    def check(self, method: str, actions: Any) -> None:
        assert isinstance(actions, list), f"{method} returned {type(actions).__name__}"
        for a in actions:
            assert isinstance(a, ACTION_TYPES), f"{method} returned {a!r}"
            self.apply(a)
        held = self.machine.buffered()
        assert isinstance(held, int) and 0 <= held <= self.b.bound, (
            f"buffered() = {held} after {method}, bound {self.b.bound}")

    def apply(self, a: Action) -> None:
        if isinstance(a, Send):
            assert isinstance(a.data, bytes)
            assert a.addr is None or (isinstance(a.addr, tuple) and len(a.addr) == 2)
        elif isinstance(a, Emit):
            assert a.name in incidents.REGISTRY, f"unregistered incident {a.name!r}"
            assert isinstance(a.fields, Mapping)
            self.emitted.append(a.name)
        elif isinstance(a, Close):
            assert isinstance(a.reason, str)
            self.closing = True
        elif isinstance(a, Wake):
            assert a.at is None or isinstance(a.at, int | float)
            self.wake = a.at
        elif isinstance(a, StartTLS):
            assert isinstance(a.data, bytes)
        elif isinstance(a, CaptureData):
            assert isinstance(a.stream, str) and isinstance(a.data, bytes)
        elif isinstance(a, CaptureEnd):
            assert isinstance(a.stream, str) and isinstance(a.url, str)
        elif isinstance(a, ChildListen):
            assert a.transport in ("tcp", "udp") and a.ports[0] <= a.ports[1]
            self.children[a.tag] = {"state": "pending", "kind": a.transport}
        elif isinstance(a, ChildConnect):
            assert isinstance(a.port, int)
            self.children[a.tag] = {"state": "connecting", "kind": "tcp"}
        elif isinstance(a, ChildSend):
            assert isinstance(a.data, bytes)
        elif isinstance(a, ChildClose):
            self.children.pop(a.tag, None)

    def advance(self, dt: float) -> None:
        """Time passes; a due wake-up fires as the driver's timer would."""
        self.now += dt
        if self.wake is not None and self.now >= self.wake:
            self.wake = None
            self.call("timer")

    def child_step(self, index: int, choice: int, data: bytes) -> None:
        """Move one child channel on: the outcomes net/children.py can deliver."""
        if not self.children or self.closing:
            return
        tag = sorted(self.children)[index % len(self.children)]
        ch = self.children[tag]
        state, kind = ch["state"], ch["kind"]
        peer = ("127.0.0.7", 40200 + index % 100)
        if state in ("pending", "connecting") and choice % 4 == 0:
            del self.children[tag]
            self.call("child", ChildFailed(tag, "bind failed: test"))
        elif state == "pending":
            ch["state"] = "listening"
            self.call("child", ChildListening(tag, "127.0.0.1", 50000 + index % 100))
        elif state == "connecting" or (state == "listening" and kind == "tcp"):
            if choice % 5 == 1 and state == "listening":
                del self.children[tag]
                self.call("child", ChildFailed(tag, "timeout"))
            else:
                ch["state"] = "connected"
                self.call("child", ChildConnected(tag, peer))
        elif choice % 3 == 0 and kind == "tcp":
            del self.children[tag]
            self.call("child", ChildClosed(tag))
        else:
            self.call("child", ChildData(tag, data, peer if kind == "udp" else None))


# --------------------------------------------------------------- strategies


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(max_size=24))
        elif op == 2:
            del data[pos:pos + draw(st.integers(1, 24))]
        elif op == 3:
            del data[pos:]
        elif op == 4:
            fill = draw(st.sampled_from([b"A", b"\x00", b"\xff", b" ", b"%", b"\r\n"]))
            data[pos:pos] = fill * draw(st.sampled_from([32, 300, 5000, 70000]))
        elif op == 5:
            data += draw(st.sampled_from(seeds))
        elif op == 6 and len(data) >= 4:
            # length fields are usually near the start: make one huge or zero
            i = min(pos, len(data) - 4)
            data[i:i + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                                  b"\x7f\xff\xff\x00"]))
    return bytes(data)


def chunks(seeds: tuple[bytes, ...]) -> st.SearchStrategy[list[bytes]]:
    """One client burst: noise, a mutated seed, or either cut into pieces at random points."""
    payload = st.one_of(st.binary(min_size=1, max_size=200), mutated(seeds),
                        st.sampled_from(seeds))

    @st.composite
    def split(draw: st.DrawFn) -> list[bytes]:
        data = draw(payload)
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
        parts, last = [], 0
        for c in [*cuts, len(data)]:
            if c > last:
                parts.append(data[last:c])
                last = c
        return parts or [data]

    return split()


def steps(seeds: tuple[bytes, ...]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    dt = st.sampled_from([0.0, 0.001, 0.5, 3.0, 31.0, 400.0])
    step = st.one_of(
        st.tuples(st.just("data"), chunks(seeds), dt),
        st.tuples(st.just("data"), chunks(seeds), dt),
        st.tuples(st.just("data"), chunks(seeds), dt),
        st.tuples(st.just("child"), st.integers(0, 7), st.integers(0, 59),
                  st.binary(max_size=600), dt),
        st.tuples(st.just("wait"), dt),
    )
    return st.lists(step, min_size=1, max_size=25)


# -------------------------------------------------------------------- tests


def drive(b: Built, transport: str, program: list[tuple[Any, ...]]) -> FakeDriver:
    drv = FakeDriver(b, b.factory(peer_for(transport)), transport)
    drv.call("start")
    for step in program:
        if drv.closing:
            break
        kind = step[0]
        if kind == "data":
            for part in step[1]:
                drv.call("receive", part)
        elif kind == "child":
            drv.child_step(step[1], step[2], step[3])
        drv.advance(step[-1])
    # whatever the state, the peer may go away now
    drv.closing = True
    drv.call("closed")
    return drv


@pytest.mark.parametrize(("name", "transport", "preset"), CASES)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_machine_survives_anything(name: str, transport: str, preset: str, data: Any) -> None:
    b = built(name, preset)
    program = data.draw(steps(b.seeds), label="program")
    drive(b, transport, program)


@pytest.mark.parametrize(("name", "transport", "preset"), CASES)
def test_flood_stays_within_buffer_bound(name: str, transport: str, preset: str) -> None:
    """A peer that never sends a delimiter: a seed, then filler past the bound.

    Past FLOOD_CAP the flood stops even if the bound is larger (a service declaring a
    32 MiB packet bound is checked to that cap only), to keep the suite fast.
    """
    b = built(name, preset)
    total = min(b.bound + 256 * 1024, FLOOD_CAP)
    for prefix in (b"", *b.seeds[:4]):
        for filler in (b"A", b"\x00"):
            drv = FakeDriver(b, b.factory(peer_for(transport)), transport)
            drv.call("start")
            drv.call("receive", prefix)
            block = filler * 65536
            sent = 0
            while not drv.closing and sent < total:
                drv.call("receive", block)
                sent += len(block)
            drv.closing = True
            drv.call("closed")


@pytest.mark.parametrize("name", services.names())
def test_every_service_builds_for_every_persona(name: str) -> None:
    """The fuzz harness's own precondition, as the engine needs it: build, start, close."""
    for preset in PRESETS:
        b = built(name, preset)
        assert b.bound > 0
        for transport in transports(name):
            drv = FakeDriver(b, b.factory(peer_for(transport)), transport)
            drv.call("start")
            drv.call("closed")
            assert type(drv.machine).protocol or b.spec.protocol


class _Hoarder:
    """Keeps everything and names an unknown incident: what the harness must catch."""

    protocol = "hoard"

    def __init__(self) -> None:
        self.buf = b""

    def start(self, now: float) -> list[Action]:
        return []

    def receive(self, data: bytes, now: float) -> list[Action]:
        self.buf += data
        return [Emit("no.such.incident")] if b"!" in data else []

    def timer(self, now: float) -> list[Action]:
        return []

    def child(self, event: Any, now: float) -> list[Action]:
        return []

    def closed(self, now: float) -> list[Action]:
        return []

    def buffered(self) -> int:
        return len(self.buf)


def test_harness_catches_broken_machines() -> None:
    spec = services.ServiceSpec("hoard", "hoard", configmod.ServiceConfig, lambda ctx: None)
    b = Built(spec, None, lambda peer: _Hoarder(), 1000, (b"x",))
    drive(b, "tcp", [("data", [b"a" * 999], 0.0)])
    with pytest.raises(AssertionError, match="bound 1000"):
        drive(b, "tcp", [("data", [b"a" * 1001], 0.0)])
    with pytest.raises(AssertionError, match="unregistered incident"):
        drive(b, "tcp", [("data", [b"!"], 0.0)])
