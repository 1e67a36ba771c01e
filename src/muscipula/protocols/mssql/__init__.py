"""MSSQL: TDS answering as the persona's SQL Server, batches run on SQLite."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from muscipula.config import PositiveInt, ServiceConfig, Strict
from muscipula.protocols.mssql import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.mssql import tds as T
from muscipula.protocols.mssql.login import encode_password
from muscipula.services import ServiceContext, ServiceSpec

if TYPE_CHECKING:
    from muscipula.services import MachineFactory


class Login(Strict):
    mode: Literal["accept", "list", "refuse_first"] = "accept"
    users: dict[str, str] = {}
    refuse_first: int = Field(default=2, ge=0, le=1000)


class MssqlConfig(ServiceConfig):
    tcp_ports: list[int] = [1433]
    login: Login = Login()
    #: the largest TDS packet taken (SQL Server's own ceiling is 32767)
    max_packet: PositiveInt = 32767
    #: the largest message reassembled from packets (a batch's text, a LOGIN7)
    max_message: PositiveInt = 4 * 1024 * 1024
    #: SQLite VM steps one statement may run (past it: error 1222)
    max_statement_steps: PositiveInt = 20_000_000
    #: SQL work one request may cost, shared by all its statements (a batch) or calls (an RPC
    #: request): SQLite VM steps plus parsing and binding counted in the same unit (~10 ns
    #: each), so ~1 s of CPU at most; past it the rest of the request gets error 8645
    max_request_steps: PositiveInt = 100_000_000
    max_rows: PositiveInt = 10_000
    #: result bytes one statement may answer with (rows past it are left out)
    max_result_bytes: PositiveInt = 1024 * 1024
    #: statements of one batch that are run; the rest get SQL Server's error 8623
    max_batch_statements: PositiveInt = 500
    #: the longest statement parsed (longer ones get error 8623, and are recorded whole)
    max_statement_chars: PositiveInt = 64 * 1024
    max_db_bytes: PositiveInt = 16 * 1024 * 1024
    #: unusable packets in a row (malformed RPC, bulk load) before we hang up
    max_protocol_errors: PositiveInt = 100
    #: prepared statements (sp_prepare/sp_prepexec handles) one session keeps; their text
    #: together is also held to max_message bytes (the oldest give way)
    max_prepared: PositiveInt = 1000
    #: parameters one RPC call may carry, counted while decoding (SQL Server's own: 2100)
    max_call_params: PositiveInt = 2100
    #: answer integrated (NTLM) logins with a CHALLENGE naming the host (Windows personas)
    ntlm: bool = True
    #: TLS as SQL Server offers it: "offered" (its self-signed fallback certificate, Force
    #: Encryption off: the default install), "forced" (Force Encryption on), "none" (no
    #: certificate: every PRELOGIN is answered ENCRYPT_NOT_SUP)
    encryption: Literal["offered", "forced", "none"] = "offered"
    #: raw TLS bytes one connection may hold (handshake being unwrapped, partial records)
    max_tls_buffer: PositiveInt = 64 * 1024
    #: a new fallback certificate at every start, as sqlservr makes one (False: keep the first)
    tls_cert_per_start: bool = True


def build(ctx: ServiceContext) -> MachineFactory:
    # the SQL engine (sqlglot) and the machine are imported only for an enabled service
    from muscipula.protocols.mssql.service import build as build_service

    return build_service(ctx)


def _b(text: str) -> bytes:
    return text.encode("utf-16-le")


def login7(user: str, password: str, tds: bytes = b"\x04\x00\x00\x74", app: str = "sqlcmd",
           host: str = "WS01", database: str = "", sspi: bytes = b"") -> bytes:
    """A LOGIN7 payload as a client builds it (tests and fuzz seeds)."""
    fields = [_b(host), _b(user), encode_password(password), _b(app), _b("srv"), b"",
              _b("ODBC"), b"", _b(database)]
    pos = 94
    table = bytearray()
    data = bytearray()
    for raw in fields:
        table += struct.pack("<HH", pos + len(data), len(raw) // 2)
        data += raw
    client_id = b"\0" * 6
    sspi_at = pos + len(data)
    data += sspi
    tail = struct.pack("<HH", sspi_at, len(sspi)) + struct.pack("<HHHH", 0, 0, 0, 0) + b"\0" * 4
    flags2 = 0x80 if sspi else 0x00
    fixed = (tds + struct.pack("<III", 4096, 7, 1234) + struct.pack("<I", 0)
             + bytes([0xE0, 0x03 | flags2, 0, 0]) + struct.pack("<iI", 0, 0x409))
    body = fixed + bytes(table) + client_id + tail + bytes(data)
    return struct.pack("<I", len(body) + 4) + body


def prelogin(options: int = 5, encryption: int = 2) -> bytes:
    opts = [(0, b"\x0f\x00\x07\xd0\x00\x00"), (1, bytes([encryption])), (2, b"\0"),
            (3, b"\x01\x02\x03\x04"), (4, b"\0")][:options]
    start = len(opts) * 5 + 1
    table, body = bytearray(), bytearray()
    for tok, val in opts:
        table += struct.pack(">BHH", tok, start + len(body), len(val))
        body += val
    return bytes(table) + b"\xff" + bytes(body)


def batch(sql: str, headers: bool = True) -> bytes:
    hdr = struct.pack("<IIHQI", 22, 18, 2, 0, 1) if headers else b""
    return hdr + sql.encode("utf-16-le")


def rpc_param(name: str, type_info: bytes, value: bytes, status: int = 0) -> bytes:
    """One RPC parameter: name, status flags, TYPE_INFO (type byte first) and value."""
    return bytes([len(name)]) + _b(name) + bytes([status]) + type_info + value


def nvarchar_param(name: str, text: str | None, status: int = 0) -> bytes:
    raw = b"" if text is None else _b(text)
    size = struct.pack("<H", 0xFFFF if text is None else len(raw))
    return rpc_param(name, b"\xe7" + struct.pack("<H", 8000) + T.COLLATION, size + raw, status)


def int_param(name: str, n: int | None, status: int = 0) -> bytes:
    value = b"\x00" if n is None else b"\x04" + struct.pack("<i", n)
    return rpc_param(name, b"\x26\x04", value, status)


def rpc_request(proc: str | int, *params: bytes, headers: bool = True, options: int = 0) -> bytes:
    """An RPC request of one call, by name or by well-known ProcID (tests and fuzz seeds)."""
    hdr = struct.pack("<IIHQI", 22, 18, 2, 0, 1) if headers else b""
    head = (struct.pack("<HH", 0xFFFF, proc) if isinstance(proc, int)
            else struct.pack("<H", len(proc)) + _b(proc))
    return hdr + head + struct.pack("<H", options) + b"".join(params)


def client_hello() -> bytes:
    """A bare TLS 1.2 ClientHello record (fuzz seeds: the handshake inside PRELOGIN)."""
    exts = (struct.pack(">HHHH", 10, 4, 2, 23)  # supported_groups: P-256
            + struct.pack(">HHBB", 11, 2, 1, 0)  # ec_point_formats: uncompressed
            + struct.pack(">HHHHH", 13, 6, 4, 0x0401, 0x0201))  # signature_algorithms
    body = (b"\x03\x03" + bytes(32) + b"\x00" + struct.pack(">HHHH", 6, 0xC02F, 0x002F, 0x00FF)
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


FUZZ_SEEDS = (
    T.packets(T.PRELOGIN, prelogin(), 4096) + T.packets(T.LOGIN7, login7("sa", "pw"), 4096)
    + T.packets(T.SQL_BATCH, batch("SELECT @@VERSION; SELECT name FROM sys.databases"), 4096),
    T.packets(T.PRELOGIN, prelogin(4, 0), 4096)
    + T.packets(T.LOGIN7, login7("sa", "", tds=b"\x00\x00\x00\x71"), 4096)
    + T.packets(T.SQL_BATCH, batch("exec sp_configure 'show advanced options',1;RECONFIGURE;"
                                   "exec sp_configure 'xp_cmdshell',1;RECONFIGURE;"
                                   "exec xp_cmdshell 'whoami'", False), 512),
    T.packets(T.LOGIN7, login7("u", "p"), 4096)
    + T.packets(T.SQL_BATCH, batch("CREATE TABLE t (a INT, b NVARCHAR(10));"
                                   "INSERT INTO t VALUES (1, N'x');SELECT * FROM t"), 64),
    T.packets(T.LOGIN7, login7("", "", sspi=b"NTLMSSP\0\x01\0\0\0" + b"\0" * 24), 4096),
    T.packets(T.PRELOGIN, prelogin(5, 1), 4096) + T.packets(T.PRELOGIN, client_hello(), 4096),
    T.packets(T.LOGIN7, login7("sa", "pw"), 4096)
    + T.packets(T.RPC, rpc_request(10, nvarchar_param("", "SELECT @P1 AS a"),
                                   nvarchar_param("", "@P1 int"), int_param("@P1", 7)), 4096)
    + T.packets(T.RPC, rpc_request(13, int_param("", None, 1),
                                   nvarchar_param("", "@a nvarchar(9)"),
                                   nvarchar_param("", "SELECT @a"), nvarchar_param("", "x'y"))
                + b"\xff" + rpc_request(12, int_param("", 1), nvarchar_param("", None),
                                        headers=False), 4096),
    T.packets(T.LOGIN7, login7("sa", "pw"), 4096)
    + T.packets(T.RPC, rpc_request("xp_cmdshell",
                                   nvarchar_param("@command_string", "whoami")), 4096),
)


def _max_buffer(cfg: MssqlConfig) -> int:
    # TDS framing, then TLS: wrapped handshake bytes and OpenSSL's input, and the
    # ClientHello kept for the record; prepared statements' text (at most a message's worth)
    return 2 * cfg.max_message + cfg.max_packet + 2 * cfg.max_tls_buffer + 16 * 1024 + 5


SERVICE = ServiceSpec("mssql", "mssqld", MssqlConfig, build,
                      "TDS answering as the persona's SQL Server, batches on SQLite",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
