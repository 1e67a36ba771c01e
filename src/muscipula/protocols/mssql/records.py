"""How MSSQL incidents are recorded: the reference system's mssql_fingerprints and mssql_commands
rows, and the connection's JSON `mssql` object.

Loaded by the sink process without the rest of the package (sinks/records.py):
only the standard library, incidents and sinks here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from muscipula.sinks import jsonlog, logsql


@logsql.rows("mssql.fingerprint", "mssql_fingerprints", (
    "mssql_fingerprint_hostname", "mssql_fingerprint_appname", "mssql_fingerprint_cltintname"))
def _fingerprint(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (logsql.text(f.get("hostname")), logsql.text(f.get("appname")),
            logsql.text(f.get("cltintname")))


@logsql.rows("mssql.command", "mssql_commands", ("mssql_command_status", "mssql_command_cmd"))
def _command(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return logsql.text(f.get("status")), logsql.text(f.get("cmd"))


def _json_fingerprint(f: Mapping[str, Any]) -> dict[str, Any]:
    item = {"hostname": f.get("hostname"), "appname": f.get("appname"),
            "cltintname": f.get("cltintname")}
    extra = f.get("extra")
    if isinstance(extra, Mapping):
        item.update({k: v for k, v in extra.items() if k not in item})
    return item


def _json_command(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": f.get("status"), "cmd": f.get("cmd")}


jsonlog.collect("mssql.fingerprint", ("mssql", "fingerprints"), _json_fingerprint)
jsonlog.collect("mssql.command", ("mssql", "commands"), _json_command)
