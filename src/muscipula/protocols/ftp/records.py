"""How FTP incidents are kept: an ftp_commands table and the log_json-compatible `ftp.commands`.

dionaea raised ftp.command for every line but logsql kept none of them; the
table follows its naming style (`connection` = attack id). Logins go to the
core `logins` table and uploads to `offers`/`downloads` through core writers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from muscipula.incidents import Incident
from muscipula.sinks import jsonlog, logsql

logsql.table("""
CREATE TABLE IF NOT EXISTS ftp_commands (
    ftp_command INTEGER PRIMARY KEY,
    connection INTEGER,
    ftp_command_command TEXT,
    ftp_command_arguments TEXT
);
CREATE INDEX IF NOT EXISTS ftp_commands_connection_idx ON ftp_commands (connection);
CREATE INDEX IF NOT EXISTS ftp_commands_command_idx ON ftp_commands (ftp_command_command);
""")


@logsql.writer("ftp.command")
def _command(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    logsql.insert(cur, "ftp_commands", connection=conn,
                  ftp_command_command=logsql.text(f.get("command")),
                  ftp_command_arguments=json.dumps(list(f.get("arguments") or [])))


def _command_json(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"command": f.get("command"), "arguments": list(f.get("arguments") or [])}


jsonlog.collect("ftp.command", ("ftp", "commands"), _command_json)
jsonlog.collect("ftp.bounce", ("ftp", "bounces"))
