"""logsql tables and JSON detail for HTTP requests and exploit findings.

The reference logsql had no HTTP tables; these follow its conventions: one row per request in
`http_requests` keyed by `connection`, its headers in order in `http_headers`.

`http_headers` is a view over each request's headers, kept as one JSON column of its
request: a flood writes one row per request instead of six (a row with its indexes
costs the sink about a microsecond), and every header row is still there to query.
`http_header` is `http_request * 65536 + http_header_index`.

Imported by the sink process without the rest of the package (sinks/records.py):
only the standard library, incidents and sinks here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    http_request_body BLOB,
    http_request_headers TEXT
);
CREATE INDEX IF NOT EXISTS http_requests_connection_idx ON http_requests (connection);
CREATE INDEX IF NOT EXISTS http_requests_target_idx ON http_requests (http_request_target);
CREATE VIEW IF NOT EXISTS http_headers AS
    SELECT r.http_request * 65536 + h.key AS http_header, r.http_request AS http_request,
           r.connection AS connection, h.key AS http_header_index,
           json_extract(h.value, '$[0]') AS http_header_name,
           json_extract(h.value, '$[1]') AS http_header_value
    FROM http_requests AS r, json_each(r.http_request_headers) AS h;
CREATE TABLE IF NOT EXISTS http_exploits (
    http_exploit INTEGER PRIMARY KEY,
    connection INTEGER,
    http_exploit_kind TEXT,
    http_exploit_where TEXT,
    http_exploit_detail TEXT
);
CREATE INDEX IF NOT EXISTS http_exploits_connection_idx ON http_exploits (connection);
""")

_dumps = jsonlog.encode


@logsql.rows("http.request", "http_requests", (
    "http_request_method", "http_request_target", "http_request_version", "http_request_host",
    "http_request_user_agent", "http_request_status", "http_request_body_size",
    "http_request_body", "http_request_headers"))
def _request(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (f["method"], f["target"], f["version"], f["host"], f["user_agent"], f["status"],
            f["body_size"], bytes(f["body"]), _dumps(f["headers"]))


@logsql.rows("http.exploit", "http_exploits",
             ("http_exploit_kind", "http_exploit_where", "http_exploit_detail"))
def _exploit(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return f["kind"], f["where"], f["detail"]


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
