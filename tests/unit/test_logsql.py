"""logsql: dionaea's tables and seed rows, child links, WAL, and the seed query verbatim."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from muscipula.incidents import Connection, Incident
from muscipula.sinks import logsql
from muscipula.sinks.logsql import LogSql

DATA = Path(__file__).resolve().parent.parent / "data"

# dionaea's tables and the columns its queries use (reference §3)
TABLES: dict[str, set[str]] = {
    "connections": {"connection", "connection_type", "connection_transport",
                    "connection_protocol", "connection_timestamp", "connection_root",
                    "connection_parent", "local_host", "local_port", "remote_host",
                    "remote_hostname", "remote_port"},
    "dcerpcbinds": {"dcerpcbind", "connection", "dcerpcbind_uuid", "dcerpcbind_transfersyntax"},
    "dcerpcrequests": {"dcerpcrequest", "connection", "dcerpcrequest_uuid",
                       "dcerpcrequest_opnum"},
    "dcerpcservices": {"dcerpcservice", "dcerpcservice_uuid", "dcerpcservice_name"},
    "dcerpcserviceops": {"dcerpcserviceop", "dcerpcservice", "dcerpcserviceop_opnum",
                         "dcerpcserviceop_name", "dcerpcserviceop_vuln"},
    "emu_profiles": {"emu_profile", "connection", "emu_profile_json"},
    "emu_services": {"emu_serivce", "connection", "emu_service_url"},
    "offers": {"offer", "connection", "offer_url"},
    "downloads": {"download", "connection", "download_url", "download_md5_hash"},
    "resolves": {"resolve", "connection", "resolve_hostname", "resolve_type", "resolve_result"},
    "p0fs": {"p0f", "connection", "p0f_genre", "p0f_link", "p0f_detail", "p0f_uptime",
             "p0f_tos", "p0f_dist", "p0f_nat", "p0f_fw"},
    "logins": {"login", "connection", "login_username", "login_password"},
    "mssql_fingerprints": {"mssql_fingerprint", "connection", "mssql_fingerprint_hostname",
                           "mssql_fingerprint_appname", "mssql_fingerprint_cltintname"},
    "mssql_commands": {"mssql_command", "connection", "mssql_command_status",
                       "mssql_command_cmd"},
    "virustotals": {"virustotal", "virustotal_md5_hash", "virustotal_timestamp",
                    "virustotal_permalink"},
    "virustotalscans": {"virustotalscan", "virustotal", "virustotalscan_scanner",
                        "virustotalscan_result"},
    "mysql_commands": {"mysql_command", "connection", "mysql_command_cmd"},
    "mysql_command_args": {"mysql_command_arg", "mysql_command", "mysql_command_arg_index",
                           "mysql_command_arg_data"},
    "mysql_command_ops": {"mysql_command_op", "mysql_command_cmd", "mysql_command_op_name"},
    "sip_commands": {"sip_command", "connection", "sip_command_method", "sip_command_call_id",
                     "sip_command_user_agent", "sip_command_allow"},
    "sip_addrs": {"sip_addr", "sip_command", "sip_addr_type", "sip_addr_display_name",
                  "sip_addr_uri_scheme", "sip_addr_uri_user", "sip_addr_uri_password",
                  "sip_addr_uri_host", "sip_addr_uri_port"},
    "sip_vias": {"sip_via", "sip_command", "sip_via_protocol", "sip_via_address",
                 "sip_via_port"},
    "sip_sdp_origins": {"sip_sdp_origin", "sip_command", "sip_sdp_origin_username"},
    "sip_sdp_connectiondatas": {"sip_sdp_connectiondata", "sip_command",
                                "sip_sdp_connectiondata_connection_address"},
    "sip_sdp_medias": {"sip_sdp_media", "sip_command", "sip_sdp_media_media",
                       "sip_sdp_media_port", "sip_sdp_media_proto"},
    "mqtt_fingerprints": {"mqtt_fingerprint", "connection", "mqtt_fingerprint_clientid"},
    "mqtt_publish_commands": {"mqtt_publish_command", "connection",
                              "mqtt_publish_command_topic"},
    "mqtt_subscribe_commands": {"mqtt_subscribe_command", "connection",
                                "mqtt_subscribe_command_topic"},
}

SRVSVC = "4b324fc8-1670-01d3-1278-5a47bf6ee188"
DCOM = "4d9f4ab8-7d1c-11cf-861e-0020af6e7c57"
UNKNOWN_IF = "00000000-1111-2222-3333-444444444444"


def conn(cid: int, parent: Connection | None = None, kind: str = "accept",
         transport: str = "tcp", remote: str = "10.0.0.9") -> Connection:
    return Connection(cid, transport, "smbd", kind, "192.0.2.1", 445, remote, 40000 + cid,
                      parent=parent.id if parent else None, root=parent.root if parent else 0,
                      start=1_700_000_000.0 + cid)


def run_sink(path: Path, batches: list[list[Incident]]) -> LogSql:
    async def main() -> LogSql:
        sink = LogSql(path)
        await sink.open()
        for batch in batches:
            await sink.write(batch)
        await sink.close()
        return sink

    return asyncio.run(main())


def open_db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def test_every_dionaea_table_is_created_with_its_columns(tmp_path):
    db_path = tmp_path / "logsql.sqlite"
    run_sink(db_path, [])
    db = open_db(db_path)
    for table, columns in TABLES.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        assert have, f"table {table} missing"
        assert columns <= have, f"{table} lacks {columns - have}"
    trigger = db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall()
    assert ("connections_INSERT_update_connection_root_trg",) in trigger


def test_seed_rows_and_wal(tmp_path):
    db_path = tmp_path / "logsql.sqlite"
    run_sink(db_path, [])
    run_sink(db_path, [])  # a restart does not duplicate the seed
    db = open_db(db_path)
    count = lambda t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: E731
    assert count("dcerpcservices") == 47
    assert count("dcerpcserviceops") == 54
    assert count("mysql_command_ops") == 29
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute(
        "SELECT dcerpcserviceop_name, dcerpcserviceop_vuln FROM dcerpcserviceops JOIN "
        "dcerpcservices USING (dcerpcservice) WHERE dcerpcservice_name='SRVSVC' AND "
        "dcerpcserviceop_opnum=31").fetchone() == ("NetPathCanonicalize", "MS08-67")
    ops = dict(db.execute("SELECT mysql_command_cmd, mysql_command_op_name "
                          "FROM mysql_command_ops").fetchall())
    assert ops[0] == "COM_SLEEP" and ops[3] == "COM_QUERY" and ops[0x1C] == "COM_STMT_FETCH"


def test_child_connections_carry_root_and_parent(tmp_path):
    db_path = tmp_path / "logsql.sqlite"
    parent = conn(1)
    child = conn(2, parent, kind="listen")
    grandchild = conn(3, child, kind="accept")
    other = conn(4)
    batch = [
        Incident("connection.tcp.accept", 1, 0, {"connection": parent}),
        Incident("connection.tcp.listen", 2, 0, {"connection": child}),
        Incident("connection.link", 2, 0, {"parent": 1, "child": 2}),
        Incident("connection.tcp.accept", 3, 0, {"connection": grandchild}),
        Incident("connection.tcp.accept", 4, 0, {"connection": other}),
        Incident("login", 3, 0, {"username": "sa", "password": b"\xffpw"}),
        Incident("connection.free", 3, 0, {"connection": grandchild}),
        Incident("connection.free", 2, 0, {"connection": child}),
        Incident("connection.free", 1, 0, {"connection": parent}),
    ]
    run_sink(db_path, [batch[:2], batch[2:]])
    db = open_db(db_path)
    rows = db.execute("SELECT connection, connection_type, connection_root, connection_parent, "
                      "remote_host, connection_timestamp FROM connections ORDER BY connection"
                      ).fetchall()
    (p, c, g, o) = rows
    assert p[2] == p[0] and p[3] is None  # a root is its own root
    assert c[1] == "listen" and c[2] == p[0] and c[3] == p[0]
    assert g[2] == p[0] and g[3] == c[0]
    assert o[2] == o[0] and o[3] is None
    assert p[4] == "10.0.0.9" and p[5] == 1_700_000_001.0
    assert db.execute("SELECT connection, login_username, login_password FROM logins"
                      ).fetchall() == [(g[0], "sa", "\\xffpw")]


def test_ipv4_mapped_peers_are_stored_plain(tmp_path):
    db_path = tmp_path / "logsql.sqlite"
    c = conn(1, remote="::ffff:198.51.100.7")
    run_sink(db_path, [[Incident("connection.tcp.accept", 1, 0, {"connection": c})]])
    assert open_db(db_path).execute("SELECT remote_host FROM connections").fetchone() == (
        "198.51.100.7",)


def test_a_bad_row_does_not_lose_the_batch(tmp_path, monkeypatch):
    def broken(cur, inc, cid):
        raise ValueError("bad field")

    monkeypatch.setitem(logsql.WRITERS, "test.broken", broken)
    db_path = tmp_path / "logsql.sqlite"
    c = conn(1)
    sink = run_sink(db_path, [[
        Incident("connection.tcp.accept", 1, 0, {"connection": c}),
        Incident("test.broken", 1, 0, {}),
        Incident("login", 1, 0, {"username": "u", "password": "p"}),
    ]])
    assert sink.bad_rows == 1
    assert open_db(db_path).execute("SELECT count(*) FROM logins").fetchone() == (1,)


def test_seed_query_runs_verbatim_on_rows_written_through_the_sink(tmp_path, monkeypatch):
    """Requests to a known interface whose opnum has no name, most frequent first."""

    def request(cur, inc, cid):
        cur.execute("INSERT INTO dcerpcrequests (connection, dcerpcrequest_uuid, "
                    "dcerpcrequest_opnum) VALUES (?,?,?)",
                    (cid, inc.fields["uuid"], inc.fields["opnum"]))

    name = "smb.dcerpc.request"
    monkeypatch.setitem(logsql.WRITERS, name, logsql.WRITERS.get(name, request))
    c = conn(1)
    reqs = ([(SRVSVC, 31)] * 3 + [(SRVSVC, 99)] * 2 + [(DCOM, 0)] * 4 + [(DCOM, 7)]
            + [(UNKNOWN_IF, 5)] * 6)
    batch = [Incident("connection.tcp.accept", 1, 0, {"connection": c})]
    batch += [Incident(name, 1, 0, {"uuid": u, "opnum": n}) for u, n in reqs]
    db_path = tmp_path / "logsql.sqlite"
    run_sink(db_path, [batch])
    query = (DATA / "seed-query.sql").read_text()
    rows = open_db(db_path).execute(query).fetchall()
    assert rows == [(2, SRVSVC, "SRVSVC", 99), (1, DCOM, "DCOM", 7)]


# the http tables as a release before http_headers became a view made them
OLD_HTTP_DDL = """
CREATE TABLE http_requests (http_request INTEGER PRIMARY KEY, connection INTEGER,
    http_request_method TEXT, http_request_target TEXT, http_request_version TEXT,
    http_request_host TEXT, http_request_user_agent TEXT, http_request_status INTEGER,
    http_request_body_size INTEGER, http_request_body BLOB);
CREATE INDEX http_requests_connection_idx ON http_requests (connection);
CREATE TABLE http_headers (http_header INTEGER PRIMARY KEY, http_request INTEGER,
    connection INTEGER, http_header_index INTEGER, http_header_name TEXT,
    http_header_value TEXT);
CREATE INDEX http_headers_request_idx ON http_headers (http_request);
CREATE INDEX http_headers_name_idx ON http_headers (http_header_name);
INSERT INTO http_requests VALUES (1, 1, 'GET', '/old', '1.1', 'h', 'ua', 200, 0, x'');
INSERT INTO http_headers VALUES (1, 1, 1, 0, 'Host', 'h');
"""


def test_an_old_http_headers_table_is_kept_aside_and_the_view_made(tmp_path):
    db_path = tmp_path / "logsql.sqlite"
    with sqlite3.connect(db_path) as db:
        db.executescript(OLD_HTTP_DDL)
    db.close()
    c = conn(1)
    request = {"method": "GET", "target": "/new", "version": "1.1", "host": "h",
               "user_agent": "x", "headers": [("Host", "h"), ("User-Agent", "x")],
               "status": 200, "body_size": 0, "body": b""}
    run_sink(db_path, [[Incident("connection.tcp.accept", 1, 0, {"connection": c}),
                        Incident("http.request", 1, 0, request)]])
    run_sink(db_path, [])  # opening it again changes nothing more
    db = open_db(db_path)
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name LIKE "
                            "'http_headers%' AND type IN ('table', 'view')").fetchall())
    assert kinds == {"http_headers": "view", "http_headers_old": "table"}
    assert db.execute("SELECT http_header_name, http_header_value FROM http_headers_old"
                      ).fetchall() == [("Host", "h")]
    (new,) = db.execute("SELECT http_request FROM http_requests WHERE "
                        "http_request_target = '/new'").fetchone()
    assert db.execute("SELECT http_header_index, http_header_name, http_header_value FROM "
                      "http_headers WHERE http_request = ? ORDER BY http_header_index",
                      (new,)).fetchall() == [(0, "Host", "h"), (1, "User-Agent", "x")]


def test_one_fields_object_under_two_names_makes_each_name_its_row(tmp_path, monkeypatch):
    """The session emits one dict as download.complete.hash and .unique."""
    monkeypatch.setitem(logsql.ROWS, "download.complete.unique", (
        "INSERT INTO offers (connection, offer_url) VALUES (?,?)",
        lambda f: ("unique:" + f["url"],)))
    c = conn(1)
    base = {"url": "http://x/a", "md5": "0" * 32, "sha256": "1" * 64, "size": 3}
    sink = run_sink(tmp_path / "logsql.sqlite", [[
        Incident("connection.tcp.accept", 1, 0, {"connection": c}),
        Incident("download.complete.hash", 1, 0, base),
        Incident("download.complete.unique", 1, 0, base),
    ]])
    db = open_db(tmp_path / "logsql.sqlite")
    assert sink.bad_rows == 0
    assert db.execute("SELECT download_url, download_md5_hash FROM downloads").fetchall() == [
        ("http://x/a", "0" * 32)]
    assert db.execute("SELECT offer_url FROM offers").fetchall() == [("unique:http://x/a",)]


def test_rows_of_a_connection_never_announced_are_counted_skipped(tmp_path):
    sink = run_sink(tmp_path / "logsql.sqlite", [[
        Incident("login", 5, 0, {"username": "u", "password": "p"}),
        Incident("login", 0, 0, {"username": "u", "password": "p"}),  # no connection: kept
    ]])
    assert sink.skipped == 1
    assert open_db(tmp_path / "logsql.sqlite").execute(
        "SELECT connection FROM logins").fetchall() == [(0,)]
