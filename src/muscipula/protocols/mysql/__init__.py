"""MySQL: the real wire protocol, answering like the persona's MySQL, backed by SQLite."""

from __future__ import annotations

import itertools
import secrets as rnd
import struct
import time
import uuid
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field

from muscipula.config import Port, PositiveInt, ServiceConfig, Strict
from muscipula.incidents import register
from muscipula.machine import Peer
from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.mysql import wire as w
from muscipula.protocols.mysql.backend import Engine, Limits, native_hash
from muscipula.protocols.mysql.machine import MysqlMachine, Setup
from muscipula.protocols.mysql.policy import LoginPolicy
from muscipula.protocols.mysql.query import Identity, SqlSession
from muscipula.protocols.mysql.variables import system_variables
from muscipula.services import ServiceContext, ServiceSpec

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


def _private_key(ctx: ServiceContext) -> rsa.RSAPrivateKey:
    def make() -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    pem = ctx.persona.secrets.get("mysql.rsa_private_key", make)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _accounts(ctx: ServiceContext, modern: bool) -> list[tuple[str, str, str, str]]:
    """mysql.user rows; their hashes are drawn once per install."""
    host = ctx.persona.hostname.lower()

    def sha2_hash() -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./"
        return "$A$005$" + "".join(rnd.choice(alphabet) for _ in range(63))

    def make() -> dict[str, str]:
        return {"root": native_hash(rnd.token_hex(12)), "app": native_hash(rnd.token_hex(12)),
                "root_sha2": sha2_hash(), "app_sha2": sha2_hash()}

    h = ctx.persona.secrets.get("mysql.account_hashes", make)
    if modern:
        locked = "$A$005$THISISACOMBINATIONOFINVALIDSALTANDPASSWORDTHATMUSTNEVERBRBEUSED"
        return [("localhost", "root", h["root_sha2"], A.CACHING_SHA2),
                ("localhost", "mysql.infoschema", locked, A.CACHING_SHA2),
                ("localhost", "mysql.session", locked, A.CACHING_SHA2),
                ("localhost", "mysql.sys", locked, A.CACHING_SHA2),
                ("%", "wordpress", h["app_sha2"], A.CACHING_SHA2)]
    return [("localhost", "root", h["root"], A.NATIVE), (host, "root", h["root"], A.NATIVE),
            ("127.0.0.1", "root", h["root"], A.NATIVE), ("::1", "root", h["root"], A.NATIVE),
            ("localhost", "", "", A.NATIVE), ("%", "wordpress", h["app"], A.NATIVE)]


def _server_uuid() -> str:
    """As mysqld's UUID(): time-based, a unicast hardware-like node, a random clock sequence."""
    node = rnd.randbits(48) & ~(1 << 40)
    return str(uuid.uuid1(node=node, clock_seq=rnd.randbits(14)))


def build(ctx: ServiceContext):
    cfg: MysqlConfig = ctx.config
    product = ctx.persona.product("mysql")
    version = str(product.get("version", "8.0.40"))
    tls = cfg.tls if cfg.tls is not None else bool(product.get("tls", True))
    profile = A.Profile.for_version(version, tls)
    plugin = cfg.auth_plugin or profile.default_plugin
    if plugin not in profile.plugins:
        plugin = profile.default_plugin
    key = _private_key(ctx)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)

    def decrypt(data: bytes) -> bytes | None:
        try:
            return key.decrypt(data, oaep)
        except ValueError:
            return None

    limits = Limits(max_steps=cfg.max_statement_steps, max_rows=cfg.max_rows,
                    max_db_bytes=cfg.max_db_bytes, max_databases=cfg.max_databases,
                    persistent=cfg.persistent)
    engine = Engine(ctx.state_dir, {n: (d.file or "", d.template)
                                    for n, d in cfg.databases.items()}, limits)
    port = cfg.tcp_ports[0] if cfg.tcp_ports else 3306
    # the shipped default (8.0: 1, 5.5: 0): only a replication setup sets its own
    server_id = 1 if profile.modern else 0
    variables = system_variables(version, profile.modern, product, ctx.persona.hostname, port,
                                 tls, server_id)
    if profile.modern:  # 5.6+ names itself with a version-1 UUID made on first start
        variables = dict(sorted({**variables, "server_uuid": ctx.persona.secrets.get(
            "mysql.server_uuid", _server_uuid)}.items()))
    accounts = _accounts(ctx, profile.modern)
    started = time.time()
    boot = started - ctx.persona.boot_time_offset
    policy = LoginPolicy(cfg.login.mode, dict(cfg.login.users), cfg.login.refuse_first)
    threads = itertools.count(ctx.persona.id_base)

    def make_sql(who: Identity, now: float) -> SqlSession:
        return SqlSession(engine, version, profile.modern, variables, who, now, boot,
                          cfg.max_capture_bytes, accounts)

    def statistics(now: float, questions: int) -> str:
        uptime = int(now - boot)
        return (f"Uptime: {uptime}  Threads: 1  Questions: {questions}  Slow queries: 0  "
                f"Opens: 137  Flush tables: {3 if profile.modern else 1}  Open tables: 64  "
                f"Queries per second avg: {questions / max(uptime, 1):.3f}")

    setup = Setup(profile, policy, make_sql, decrypt, public_pem, plugin, tls,
                  cfg.max_packet, cfg.max_prepared, cfg.max_long_data, cfg.max_arg_chars,
                  statistics, cfg.max_protocol_errors, cfg.max_inflated)

    def factory(peer: Peer) -> MysqlMachine:
        return MysqlMachine(setup, peer.remote_host, peer.remote_port, peer.local_host,
                            next(threads), tls=peer.transport == "tls")

    return factory


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
    return 2 * (cfg.max_packet + 16) + max(cfg.max_inflated, cfg.max_packet) + cfg.max_long_data


SERVICE = ServiceSpec("mysql", "mysqld", MysqlConfig, build,
                      "MySQL wire protocol answering from SQLite",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
