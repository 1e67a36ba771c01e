"""Sink fast paths and completeness: batched rows, shared fields, JSON fragments, new tables."""

from __future__ import annotations

import ast
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from muscipula.config import JsonSink
from muscipula.incidents import Connection, Incident
from muscipula.sinks import jsonlog, logsql
from muscipula.sinks.jsonlog import JsonLog
from muscipula.sinks.logsql import LogSql
from muscipula.sinks.records import load_all

load_all()
from muscipula.protocols.http import records as http_records  # noqa: E402

T0 = 1_700_000_000.0


def conn(cid: int, protocol: str = "httpd") -> Connection:
    return Connection(cid, "tcp", protocol, "accept", "192.0.2.1", 80, "203.0.113.5",
                      40000 + cid, start=T0)


def request(target: str = "/", headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    hs = headers if headers is not None else [("Host", "x"), ("User-Agent", "curl/8"),
                                              ("Accept", "*/*"), ("X-\u00e9", "v\u00ff")]
    return {"method": "GET", "target": target, "version": "HTTP/1.1", "host": "x",
            "user_agent": "curl/8", "headers": hs, "status": 200, "body_size": 3,
            "body": b"a\xffb"}


def free(c: Connection, reason: str = "closed") -> Incident:
    return Incident("connection.free", c.id, T0 + 1, {"connection": c, "reason": reason,
                                                      "bytes_in": 10, "bytes_out": 20,
                                                      "duration": 1.5})


def write_sql(path: Path, batches: list[list[Incident]], max_late: int = 50_000) -> LogSql:
    sink = LogSql(path, max_late)
    sink.open_sync()
    for batch in batches:
        sink.write_sync(batch)
    sink.close_sync()
    return sink


def write_json(path: Path, batches: list[list[Incident]], max_late: int = 50_000,
               **cfg: Any) -> list[dict[str, Any]]:
    sink = JsonLog(path, JsonSink(**cfg), max_late)
    sink.open_sync()
    for batch in batches:
        sink.write_sync(batch)
    sink.close_sync()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_load_without_the_protocols_machines_or_pydantic():
    code = ("import sys; from muscipula.sinks.records import load_all; import muscipula.sinks."
            "child; print(sorted(load_all())); print(sorted(m for m in sys.modules if "
            "m.startswith(('pydantic', 'muscipula.config', 'muscipula.services')) or "
            "m.endswith(('.machine', '.parser'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # every protocol with a records module; more are added as protocols come
    assert {"ftp", "http", "mysql", "tftp", "sip"} <= set(ast.literal_eval(out[0]))
    assert out[1] == "[]"


def test_shared_fields_make_one_row_per_request_with_headers_in_order(tmp_path):
    a, b = conn(1), conn(2)
    shared = request("/same")  # the server hands the same dict to identical requests
    batch = [Incident("connection.tcp.accept", 1, T0, {"connection": a}),
             Incident("connection.tcp.accept", 2, T0, {"connection": b})]
    batch += [Incident("http.request", 1 + i % 2, T0, shared) for i in range(6)]
    batch += [Incident("http.request", 1, T0, request("/other", [("Host", "y")])),
              free(a), free(b, "timeout")]
    write_sql(tmp_path / "db.sqlite", [batch])
    db = sqlite3.connect(tmp_path / "db.sqlite")
    rows = db.execute("SELECT connection, http_request_target, http_request_body FROM "
                      "http_requests ORDER BY http_request").fetchall()
    assert [r[:2] for r in rows] == [(1, "/same"), (2, "/same")] * 3 + [(1, "/other")]
    assert rows[0][2] == b"a\xffb"
    hdrs = db.execute("SELECT h.http_header_index, h.http_header_name, h.http_header_value "
                      "FROM http_headers h JOIN http_requests r USING (http_request) WHERE "
                      "r.http_request = 2 ORDER BY h.http_header_index").fetchall()
    assert hdrs == [(0, "Host", "x"), (1, "User-Agent", "curl/8"), (2, "Accept", "*/*"),
                    (3, "X-\u00e9", "v\u00ff")]
    assert db.execute("SELECT count(*), count(DISTINCT http_header) FROM http_headers"
                      ).fetchone() == (25, 25)
    assert db.execute("SELECT connection, connection_end_reason, connection_end_bytes_in, "
                      "connection_end_bytes_out, connection_end_duration FROM connection_ends "
                      "ORDER BY connection").fetchall() == [(1, "closed", 10, 20, 1.5),
                                                            (2, "timeout", 10, 20, 1.5)]


def test_a_repeated_request_for_an_unknown_connection_is_skipped_not_written(tmp_path):
    a = conn(1)
    shared = request("/flood")
    batch = [Incident("connection.tcp.accept", 1, T0, {"connection": a}),
             Incident("http.request", 1, T0, shared), Incident("http.request", 9, T0, shared),
             Incident("http.request", 1, T0, shared), free(a),
             Incident("http.request", 1, T0, shared)]  # after its end: still its connection's
    sink = write_sql(tmp_path / "db.sqlite", [batch])
    db = sqlite3.connect(tmp_path / "db.sqlite")
    assert db.execute("SELECT connection, http_request_target FROM http_requests").fetchall() \
        == [(1, "/flood")] * 3
    assert sink.skipped == 1


def done(url: str, md5: str) -> dict[str, Any]:
    return {"url": url, "md5": md5, "sha256": "0" * 64, "size": 3}


def test_what_comes_after_a_connections_end_is_written_with_it_within_max_late(tmp_path):
    a, b, c = conn(1), conn(2), conn(3)
    first = [Incident("connection.tcp.accept", i, T0, {"connection": x})
             for i, x in ((1, a), (2, b), (3, c))] + [free(a), free(b), free(c)]
    # a download finishing and an emulation's findings, after the end; max_late 2: the
    # oldest ended connection (1) is forgotten, its late row skipped and counted
    later = [Incident("download.complete.hash", n, T0, done(f"http://x/{n}", f"{n:032x}"))
             for n in (1, 2, 3)]
    later += [Incident("emu.profile", 3, T0, {"profile": [{"call": "WinExec"}]}),
              Incident("emu.service", 2, T0, {"url": "bindshell://4444"})]
    sink = write_sql(tmp_path / "db.sqlite", [first, later], max_late=2)
    db = sqlite3.connect(tmp_path / "db.sqlite")
    assert db.execute("SELECT connection, download_url FROM downloads ORDER BY 1").fetchall() \
        == [(2, "http://x/2"), (3, "http://x/3")]
    assert db.execute("SELECT connection, emu_profile_json FROM emu_profiles").fetchall() \
        == [(3, '[{"call":"WinExec"}]')]
    assert db.execute("SELECT connection, emu_service_url FROM emu_services").fetchall() \
        == [(2, "bindshell://4444")]
    assert sink.skipped == 1
    lines = write_json(tmp_path / "c.json", [first, later], max_late=2)
    late = [line for line in lines if line.get("after_end")]
    assert [(x["src_port"], x["downloads"][0]["url"]) for x in late if "downloads" in x] \
        == [(b.remote_port, "http://x/2"), (c.remote_port, "http://x/3")]


def test_connection_ids_continue_after_a_reopen_and_roots_point_home(tmp_path):
    path = tmp_path / "db.sqlite"
    write_sql(path, [[Incident("connection.tcp.accept", 1, T0, {"connection": conn(1)})]])
    parent = conn(5)
    child = Connection(6, "tcp", "ftpdata", "listen", "192.0.2.1", 2000, "203.0.113.5", 0,
                       parent=5, root=5, start=T0)
    write_sql(path, [[Incident("connection.tcp.accept", 5, T0, {"connection": parent}),
                      Incident("connection.tcp.listen", 6, T0, {"connection": child}),
                      Incident("login", 6, T0, {"username": "u", "password": "p"})]])
    db = sqlite3.connect(path)
    assert db.execute("SELECT connection, connection_root, connection_parent FROM connections "
                      "ORDER BY connection").fetchall() == [(1, 1, None), (2, 2, None),
                                                            (3, 2, 2)]
    assert db.execute("SELECT connection FROM logins").fetchall() == [(3,)]


def test_a_row_sqlite_cannot_take_does_not_lose_the_others(tmp_path):
    c = conn(1)
    bad = dict(request("/bad"), status=2**70)  # too large for an SQLite integer
    sink = write_sql(tmp_path / "db.sqlite", [[
        Incident("connection.tcp.accept", 1, T0, {"connection": c}),
        Incident("http.request", 1, T0, request("/a")), Incident("http.request", 1, T0, bad),
        Incident("http.request", 1, T0, {"method": "GET"}),  # fields missing: no row
        Incident("http.request", 1, T0, request("/b"))]])
    db = sqlite3.connect(tmp_path / "db.sqlite")
    assert db.execute("SELECT http_request_target FROM http_requests ORDER BY http_request"
                      ).fetchall() == [("/a",), ("/b",)]
    assert sink.bad_rows == 2


def test_rows_go_in_many_a_statement_in_order_and_a_bad_one_costs_only_itself(tmp_path):
    """A batch is cut into INSERTs of ROWS_PER_STATEMENT rows and a remainder."""
    per = logsql.ROWS_PER_STATEMENT
    n = 2 * per + 7
    c = conn(1)
    batch = [Incident("connection.tcp.accept", 1, T0, {"connection": c})]
    batch += [Incident("http.request", 1, T0, request(f"/{i}")) for i in range(n)]
    write_sql(tmp_path / "good.sqlite", [batch])
    db = sqlite3.connect(tmp_path / "good.sqlite")
    assert db.execute("SELECT http_request_target FROM http_requests ORDER BY http_request"
                      ).fetchall() == [(f"/{i}",) for i in range(n)]
    batch[per + 3] = Incident("http.request", 1, T0, dict(request("/bad"), status=2**70))
    sink = write_sql(tmp_path / "bad.sqlite", [batch])
    db = sqlite3.connect(tmp_path / "bad.sqlite")
    assert [r[0] for r in db.execute("SELECT http_request_target FROM http_requests "
                                      "ORDER BY http_request")] == \
        [f"/{i}" for i in range(n) if i != per + 2]
    assert sink.bad_rows == 1


def test_tls_hello_gets_its_row(tmp_path):
    c = conn(1)
    hello = {"sni": "www.example.com", "version": 771, "ciphers": [4865, 4866],
             "extensions": [0, 10, 11], "groups": [29, 23], "point_formats": [0],
             "alpn": ["h2", "http/1.1"], "ja3": "771,4865-4866,0-10-11,29-23,0",
             "ja3_hash": "0123456789abcdef0123456789abcdef"}
    write_sql(tmp_path / "db.sqlite", [[
        Incident("connection.tls.accept", 1, T0, {"connection": c}),
        Incident("connection.tls.hello", 1, T0, hello)]])
    row = sqlite3.connect(tmp_path / "db.sqlite").execute(
        "SELECT connection, tls_hello_sni, tls_hello_version, tls_hello_ciphers, "
        "tls_hello_extensions, tls_hello_groups, tls_hello_point_formats, tls_hello_alpn, "
        "tls_hello_ja3, tls_hello_ja3_hash FROM tls_hellos").fetchall()
    assert row == [(1, "www.example.com", 771, "[4865,4866]", "[0,10,11]", "[29,23]", "[0]",
                    '["h2","http/1.1"]', hello["ja3"], hello["ja3_hash"])]


def test_json_requests_match_their_shape_and_the_close_reason_is_kept(tmp_path):
    c = conn(1)
    shared = request("/same")
    batch = [Incident("connection.tcp.accept", 1, T0, {"connection": c})]
    batch += [Incident("http.request", 1, T0, shared) for _ in range(3)]
    batch += [Incident("http.request", 1, T0, request("/x\u2028\"y"))]
    (obj,) = write_json(tmp_path / "c.json", [batch, [free(c, "limit:requests")]])
    want = [http_records._json_request(shared)] * 3 + [
        http_records._json_request(request("/x\u2028\"y"))]
    assert obj["http"]["requests"] == want
    assert want[0]["body"] == "a\\xffb"
    assert obj["connection"]["close_reason"] == "limit:requests"
    assert not any(k.startswith("_") for k in obj) and "items_left_out" not in obj


def test_flat_data_still_flattens_collected_requests(tmp_path):
    c = conn(1)
    (obj,) = write_json(tmp_path / "c.json", [[
        Incident("connection.tcp.accept", 1, T0, {"connection": c}),
        Incident("http.request", 1, T0, request("/a")),
        Incident("http.request", 1, T0, request("/b")), free(c)]], flat_data=True)
    assert obj["http"]["requests"]["target"] == ["/a", "/b"]


def test_pending_json_is_bounded_and_what_was_left_out_is_counted(tmp_path):
    one = len(jsonlog.encode(http_records._json_request(request("/0"))))
    c = conn(1)
    sink = JsonLog(tmp_path / "c.json", JsonSink(max_pending_bytes=one * 3 + 1))
    sink.open_sync()
    sink.write_sync([Incident("connection.tcp.accept", 1, T0, {"connection": c})]
                    + [Incident("http.request", 1, T0, request(f"/{i}")) for i in range(5)])
    assert sink.pending_bytes == one * 3
    sink.write_sync([free(c)])
    assert sink.pending_bytes == 0
    sink.close_sync()
    (obj,) = [json.loads(x) for x in (tmp_path / "c.json").read_text().splitlines()]
    assert [r["target"] for r in obj["http"]["requests"]] == ["/0", "/1", "/2"]
    assert obj["items_left_out"] == 2


def test_mysql_login_handshake_goes_under_mysql(tmp_path):
    c = conn(1, "mysqld")
    extra = {"plugin": "caching_sha2_password", "client_plugin": "mysql_native_password",
             "database": "db", "attributes": {"_client_name": "pymysql"}, "tls": False,
             "capabilities": 12345, "hash": "$mysqlna$aa*bb"}
    (obj,) = write_json(tmp_path / "c.json", [[
        Incident("connection.tcp.accept", 1, T0, {"connection": c}),
        Incident("login", 1, T0, {"username": "root", "password": None, "success": False,
                                  "method": "caching_sha2_password", "extra": extra}),
        free(c)]])
    assert obj["credentials"] == [{"username": "root", "password": None}]
    (login,) = obj["mysql"]["logins"]
    assert login == {"username": "root", "success": False, "method": "caching_sha2_password",
                     **extra}
    # another protocol's login keeps only its credentials
    h = conn(2)
    (other,) = write_json(tmp_path / "d.json", [[
        Incident("connection.tcp.accept", 2, T0, {"connection": h}),
        Incident("login", 2, T0, {"username": "a", "password": "b", "extra": {"path": "/"}}),
        free(h)]])
    assert "mysql" not in other


def test_row_functions_are_registered_for_the_flood_incidents():
    assert {"http.request", "login", "connection.free", "connection.tls.hello"} <= set(
        logsql.ROWS)
    assert "http.request" in jsonlog.COLLECTORS


def test_a_database_from_an_older_release_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE connections (connection INTEGER PRIMARY KEY, connection_type TEXT);
        CREATE TABLE http_requests (http_request INTEGER PRIMARY KEY, connection INTEGER,
            http_request_method TEXT, http_request_target TEXT);
        INSERT INTO http_requests VALUES (1, 1, 'GET', '/old');
    """)
    old.close()
    c = conn(7)
    write_sql(path, [[Incident("connection.tcp.accept", 7, T0, {"connection": c}),
                      Incident("http.request", 7, T0, request("/new")), free(c)]])
    db = sqlite3.connect(path)
    rows = db.execute("SELECT http_request_target, http_request_headers FROM http_requests "
                      "ORDER BY http_request").fetchall()
    assert rows[0] == ("/old", None)
    assert rows[1][0] == "/new" and json.loads(rows[1][1])[0] == ["Host", "x"]
    assert "connection_transport" in {r[1] for r in db.execute("PRAGMA table_info(connections)")}


def test_errors_limits_and_refused_captures_are_recorded(tmp_path):
    c = conn(9)
    batch = [Incident("connection.tcp.accept", 9, T0, {"connection": c}),
             Incident("protocol.error", 9, T0, {"detail": "http bad_method", "data": b"\x16\x03"}),
             Incident("store.refused", 9, T0, {"url": "http-1", "reason": "quota", "size": 0}),
             Incident("connection.limit", 9, T0, {"limit": "idle_timeout", "value": 120.0}),
             free(c, "idle_timeout")]
    write_sql(tmp_path / "db.sqlite", [batch])
    db = sqlite3.connect(tmp_path / "db.sqlite")
    rows = db.execute("SELECT connection_event_kind, connection_event_detail, "
                      "connection_event_data FROM connection_events "
                      "ORDER BY connection_event").fetchall()
    assert rows == [("protocol.error", "http bad_method", b"\x16\x03"),
                    ("store.refused", "quota", '{"url":"http-1","size":0}'),
                    ("connection.limit", "idle_timeout", "120.0")]
    (line,) = write_json(tmp_path / "log.json", [batch])
    assert [e["kind"] for e in line["events"]] == ["protocol.error", "store.refused",
                                                    "connection.limit"]
    assert line["events"][0]["data"] == "\x16\x03"
    assert line["events"][2] == {"kind": "connection.limit", "detail": "idle_timeout",
                                 "data": 120.0}


def test_a_replayed_connection_that_went_tls_meanwhile_keeps_its_row(tmp_path):
    c = conn(3)
    path = tmp_path / "db.sqlite"
    write_sql(path, [[Incident("connection.tcp.accept", 3, T0, {"connection": c})]])
    c.transport = "tls"  # STARTTLS, then the sink process was restarted
    write_sql(path, [[Incident("connection.tls.accept", 3, T0, {"connection": c,
                                                                 "replayed": True}),
                      free(c)]])
    db = sqlite3.connect(path)
    assert db.execute("SELECT connection, connection_transport FROM connections").fetchall() \
        == [(1, "tcp")]
    assert db.execute("SELECT connection FROM connection_ends").fetchall() == [(1,)]


def test_a_connection_known_only_by_its_end_gets_its_row(tmp_path):
    c = conn(4)
    path = tmp_path / "db.sqlite"
    sink = write_sql(path, [[Incident("http.request", 4, T0, request()), free(c)]])
    db = sqlite3.connect(path)
    assert db.execute("SELECT connection, remote_port FROM connections").fetchall() \
        == [(1, c.remote_port)]
    assert db.execute("SELECT connection, connection_end_reason FROM connection_ends"
                      ).fetchall() == [(1, "closed")]
    assert sink.skipped == 1  # the request before it had no row to go to
