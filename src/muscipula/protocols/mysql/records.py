"""How MySQL incidents are recorded: their names, logsql rows and JSON detail."""

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
