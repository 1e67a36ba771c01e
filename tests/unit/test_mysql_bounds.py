"""MySQL bounds on what a peer can make us do: inflating, pipelined commands, cursors,
DECIMAL types, and the handshake's shared tail."""

from __future__ import annotations

import struct
import time
import tracemalloc

from muscipula.machine import Close
from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql import wire as w
from tests.unit.test_mysql import PEER, emits, error, make, packets, query
from tests.unit.test_mysql_protocol import _native, plain_packets, unwrap, zlogin, zpacket


def _reply_error(acts) -> int:
    (_s, _d, plain), = unwrap(acts)
    return struct.unpack("<H", plain_packets(plain)[-1][1][1:3])[0]


def _limits(acts) -> list[str]:
    return [f["limit"] for f in emits(acts, "connection.limit")]


# ------------------------------------------------------------------ compression


def test_ping_bomb_in_one_compressed_packet_is_cut_short(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password", max_commands_per_read=500,
                      max_inflate_ratio=10**6)  # this bound alone, not the ratio
    m, _g, _ = zlogin(factory)
    ping = w.frame(0, b"\x0e")
    bomb = zpacket(0, ping * 200_000)  # 1 MB of pings, a few KB on the wire
    assert len(bomb) < 4096
    t = time.monotonic()
    acts = m.receive(bomb, 2.0)
    assert time.monotonic() - t < 2.0
    assert len(emits(acts, "mysql.command")) == 500
    assert _limits(acts) == ["max_commands_per_read"]
    assert _reply_error(acts) == 1157
    assert isinstance(acts[-1], Close) and m.state == "closed"
    assert m.buffered() == 0


def test_pipelined_commands_below_the_bound_are_all_answered(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password", max_commands_per_read=500,
                      max_inflate_ratio=10**6)  # this bound alone, not the ratio
    m, _g, _ = zlogin(factory)
    acts = m.receive(zpacket(0, w.frame(0, b"\x0e") * 500), 2.0)
    assert len(emits(acts, "mysql.command")) == 500 and m.state == "command"
    (_s, _d, plain), = unwrap(acts)
    assert len(plain_packets(plain)) == 500
    # the bound is per read: the next read starts afresh
    acts = m.receive(zpacket(1, w.frame(0, b"\x0e") * 500), 2.0)
    assert len(emits(acts, "mysql.command")) == 500 and m.state == "command"


def test_inflated_bytes_budget_closes_with_1157(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password",
                      max_inflated_total=300_000, max_inflate_ratio=10**6)
    m, _g, _ = zlogin(factory)
    blob = w.frame(0, b"\x03SELECT '" + b"a" * 100_000 + b"'")
    acts = m.receive(zpacket(0, blob), 2.0)
    assert m.state == "command" and not _limits(acts)
    acts = m.receive(zpacket(1, blob) + zpacket(2, blob), 2.0)
    # the second of these is past the budget: answered once, then refused
    assert len(emits(acts, "mysql.command")) == 1
    assert _limits(acts) == ["max_inflated_total"]
    assert emits(acts, "connection.limit")[0]["value"] == 300_000
    assert emits(acts, "protocol.error")
    assert isinstance(acts[-1], Close) and m.state == "closed"
    (_s1, _d1, _first), (seq, _d2, second) = unwrap(acts)
    assert struct.unpack("<H", plain_packets(second)[0][1][1:3])[0] == 1157
    assert seq == 3  # after the packet refused


def test_inflated_budget_defaults_to_the_connection_max_bytes_in(tmp_path):
    factory, ctx = make(tmp_path, auth_plugin="mysql_native_password")
    m = factory(PEER)
    assert m.s.max_inflated_total == ctx.limits.max_bytes_in == 64 * 1024 * 1024
    factory, ctx = make(tmp_path / "b", auth_plugin="mysql_native_password",
                        limits={"max_bytes_in": 5_000_000})
    assert factory(PEER).s.max_inflated_total == 5_000_000


def test_pings_packed_tight_over_many_reads_meet_the_inflate_ratio(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password")
    m, _g, _ = zlogin(factory)
    packet = zpacket(0, w.frame(0, b"\x0e") * 4096)  # 20 KB of pings in about 60 bytes
    commands, reads, closed = 0, 0, False
    for _ in range(200):  # one packet per read: max_commands_per_read never trips
        acts = m.receive(packet, 2.0)
        reads += 1
        commands += len(emits(acts, "mysql.command"))
        if any(isinstance(a, Close) for a in acts):
            closed = True
            assert emits(acts, "connection.limit")[0]["limit"] == "max_inflate_ratio"
            break
    assert closed and reads < 20
    assert commands < 60_000  # the slack (256 KiB) and 32 bytes per byte sent, not 819,200


def test_compressed_packets_are_inflated_one_at_a_time(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password", max_inflate_ratio=10**6)
    m, _g, _ = zlogin(factory)
    one = zpacket(0, w.frame(0, b"\x1f" + b"\0" * (1024 * 1024 - 1)))  # unknown command
    data = one * 12
    tracemalloc.start()
    try:
        acts = m.receive(data, 2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(emits(acts, "mysql.command")) == 12
    # all twelve inflated together would be 12 MiB and more
    assert peak < 7 * 1024 * 1024, peak
    assert m.buffered() == 0


# ------------------------------------------------------------------ cursors


def _cursor(m, sql: str) -> list[tuple[int, bytes]]:
    p = packets(m.receive(w.frame(0, b"\x16" + sql.encode()), 2.0))
    stmt_id = struct.unpack("<I", p[0][1][1:5])[0]
    execute = struct.pack("<IBI", stmt_id, w.CURSOR_TYPE_READ_ONLY, 1)
    return stmt_id, m.receive(w.frame(0, b"\x17" + execute), 2.0)


def test_cursors_are_counted_and_bounded(tmp_path):
    m, _ = _native(tmp_path, max_cursor_bytes=100_000)
    sql = "SELECT ZEROBLOB(4000) FROM wordpress.wp_options LIMIT 10"
    first, acts = _cursor(m, sql)
    assert packets(acts)[0][1][:1] != b"\xff"
    held = m.buffered()
    assert 40_000 <= held < 50_000
    _second, acts = _cursor(m, sql)
    assert m.buffered() >= 2 * 40_000
    _third, acts = _cursor(m, sql)
    code, state, message = error(acts)
    tid = m.thread_id
    assert (code, state) == (1114, "HY000")
    assert message.startswith("The table '/tmp/#sql") and message.endswith(f"_{tid:x}_2' is full")
    assert len(m.cursors) == 2
    # fetching the first to its end frees its rows
    m.receive(w.frame(0, b"\x1c" + struct.pack("<II", first, 100)), 2.0)
    assert len(m.cursors) == 1 and m.buffered() < held + 1000
    _fourth, acts = _cursor(m, sql)
    assert packets(acts)[0][1][:1] != b"\xff"


def test_cursor_budget_default_and_buffer_bound(tmp_path):
    from muscipula import services
    from muscipula.protocols.mysql import MysqlConfig

    cfg = MysqlConfig()
    assert cfg.max_cursor_bytes == 16 * 1024 * 1024
    assert services.get("mysql").buffer_bound(cfg) >= cfg.max_cursor_bytes
    m, _ = _native(tmp_path)
    assert m.s.max_cursor_bytes == 16 * 1024 * 1024


# ------------------------------------------------------------------ DECIMAL


def test_decimal_cast_bounds_as_mysqld(tmp_path):
    m, _ = _native(tmp_path)
    assert error(query(m, "SELECT CAST(1 AS DECIMAL(10,1000000000))")) == (
        1427, "42000", "For float(M,D), double(M,D) or decimal(M,D), M must be >= D "
                       "(column '').")
    assert error(query(m, "SELECT CAST(1 AS DECIMAL(65,31))")) == (
        1425, "42000", "Too big scale 31 specified for 'CAST(1 AS DECIMAL(65,31))'. "
                       "Maximum is 30.")
    assert error(query(m, "SELECT CAST(1 AS DECIMAL(66,2))")) == (
        1426, "42000", "Too-big precision 66 specified for 'CAST(1 AS DECIMAL(66,2))'. "
                       "Maximum is 65.")
    # anywhere in the statement, as the parser checks it
    assert error(query(m, "SELECT 1 FROM dual WHERE CAST(1 AS DECIMAL(70)) = 1"))[0] == 1426
    # the largest allowed still works
    acts = query(m, "SELECT CAST(1 AS DECIMAL(65,30))")
    assert packets(acts)[0][1] == b"\x01" and not emits(acts, "protocol.error")


def test_decimal_cast_bounds_in_55_wording(tmp_path):
    m, _ = _native(tmp_path, preset="windows-2008r2")
    assert error(query(m, "SELECT CAST(1 AS DECIMAL(65,31))")) == (
        1425, "42000", "Too big scale 31 specified for column '1'. Maximum is 30.")
    assert error(query(m, "SELECT CAST(1 AS DECIMAL(66,2))")) == (
        1426, "42000", "Too big precision 66 specified for column '1'. Maximum is 65.")


def test_long_decimal_literals_are_doubles(tmp_path):
    m, _ = _native(tmp_path)
    for text in ("0." + "1" * 300, "1" * 300 + ".5", "0." + "1" * 70):
        acts = query(m, f"SELECT {text}")
        assert not emits(acts, "protocol.error"), text
        pk = packets(acts)
        assert pk[0][1] == b"\x01", (text, pk[0][1][:60])
        coldef = w.Reader(pk[1][1])
        for _ in range(6):
            coldef.str_lenenc()
        coldef.take(1 + 2 + 4)
        assert coldef.u8() == w.T_DOUBLE, text
    # 65 digits is still DECIMAL
    acts = query(m, "SELECT 0." + "1" * 65)
    assert packets(acts)[1][1].find(bytes((w.T_NEWDECIMAL,))) > 0


def test_decimal_products_keep_a_scale_of_at_most_30(tmp_path):
    m, _ = _native(tmp_path)
    product = "*".join(["0.1111111111"] * 40)
    acts = query(m, f"SELECT {product}")
    assert not emits(acts, "protocol.error")
    coldef = packets(acts)[1][1]
    assert coldef[-3] == 30  # decimals, before the two filler bytes


# ------------------------------------------------------------------ handshake tail


def test_handshake_and_change_user_share_the_plugin_and_attributes_tail():
    attrs = b"".join(w.lenenc_str(f"k{i}".encode()) + w.lenenc_str(b"v" * 2000)
                     for i in range(80))
    caps = w.PROTOCOL_41 | w.SECURE_CONNECTION | w.PLUGIN_AUTH | w.CONNECT_ATTRS
    hello = (struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + b"bob\0" + b"\x00"
             + A.NATIVE.encode() + b"\0" + w.lenenc_str(attrs))
    change = b"bob\0" + b"\x00" + b"\0" + b"\x2d\x00" + A.NATIVE.encode() + b"\0" \
        + w.lenenc_str(attrs)
    r1, r2 = A.parse_response(hello), A.parse_change_user(change, caps)
    for r in (r1, r2):
        assert r.plugin == A.NATIVE
        assert len(r.attributes) == 64 and len(r.attributes["k0"]) == 1024
    assert r1.attributes == r2.attributes
    # a plugin name cut short by the end of the packet is kept as sent
    assert A.parse_change_user(b"bob\0\x00\0\x2d\x00mysql_nat", caps).plugin == "mysql_nat"


def test_a_decimal_precision_of_thousands_of_digits_is_still_too_big(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password")
    m, _g, _ = zlogin(factory)
    digits = "9" * 5000
    acts = m.receive(zpacket(0, w.frame(0, b"\x03SELECT CAST(1 AS DECIMAL(" + digits.encode()
                                        + b",2))")), 2.0)
    assert not emits(acts, "protocol.error")
    (_s, _d, plain), = unwrap(acts)
    (reply,) = plain_packets(plain)
    assert reply[1][:3] == b"\xff" + (1426).to_bytes(2, "little")  # too-big precision
