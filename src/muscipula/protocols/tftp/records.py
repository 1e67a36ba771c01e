"""How TFTP incidents are recorded: logsql tables and the connection's JSON detail.

dionaea kept nothing for TFTP; these tables follow its naming style
(`<table>` singular key, `<table>_<column>` columns, `connection` = attack id).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from muscipula.incidents import Incident
from muscipula.sinks import jsonlog, logsql

logsql.table("""
CREATE TABLE IF NOT EXISTS tftp_requests (
    tftp_request INTEGER PRIMARY KEY,
    connection INTEGER,
    tftp_request_opcode TEXT,
    tftp_request_filename TEXT,
    tftp_request_mode TEXT,
    tftp_request_options TEXT,
    tftp_request_error_code INTEGER,
    tftp_request_error_text TEXT
);
CREATE INDEX IF NOT EXISTS tftp_requests_connection_idx ON tftp_requests (connection);
CREATE TABLE IF NOT EXISTS tftp_transfers (
    tftp_transfer INTEGER PRIMARY KEY,
    connection INTEGER,
    tftp_transfer_direction TEXT,
    tftp_transfer_filename TEXT,
    tftp_transfer_mode TEXT,
    tftp_transfer_status TEXT,
    tftp_transfer_bytes INTEGER,
    tftp_transfer_blocks INTEGER,
    tftp_transfer_blksize INTEGER,
    tftp_transfer_windowsize INTEGER,
    tftp_transfer_tsize INTEGER,
    tftp_transfer_retransmits INTEGER,
    tftp_transfer_duration REAL,
    tftp_transfer_url TEXT
);
CREATE INDEX IF NOT EXISTS tftp_transfers_connection_idx ON tftp_transfers (connection);
""")


@logsql.writer("tftp.request")
def _request(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    cur.execute(
        "INSERT INTO tftp_requests (connection, tftp_request_opcode, tftp_request_filename, "
        "tftp_request_mode, tftp_request_options, tftp_request_error_code, "
        "tftp_request_error_text) VALUES (?,?,?,?,?,?,?)",
        (conn, f.get("opcode"), logsql.text(f.get("filename")), logsql.text(f.get("mode")),
         json.dumps(f.get("options") or {}), f.get("error_code"), f.get("error_text")))


@logsql.writer("tftp.transfer")
def _transfer(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    cur.execute(
        "INSERT INTO tftp_transfers (connection, tftp_transfer_direction, "
        "tftp_transfer_filename, tftp_transfer_mode, tftp_transfer_status, "
        "tftp_transfer_bytes, tftp_transfer_blocks, tftp_transfer_blksize, "
        "tftp_transfer_windowsize, tftp_transfer_tsize, tftp_transfer_retransmits, "
        "tftp_transfer_duration, tftp_transfer_url) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (conn, f.get("direction"), logsql.text(f.get("filename")), f.get("mode"),
         f.get("status"), f.get("bytes"), f.get("blocks"), f.get("blksize"),
         f.get("windowsize"), f.get("tsize"), f.get("retransmits"), f.get("duration"),
         f.get("url")))


def _plain(fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@jsonlog.detail("tftp.request")
def _request_json(obj: dict[str, Any], inc: Incident) -> None:
    jsonlog.append(obj, ("tftp", "requests"), _plain(inc.fields), obj["_cap"])


@jsonlog.detail("tftp.transfer")
def _transfer_json(obj: dict[str, Any], inc: Incident) -> None:
    jsonlog.append(obj, ("tftp", "transfers"), _plain(inc.fields), obj["_cap"])
