"""SESSION_SETUP's security exchange, the same for SMB1 and SMB2: SPNEGO-wrapped (or raw)
NTLMSSP NEGOTIATE -> CHALLENGE, AUTHENTICATE -> a login decided by the service's policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from muscipula.machine import Emit
from muscipula.protocols import ntlm
from muscipula.protocols.smb import spnego
from muscipula.protocols.smb import wire as W

if TYPE_CHECKING:
    from muscipula.protocols.mysql.policy import LoginPolicy
    from muscipula.protocols.smb import SmbConfig
    from muscipula.protocols.smb.product import Product


#: how much of a user or domain name a session keeps
NAME_CAP = 256


@dataclass(frozen=True, slots=True)
class Setup:
    product: Product
    policy: LoginPolicy
    names: ntlm.Names
    #: NTLM TargetName in the CHALLENGE (the computer's name on a standalone server)
    target: str
    target_type: int
    random: Callable[[int], bytes]
    server_guid: bytes
    boot_time: float
    session_base: int
    uid_base: int
    workgroup: str
    server_name: str
    #: share name (upper case) -> "disk" or "pipe"
    shares: dict[str, str]
    #: the service's limits and switches, read where they apply
    cfg: SmbConfig
    #: RPC interfaces behind the IPC$ pipes, by uuid (interfaces.interfaces)
    interfaces: dict[str, Any] = field(default_factory=dict)
    #: where this install numbers its file ids
    file_base: int = 0
    #: the seed a DoublePulsar implant shows in its ping reply's signature field
    implant_seed: bytes = bytes(8)


@dataclass(slots=True)
class Auth:
    """One session's security exchange."""

    challenge: bytes = b""
    wrapped: bool = True
    done: bool = False
    user: str = ""
    anonymous: bool = False
    #: a user name without a password (no NT response): taken as the guest account
    guest: bool = False
    #: the user and domain names, capped
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Step:
    status: int
    blob: bytes
    actions: list[Emit]
    detail: dict[str, Any]


def step(s: Setup, auth: Auth, blob: bytes, remote: str, now: float, dialect: str) -> Step:
    """One SESSION_SETUP leg: the status and security blob to answer with, and incidents."""
    token = spnego.ntlm_token(blob)
    if token is None:
        return Step(W.LOGON_FAILURE if blob else W.INVALID_PARAMETER, b"", [],
                    {"error": "no NTLMSSP token"})
    flags = ntlm.negotiate_flags(token)
    if flags is not None:
        auth.wrapped = not blob.startswith(ntlm.SIGNATURE)
        auth.challenge = s.random(8)  # a fresh one per session, as Windows draws it
        message = ntlm.challenge_message(s.names, auth.challenge, now,
                                         ntlm.answer_flags(flags, s.target_type), s.target)
        out = spnego.neg_token_resp(spnego.ACCEPT_INCOMPLETE, message) if auth.wrapped \
            else message
        return Step(W.MORE_PROCESSING_REQUIRED, out, [], {"ntlm": "negotiate"})
    info = ntlm.parse_authenticate(token, auth.challenge) if auth.challenge else None
    if info is None:
        return Step(W.LOGON_FAILURE, b"", [], {"error": "unexpected NTLMSSP message"})
    user = f"{info['domain']}\\{info['user']}" if info["domain"] else info["user"]
    anonymous = bool(info.get("anonymous"))
    # a name without any response (smbclient -N sends its user name so): the guest account,
    # as Samba's "map to guest = bad user" and a Windows host with guest enabled take it
    guest = not anonymous and info.get("nt_size", 0) == 0
    ok = anonymous or guest or s.policy.decide(info["user"], remote, None, lambda _: False)
    # the session keeps who logged in, not the message (its blobs run to a megabyte and a
    # connection holds 16 sessions): the login incident has the rest
    auth.done, auth.user, auth.anonymous = ok, user[:NAME_CAP], anonymous
    auth.info = {"user": str(info["user"])[:NAME_CAP], "domain": str(info["domain"])[:NAME_CAP]}
    auth.guest = guest
    extra = {**info, "dialect": dialect}
    login = Emit("login", {"username": user, "password": None, "success": ok,
                           "method": "ntlm", "extra": extra})
    detail = {k: info.get(k) for k in ("user", "domain", "workstation", "hash") if info.get(k)}
    if not ok:
        return Step(W.LOGON_FAILURE, b"", [login], detail)
    out = spnego.neg_token_resp(spnego.ACCEPT_COMPLETED, mech=False) if auth.wrapped else b""
    return Step(W.SUCCESS, out, [login], detail)
