"""How MySQL incidents are recorded: their names, logsql rows and JSON detail."""

from __future__ import annotations

import sqlite3
from typing import Any

from muscipula.incidents import Incident
from muscipula.sinks import jsonlog, logsql


@logsql.writer("mysql.command")
def _command(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    """dionaea's rows: one mysql_commands row, one mysql_command_args row per argument."""
    cur.execute("INSERT INTO mysql_commands (connection, mysql_command_cmd) VALUES (?,?)",
                (conn, int(inc.fields.get("cmd", 0))))
    command = cur.lastrowid
    args = inc.fields.get("args") or []
    cur.executemany("INSERT INTO mysql_command_args (mysql_command, mysql_command_arg_index, "
                    "mysql_command_arg_data) VALUES (?,?,?)",
                    [(command, i, logsql.text(a)) for i, a in enumerate(args)])


@jsonlog.detail("mysql.command")
def _json_command(obj: dict[str, Any], inc: Incident) -> None:
    f = inc.fields
    jsonlog.append(obj, ("mysql", "commands"),
                   {"cmd": f.get("cmd"), "args": list(f.get("args") or [])}, obj["_cap"])


@jsonlog.detail("mysql.udf")
def _json_udf(obj: dict[str, Any], inc: Incident) -> None:
    jsonlog.append(obj, ("mysql", "udfs"), dict(inc.fields), obj["_cap"])
