"""FTP (21/tcp): a control-connection machine that words everything as the persona's product.

Microsoft FTP Service 7.5 for a Windows persona, vsftpd 3.0.x for a Linux one.
Logins follow a configured policy, every command is an incident, uploads go
to the store and show only in the uploading session's view.
"""

from __future__ import annotations

import time
from pathlib import Path

from muscipula.machine import Peer
from muscipula.protocols.ftp import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.ftp.config import FtpConfig
from muscipula.protocols.ftp.machine import FtpSession, Setup
from muscipula.protocols.ftp.policy import Account, LoginPolicy
from muscipula.protocols.ftp.replies import for_product
from muscipula.protocols.ftp.vfs import SeedFiles, SeedLimits, default_tree, load_dir
from muscipula.services import ServiceContext, ServiceSpec

__all__ = ["SERVICE", "FtpConfig", "FtpSession"]


def build(ctx: ServiceContext):
    cfg: FtpConfig = ctx.config
    persona = ctx.persona
    dialect = for_product(persona.product("ftp"))
    limits = SeedLimits(cfg.max_seed_entries, 8, cfg.max_seed_file_bytes)
    root = Path(cfg.root).expanduser() if cfg.root else None
    if root is not None and root.is_dir():
        seed = load_dir(root, limits, dialect.case_insensitive)
    else:
        root = None
        # seed files dated some weeks before the host's (per-install) boot time
        offset = persona.boot_time_offset + 40 * 86400  # (secrets.get is not reentrant)
        epoch = float(persona.secrets.get("ftp.tree_epoch",
                                          lambda: int(time.time()) - offset))
        seed = default_tree(dialect.name, epoch, persona.hostname)
    login = cfg.login
    policy = LoginPolicy(login.policy, [Account(a.username, a.password) for a in login.accounts],
                         login.anonymous, login.refuse_first)
    idle = cfg.idle_timeout or dialect.idle_timeout
    idle = max(1.0, min(idle, ctx.limits.idle_timeout - 1.0))
    fails = dialect.max_login_fails if cfg.max_login_fails is None else cfg.max_login_fails
    setup = Setup(
        dialect=dialect, policy=policy, seed=seed, files=SeedFiles(root, limits),
        passive_ports=(min(cfg.passive_ports), max(cfg.passive_ports)),
        passive_address=cfg.passive_address, tls=cfg.tls, max_line=cfg.max_line,
        max_pending=cfg.max_pending, max_kept_upload_bytes=cfg.max_kept_upload_bytes,
        max_session_entries=cfg.max_session_entries, idle_timeout=idle,
        max_login_fails=fails,
        upload_owner=persona.secrets.number("ftp.upload_uid", 1000, 1004),
        data_tls_timeout=cfg.data_tls_timeout or dialect.data_timeout,
    )

    def factory(peer: Peer) -> FtpSession:
        return FtpSession(setup, peer)

    return factory


def _max_buffer(cfg: FtpConfig) -> int:
    return cfg.max_line + 2 * cfg.max_pending + 2 * cfg.max_kept_upload_bytes + 2


FUZZ_SEEDS = (
    b"USER anonymous\r\nPASS guest@\r\nSYST\r\nFEAT\r\nPWD\r\nTYPE I\r\nPASV\r\nLIST\r\n",
    b"USER admin\r\nPASS admin\r\nEPSV\r\nSTOR x.exe\r\nQUIT\r\n",
    b"USER a\r\nPASS b\r\nPORT 127,0,0,1,200,10\r\nRETR pub/README\r\n",
    b"USER a\r\nPASS b\r\nEPRT |1|10.0.0.1|2000|\r\nMKD d\r\nCWD d\r\nCDUP\r\nRMD d\r\n",
    b"USER a\r\nPASS b\r\nRNFR upload\r\nRNTO up2\r\nDELE x\r\nSIZE pub/README\r\nMDTM x\r\n",
    b"AUTH TLS\r\nPBSZ 0\r\nPROT P\r\n",
    b"\xff\xf4\xff\xf2ABOR\r\nREST 100\r\nSTAT\r\nHELP\r\nOPTS UTF8 ON\r\nMLSD\r\n",
)

SERVICE = ServiceSpec("ftp", "ftpd", FtpConfig, build,
                      "FTP worded as the persona's product, uploads captured",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
