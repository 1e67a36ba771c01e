"""The endpoint mapper machine fed bytes: bind, requests, the answer to non-RPC probes,
and its bounds."""

from __future__ import annotations

import struct

from muscipula.config import Config
from muscipula.machine import Close, Emit, Peer, Send
from muscipula.protocols.epmapper import EPM, OXID_RESOLVER, EpmapperConfig, build
from muscipula.protocols.smb import dcerpc
from muscipula.services import context

PEER = Peer("192.0.2.10", 135, "203.0.113.7", 50000)


def machine(tmp_path, **cfg):
    ctx = context("epmapper", Config(), tmp_path, service=EpmapperConfig(**cfg))
    return build(ctx)(PEER)


def bind(uuid: str, version: int, call_id: int = 1) -> bytes:
    body = struct.pack("<HHIBBH", 5840, 5840, 0, 1, 0, 0)
    body += struct.pack("<HBB", 0, 1, 0) + dcerpc.uuid_raw(uuid) + struct.pack("<HH", version, 0)
    body += dcerpc.uuid_raw(dcerpc.NDR) + struct.pack("<I", 2)
    return dcerpc.header(dcerpc.BIND, 3, call_id, len(body)) + body


def request(opnum: int, stub: bytes, call_id: int = 2, flags: int = 3) -> bytes:
    body = struct.pack("<IHH", len(stub), 0, opnum) + stub
    return dcerpc.header(dcerpc.REQUEST, flags, call_id, len(body)) + body


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def test_bind_ack_names_the_tcp_port_and_ept_map_answers_not_registered(tmp_path):
    m = machine(tmp_path)
    out = m.receive(bind(EPM, 3), 0.0)
    ack = sent(out)
    assert ack[2] == dcerpc.BIND_ACK
    port_len = struct.unpack_from("<H", ack, 24)[0]
    assert ack[26:26 + port_len] == b"135\0"
    assert any(isinstance(a, Emit) and a.name == "smb.dcerpc.bind" and a.fields["uuid"] == EPM
               for a in out)
    stub = bytes(20) + bytes(40) + struct.pack("<I", 4)  # ...max_towers last
    answer = sent(m.receive(request(3, stub), 0.0))
    assert answer[2] == dcerpc.RESPONSE
    assert answer[-4:] == struct.pack("<I", 0x16C9A0D6)
    assert struct.unpack_from("<I", answer, 24 + 24)[0] == 4  # towers' max_count


def test_server_alive2_lists_the_host_name_and_the_address_reached(tmp_path):
    m = machine(tmp_path)
    m.receive(bind(OXID_RESOLVER, 0), 0.0)
    answer = sent(m.receive(request(5, b""), 0.0))
    text = answer.decode("utf-16-le", "replace")
    assert "192.0.2.10" in text and "WIN-" in text


def test_an_smb_probe_gets_windows_bind_nak_and_a_close(tmp_path):
    m = machine(tmp_path)
    probe = b"\0\0\0\xa4\xffSMBr\0\0\0\0\x08\x01\x40" + bytes(20)
    out = m.receive(probe, 0.0)
    nak = sent(out)
    # what nmap's msrpc match expects: bind_nak, 24 bytes, reason 4, one version: 5.0
    assert nak[:12] == b"\x05\x00\x0d\x03\x10\x00\x00\x00\x18\x00\x00\x00"
    assert nak[16:21] == b"\x04\x00\x01\x05\x00" and len(nak) == 24
    assert any(isinstance(a, Close) for a in out)
    assert m.receive(bind(EPM, 3), 0.0) == []


def test_a_request_over_max_request_is_refused_and_nothing_piles_up(tmp_path):
    m = machine(tmp_path, max_request=4096)
    m.receive(bind(EPM, 3), 0.0)
    for i in range(3):
        out = m.receive(request(0, b"\x90" * 2000, call_id=9, flags=1 if i == 0 else 0), 0.0)
    assert any(isinstance(a, Emit) and a.name == "protocol.error" for a in out)
    assert sent(out)[2] == dcerpc.FAULT
    assert m.buffered() < 4096


def test_an_exploit_sized_activation_request_is_recorded_and_denied(tmp_path):
    m = machine(tmp_path)
    m.receive(bind("4d9f4ab8-7d1c-11cf-861e-0020af6e7c57", 0), 0.0)
    stub = b"\x90" * 3000 + b"\xe8\x00\x00\x00\x00" + b"A" * 1000
    out = m.receive(request(0, stub), 0.0)
    req = next(a for a in out if isinstance(a, Emit) and a.name == "smb.dcerpc.request")
    assert req.fields["size"] == len(stub) and req.fields["operation"] == "RemoteActivation"
    fault = sent(out)
    assert fault[2] == dcerpc.FAULT and struct.unpack_from("<I", fault, 24)[0] == 0x80070005
