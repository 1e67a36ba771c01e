"""TFTP machine fed datagrams: tftpd-hpa 5.2's answers, transfers, timers, limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muscipula import config as configmod
from muscipula import services
from muscipula.machine import (
    CaptureData,
    CaptureEnd,
    ChildClose,
    ChildData,
    ChildFailed,
    ChildListen,
    ChildListening,
    ChildSend,
    Close,
    Emit,
    Peer,
    Send,
    Wake,
)
from muscipula.protocols.tftp.backend import components
from muscipula.protocols.tftp.request import number

CLIENT = ("127.0.0.9", 40000)
BIG = os.urandom(3000)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "f.bin").write_bytes(BIG)
    (r / "t.txt").write_bytes(b"line1\nline2\r\nx\n")
    (r / "empty").write_bytes(b"")
    (r / "blk").write_bytes(b"B" * 1024)
    (r / "sub" / "a").write_bytes(b"s")
    (r / "private").write_bytes(b"secret")
    (r / "private").chmod(0o600)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"do not serve")
    (r / "link").symlink_to(outside)
    for p in r.rglob("*"):
        if p.is_file() and p.name != "private":
            p.chmod(0o644)
    return r


class Harness:
    """A factory built as the engine builds it, and helpers to talk to its machines."""

    def __init__(self, tmp_path: Path, root: Path, **cfg: Any) -> None:
        spec = services.get("tftp")
        assert spec is not None
        # Built from the service's own model, not the whole default (other services
        # need not load for these tests).
        config = configmod.Config()
        svc = spec.config_model.model_validate({"root": str(root), "first_reply_delay": 0, **cfg})
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        self.config = svc
        self.factory = spec.build(services.context("tftp", config, state, service=svc))
        self.bound = spec.buffer_bound(svc)

    def machine(self, port: int = CLIENT[1]) -> Any:
        return self.factory(Peer("127.0.0.1", 69, CLIENT[0], port, "udp"))


def sends(actions: list[Any]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, ChildSend)]


def emits(actions: list[Any], name: str) -> list[dict[str, Any]]:
    return [dict(a.fields) for a in actions if isinstance(a, Emit) and a.name == name]


def request(m: Any, packet: bytes, now: float = 0.0, port: int = 5000) -> list[Any]:
    """Send a request and bring its port up: every action of both steps."""
    out = m.receive(packet, now)
    listens = [a for a in out if isinstance(a, ChildListen)]
    assert not [a for a in out if isinstance(a, Send)], "the well-known port answered"
    for listen in listens:
        assert listen.transport == "udp"
        out += m.child(ChildListening(listen.tag, "127.0.0.1", port), now)
    return out


def ack(m: Any, block: int, now: float, tag: str = "t1", addr: Any = CLIENT) -> list[Any]:
    return m.child(ChildData(tag, b"\0\x04" + block.to_bytes(2, "big"), addr), now)


def data(m: Any, block: int, payload: bytes, now: float, tag: str = "t1") -> list[Any]:
    return m.child(ChildData(tag, b"\0\x03" + block.to_bytes(2, "big") + payload, CLIENT),
                   now)


# ------------------------------------------------- answers as tftpd-hpa 5.2 sends them

# Each reply below was read off the wire from tftpd-hpa 5.2+20150808 (Debian 12,
# --secure --create) for the same request and the same files.
REFERENCE = [
    (b"\0\x01nosuch\0octet\0", b"\0\x05\0\x01File not found\0"),
    (b"\0\x01\0\x02\0\x01\0", b"\0\x05\0\x04Missing mode\0"),  # nmap's xdmcp probe
    (b"\0\x01f.bin\0mail\0", b"\0\x05\0\x04Unknown mode\0"),
    (b"\0\x01f.bin\0oct", b"\0\x05\0\x04Request not null-terminated\0"),
    (b"\0\x01f.bin\0", b"\0\x05\0\x04Missing mode\0"),
    (b"\0\x01\0octet\0", b"\0\x05\0\x04Missing mode\0"),
    (b"\0\x01../etc/passwd\0octet\0", b"\0\x05\0\x01File not found\0"),
    (b"\0\x01/etc/passwd\0octet\0", b"\0\x05\0\x01File not found\0"),
    (b"\0\x01sub\0octet\0", b"\0\x05\0\0Is a directory\0"),
    (b"\0\x01/\0octet\0", b"\0\x05\0\0Is a directory\0"),
    (b"\0\x01.\0octet\0", b"\0\x05\0\0Is a directory\0"),
    (b"\0\x01private\0octet\0", b"\0\x05\0\0Permission denied\0"),
    (b"\0\x01\\f.bin\0octet\0", b"\0\x05\0\x01File not found\0"),
    (b"\0\x01nosuch\0octet\0blksize\x00600\0", b"\0\x05\0\x01File not found\0"),
    (b"\0\x01f.bin\0octet\0blksize\x007\0", b"\0\x05\0\x08Unsupported option(s) requested\0"),
    (b"\0\x01f.bin\0octet\0timeout\x000\0", b"\0\x05\0\x08Unsupported option(s) requested\0"),
    (b"\0\x01f.bin\0octet\0timeout\x00256\0",
     b"\0\x05\0\x08Unsupported option(s) requested\0"),
    (b"\0\x01t.txt\0netascii\0tsize\x000\0", b"\0\x05\0\x08Unsupported option(s) requested\0"),
    (b"\0\x01f.bin\0octet\0blksize\x0099999\0", b"\0\x06blksize\x0065464\0"),
    (b"\0\x01f.bin\0octet\0blksize\x00-5\0", b"\0\x06blksize\x0065464\0"),
    (b"\0\x01f.bin\0octet\0blksize\x00+600\0", b"\0\x06blksize\x00600\0"),
    (b"\0\x01f.bin\0octet\0blksize\x00 600\0", b"\0\x06blksize\x00600\0"),
    (b"\0\x01f.bin\0octet\0blksize2\x001000\0", b"\0\x06blksize2\x00512\0"),
    (b"\0\x01f.bin\0octet\0TSIZE\x000\0", b"\0\x06TSIZE\x003000\0"),
    (b"\0\x01f.bin\0octet\0tsize\x005\0", b"\0\x06tsize\x005\0"),
    (b"\0\x01f.bin\0octet\0utimeout\x0050000\0", b"\0\x06utimeout\x0050000\0"),
    (b"\0\x01f.bin\0octet\0rollover\x001\0", b"\0\x06rollover\x001\0"),
    (b"\0\x01f.bin\0octet\0timeout\x00255\0", b"\0\x06timeout\x00255\0"),
    (b"\0\x01f.bin\0octet\0blksize\x00600\0blksize\x00700\0",
     b"\0\x06blksize\x00600\0blksize\x00700\0"),
    (b"\0\x01f.bin\0octet\0blksize\x00600\0tsize\0", b"\0\x06blksize\x00600\0"),
    (b"\0\x01f.bin\0octet\0blksize\x001428\0tsize\x000\0timeout\x003\0foo\0bar\0",
     b"\0\x06blksize\x001428\0tsize\x003000\0timeout\x003\0"),
    (b"\0\x01//f.bin\0octet\0tsize\x000\0", b"\0\x06tsize\x003000\0"),
    (b"\0\x01sub/../f.bin\0octet\0", b"\0\x03\0\x01" + BIG[:512]),
    (b"\0\x01f.bin\0OCTET\0", b"\0\x03\0\x01" + BIG[:512]),
    (b"\0\x01f.bin\0octet\0blksize\0abc\0", b"\0\x03\0\x01" + BIG[:512]),
    (b"\0\x01f.bin\0octet\0blksize\0", b"\0\x03\0\x01" + BIG[:512]),
    (b"\0\x01f.bin\0octet\0blksize\x0099999999999999999999999\0", b"\0\x03\0\x01" + BIG[:512]),
    (b"\0\x01f.bin\0octet\0\0\0", b"\0\x03\0\x01" + BIG[:512]),
    (b"\0\x01t.txt\0netascii\0", b"\0\x03\0\x01line1\r\nline2\r\0\r\nx\r\n"),
    (b"\0\x01empty\0octet\0", b"\0\x03\0\x01"),
    (b"\0\x02up.bin\0octet\0", b"\0\x04\0\0"),
    (b"\0\x02up2.bin\0octet\0tsize\x00100\0blksize\x00512\0",
     b"\0\x06tsize\x00100\0blksize\x00512\0"),
    (b"\0\x02../x\0octet\0", b"\0\x04\0\0"),
    (b"\0\x02sub\0octet\0", b"\0\x05\0\0Is a directory\0"),
]


@pytest.mark.parametrize(("packet", "reply"), REFERENCE)
def test_first_reply_matches_tftpd_hpa(tmp_path, root, packet, reply):
    h = Harness(tmp_path, root, windowsize=False)
    out = request(h.machine(), packet)
    assert sends(out) == [reply]
    (req,) = emits(out, "tftp.request")
    if reply[:2] == b"\0\x05":
        assert req["error_code"] == reply[3]
        assert req["error_text"] == reply[4:-1].decode()
        assert any(isinstance(a, ChildClose) for a in out)  # an error is all that port says
    else:
        assert req["error_code"] is None


def test_symlink_out_of_root_is_not_found(tmp_path, root):
    h = Harness(tmp_path, root)
    assert sends(request(h.machine(), b"\0\x01link\0octet\0")) == [
        b"\0\x05\0\x01File not found\0"]


def test_path_components_never_climb_out():
    assert components(b"../../etc/passwd") == [b"etc", b"passwd"]
    assert components(b"/a/./b/../../../c") == [b"c"]
    assert components(b"a//b/") == [b"a", b"b"]


def test_number_parses_like_strtoumax():
    assert number(b"  12") == 12
    assert number(b"+7") == 7
    assert number(b"-1") == (1 << 64) - 1
    assert number(b"12x") is None
    assert number(b"") is None
    assert number(b"1" * 30) is None


def test_other_opcodes_and_junk_get_no_answer(tmp_path, root):
    h = Harness(tmp_path, root)
    for junk in (b"\0\0\x10\0\0\0\0\0\0\0\0\0", b"\0\x03\0\x01abc", b"\0\x04\0\x01",
                 b"\0\x05\0\x01x\0", b"\0\x06a\0b\0", b"\0\x09abc", b"\0", b""):
        m = h.machine()
        out = m.receive(junk, 0.0)
        assert not sends(out) and not [a for a in out if isinstance(a, Send | ChildListen)]
        assert emits(out, "protocol.error")


# ------------------------------------------------------------------------ reading


def test_read_whole_file_and_duplicate_acks_are_not_answered(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    out = request(m, b"\0\x01f.bin\0octet\0")
    assert sends(out) == [b"\0\x03\0\x01" + BIG[:512]]
    got = bytearray(BIG[:512])
    for block in range(1, 7):
        out = ack(m, block, 0.1 * block)
        # the duplicate of the same ACK: Sorcerer's Apprentice says nothing is sent
        assert sends(ack(m, block, 0.1 * block)) == []
        if block < 6:
            (pkt,) = sends(out)
            assert pkt[:4] == b"\0\x03" + (block + 1).to_bytes(2, "big")
            got += pkt[4:]
    assert bytes(got) == BIG
    (done,) = emits(out, "tftp.transfer")
    assert done["status"] == "complete" and done["bytes"] == 3000 and done["blocks"] == 6
    assert done["local_port"] == 5000
    assert any(isinstance(a, ChildClose) for a in out)


def test_wrong_tid_is_ignored(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    request(m, b"\0\x01f.bin\0octet\0")
    assert ack(m, 1, 0.1, addr=("127.0.0.9", 40001)) == []
    assert ack(m, 1, 0.1, addr=("127.0.0.8", CLIENT[1])) == []
    assert sends(ack(m, 1, 0.1))[0][:4] == b"\0\x03\0\x02"


def test_retransmits_with_backoff_then_gives_up(tmp_path, root):
    h = Harness(tmp_path, root, retransmit_timeout=1.0, retransmit_count=3)
    m = h.machine()
    out = request(m, b"\0\x01f.bin\0octet\0")
    first = sends(out)
    assert [a.at for a in out if isinstance(a, Wake)] == [1.0]
    assert m.timer(0.9) == [] or not sends(m.timer(0.9))
    times = []
    now = 1.0
    for _ in range(3):
        out = m.timer(now)
        assert sends(out) == first
        times.append(now)
        wakes = [a.at for a in out if isinstance(a, Wake)]
        now = wakes[-1] if wakes else now
    assert times == [1.0, 3.0, 7.0]  # 1 s, doubled each time
    out = m.timer(15.0)
    (done,) = emits(out, "tftp.transfer")
    assert done["status"] == "timeout" and done["retransmits"] == 3
    assert any(isinstance(a, ChildClose) for a in out)


def test_progress_resets_the_backoff(tmp_path, root):
    h = Harness(tmp_path, root, retransmit_timeout=1.0, retransmit_count=2)
    m = h.machine()
    request(m, b"\0\x01f.bin\0octet\0")
    m.timer(1.0)
    m.timer(3.0)
    ack(m, 1, 3.5)
    assert sends(m.timer(4.5))[0][:4] == b"\0\x03\0\x02"  # 1 s again, not given up


def test_client_timeout_option_sets_the_retransmission_wait(tmp_path, root):
    h = Harness(tmp_path, root, retransmit_timeout=1.0)
    m = h.machine()
    out = request(m, b"\0\x01f.bin\0octet\0timeout\x004\0")
    assert [a.at for a in out if isinstance(a, Wake)] == [4.0]
    assert sends(m.timer(2.0)) == []
    assert sends(m.timer(4.0)) == [b"\0\x06timeout\x004\0"]


def test_oack_then_blocks_of_the_agreed_size(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    assert sends(request(m, b"\0\x01f.bin\0octet\0blksize\x001428\0")) == [
        b"\0\x06blksize\x001428\0"]
    assert sends(ack(m, 1, 0.1)) == []  # not the ACK 0 the OACK asks for
    (pkt,) = sends(ack(m, 0, 0.1))
    assert pkt == b"\0\x03\0\x01" + BIG[:1428]


def test_client_error_ends_the_transfer(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    request(m, b"\0\x01f.bin\0octet\0blksize\x001428\0")
    out = m.child(ChildData("t1", b"\0\x05\0\x08no options\0", CLIENT), 0.2)
    (done,) = emits(out, "tftp.transfer")
    assert done["status"] == "peer_error" and done["peer_error_code"] == 8
    assert done["peer_error_text"] == "no options"


def test_windowsize_sends_windows_and_slides(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    out = request(m, b"\0\x01f.bin\0octet\0windowsize\x004\0")
    assert sends(out) == [b"\0\x06windowsize\x004\0"]
    out = ack(m, 0, 0.1)
    assert [p[:4] for p in sends(out)] == [b"\0\x03\0" + bytes([n]) for n in (1, 2, 3, 4)]
    assert m.buffered() == 4 * 512
    # a partial ACK moves the window on without sending what is already in flight
    assert [p[:4] for p in sends(ack(m, 2, 0.2))] == [b"\0\x03\0\x05", b"\0\x03\0\x06"]
    assert sends(ack(m, 2, 0.2)) == []  # duplicate
    # timeout resends the unacknowledged window
    assert [p[:4] for p in sends(m.timer(1.3))] == [b"\0\x03\0" + bytes([n])
                                                     for n in (3, 4, 5, 6)]
    (done,) = emits(ack(m, 6, 1.4), "tftp.transfer")
    assert done["windowsize"] == 4 and done["bytes"] == 3000
    assert m.buffered() == 0


def test_windowsize_is_bounded_by_window_bytes(tmp_path, root):
    h = Harness(tmp_path, root, max_window_bytes=2048, max_windowsize=64)
    m = h.machine()
    assert sends(request(m, b"\0\x01f.bin\0octet\0windowsize\x0050\0blksize\x00512\0")) == [
        b"\0\x06blksize\x00512\0windowsize\x004\0"]


def test_file_of_whole_blocks_ends_with_an_empty_block(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    request(m, b"\0\x01blk\0octet\0")
    assert len(sends(ack(m, 1, 0.1))[0]) == 516
    assert sends(ack(m, 2, 0.1)) == [b"\0\x03\0\x03"]
    assert emits(ack(m, 3, 0.1), "tftp.transfer")[0]["status"] == "complete"


def test_block_numbers_roll_over(tmp_path, root):
    (root / "huge").write_bytes(b"z" * (8 * 65540))
    (root / "huge").chmod(0o644)
    h = Harness(tmp_path, root)
    for option, after in ((b"", 0), (b"rollover\x001\0", 1)):
        m = h.machine()
        request(m, b"\0\x01huge\0octet\0blksize\x008\0" + option)
        ack(m, 0, 0.0)
        for n in range(1, 65535):
            ack(m, n, 0.0)
        (pkt,) = sends(ack(m, 65535, 0.0))
        assert pkt[:4] == b"\0\x03" + after.to_bytes(2, "big")
        (pkt,) = sends(ack(m, after, 0.0))
        assert pkt[:4] == b"\0\x03" + (after + 1).to_bytes(2, "big")


# ------------------------------------------------------------------------ writing


def write(m: Any, name: bytes = b"x.exe", opts: bytes = b"", mode: bytes = b"octet") -> list:
    return request(m, b"\0\x02" + name + b"\0" + mode + b"\0" + opts)


def test_upload_is_captured_with_offer_first(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    out = write(m, b"dir/evil exe.exe")
    names = [a.name for a in out if isinstance(a, Emit)]
    assert names == ["tftp.request", "download.offer"]
    url = emits(out, "download.offer")[0]["url"]
    assert url == "tftp://127.0.0.1/dir/evil%20exe.exe"
    assert sends(out) == [b"\0\x04\0\0"]
    payload = os.urandom(1300)
    captured = b""
    for n, start in enumerate(range(0, 1300, 512), 1):
        out = data(m, n, payload[start:start + 512], 0.1 * n)
        assert sends(out) == [b"\0\x04" + n.to_bytes(2, "big")]
        captured += b"".join(a.data for a in out if isinstance(a, CaptureData))
    assert captured == payload
    (end,) = [a for a in out if isinstance(a, CaptureEnd)]
    assert end.url == url and end.complete
    (done,) = emits(out, "tftp.transfer")
    assert done["status"] == "complete" and done["bytes"] == 1300 and done["url"] == url
    # a repeated last block is ACKed again while the transfer dallies, then the port closes
    assert sends(data(m, 3, payload[1024:], 0.5)) == [b"\0\x04\0\x03"]
    assert [a for a in m.timer(1.5) if isinstance(a, ChildClose)]
    assert not emits(m.closed(2.0), "tftp.transfer")  # said once


def test_duplicate_data_is_acked_again_and_not_captured_twice(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    write(m)
    data(m, 1, b"A" * 512, 0.1)
    out = data(m, 1, b"A" * 512, 0.2)
    assert sends(out) == [b"\0\x04\0\x01"]
    assert not [a for a in out if isinstance(a, CaptureData)]
    assert sends(data(m, 5, b"A" * 512, 0.2)) == []  # out of order: nothing


def test_upload_over_max_file_size_is_refused_and_kept_incomplete(tmp_path, root):
    h = Harness(tmp_path, root, max_file_size=1000)
    m = h.machine()
    write(m)
    data(m, 1, b"A" * 512, 0.1)
    out = data(m, 2, b"A" * 512, 0.2)
    assert sends(out) == [b"\0\x05\0\x03Disk full or allocation exceeded\0"]
    (end,) = [a for a in out if isinstance(a, CaptureEnd)]
    assert not end.complete
    assert emits(out, "tftp.transfer")[0]["status"] == "too_large"
    # a tsize that announces too much is refused up front
    assert sends(write(h.machine(7), opts=b"tsize\x005000\0")) == [
        b"\0\x05\0\x03Disk full or allocation exceeded\0"]


def test_netascii_upload_is_decoded(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    write(m, mode=b"netascii")
    body = b"a\r\nb\r\0c" + b"x" * 504 + b"\r"  # a CR cut at the block's end
    assert len(body) == 512
    out = data(m, 1, body, 0.1) + data(m, 2, b"\nend\r\n", 0.2)
    got = b"".join(a.data for a in out if isinstance(a, CaptureData))
    assert got == b"a\nb\rc" + b"x" * 504 + b"\nend\n"


def test_upload_refused_when_disabled(tmp_path, root):
    h = Harness(tmp_path, root, allow_upload=False)
    assert sends(write(h.machine())) == [b"\0\x05\0\x01File not found\0"]
    assert sends(write(h.machine(), b"f.bin")) == [b"\0\x05\0\0Permission denied\0"]


def test_upload_timeout_keeps_what_arrived(tmp_path, root):
    h = Harness(tmp_path, root, retransmit_count=1)
    m = h.machine()
    write(m)
    data(m, 1, b"A" * 512, 0.1)
    assert sends(m.timer(1.1)) == [b"\0\x04\0\x01"]  # our ACK again
    out = m.timer(3.1)
    (end,) = [a for a in out if isinstance(a, CaptureEnd)]
    assert not end.complete
    assert emits(out, "tftp.transfer")[0]["status"] == "timeout"


def test_transfer_timeout_bounds_a_trickle(tmp_path, root):
    h = Harness(tmp_path, root, transfer_timeout=5.0, retransmit_timeout=2.0)
    m = h.machine()
    write(m)
    for n in range(1, 4):
        data(m, n, b"A" * 512, 1.5 * n)
    out = m.timer(5.0)
    assert emits(out, "tftp.transfer")[0]["status"] == "timeout"


# ------------------------------------------------------------------ session limits


def test_repeated_request_is_ignored_while_it_is_served(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    request(m, b"\0\x01f.bin\0octet\0")
    assert m.receive(b"\0\x01f.bin\0octet\0", 0.5) == []


def test_max_transfers_is_shared_by_all_peers(tmp_path, root):
    h = Harness(tmp_path, root, max_transfers=2)
    a, b, c = h.machine(1), h.machine(2), h.machine(3)
    request(a, b"\0\x01f.bin\0octet\0")
    request(b, b"\0\x01f.bin\0octet\0")
    out = c.receive(b"\0\x01f.bin\0octet\0", 0.0)
    assert not [x for x in out if isinstance(x, ChildListen)]
    assert emits(out, "connection.limit") == [{"limit": "max_transfers", "value": 2}]
    a.closed(1.0)  # a slot comes free
    assert [x for x in c.receive(b"\0\x01f.bin\0octet\0", 1.0) if isinstance(x, ChildListen)]


def test_error_replies_and_failed_ports_free_their_slot(tmp_path, root):
    h = Harness(tmp_path, root, max_transfers=1)
    m = h.machine()
    request(m, b"\0\x01nosuch\0octet\0")
    m.receive(b"\0\x01f.bin\0octet\0", 0.1)
    assert emits(m.child(ChildFailed("t2", "bind failed"), 0.1), "tftp.transfer")[0][
        "status"] == "failed"
    assert [x for x in h.machine(9).receive(b"\0\x01f.bin\0octet\0", 0.2)
            if isinstance(x, ChildListen)]


def test_per_peer_cap(tmp_path, root):
    h = Harness(tmp_path, root, max_transfers_per_peer=1)
    m = h.machine()
    request(m, b"\0\x01f.bin\0octet\0")
    out = m.receive(b"\0\x01t.txt\0octet\0", 0.1)
    assert emits(out, "connection.limit")[0]["limit"] == "max_transfers_per_peer"


def test_idle_session_lingers_then_closes(tmp_path, root):
    h = Harness(tmp_path, root, linger=3.0)
    m = h.machine()
    out = request(m, b"\0\x01nosuch\0octet\0")
    assert [a.at for a in out if isinstance(a, Wake)] == [3.0]
    assert not [a for a in m.timer(2.0) if isinstance(a, Close)]
    assert [a for a in m.timer(3.0) if isinstance(a, Close)]


def test_closing_mid_upload_keeps_the_part(tmp_path, root):
    h = Harness(tmp_path, root)
    m = h.machine()
    write(m)
    data(m, 1, b"A" * 512, 0.1)
    out = m.closed(0.2)
    (end,) = [a for a in out if isinstance(a, CaptureEnd)]
    assert not end.complete
    assert emits(out, "tftp.transfer")[0]["status"] == "closed"


def test_buffer_stays_within_the_declared_bound(tmp_path, root):
    h = Harness(tmp_path, root, max_window_bytes=65464 * 2)
    m = h.machine()
    for i in range(h.config.max_transfers_per_peer):
        request(m, b"\0\x01f.bin\0netascii\0blksize\x0065464\0windowsize\x0099\0x%d\0" % i,
                port=6000 + i)
        ack(m, 0, 0.0, tag=f"t{i + 1}")
    assert 0 < m.buffered() <= h.bound


def test_first_reply_waits_the_configured_delay(tmp_path, root):
    h = Harness(tmp_path, root, first_reply_delay=0.05)
    m = h.machine()
    out = request(m, b"\0\x01nosuch\0octet\0")
    assert sends(out) == [] and [a.at for a in out if isinstance(a, Wake)] == [0.05]
    assert sends(m.timer(0.05)) == [b"\0\x05\0\x01File not found\0"]


# ------------------------------------------------ random conversations from the right TID

PACKETS = st.one_of(
    st.builds(lambda n: b"\0\x04" + n.to_bytes(2, "big"), st.integers(0, 12)),
    st.builds(lambda n, p: b"\0\x03" + n.to_bytes(2, "big") + p, st.integers(0, 12),
              st.sampled_from([b"", b"x" * 100, b"y" * 512, b"\r" * 511 + b"\r", b"z" * 600])),
    st.builds(lambda c: b"\0\x05" + c.to_bytes(2, "big") + b"x\0", st.integers(0, 9)),
    st.binary(max_size=8),
)
REQUESTS = st.sampled_from([
    b"\0\x01f.bin\0octet\0", b"\0\x01t.txt\0netascii\0windowsize\x003\0",
    b"\0\x01f.bin\0octet\0blksize\x00100\0windowsize\x004\0", b"\0\x02u\0octet\0",
    b"\0\x02u\0netascii\0windowsize\x002\0", b"\0\x01empty\0octet\0",
])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=REQUESTS, steps=st.lists(st.tuples(PACKETS, st.sampled_from([0.0, 0.3, 1.1, 9.0])),
                                    max_size=40))
def test_transfers_survive_any_conversation(tmp_path, root, req, steps):
    h = Harness(tmp_path, root, max_file_size=2000, retransmit_count=2)
    m = h.machine()
    now = 0.0
    request(m, req, now)
    answered: set[bytes] = set()  # ACKs that already made DATA go out
    for packet, dt in steps:
        now += dt
        m.timer(now)
        out = m.child(ChildData("t1", packet, CLIENT), now)
        moved = [p for p in sends(out) if p[:2] == b"\0\x03"]
        if packet[:2] == b"\0\x04" and req[:2] == b"\0\x01":
            assert not (moved and packet in answered), "a repeated ACK was answered"
            if moved:
                answered.add(packet)
        assert 0 <= m.buffered() <= h.bound
    m.closed(now + 1)
    assert m.buffered() == 0
