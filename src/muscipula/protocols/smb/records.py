"""How SMB incidents are recorded: smb_commands, dcerpcbinds and dcerpcrequests rows, and the
connection's JSON `smb` and `dcerpc` objects.

Loaded by the sink process without the rest of the package (sinks/records.py):
only the standard library, incidents and sinks here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from muscipula.sinks import jsonlog, logsql

logsql.table("""
CREATE TABLE IF NOT EXISTS smb_commands (
    smb_command INTEGER PRIMARY KEY, connection INTEGER, smb_command_dialect TEXT,
    smb_command_name TEXT, smb_command_status TEXT, smb_command_detail TEXT);
CREATE INDEX IF NOT EXISTS smb_commands_connection_idx ON smb_commands (connection);
CREATE INDEX IF NOT EXISTS smb_commands_name_idx ON smb_commands (smb_command_name);
""")


@logsql.rows("smb.command", "smb_commands", (
    "smb_command_dialect", "smb_command_name", "smb_command_status", "smb_command_detail"))
def _command(f: Mapping[str, Any]) -> tuple[Any, ...]:
    detail = f.get("detail")
    return (logsql.text(f.get("dialect")), logsql.text(f.get("command")),
            logsql.text(f.get("status")), logsql.as_json(detail) if detail else None)


def _json_command(f: Mapping[str, Any]) -> dict[str, Any]:
    item = {"dialect": f.get("dialect"), "command": f.get("command"), "status": f.get("status")}
    detail = f.get("detail")
    if isinstance(detail, Mapping) and detail:
        item["detail"] = dict(detail)
    return item


jsonlog.collect("smb.command", ("smb", "commands"), _json_command)


@logsql.rows("smb.dcerpc.bind", "dcerpcbinds", ("dcerpcbind_uuid", "dcerpcbind_transfersyntax"))
def _bind(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (logsql.text(f.get("uuid")), logsql.text(f.get("transfersyntax")))


@logsql.rows("smb.dcerpc.request", "dcerpcrequests", ("dcerpcrequest_uuid",
                                                      "dcerpcrequest_opnum"))
def _request(f: Mapping[str, Any]) -> tuple[Any, ...]:
    opnum = f.get("opnum")
    return (logsql.text(f.get("uuid")), opnum if isinstance(opnum, int) else None)


def _json_bind(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"uuid": f.get("uuid"), "transfersyntax": f.get("transfersyntax")}


def _json_request(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"uuid": f.get("uuid"), "opnum": f.get("opnum"), "interface": f.get("interface"),
            "operation": f.get("operation")}


jsonlog.collect("smb.dcerpc.bind", ("dcerpc", "binds"), _json_bind)
jsonlog.collect("smb.dcerpc.request", ("dcerpc", "requests"), _json_request)


logsql.table("""
CREATE TABLE IF NOT EXISTS smb_exploits (
    smb_exploit INTEGER PRIMARY KEY, connection INTEGER, smb_exploit_kind TEXT,
    smb_exploit_stage TEXT, smb_exploit_size INTEGER, smb_exploit_detail TEXT,
    smb_exploit_data BLOB);
CREATE INDEX IF NOT EXISTS smb_exploits_connection_idx ON smb_exploits (connection);
""")
_EXPLOIT_COLUMNS = ("smb_exploit_kind", "smb_exploit_stage", "smb_exploit_size",
                    "smb_exploit_detail", "smb_exploit_data")


def _size(f: Mapping[str, Any]) -> int | None:
    size = f.get("size")
    return size if isinstance(size, int) else None


@logsql.rows("smb.ms17_010", "smb_exploits", _EXPLOIT_COLUMNS)
def _ms17_010(f: Mapping[str, Any]) -> tuple[Any, ...]:
    data = f.get("data")
    command = f.get("command")
    return ("ms17-010", logsql.text(f.get("stage")), _size(f),
            logsql.as_json({"command": command}) if command else None,
            data if isinstance(data, bytes) and data else None)


@logsql.rows("smb.doublepulsar", "smb_exploits", _EXPLOIT_COLUMNS)
def _doublepulsar(f: Mapping[str, Any]) -> tuple[Any, ...]:
    detail = f.get("detail")
    extra = {"key": f.get("key"), **(dict(detail) if isinstance(detail, Mapping) else {})}
    return ("doublepulsar", logsql.text(f.get("op")), _size(f), logsql.as_json(extra), None)


def _json_ms17_010(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "ms17-010", "stage": f.get("stage"), "size": f.get("size")}


def _json_doublepulsar(f: Mapping[str, Any]) -> dict[str, Any]:
    item = {"kind": "doublepulsar", "stage": f.get("op"), "size": f.get("size"),
            "key": f.get("key")}
    detail = f.get("detail")
    if isinstance(detail, Mapping) and detail:
        item["detail"] = dict(detail)
    return item


jsonlog.collect("smb.ms17_010", ("smb", "exploits"), _json_ms17_010)
jsonlog.collect("smb.doublepulsar", ("smb", "exploits"), _json_doublepulsar)
