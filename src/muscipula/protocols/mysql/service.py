"""Building the MySQL service from its config and the persona: keys, accounts, variables."""

from __future__ import annotations

import itertools
import secrets as rnd
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from muscipula.machine import Peer
from muscipula.protocols.mysql import MysqlConfig
from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql.backend import Engine, Limits, native_hash
from muscipula.protocols.mysql.machine import MysqlMachine, Setup
from muscipula.protocols.mysql.parsecache import StatementCache
from muscipula.protocols.mysql.policy import LoginPolicy
from muscipula.protocols.mysql.query import Identity, SqlSession
from muscipula.protocols.mysql.variables import system_variables
from muscipula.services import ServiceContext


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


def _tmp_tables(ctx: ServiceContext, tmpdir: str, modern: bool) -> Callable[[int, int], str]:
    """How mysqld names its internal temporary tables: after its pid (and 5.6+ the thread)."""
    pid = ctx.persona.secrets.number("mysql.pid", 400, 40_000)
    sep = "\\" if "\\" in tmpdir else "/"

    def name(thread: int, n: int) -> str:
        if modern:
            return f"{tmpdir}{sep}#sql{pid:x}_{thread:x}_{n:x}"
        return f"{tmpdir}{sep}#sql_{pid:x}_0"

    return name


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

    statements = StatementCache(cfg.statement_cache, cfg.statement_cache_chars)

    def make_sql(who: Identity, now: float) -> SqlSession:
        return SqlSession(engine, version, profile.modern, variables, who, now, boot,
                          cfg.max_capture_bytes, accounts, statements)

    def statistics(now: float, questions: int) -> str:
        uptime = int(now - boot)
        return (f"Uptime: {uptime}  Threads: 1  Questions: {questions}  Slow queries: 0  "
                f"Opens: 137  Flush tables: {3 if profile.modern else 1}  Open tables: 64  "
                f"Queries per second avg: {questions / max(uptime, 1):.3f}")

    setup = Setup(profile, policy, make_sql, decrypt, public_pem, plugin, tls,
                  cfg.max_packet, cfg.max_prepared, cfg.max_long_data, cfg.max_arg_chars,
                  statistics, cfg.max_protocol_errors, cfg.max_inflated,
                  max_inflated_total=cfg.max_inflated_total or ctx.limits.max_bytes_in,
                  max_commands_per_read=cfg.max_commands_per_read,
                  max_inflate_ratio=cfg.max_inflate_ratio, inflate_slack=cfg.inflate_slack,
                  max_cursor_bytes=cfg.max_cursor_bytes,
                  tmp_table=_tmp_tables(ctx, variables["tmpdir"], profile.modern))

    def factory(peer: Peer) -> MysqlMachine:
        return MysqlMachine(setup, peer.remote_host, peer.remote_port, peer.local_host,
                            next(threads), tls=peer.transport == "tls")

    return factory
