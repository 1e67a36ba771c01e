"""Building the SMB service from its config and the persona."""

from __future__ import annotations

import os
import time

from muscipula.machine import Peer
from muscipula.protocols import ntlm
from muscipula.protocols.mysql.policy import LoginPolicy
from muscipula.protocols.smb import SmbConfig
from muscipula.protocols.smb import interfaces as I
from muscipula.protocols.smb.auth import Setup
from muscipula.protocols.smb.machine import SmbMachine
from muscipula.protocols.smb.product import make_product
from muscipula.services import ServiceContext


def build(ctx: ServiceContext):
    cfg: SmbConfig = ctx.config
    persona = ctx.persona
    linux = persona.os_family != "windows"
    product = make_product(persona.product("smb"), linux)
    netbios = persona.netbios_name
    if linux:
        names = ntlm.Names(netbios, persona.workgroup.upper()[:15], persona.fqdn.lower(),
                           persona.domain.lower(), (6, 1, 0))
        target, target_type = netbios, ntlm.TARGET_TYPE_SERVER
    else:
        version = str(persona.facts.get("os_version", "6.1")).split(".")
        build_no = int(persona.facts.get("os_build", 0))
        if persona.domain:
            domain = persona.domain.upper().split(".")[0][:15]
            names = ntlm.Names(netbios, domain, persona.fqdn, persona.domain,
                               (int(version[0]), int(version[1]), build_no))
            target, target_type = domain, ntlm.TARGET_TYPE_DOMAIN
        else:
            # a standalone server names itself in every field
            names = ntlm.Names(netbios, netbios, persona.hostname, persona.hostname,
                               (int(version[0]), int(version[1]), build_no))
            target, target_type = netbios, ntlm.TARGET_TYPE_SERVER
    host = _host(cfg, persona, linux, netbios, names)
    policy = LoginPolicy(cfg.login.mode, dict(cfg.login.users), cfg.login.refuse_first)
    setup = Setup(
        product=product, policy=policy, names=names, target=target, target_type=target_type,
        random=os.urandom, server_guid=persona.guid("smb.server").bytes_le,
        # the host booted its uptime offset before this start
        boot_time=time.time() - persona.boot_time_offset,
        session_base=persona.secrets.number("smb.session_base", 0x100, 0xFFF) << 32,
        uid_base=persona.secrets.number("smb.uid_base", 0, 0x7FF),
        workgroup=persona.workgroup, server_name=netbios,
        shares={k.upper(): v for k, v in cfg.shares.items()}, cfg=cfg,
        interfaces=I.interfaces(host),
        file_base=persona.secrets.number("smb.file_base", 0x10, 0xFFF) << 12,
        implant_seed=_implant_seed(persona))

    def factory(peer: Peer) -> SmbMachine:
        return SmbMachine(setup, peer.remote_host)

    return factory


def _host(cfg: SmbConfig, persona, linux: bool, netbios: str, names: ntlm.Names) -> I.Host:
    """What srvsvc and wkssvc say: Windows' three default shares (Samba has IPC$ only) and
    the configured ones."""
    special = I.STYPE_SPECIAL
    extra = tuple(I.Share(name, I.STYPE_IPC if kind == "pipe" else I.STYPE_DISKTREE,
                          cfg.share_comments.get(name, "")) for name, kind in cfg.shares.items())
    admin = (I.Share("ADMIN$", special, "Remote Admin"), I.Share("C$", special, "Default share"))
    if linux:
        comment = f"{persona.hostname.lower()} server (Samba, Ubuntu)"
        ipc = I.Share("IPC$", special | I.STYPE_IPC, f"IPC Service ({comment})")
        return I.Host(netbios, persona.workgroup.upper()[:15], (6, 1), 0x809A03, comment,
                      (*extra, *(admin if cfg.admin_shares else ()), ipc))
    ipc = I.Share("IPC$", special | I.STYPE_IPC, "Remote IPC")
    group = persona.domain.upper().split(".")[0][:15] if persona.domain else \
        persona.workgroup.upper()[:15]
    return I.Host(netbios, group, names.os_version[:2], 0x9003, "",
                  (*admin, ipc, *extra))


def _implant_seed(persona) -> bytes:
    """What an implanted host's DoublePulsar shows in the ping reply's signature field: a
    32-bit value the client derives the XOR key from, then the x64 marker (2008 R2 is 64-bit
    only); per install, as each infected host has its own."""
    seed = persona.secrets.number("smb.implant_seed", 0x10000000, 0xFFFFFFFF)
    arch = persona.secrets.number("smb.implant_arch", 1, 0xFFFFFFFF)
    return seed.to_bytes(4, "little") + arch.to_bytes(4, "little")
