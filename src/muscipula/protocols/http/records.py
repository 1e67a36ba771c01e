"""logsql tables and JSON detail for HTTP requests and exploit findings.

The reference logsql had no HTTP tables; these follow its conventions: one row per request in
`http_requests` keyed by `connection`, its headers in order in `http_headers`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from muscipula.incidents import Incident
from muscipula.sinks import jsonlog, logsql

logsql.table("""
CREATE TABLE IF NOT EXISTS http_requests (
    http_request INTEGER PRIMARY KEY,
    connection INTEGER,
    http_request_method TEXT,
    http_request_target TEXT,
    http_request_version TEXT,
    http_request_host TEXT,
    http_request_user_agent TEXT,
    http_request_status INTEGER,
    http_request_body_size INTEGER,
    http_request_body BLOB
);
CREATE INDEX IF NOT EXISTS http_requests_connection_idx ON http_requests (connection);
CREATE INDEX IF NOT EXISTS http_requests_target_idx ON http_requests (http_request_target);
CREATE TABLE IF NOT EXISTS http_headers (
    http_header INTEGER PRIMARY KEY,
    http_request INTEGER,
    connection INTEGER,
    http_header_index INTEGER,
    http_header_name TEXT,
    http_header_value TEXT
);
CREATE INDEX IF NOT EXISTS http_headers_request_idx ON http_headers (http_request);
CREATE INDEX IF NOT EXISTS http_headers_connection_idx ON http_headers (connection);
CREATE INDEX IF NOT EXISTS http_headers_name_idx ON http_headers (http_header_name);
CREATE TABLE IF NOT EXISTS http_exploits (
    http_exploit INTEGER PRIMARY KEY,
    connection INTEGER,
    http_exploit_kind TEXT,
    http_exploit_where TEXT,
    http_exploit_detail TEXT
);
CREATE INDEX IF NOT EXISTS http_exploits_connection_idx ON http_exploits (connection);
""")


@logsql.writer("http.request")
def _request(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    request = logsql.insert(
        cur, "http_requests", connection=conn, http_request_method=f["method"],
        http_request_target=f["target"], http_request_version=f["version"],
        http_request_host=f["host"], http_request_user_agent=f["user_agent"],
        http_request_status=f["status"], http_request_body_size=f["body_size"],
        http_request_body=bytes(f["body"]))
    logsql.insert_many(
        cur, "http_headers", ("http_request", "connection", "http_header_index",
                              "http_header_name", "http_header_value"),
        [(request, conn, i, name, value) for i, (name, value) in enumerate(f["headers"])])


@logsql.writer("http.exploit")
def _exploit(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    logsql.insert(cur, "http_exploits", connection=conn, http_exploit_kind=f["kind"],
                  http_exploit_where=f["where"], http_exploit_detail=f["detail"])


def _json_request(f: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": f["method"], "target": f["target"], "version": f["version"],
        "status": f["status"], "host": f["host"], "user_agent": f["user_agent"],
        "headers": [[k, v] for k, v in f["headers"]], "body_size": f["body_size"],
        "body": bytes(f["body"]).decode("utf-8", "backslashreplace"),
    }


def _json_exploit(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": f["kind"], "where": f["where"], "detail": f["detail"],
            "urls": list(f["urls"])}


jsonlog.collect("http.request", ("http", "requests"), _json_request)
jsonlog.collect("http.exploit", ("http", "exploits"), _json_exploit)
