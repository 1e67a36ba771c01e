"""MySQL protocol features fed as bytes: compression, COM_CHANGE_USER, cursors, types."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

from muscipula.machine import Close, Send
from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql import compress as Z
from muscipula.protocols.mysql import wire as w
from tests.unit.test_mysql import PEER, emits, error, greeting, make, packets, response, rows


def zlogin(factory, user="root", password="pw"):
    """A native-password login asking for CLIENT_COMPRESS."""
    caps = (w.PROTOCOL_41 | w.SECURE_CONNECTION | w.PLUGIN_AUTH | w.LONG_PASSWORD
            | w.PLUGIN_AUTH_LENENC | w.COMPRESS | w.TRANSACTIONS)
    m = factory(PEER)
    g = greeting(packets(m.start(0.0))[0][1])
    acts = m.receive(response(user, A.native_proof(password, g["salt"]), A.NATIVE,
                              caps=caps), 1.0)
    return m, g, acts


def unwrap(actions) -> list[tuple[int, int, bytes]]:
    """(compressed seq, declared size, plain bytes) of each compressed packet sent."""
    data = b"".join(a.data for a in actions if isinstance(a, Send))
    out = []
    while data:
        size = int.from_bytes(data[:3], "little")
        seq, plain_size = data[3], int.from_bytes(data[4:7], "little")
        body = data[7:7 + size]
        out.append((seq, plain_size, zlib.decompress(body) if plain_size else body))
        data = data[7 + size:]
    return out


def zpacket(seq: int, plain: bytes, deflate: bool = True, declared: int | None = None) -> bytes:
    body = zlib.compress(plain) if deflate else plain
    size = (len(plain) if declared is None else declared) if deflate else 0
    return len(body).to_bytes(3, "little") + bytes((seq,)) + size.to_bytes(3, "little") + body


def plain_packets(data: bytes):
    return packets([Send(data)])


def test_compressed_protocol_after_login(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password")
    m, _g, acts = zlogin(factory)
    # the login's OK is the last plain packet
    assert packets(acts)[-1] == (2, w.ok_payload())
    big = "y" * 400
    acts = m.receive(zpacket(0, w.frame(0, f"\x03SELECT '{big}', 1".encode())), 2.0)
    (seq, declared, plain), = unwrap(acts)
    assert seq == 1 and declared == len(plain) > 400  # deflated, one packet per reply
    reply = plain_packets(plain)
    assert [s for s, _ in reply] == list(range(1, len(reply) + 1))
    assert rows([Send(plain)]) == [[big.encode(), b"1"]]
    # small payloads travel stored (declared size 0); the next command restarts at seq 0
    acts = m.receive(zpacket(0, w.frame(0, b"\x0e"), deflate=False), 3.0)
    assert unwrap(acts) == [(1, 0, w.frame(1, w.ok_payload()))]
    # a command split over two compressed packets, and two commands in one
    first = zpacket(0, w.frame(0, b"\x03SELECT 7"))
    acts = m.receive(first[:5], 4.0) + m.receive(first[5:] + zpacket(0, w.frame(0, b"\x0e")), 4.0)
    out = unwrap(acts)
    assert [o[0] for o in out] == [1, 1] and rows([Send(out[0][2])]) == [[b"7"]]
    # COM_QUIT closes
    assert any(isinstance(a, Close) for a in m.receive(zpacket(0, w.frame(0, b"\x01")), 5.0))


def test_pipelined_command_behind_login_is_inflated(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password")
    caps = (w.PROTOCOL_41 | w.SECURE_CONNECTION | w.PLUGIN_AUTH | w.PLUGIN_AUTH_LENENC
            | w.COMPRESS)
    m = factory(PEER)
    g = greeting(packets(m.start(0.0))[0][1])
    login = response("root", A.native_proof("pw", g["salt"]), A.NATIVE, caps=caps)
    acts = m.receive(login + zpacket(0, w.frame(0, b"\x03SELECT 42")), 1.0)
    sends = [a.data for a in acts if isinstance(a, Send)]
    assert plain_packets(sends[0])[-1][1] == w.ok_payload()
    assert rows([Send(unwrap([Send(sends[1])])[0][2])]) == [[b"42"]]


def test_zlib_bomb_is_refused_without_inflating(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password", max_inflated=65536)
    bomb = w.frame(0, b"\x03SELECT '" + b"A" * (8 * 1024 * 1024) + b"'")
    # declared honestly but above the bound: refused from the header alone
    m, _, _ = zlogin(factory)
    acts = m.receive(zpacket(0, bomb[:1024 * 1024], declared=1024 * 1024), 2.0)
    (_s, _d, plain), = unwrap(acts)
    assert plain_packets(plain)[0][1][1:3] == struct.pack("<H", 1153)
    assert any(isinstance(a, Close) for a in acts) and m.buffered() == 0
    # a liar: declares 1000 bytes, inflates to 8 MiB; inflating stops at 1001 bytes
    m, _, _ = zlogin(factory)
    tracemalloc.start()
    try:
        acts = m.receive(zpacket(0, bomb, declared=1000), 2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak
    (_s, _d, plain), = unwrap(acts)
    assert plain_packets(plain)[0][1][1:3] == struct.pack("<H", 1157)
    assert b"Couldn't uncompress communication packet" in plain
    assert any(isinstance(a, Close) for a in acts)
    # garbage that is not zlib at all
    m, _, _ = zlogin(factory)
    acts = m.receive(b"\x05\x00\x00\x00\x10\x00\x00hello", 2.0)
    assert any(isinstance(a, Close) for a in acts)
    assert emits(acts, "protocol.error")


def test_compressed_frames_bounded_and_split(tmp_path):
    inf = Z.Inflater(max_raw=100, max_inflated=100, budget=1000)
    inf.feed(b"\xff\x00\x00\x00\x00\x00\x00")
    try:
        inf.next()
        raise AssertionError("oversized raw packet accepted")
    except Z.CompressError as exc:
        assert exc.code == 1153 and inf.buffered() == 0
    data, seq = Z.deflate(b"z" * (w.MAX_CHUNK + 10), 254)
    assert seq == 0 and data[3] == 254
    size = int.from_bytes(data[:3], "little")
    assert data[7 + size + 3] == 255


def test_uncompressed_client_unaffected(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password")
    m = factory(PEER)
    g = greeting(packets(m.start(0.0))[0][1])
    m.receive(response("root", A.native_proof("pw", g["salt"]), A.NATIVE), 1.0)
    acts = m.receive(w.frame(0, b"\x03SELECT 1"), 2.0)
    assert rows(acts) == [[b"1"]]
    assert error(m.receive(w.frame(0, b"\x03SELEC"), 2.0))[0] == 1064


def _native(tmp_path, **kw):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password", **kw)
    m = factory(PEER)
    g = greeting(packets(m.start(0.0))[0][1])
    caps = (w.PROTOCOL_41 | w.SECURE_CONNECTION | w.PLUGIN_AUTH | w.PLUGIN_AUTH_LENENC)
    m.receive(response("root", A.native_proof("pw", g["salt"]), A.NATIVE, caps=caps), 1.0)
    return m, g


def test_change_user_logs_in_again_and_falls_back(tmp_path):
    m, g = _native(tmp_path, login={"mode": "list", "users": {"root": "pw", "bob": "b0b"}})
    body = (b"\x11bob\0" + bytes((20,)) + A.native_proof("b0b", g["salt"]) + b"shop\0"
            + b"\x2d\x00" + A.NATIVE.encode() + b"\0")
    acts = m.receive(w.frame(0, body), 2.0)
    assert packets(acts) == [(1, w.ok_payload())]
    (rec,) = emits(acts, "login")
    assert rec["username"] == "bob" and rec["success"] and rec["password"] == "b0b"
    assert emits(acts, "mysql.command") == [{"cmd": 17, "args": ["bob", "shop"]}]
    assert rows(m.receive(w.frame(0, b"\x03SELECT CURRENT_USER(), DATABASE()"), 2.0)) == \
        [[b"bob@%", b"shop"]]
    bad = b"\x11root\0" + bytes((20,)) + A.native_proof("nope", g["salt"]) + b"\0"
    acts = m.receive(w.frame(0, bad), 2.0)
    assert error(acts) == (1045, "28000",
                           "Access denied for user 'root'@'10.1.2.3' (using password: YES)")
    assert not any(isinstance(a, Close) for a in acts)
    assert emits(acts, "login")[0]["success"] is False
    assert rows(m.receive(w.frame(0, b"\x03SELECT CURRENT_USER(), DATABASE()"), 2.0)) == \
        [[b"bob@%", b"shop"]]


def test_change_user_with_other_plugin_gets_a_switch(tmp_path):
    factory, _ = make(tmp_path)  # accounts use caching_sha2_password
    m = factory(PEER)
    g = greeting(packets(m.start(0.0))[0][1])
    m.receive(response("root", A.sha2_proof("pw", g["salt"]), A.CACHING_SHA2), 1.0)
    m.receive(w.frame(3, b"pw\0"), 1.0)
    body = b"\x11eve\0\x14" + A.native_proof("x", g["salt"]) + b"\0\x2d\x00" \
        + A.NATIVE.encode() + b"\0"
    acts = m.receive(w.frame(0, body), 2.0)
    assert packets(acts) == [(1, b"\xfe" + A.CACHING_SHA2.encode() + b"\0" + g["salt"]
                              + b"\0")]
    assert packets(m.receive(w.frame(2, A.sha2_proof("x", g["salt"])), 2.0)) == \
        [(3, b"\x01\x04")]
    acts = m.receive(w.frame(4, b"x\0"), 2.0)
    assert emits(acts, "login")[0]["password"] == "x" and packets(acts)[-1][1][:1] == b"\0"


def test_cursor_fetch_in_chunks_and_bounds(tmp_path):
    m, _ = _native(tmp_path)
    acts = m.receive(w.frame(0, b"\x16SELECT id FROM shop.products WHERE id > ?"), 2.0)
    stmt_id = struct.unpack("<I", packets(acts)[0][1][1:5])[0]
    execute = struct.pack("<IBI", stmt_id, w.CURSOR_TYPE_READ_ONLY, 1) + b"\0\x01" \
        + struct.pack("<H", w.T_LONGLONG) + struct.pack("<q", 2)
    acts = m.receive(w.frame(0, b"\x17" + execute), 2.0)
    pk = packets(acts)
    assert pk[0][1] == b"\x01" and len(pk) == 3  # count, one definition, EOF; no rows
    assert struct.unpack("<H", pk[-1][1][3:5])[0] & w.STATUS_CURSOR_EXISTS
    fetch = lambda n: packets(m.receive(  # noqa: E731
        w.frame(0, b"\x1c" + struct.pack("<II", stmt_id, n)), 2.0))
    first = fetch(2)
    assert [p[1][2:] for p in first[:-1]] == [struct.pack("<q", 3), struct.pack("<q", 4)]
    assert struct.unpack("<H", first[-1][1][3:5])[0] & w.STATUS_CURSOR_EXISTS
    last = fetch(5)
    assert len(last) == 2 and struct.unpack("<H", last[-1][1][3:5])[0] & w.STATUS_LAST_ROW_SENT
    (_s, err), = fetch(1)
    assert struct.unpack("<H", err[1:3])[0] == 1421
    (_s, err), = packets(m.receive(w.frame(0, b"\x1c" + struct.pack("<II", 99, 1)), 2.0))
    assert struct.unpack("<H", err[1:3])[0] == 1243
    assert m.buffered() == 0


def _types(acts) -> list[tuple[int, int, int]]:
    pk = packets(acts)
    out = []
    for _s, p in pk[1:1 + pk[0][1][0]]:
        r = w.Reader(p)
        for _ in range(6):
            r.str_lenenc()
        r.u8()
        charset, _length, kind, _flags, decimals = struct.unpack("<HIBHB", r.take(10))
        out.append((kind, charset, decimals))
    return out


def test_column_types_text_and_binary(tmp_path):
    m, _ = _native(tmp_path)
    sql = ("SELECT NOW(), 1.5, CAST('2024-01-01' AS DATE), CAST('10:20:30' AS TIME), price, "
           "created_at FROM shop.orders o JOIN shop.order_items i ON i.order_id = o.id "
           "WHERE o.id = 1")
    acts = m.receive(w.frame(0, b"\x03" + sql.encode()), 86400.0 * 365)
    assert _types(acts) == [(w.T_DATETIME, 63, 0), (w.T_NEWDECIMAL, 63, 1), (w.T_DATE, 63, 0),
                            (w.T_TIME, 63, 0), (w.T_NEWDECIMAL, 63, 2),
                            (w.T_DATETIME, 63, 0)]
    (row,) = rows(acts)
    assert row[:4] == [b"1971-01-01 00:00:00", b"1.5", b"2024-01-01", b"10:20:30"]
    assert row[4].count(b".") == 1 and len(row[4].split(b".")[1]) == 2
    # the same through a prepared statement: MYSQL_TIME structures on the wire
    acts = m.receive(w.frame(0, b"\x16SELECT CAST('2024-01-02 03:04:05' AS DATETIME), "
                                b"CAST('2024-01-01' AS DATE), CAST('10:20:30' AS TIME), 2.50"),
                     2.0)
    stmt_id = struct.unpack("<I", packets(acts)[0][1][1:5])[0]
    acts = m.receive(w.frame(0, b"\x17" + struct.pack("<IBI", stmt_id, 0, 1)), 2.0)
    row = packets(acts)[-2][1]
    assert row == (b"\0\0" + b"\x07" + struct.pack("<HBBBBB", 2024, 1, 2, 3, 4, 5)
                   + b"\x04" + struct.pack("<HBB", 2024, 1, 1)
                   + b"\x08" + struct.pack("<BIBBB", 0, 0, 10, 20, 30) + b"\x042.50")


def test_attack_tool_probes(tmp_path):
    m, _ = _native(tmp_path)
    answers = {
        "SELECT @@version_compile_os": [[b"Linux"]],
        "SELECT CONCAT(0x71767871,(SELECT (ELT(5743=5743,1))),0x716a6b71)": [[b"qvxq1qjkq"]],
        "SELECT MID(VERSION(),1,1)": [[b"8"]],
        "SELECT SUBSTRING_INDEX(USER(),'@',1)": [[b"root"]],
        "SELECT 1 FROM DUAL WHERE 1=1": [[b"1"]],
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name=0x73686f70":
            [[b"1"]],
        "SELECT LPAD('7',3,'0'), STRCMP('a','b')": [[b"007", b"-1"]],
    }
    for sql, want in answers.items():
        assert rows(m.receive(w.frame(0, b"\x03" + sql.encode()), 2.0)) == want, sql
    acts = m.receive(w.frame(0, b"\x03SELECT EXTRACTVALUE(1,CONCAT(0x7e,USER()))"), 2.0)
    assert error(acts) == (1105, "HY000", "XPATH syntax error: '~root@10.1.2.3'")
    acts = m.receive(w.frame(0, b"\x03SELECT GTID_SUBSET(CONCAT(0x7e,USER()),1)"), 2.0)
    assert error(acts)[0] == 1772
    acts = m.receive(w.frame(0, b"\x03SHOW VARIABLES LIKE 'version_comp%'"), 2.0)
    assert [r[0] for r in rows(acts)] == [b"version_compile_machine", b"version_compile_os"]
