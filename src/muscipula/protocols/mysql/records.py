"""How MySQL incidents are recorded: their names, logsql rows and JSON detail.

Loaded by the sink process without the rest of the package (sinks/records.py):
only the standard library, incidents and sinks here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from muscipula.incidents import Incident
from muscipula.sinks import jsonlog, logsql


@logsql.writer("mysql.command")
def _command(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    """logsql rows: one mysql_commands row, one mysql_command_args row per argument."""
    command = logsql.insert(cur, "mysql_commands", connection=conn,
                            mysql_command_cmd=int(inc.fields.get("cmd", 0)))
    args = inc.fields.get("args") or []
    logsql.insert_many(cur, "mysql_command_args",
                       ("mysql_command", "mysql_command_arg_index", "mysql_command_arg_data"),
                       [(command, i, logsql.text(a)) for i, a in enumerate(args)])


def _json_command(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"cmd": f.get("cmd"), "args": list(f.get("args") or [])}


jsonlog.collect("mysql.command", ("mysql", "commands"), _json_command)
jsonlog.collect("mysql.udf", ("mysql", "udfs"))


@jsonlog.detail("login", protocol="mysqld")
def _login(obj: dict[str, Any], inc: Incident) -> None:
    """The handshake behind a login (plugin, hash for cracking, client attributes), beside
    the connection's `credentials`."""
    f = inc.fields
    item: dict[str, Any] = {"username": f.get("username"), "success": f.get("success"),
                            "method": f.get("method")}
    extra = f.get("extra")
    if isinstance(extra, Mapping):
        item.update(extra)
    jsonlog.append(obj, ("mysql", "logins"), item, obj["_cap"])
