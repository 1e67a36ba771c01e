"""Building the MSSQL service from its config and the persona."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import ssl

from muscipula.machine import Peer
from muscipula.protocols.mssql import MssqlConfig
from muscipula.protocols.mssql.machine import MssqlMachine, Setup
from muscipula.protocols.mssql.ntlm import Names, challenge_message
from muscipula.protocols.mssql.product import Product, make_product
from muscipula.protocols.mssql.sql import Setup as SqlSetup
from muscipula.protocols.mysql.backend import Engine, Limits
from muscipula.protocols.mysql.policy import LoginPolicy
from muscipula.services import ServiceContext


def fallback_context(persona, product: Product, renew: bool) -> ssl.SSLContext:
    """The context SQL Server serves with no certificate configured: its own
    SSL_Self_Signed_Fallback (shape by version, `tls_cert` in the persona's mssql facts)
    over the TLS versions and suites of the persona's stack (`tls_profile`, else the host's).
    """
    from muscipula import certs

    facts = persona.product("mssql").get("tls_cert") or {}
    major = product.version[0]
    bits = int(facts.get("bits", 1024 if major < 13 else 2048 if major < 16 else 3072))
    digest = str(facts.get("digest", "sha1" if major < 13 else "sha256"))
    key, cert = certs.ensure_mssql(persona, bits, digest, dt.datetime.now(dt.UTC), renew)
    context = certs.build(persona, certs.profile_for(persona, "mssql"))
    context.load_cert_chain(cert, key)  # in place of the host's certificate
    return context


def build(ctx: ServiceContext):
    cfg: MssqlConfig = ctx.config
    persona = ctx.persona
    linux = persona.os_family != "windows"
    product = make_product(persona.product("mssql"), persona.hostname, linux,
                           persona.windows_version)
    limits = Limits(max_steps=cfg.max_statement_steps, max_rows=cfg.max_rows,
                    max_db_bytes=cfg.max_db_bytes, max_databases=4)
    engine = Engine(ctx.state_dir, {}, limits)
    sql = SqlSetup(engine, product, cfg.max_rows, cfg.max_message // 2, cfg.max_result_bytes,
                   cfg.max_batch_statements, cfg.max_statement_chars, cfg.max_request_steps)
    policy = LoginPolicy(cfg.login.mode, dict(cfg.login.users), cfg.login.refuse_first)
    ntlm = None
    if cfg.ntlm and not linux:
        netbios = persona.netbios_name
        domain = persona.domain.upper().split(".")[0] if persona.domain else netbios
        version = persona.facts.get("os_version", "6.1").split(".")
        names = Names(netbios, domain[:15], persona.fqdn, persona.domain or persona.hostname,
                      (int(version[0]), int(version[1]), int(persona.facts.get("os_build", 0))))

        def ntlm(now: float) -> tuple[bytes, bytes]:
            challenge = os.urandom(8)  # a fresh one per login, as Windows draws it
            return challenge_message(names, challenge, now), challenge

    tls = None
    if cfg.encryption != "none":
        tls = fallback_context(persona, product, cfg.tls_cert_per_start)
    setup = Setup(product, policy, sql, cfg.max_packet, cfg.max_message,
                  cfg.max_protocol_errors, ntlm, tls, cfg.encryption, cfg.max_tls_buffer,
                  cfg.max_prepared, cfg.max_call_params)
    # SQL Server's user sessions take SPIDs from 51 on
    spids = itertools.count(51 + persona.secrets.number("mssql.spid_offset", 0, 40))

    def factory(peer: Peer) -> MssqlMachine:
        spid = next(spids)
        if spid > 32000:
            spid = 51
        return MssqlMachine(setup, peer.remote_host, spid)

    return factory
