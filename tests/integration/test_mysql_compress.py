"""MySQL compressed protocol end to end: mariadb --compress and mysql-connector compress=True."""

from __future__ import annotations

import datetime as dt
import subprocess
from decimal import Decimal

import mysql.connector

from tests.conftest import only


def test_compressed_sessions_with_real_clients(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {}}, persona={"preset": "debian-12"}))
    port = hp.port(3306)

    # the mariadb CLI (libmariadb) negotiates zlib compression after the login
    big = "x" * 3000  # big enough that both directions really deflate
    out = subprocess.run(["mariadb", "--no-defaults", "--compress", "-h", "127.0.0.1", "-P",
                          str(port), "-u", "zipuser", "-pzippass", "--ssl=0", "-N", "-e",
                          f"select sku from shop.products where id = 2; select '{big}'; "
                          "select @@version_compile_os"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SKU-1014", big, "Linux"]

    c = mysql.connector.connect(host="127.0.0.1", port=port, user="zipconn",
                                password="zc-pass", compress=True, ssl_disabled=True)
    cur = c.cursor()
    cur.execute("SELECT NOW(), 1.5, %s", (big,))
    now, dec, echoed = cur.fetchone()
    assert isinstance(now, dt.datetime) and dec == Decimal("1.5") and echoed == big
    cur.execute("SELECT name FROM shop.products ORDER BY id")
    assert len(cur.fetchall()) == 5
    pcur = c.cursor(prepared=True)
    pcur.execute("SELECT price FROM shop.products WHERE id = ?", (1,))
    assert isinstance(pcur.fetchone()[0], Decimal)
    c.close()
    assert hp.stop() == 0

    logins = hp.rows("SELECT login_username, login_password FROM logins ORDER BY login")
    assert ("zipuser", "zippass") in logins and ("zipconn", "zc-pass") in logins
    queries = [r[0] for r in hp.rows(
        "SELECT a.mysql_command_arg_data FROM mysql_commands c JOIN mysql_command_args a "
        "ON a.mysql_command = c.mysql_command WHERE c.mysql_command_cmd = 3")]
    assert "select @@version_compile_os" in " ".join(queries)
    assert any(big in q for q in queries)
