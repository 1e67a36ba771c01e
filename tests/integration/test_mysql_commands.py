"""MySQL COM_CHANGE_USER, cursors and column types, driven by real clients."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import mysql.connector
import pymysql
import pytest
from mysql.connector.constants import ServerFlag

from tests.conftest import only

USERS = {"first": "pw-one", "second": "pw-two"}


def test_change_user_cursor_fetch_and_types(honeypot_factory):
    hp = honeypot_factory(only({"mysql": {"login": {"mode": "list", "users": USERS}}},
                               persona={"preset": "debian-12"}))
    port = hp.port(3306)

    # COM_CHANGE_USER: over TLS with caching_sha2 (full auth), then with an auth switch
    for plugin, ssl_off in (("caching_sha2_password", False), ("mysql_native_password", True)):
        c = mysql.connector.connect(host="127.0.0.1", port=port, user="first",
                                    password="pw-one", auth_plugin=plugin,
                                    ssl_disabled=ssl_off)
        c.cmd_change_user("second", "pw-two", database="shop")
        cur = c.cursor()
        cur.execute("SELECT CURRENT_USER(), DATABASE()")
        assert cur.fetchone() == ("second@%", "shop")
        with pytest.raises(mysql.connector.errors.ProgrammingError) as exc:
            c.cmd_change_user("second", "wrong")
        assert exc.value.errno == 1045
        cur.execute("SELECT CURRENT_USER()")  # still connected, as the old user
        assert cur.fetchone() == ("second@%",)
        c.close()

    # a read-only cursor: execute sends metadata only, COM_STMT_FETCH hands out rows
    c = mysql.connector.connect(host="127.0.0.1", port=port, user="first", password="pw-one")
    stmt = c.cmd_stmt_prepare(b"SELECT id, sku, price FROM shop.products WHERE id > ?")
    count, columns, eof = c.cmd_stmt_execute(stmt["statement_id"], data=(0,),
                                             parameters=stmt["parameters"], flags=1)
    assert count == 3 and eof["status_flag"] & ServerFlag.STATUS_CURSOR_EXISTS
    c.cmd_stmt_fetch(stmt["statement_id"], 2)
    got, eof = c.get_rows(binary=True, columns=columns)
    assert [r[0] for r in got] == [1, 2] and isinstance(got[0][2], Decimal)
    assert eof["status_flag"] & ServerFlag.STATUS_CURSOR_EXISTS
    c.cmd_stmt_fetch(stmt["statement_id"], 10)
    got, eof = c.get_rows(binary=True, columns=columns)
    assert [r[0] for r in got] == [3, 4, 5]
    assert eof["status_flag"] & ServerFlag.STATUS_LAST_ROW_SENT
    with pytest.raises(mysql.connector.errors.DatabaseError) as exc:
        c.cmd_stmt_fetch(stmt["statement_id"], 1)
        c.get_rows(binary=True, columns=columns)
    assert exc.value.errno == 1421

    # types in the binary protocol (prepared statements)
    pcur = c.cursor(prepared=True)
    pcur.execute("SELECT NOW(), 1.5, CAST(? AS DATE), CURTIME(), total, created_at "
                 "FROM shop.orders WHERE id = ?", ("2024-01-01", 1))
    now, dec, day, clock, total, created = pcur.fetchone()
    assert isinstance(now, dt.datetime) and abs(now - dt.datetime.now(dt.UTC).replace(
        tzinfo=None)) < dt.timedelta(minutes=5)
    assert dec == Decimal("1.5") and day == dt.date(2024, 1, 1)
    assert isinstance(clock, dt.timedelta) and isinstance(total, Decimal)
    assert isinstance(created, dt.datetime)
    c.close()

    # and in the text protocol, as pymysql decodes them
    p = pymysql.connect(host="127.0.0.1", port=port, user="second", password="pw-two",
                        database="wordpress", ssl_disabled=True)
    with p.cursor() as cur:
        cur.execute("SELECT NOW(), 1.5, CAST('2024-01-01' AS DATE), "
                    "CAST('2024-01-02 03:04:05' AS DATETIME), CAST(2.5 AS DECIMAL(6,2))")
        now, dec, day, stamp, money = cur.fetchone()
        assert isinstance(now, dt.datetime) and dec == Decimal("1.5")
        assert day == dt.date(2024, 1, 1) and stamp == dt.datetime(2024, 1, 2, 3, 4, 5)
        assert money == Decimal("2.50")
        cur.execute("SELECT user_registered, user_login FROM wp_users WHERE ID = 1")
        registered, login = cur.fetchone()
        assert isinstance(registered, dt.datetime) and login == "admin"
        cur.execute("CREATE TABLE files (id int, body blob)")
        cur.execute("INSERT INTO files VALUES (1, %s)", (b"\x00\xffbin",))
        cur.execute("SELECT body FROM files")
        assert cur.fetchone() == (b"\x00\xffbin",)
        assert cur.description[0][1] == pymysql.constants.FIELD_TYPE.BLOB
    p.close()
    assert hp.stop() == 0

    logins = hp.rows("SELECT login_username, login_password FROM logins ORDER BY login")
    assert logins.count(("second", "pw-two")) == 3 and ("second", "wrong") in logins
    changes = hp.rows("SELECT a.mysql_command_arg_data FROM mysql_commands c JOIN "
                      "mysql_command_args a ON a.mysql_command = c.mysql_command "
                      "WHERE c.mysql_command_cmd = 17 AND a.mysql_command_arg_index = 0")
    assert changes == [("second",)] * 4
    fetches = hp.rows("SELECT count(*) FROM mysql_commands WHERE mysql_command_cmd = 28")
    assert fetches == [(3,)]
    lines = hp.json_lines()
    changed = [x for x in lines if {"username": "second", "password": "pw-two"}
               in x.get("credentials", []) and {"username": "first", "password": "pw-one"}
               in x.get("credentials", [])]
    assert len(changed) == 2
