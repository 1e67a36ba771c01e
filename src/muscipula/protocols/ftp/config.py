"""The ftp service's config keys, each with its default."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator

from muscipula.config import LimitsOverride, Port, PositiveInt, Seconds, ServiceConfig, Strict

PortOrZero = Annotated[int, Field(ge=0, le=65535)]


class FtpAccount(Strict):
    username: str
    password: str


class FtpLogin(Strict):
    #: accept_all: any user and non-empty password; list: only `accounts`;
    #: anonymous: only anonymous/ftp; refuse_first: the first `refuse_first` tries of
    #: each address fail, later ones succeed
    policy: Literal["accept_all", "list", "anonymous", "refuse_first"] = "accept_all"
    accounts: list[FtpAccount] = []
    #: whether anonymous/ftp may log in under accept_all, list and refuse_first
    anonymous: bool = True
    refuse_first: Annotated[int, Field(ge=0, le=1000)] = 3


class FtpConfig(ServiceConfig):
    tcp_ports: list[Port] = [21]
    #: above vsftpd's 300 s session timeout, so the product's "421 Timeout" comes first
    limits: LimitsOverride = LimitsOverride(idle_timeout=330.0)
    #: directory whose tree (read-only) seeds every session's view; None: a default
    #: tree that fits the persona
    root: str | None = None
    login: FtpLogin = FtpLogin()
    #: passive data ports, inclusive; [0, 0]: any free port
    passive_ports: tuple[PortOrZero, PortOrZero] = (60000, 60999)
    #: IPv4 address announced in 227 replies (the public address behind NAT); None:
    #: the address the client connected to
    passive_address: str | None = None
    #: offer AUTH TLS (explicit FTPS) with the persona's certificate
    tls: bool = True
    #: longest command line; a longer one gets the product's answer
    max_line: Annotated[int, Field(ge=64, le=65536)] = 4096
    #: bytes of pipelined input held while a reply waits for a data channel
    max_pending: Annotated[int, Field(ge=256, le=1024 * 1024)] = 16384
    #: uploaded bytes a session keeps in memory so that it can RETR them again
    max_kept_upload_bytes: Annotated[int, Field(ge=0, le=64 * 1024 * 1024)] = 1024 * 1024
    #: files and directories a session may add to its view
    max_session_entries: PositiveInt = 5000
    #: seed tree bounds (configured root)
    max_seed_entries: PositiveInt = 2000
    max_seed_file_bytes: PositiveInt = 8 * 1024 * 1024
    #: control idle timeout before "421 Timeout"; None: the product's (vsftpd 300 s,
    #: IIS 120 s), kept under the global idle limit
    idle_timeout: Seconds | None = None
    #: seconds a PROT P data channel may take to finish its TLS handshake once connected;
    #: then the transfer fails as the product's stalled data channel does (vsftpd: 421 and
    #: close, IIS: 426) instead of holding the channel until the session limits;
    #: None: the product's data channel timeout (vsftpd 300 s, IIS 30 s)
    data_tls_timeout: Seconds | None = None
    #: failed logins before the connection is closed; None: the product's (vsftpd 3)
    max_login_fails: Annotated[int, Field(ge=0, le=1000)] | None = None

    @field_validator("passive_address")
    @classmethod
    def _ipv4(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.IPv4Address(value)
        return value
