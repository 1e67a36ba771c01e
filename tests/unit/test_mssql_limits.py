"""MSSQL bounds found in review, fed as bytes: one work budget per request, TLS reads
larger than the TLS buffer, and RPC binding (GO, parameter names and counts, types)."""

from __future__ import annotations

import ssl
import struct

from muscipula.machine import Close, Send
from muscipula.protocols.mssql import batch, int_param, login7, nvarchar_param, rpc_param
from muscipula.protocols.mssql import login as L
from muscipula.protocols.mssql import rpc as R
from muscipula.protocols.mssql import rpc_request as rpc
from muscipula.protocols.mssql import tds as T
from tests.unit.test_mssql import emits, logged_in, make, send, text
from tests.unit.test_mssql_tls import Client, connect

HEAVY = ("WITH c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < @lim) "
         "SELECT COUNT(*) AS k FROM c")


def tokens(out: bytes, tds: int = 0x74) -> list[tuple[int, object]]:
    """The reply walked token by token (the kinds this server sends); raises if malformed."""
    found: list[tuple[int, object]] = []
    cols: list[tuple[int, int]] = []
    at = 0
    one_byte = (T.INTN, T.FLTN, T.BITN, 0x6A, 0x6C, 0x6E, 0x6F)
    while at < len(out):
        kind = out[at]
        at += 1
        if kind == 0x81:
            (count,) = struct.unpack_from("<H", out, at)
            at += 2
            cols = []
            for _ in range(count):
                at += 6 if tds >= 0x72 else 4
                typ = out[at]
                at += 1
                if typ in (0x6A, 0x6C):
                    size = out[at]
                    at += 3
                elif typ in one_byte:
                    size = out[at]
                    at += 1
                else:
                    size = struct.unpack_from("<H", out, at)[0]
                    at += 2 + (5 if typ in (T.NVARCHAR, 0xA7) else 0)
                cols.append((typ, size))
                at += 1 + 2 * out[at]
            found.append((kind, cols))
        elif kind == 0xD1:
            for typ, _size in cols:
                if typ in one_byte:
                    at += 1 + out[at]
                else:
                    n = struct.unpack_from("<H", out, at)[0]
                    at += 2 + (0 if n == 0xFFFF else n)
            found.append((kind, None))
        elif kind in (0xFD, 0xFE, 0xFF):
            status = struct.unpack_from("<H", out, at)[0]
            at += 12 if tds >= 0x72 else 8
            found.append((kind, status))
        elif kind in (0xAA, 0xAB, 0xE3):
            (size,) = struct.unpack_from("<H", out, at)
            number = struct.unpack_from("<i", out, at + 2)[0] if kind != 0xE3 else None
            at += 2 + size
            found.append((kind, number))
        elif kind == 0x79:
            at += 4
            found.append((kind, None))
        else:
            raise AssertionError(f"unknown token {kind:#x} at {at - 1}")
    assert at == len(out)
    return found


def well_formed(out: bytes) -> list[tuple[int, object]]:
    """The reply's tokens, checked to end with one final DONE/DONEPROC (no MORE bit)."""
    found = tokens(out)
    dones = [(k, s) for k, s in found if k in (0xFD, 0xFE)]
    assert dones and not dones[-1][1] & T.DONE_MORE  # type: ignore[operator]
    assert all(s & T.DONE_MORE for _k, s in dones[:-1])  # type: ignore[operator]
    assert found[-1][0] in (0xFD, 0xFE)
    return found


# ------------------------------------------------------------------ 1. request budget


def test_500_executes_of_a_heavy_prepared_statement_share_one_budget(tmp_path):
    budget, per_statement = 5_000_000, 1_000_000
    factory, _ = make(tmp_path, max_request_steps=budget, max_statement_steps=per_statement)
    m, _ = logged_in(factory)
    send(m, T.RPC, rpc(11, int_param("", None, R.BY_REF), nvarchar_param("", "@lim int"),
                       nvarchar_param("", HEAVY)))
    call = rpc(12, int_param("", 1), int_param("", 10**9), headers=False)
    request = struct.pack("<IIHQI", 22, 18, 2, 0, 1) + b"\xff".join([call] * 500)
    assert len(request) < 20_000  # a few KB asking for 500 statements of 1 M steps each
    acts = send(m, T.RPC, request)
    spent = m.sql.meter.spent
    # without the shared budget: 500 x 1 M steps; with it: the budget and one statement's
    # parse charge and progress period past it at most
    assert spent <= budget + 100_000
    found = well_formed(text(acts))
    errors = [n for k, n in found if k == 0xAA]
    assert errors[-1] == 8645 and 1222 in errors  # each statement's own cap, then the budget
    assert len(errors) <= budget // per_statement + 1
    assert sum(1 for k, _ in found if k == 0xFE) == len(errors)  # a DONEPROC per call run
    assert len(emits(acts, "mssql.command")) <= budget // per_statement + 1
    # the next request has a whole budget again
    out = text(send(m, T.RPC, rpc(10, nvarchar_param("", "SELECT 1 AS a"))))
    assert 0xAA not in [k for k, _ in well_formed(out)]


def test_a_batch_of_heavy_statements_stops_at_the_budget(tmp_path):
    factory, _ = make(tmp_path, max_request_steps=3_000_000, max_statement_steps=1_000_000)
    m, _ = logged_in(factory)
    heavy = HEAVY.replace("@lim", "1000000000")
    # 20 statements: their text costs ~0.3 M steps to split, each ~1 M to run
    acts = send(m, T.SQL_BATCH, batch(";".join([heavy] * 20) + ";SELECT 2"))
    assert m.sql.meter.spent <= 3_000_000 + 100_000
    found = well_formed(text(acts))
    errors = [n for k, n in found if k == 0xAA]
    assert errors[-1] == 8645 and len(errors) <= 4
    out = text(send(m, T.SQL_BATCH, batch("SELECT 2")))
    assert 0xAA not in [k for k, _ in well_formed(out)]


def test_parsing_counts_against_the_budget(tmp_path):
    # statements that cost nothing in SQLite still cost their parse: a budget of 1 M steps
    # takes fewer than 50 statements of ~1000 tokens
    factory, _ = make(tmp_path, max_request_steps=1_000_000)
    m, _ = logged_in(factory)
    stmt = "SELECT " + "+".join(["1"] * 500)
    found = well_formed(text(send(m, T.SQL_BATCH, batch(";".join([stmt] * 50)))))
    assert [n for k, n in found if k == 0xAA] == [8645]
    assert sum(1 for k, _ in found if k == 0xD1) < 5


# ------------------------------------------------------------------ 2. large TLS reads


def test_a_300_kib_batch_in_one_read_over_tls(tmp_path):
    m, _ = connect(tmp_path, L.ENCRYPT_ON)
    c = Client(m)
    c.handshake()
    assert b"\xad" in c.plain(c.send(T.LOGIN7, login7("sa", "pw")))
    sql = ";".join(f"SELECT N'{chr(97 + n) * 31_000}' AS a{n}" for n in range(5))
    c.obj.write(T.packets(T.SQL_BATCH, batch(sql), 4096))
    wire = c.out.read()
    assert len(wire) > 300 * 1024 > 4 * m.s.max_tls_buffer  # one read, as asyncio hands it
    acts = m.receive(wire, 0.0)
    assert emits(acts, "mssql.command")[0]["cmd"] == sql
    assert not emits(acts, "connection.limit")
    c.inc.write(b"".join(a.data for a in acts if isinstance(a, Send)))
    plain = bytearray()
    while True:
        try:
            plain += c.obj.read(1 << 20)
        except ssl.SSLWantReadError:
            break
    body = b"".join(plain[i + 8:i + struct.unpack_from(">H", plain, i + 2)[0]]
                    for i in _packet_starts(bytes(plain)))
    found = well_formed(body)
    assert [k for k, _ in found].count(0xD1) == 5 and 0xAA not in [k for k, _ in found]
    assert m.buffered() < m.s.max_tls_buffer


def test_an_oversized_record_still_closes(tmp_path):
    m, _ = connect(tmp_path, L.ENCRYPT_ON, max_tls_buffer=4096)
    c = Client(m)
    c.handshake()
    # a partial record is held by TLS itself, never past its record ceiling (16 KiB + 2 KiB)
    acts = m.receive(b"\x17\x03\x03\x40\x00" + bytes(3000), 0.0)
    assert acts == [] and m.buffered() < 4096
    m, _ = connect(tmp_path, L.ENCRYPT_ON, max_tls_buffer=4096)
    Client(m).handshake()
    acts = m.receive(b"\x17\x03\x03\xff\xff" + bytes(3000), 0.0)  # past the record ceiling
    assert emits(acts, "protocol.error") and isinstance(acts[-1], Close)


def _packet_starts(data: bytes) -> list[int]:
    starts, at = [], 0
    while at < len(data):
        starts.append(at)
        at += struct.unpack_from(">H", data, at + 2)[0]
    return starts


# ------------------------------------------------------------------ 3. RPC binding


def executesql(stmt: str, definition: str, *values: bytes) -> bytes:
    return rpc(10, nvarchar_param("", stmt), nvarchar_param("", definition), *values)


def test_a_go_line_in_a_bound_value_stays_in_the_value(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    value = "a\nGO\nb"
    out = text(send(m, T.RPC, executesql("SELECT @v AS v", "@v nvarchar(20)",
                                         nvarchar_param("@v", value))))
    found = well_formed(out)
    assert 0xAA not in [k for k, _ in found] and [k for k, _ in found].count(0xD1) == 1
    assert value.encode("utf-16-le") in out
    # nor is the statement text itself split at GO: SQL Server never does
    out = text(send(m, T.RPC, executesql("SELECT 1 AS a\nGO\nSELECT 2 AS b", "")))
    assert well_formed(out)[0][0] == 0xAA


def test_parameter_names_of_procedures_called_by_name_are_identifiers(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    for name in ("@c=1;SELECT 1--", "x", "@a b", "@"):
        acts = send(m, T.RPC, rpc("sp_who", nvarchar_param(name, "v")))
        out = text(acts)
        found = well_formed(out)
        assert [n for k, n in found if k == 0xAA] == [8145], name
        assert f"{name} is not a parameter for procedure sp_who.".encode("utf-16-le") in out
    out = text(send(m, T.RPC, rpc("sp_who", nvarchar_param("@loginame", "sa"))))
    assert 0xAA not in [k for k, _ in well_formed(out)]


def test_parameter_count_is_bounded_while_decoding(tmp_path):
    factory, _ = make(tmp_path, max_call_params=10)
    m, _ = logged_in(factory)
    null = rpc_param("", b"\x1f", b"")
    out = text(send(m, T.RPC, rpc("sp_who", *[null] * 11)))
    (error,) = [n for k, n in tokens(out) if k == 0xAA]
    assert error == 8003 and "The maximum is 10.".encode("utf-16-le") in out
    assert not text(send(m, T.RPC, rpc("sp_who", *[null] * 10))).startswith(b"\xaa")
    # the default is SQL Server's own ceiling
    assert make(tmp_path)[1].config.max_call_params == 2100 == R.MAX_PARAMS


def test_a_request_of_many_calls_is_decoded_a_call_at_a_time(tmp_path):
    factory, _ = make(tmp_path, max_batch_statements=3)
    m, _ = logged_in(factory)
    one = rpc("sp_who", *[rpc_param("", b"\x1f", b"")] * 50, headers=False)
    request = struct.pack("<IIHQI", 22, 18, 2, 0, 1) + b"\xff".join([one] * 2000)
    original = R.calls
    decoded = []

    def counting(data, max_params):
        for call in original(data, max_params):
            decoded.append(call)
            yield call

    import muscipula.protocols.mssql.machine as machine
    machine.rpc_calls = counting
    try:
        acts = send(m, T.RPC, request, size=32000)
    finally:
        machine.rpc_calls = original
    assert len(decoded) == 4  # the bound, and the one call that shows there are more
    found = well_formed(text(acts))
    assert [n for k, n in found if k == 0xAA] == [8623]


def test_bound_values_answer_with_their_declared_types(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    coll = T.COLLATION
    dt = struct.pack("<iI", 45000, 300 * 3600)  # 2023-03-17 01:00:00
    out = text(send(m, T.RPC, executesql(
        "SELECT @b AS b, @d AS d, @m AS m, @t AS t, @v AS v, @n AS n, @x AS x, @i + 1 AS i",
        "@b bigint, @d decimal(10, 2), @m money, @t datetime, @v varchar(20), "
        "@n nvarchar(20) OUTPUT, @x varbinary(16), @i int",
        int_param("@b", 7),  # sent as a 4-byte int: still a bigint column
        rpc_param("@d", b"\x6a\x11\x0a\x02", b"\x05\x01" + struct.pack("<I", 12345)),
        rpc_param("@m", b"\x6e\x08", b"\x08" + struct.pack("<iI", 0, 25000)),
        rpc_param("@t", b"\x6f\x08", b"\x08" + dt),
        rpc_param("@v", b"\xa7" + struct.pack("<H", 20) + coll, struct.pack("<H", 3) + b"abc"),
        nvarchar_param("@n", "x"),
        rpc_param("@x", b"\xa5" + struct.pack("<H", 16), struct.pack("<H", 2) + b"\x00\x01"),
        int_param("@i", 41))))
    found = well_formed(out)
    cols = next(c for k, c in found if k == 0x81)
    assert cols == [(T.INTN, 8), (T.DECIMALN, 9), (T.MONEYN, 8), (T.DATETIMN, 8),
                    (T.BIGVARCHAR, 20), (T.NVARCHAR, 40), (T.BIGVARBINARY, 16), (T.INTN, 4)]
    row = out[out.index(b"\xd1") + 1:]
    assert row.startswith(b"\x08" + struct.pack("<q", 7)  # bigint
                          + b"\x09\x01" + struct.pack("<Q", 12345)  # 123.45, decimal(10,2)
                          + b"\x08" + struct.pack("<iI", 0, 25000)  # 2.5000 as money
                          + b"\x08" + dt  # the same instant back
                          + struct.pack("<H", 3) + b"abc"  # varchar: one byte a character
                          + struct.pack("<H", 2) + "x".encode("utf-16-le")
                          + struct.pack("<H", 2) + b"\x00\x01"
                          + b"\x04" + struct.pack("<i", 42))  # an expression: as computed


def test_declared_types_parse():
    from muscipula.protocols.mssql.declared import column_spec, declarations

    assert declarations("@a int, @b decimal(10, 2) OUTPUT,@c nvarchar(max) = N'x'") == [
        ("@a", "int"), ("@b", "decimal(10, 2)"), ("@c", "nvarchar(max)")]
    assert column_spec("numeric(38,4)") == (T.DECIMALN, 17, 38, 4)
    assert column_spec("sys.bigint") == (T.INTN, 8, 0, 0)
    assert column_spec("varchar(max)") == (T.BIGVARCHAR, 8000, 0, 0)
    assert column_spec("decimal(50, 2)") is None and column_spec("geography") is None
    # a value the declared type cannot hold goes as NULL, never raises
    assert T.value(T.Column("d", T.DECIMALN, 5, 3, 0), "12345") == b"\x00"
    assert T.value(T.Column("t", T.DATETIMN, 8), "not a date") == b"\x00"
    assert T.value(T.Column("i", T.INTN, 4), 2**40) == b"\x00"
