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


def test_compressed_ping_bomb_and_decimal_bounds_with_a_real_client(honeypot_factory):
    import zlib

    import pytest

    # the per-read bound on its own (the inflate ratio would refuse this packet at once)
    hp = honeypot_factory(only({"mysql": {"max_commands_per_read": 1000,
                                          "max_inflate_ratio": 1_000_000}},
                               persona={"preset": "debian-12"}))
    port = hp.port(3306)
    c = mysql.connector.connect(host="127.0.0.1", port=port, user="root", password="x",
                                compress=True, ssl_disabled=True)
    cur = c.cursor()
    with pytest.raises(mysql.connector.Error) as info:
        cur.execute("SELECT CAST(1 AS DECIMAL(65,31))")
    assert info.value.errno == 1425 and "Maximum is 30" in info.value.msg
    cur.execute("SELECT CAST(2 AS DECIMAL(65,30))")
    assert cur.fetchone()[0] == Decimal(2)
    # the logged-in client's socket carries one compressed packet of 200k COM_PINGs
    sock = c._socket.sock
    plain = b"\x01\x00\x00\x00\x0e" * 200_000
    body = zlib.compress(plain)
    sock.sendall(len(body).to_bytes(3, "little") + b"\x00" + len(plain).to_bytes(3, "little")
                 + body)
    sock.settimeout(10)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass  # a hang-up with data unread; a timeout would mean it never hung up
    # the pings that fit are answered, then an error, then the server hangs up
    plain_out = b""
    while got:
        size, inflated = int.from_bytes(got[:3], "little"), int.from_bytes(got[4:7], "little")
        body, got = got[7:7 + size], got[7 + size:]
        plain_out += zlib.decompress(body) if inflated else body
    replies = []
    while plain_out:
        n = int.from_bytes(plain_out[:3], "little")
        replies.append(plain_out[4:4 + n])
        plain_out = plain_out[4 + n:]
    assert len(replies) == 1001
    assert replies[-1][:3] == b"\xff" + (1157).to_bytes(2, "little")
    assert hp.stop() == 0
    (event,) = hp.rows("SELECT connection_event_detail, connection_event_data "
                       "FROM connection_events WHERE connection_event_kind = 'connection.limit'")
    assert event[0] == "max_commands_per_read"
    ((pings,),) = hp.rows("SELECT count(*) FROM mysql_commands WHERE mysql_command_cmd = 14")
    assert pings in (1000, 1001)  # those of the bomb that fit, and the connector's own
    (line,) = [j for j in hp.json_lines() if j.get("events")]
    assert {"kind": "connection.limit", "detail": "max_commands_per_read",
            "data": 1000} in line["events"], line["events"]
