"""How TFTP incidents are recorded: logsql tables and the connection's JSON detail.

The reference logsql kept nothing for TFTP; these tables follow its naming style
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
    logsql.insert(cur, "tftp_requests", connection=conn, tftp_request_opcode=f.get("opcode"),
                  tftp_request_filename=logsql.text(f.get("filename")),
                  tftp_request_mode=logsql.text(f.get("mode")),
                  tftp_request_options=json.dumps(f.get("options") or {}),
                  tftp_request_error_code=f.get("error_code"),
                  tftp_request_error_text=f.get("error_text"))


#: tftp.transfer fields kept as they are, each in its `tftp_transfer_<field>` column
_TRANSFER_AS_IS = ("direction", "mode", "status", "bytes", "blocks", "blksize", "windowsize",
                   "tsize", "retransmits", "duration", "url")


@logsql.writer("tftp.transfer")
def _transfer(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    logsql.insert(cur, "tftp_transfers", connection=conn,
                  tftp_transfer_filename=logsql.text(f.get("filename")),
                  **{f"tftp_transfer_{k}": f.get(k) for k in _TRANSFER_AS_IS})


def _plain(fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


jsonlog.collect("tftp.request", ("tftp", "requests"), _plain)
jsonlog.collect("tftp.transfer", ("tftp", "transfers"), _plain)
