"""MySQL: the real wire protocol, answering like the persona's MySQL, backed by SQLite."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from muscipula.config import Port, PositiveInt, ServiceConfig, Strict
from muscipula.incidents import register
from muscipula.protocols.mysql import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.mysql import wire as w
from muscipula.services import ServiceContext, ServiceSpec

if TYPE_CHECKING:
    from muscipula.services import MachineFactory

register("mysql.command", "a MySQL command packet (logsql cmd number and args)",
         "cmd", "args")
register("mysql.udf", "CREATE FUNCTION ... SONAME: a UDF library the attacker loads",
         "function", "returns", "soname")


class Database(Strict):
    """A database: a SQLite file (relative to the state dir) made from a template once."""

    file: str | None = None
    template: Literal["wordpress", "shop", "empty"] = "empty"


class Login(Strict):
    mode: Literal["accept", "list", "refuse_first"] = "accept"
    users: dict[str, str] = {}
    refuse_first: int = Field(default=2, ge=0, le=1000)


class MysqlConfig(ServiceConfig):
    tcp_ports: list[Port] = [3306]
    databases: dict[str, Database] = {
        "wordpress": Database(template="wordpress"), "shop": Database(template="shop")}
    #: attach the files themselves: changes persist and are shared by all sessions
    persistent: bool = False
    #: offer SSL; null: as the persona's MySQL does out of the box (products.mysql.tls)
    tls: bool | None = None
    #: the accounts' plugin; "" means the version's default
    auth_plugin: Literal["", "mysql_native_password", "caching_sha2_password"] = ""
    login: Login = Login()
    max_packet: PositiveInt = 4 * 1024 * 1024 + 1024
    max_statement_steps: PositiveInt = 20_000_000
    max_rows: PositiveInt = 10_000
    max_db_bytes: PositiveInt = 32 * 1024 * 1024
    max_databases: int = Field(default=16, ge=1, le=100)
    max_prepared: PositiveInt = 64
    max_long_data: PositiveInt = 1024 * 1024
    #: protocol errors in a row (empty, unknown or malformed commands) before we hang up
    max_protocol_errors: PositiveInt = 100
    max_capture_bytes: PositiveInt = 64 * 1024 * 1024
    max_arg_chars: PositiveInt = 65536
    #: the most one compressed packet may inflate to (CLIENT_COMPRESS), whatever it declares
    max_inflated: PositiveInt = 4 * 1024 * 1024 + 1024
    #: what one connection's compressed packets may inflate to in all; null: the
    #: connection's limits.max_bytes_in (which counts compressed bytes only)
    max_inflated_total: PositiveInt | None = None
    #: plain bytes per compressed byte a connection may inflate over its life, past the
    #: first `inflate_slack` bytes: spread over many reads, a stream of packets packed
    #: with pings would otherwise turn a few kilobytes into millions of commands
    max_inflate_ratio: PositiveInt = 32
    inflate_slack: PositiveInt = 256 * 1024
    #: commands one read of compressed packets may carry; past it the connection is dropped
    max_commands_per_read: PositiveInt = 4096
    #: rows all open cursors of a connection may hold; past it EXECUTE says the table is full
    max_cursor_bytes: PositiveInt = 16 * 1024 * 1024
    #: statements whose parse the service keeps (shared by its sessions; 0: none), and
    #: the characters of statement text those may hold in all
    statement_cache: int = Field(default=512, ge=0, le=1_000_000)
    statement_cache_chars: PositiveInt = 256 * 1024


def build(ctx: ServiceContext) -> MachineFactory:
    # the SQL engine (sqlglot) and the machine are imported only for an enabled service
    from muscipula.protocols.mysql.service import build as build_service

    return build_service(ctx)


def _seed_login(user: bytes, plugin: bytes) -> bytes:
    caps = 0x000FA68D | w.PLUGIN_AUTH | w.CONNECT_ATTRS | w.PLUGIN_AUTH_LENENC
    body = (struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user + b"\0"
            + w.lenenc_str(b"\x11" * 20) + b"shop\0" + plugin + b"\0"
            + w.lenenc_str(w.lenenc_str(b"_client_name") + w.lenenc_str(b"libmysql")))
    return w.frame(1, body)


FUZZ_SEEDS = (
    _seed_login(b"root", b"mysql_native_password") + w.frame(0, b"\x03SELECT @@version"),
    _seed_login(b"admin", b"caching_sha2_password") + w.frame(3, b"\x02")
    + w.frame(5, b"\x01" * 256),
    _seed_login(b"sa", b"mysql_native_password") + w.frame(0, b"\x16SELECT ?, ? FROM wp_users")
    + w.frame(0, b"\x17\x01\0\0\0\0\x01\0\0\0\0\x01\x08\0\xfd\0"
                 b"\x05\0\0\0\0\0\0\0\x03abc"),
    w.frame(1, struct.pack("<IIB", 0x0008AA05, 1 << 24, 33) + b"\0" * 23),
    _seed_login(b"u", b"") + w.frame(0, b"\x03SELECT 0x4142 INTO DUMPFILE '/tmp/a.so'")
    + w.frame(0, b"\x04wp_users\0") + w.frame(0, b"\x0e") + w.frame(0, b"\x01"),
)


def _max_buffer(cfg: MysqlConfig) -> int:
    # a compressed packet in, the plain packets it held, and long data
    # and the rows of open cursors
    return 2 * (cfg.max_packet + 16) + max(cfg.max_inflated, cfg.max_packet) \
        + cfg.max_long_data + cfg.max_cursor_bytes


SERVICE = ServiceSpec("mysql", "mysqld", MysqlConfig, build,
                      "MySQL wire protocol answering from SQLite",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
