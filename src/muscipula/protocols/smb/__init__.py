"""SMB: the persona's file server on 445 and 139 (negotiate, NTLM login, tree connect)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from muscipula.config import PositiveInt, ServiceConfig, Strict
from muscipula.protocols.smb import records as _records  # noqa: F401 - registers writers
from muscipula.protocols.smb.client import FUZZ_SEEDS
from muscipula.services import ServiceContext, ServiceSpec

if TYPE_CHECKING:
    from muscipula.services import MachineFactory


class Login(Strict):
    """Who gets in: anyone, the listed users (NTLM cannot be checked without their password:
    a listed name is let in), or an address after its first N tries. Anonymous (null
    session) logins always succeed, as on a default Windows or Samba install."""

    mode: Literal["accept", "list", "refuse_first"] = "accept"
    users: dict[str, str] = {}
    refuse_first: int = Field(default=2, ge=0, le=1000)


class SmbConfig(ServiceConfig):
    tcp_ports: list[int] = [445, 139]
    login: Login = Login()
    #: extra shares beside IPC$, ADMIN$ and C$: name -> "disk" or "pipe"
    shares: dict[str, Literal["disk", "pipe"]] = {}
    #: let TREE_CONNECT to ADMIN$ and C$ succeed (Windows refuses them to non-admins)
    admin_shares: bool = False
    #: the largest NetBIOS session message taken (a 2.1 LARGE_MTU write is 1 MiB + headers)
    max_message: PositiveInt = 1024 * 1024 + 64 * 1024
    max_sessions: PositiveInt = 16
    max_trees: PositiveInt = 64
    #: requests refused as out of order before we hang up
    max_protocol_errors: PositiveInt = 20
    #: what NetShareEnum says about the extra shares
    share_comments: dict[str, str] = {}
    #: files and pipes open at once on one connection
    max_open_files: PositiveInt = 64
    #: a DCE/RPC request's stub, all fragments together
    max_rpc_request: PositiveInt = 256 * 1024
    #: RPC answers a pipe holds until the client reads them
    max_pipe_output: PositiveInt = 64 * 1024
    #: the largest file a write may make (beyond: STATUS_DISK_FULL)
    max_file_size: PositiveInt = 64 * 1024 * 1024
    #: out-of-order write bytes held (per connection) until the gap before them is written
    max_write_pending: PositiveInt = 4 * 1024 * 1024
    #: files and directories one connection may create
    max_names: PositiveInt = 256
    #: one SMB1 transaction's parameters and data, all secondaries together
    max_transaction: PositiveInt = 256 * 1024
    #: the bytes held for all SMB1 transactions waiting for secondaries on one connection
    #: (as many wait as the negotiated MaxMpxCount; only what came is held)
    max_pending_transactions: PositiveInt = 1024 * 1024
    #: answer as a host without the MS17-010 patch (Windows personas): the check says
    #: vulnerable and EternalBlue's transactions are taken and captured
    ms17_010: bool = True
    #: answer TRANSACTION2 SESSION_SETUP as a host with the DoublePulsar implant
    doublepulsar: bool = True
    #: the largest upload the implant takes (beyond: its out-of-memory answer)
    max_implant_upload: PositiveInt = 8 * 1024 * 1024


def build(ctx: ServiceContext) -> MachineFactory:
    from muscipula.protocols.smb.service import build as build_service

    return build_service(ctx)


def _max_buffer(cfg: SmbConfig) -> int:
    # a message being framed and the next chunk; each open pipe's PDU, request and answers;
    # the out-of-order writes
    pipe = 64 * 1024 + cfg.max_rpc_request + cfg.max_pipe_output
    # SMB1 transactions waiting for secondaries and an implant upload
    trans = cfg.max_pending_transactions + cfg.max_implant_upload
    return cfg.max_message + 4 + 64 * 1024 + cfg.max_open_files * pipe + \
        cfg.max_write_pending + trans


SERVICE = ServiceSpec("smb", "smbd", SmbConfig, build,
                      "SMB1/SMB2: NTLM login capture, IPC$ pipes with DCE/RPC, captured writes",
                      max_buffer=_max_buffer, fuzz_seeds=FUZZ_SEEDS)
