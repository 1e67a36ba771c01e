"""Binding every configured (address, port, transport) before privileges are dropped."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass


class BindError(Exception):
    """One line for the operator: which service, which address, and how to fix it."""


class FamilyUnavailable(BindError):
    """The host has no IPv6 (or no IPv4): the wildcard of that family can be left out."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    service: str
    transport: str  # tcp, tls or udp
    host: str
    port: int


def bind(endpoint: Endpoint, backlog: int = 1024) -> socket.socket:
    if not 0 < endpoint.port < 65536:
        raise BindError(f"{endpoint.service}: cannot bind {endpoint.transport} "
                        f"[{endpoint.host}]:{endpoint.port}: port out of range 1-65535 "
                        "(configured port plus --port-offset)")
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if endpoint.transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Bind :: beside 0.0.0.0 on the same port: each family its own socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((endpoint.host, endpoint.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"{endpoint.service}: cannot bind {endpoint.transport} " \
                f"[{endpoint.host}]:{endpoint.port}"
        if exc.errno == errno.EACCES and endpoint.port < 1024 and os.geteuid() != 0:
            raise BindError(
                f"{where}: ports below 1024 need root (then set run_as.user) or "
                "CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the python "
                "binary), or run with --port-offset N") from None
        if exc.errno == errno.EADDRINUSE:
            raise BindError(f"{where}: address already in use") from None
        wildcard = endpoint.host in ("::", "0.0.0.0")
        if exc.errno == errno.EADDRNOTAVAIL:
            kind = FamilyUnavailable if wildcard else BindError
            raise kind(f"{where}: address not available on this host") from None
        if exc.errno == errno.EAFNOSUPPORT:
            kind = FamilyUnavailable if wildcard else BindError
            raise kind(f"{where}: address family not supported (IPv6 off?)") from None
        raise BindError(f"{where}: {exc.strerror or exc}") from None
    return sock


def drop_privileges(user: str | None, group: str | None) -> None:
    """After binding: become `user`/`group` when asked (only possible as root)."""
    if not user and not group:
        return
    import grp
    import pwd

    try:
        pw = pwd.getpwnam(user) if user else None
        gid = grp.getgrnam(group).gr_gid if group else (pw.pw_gid if pw else os.getgid())
    except KeyError as exc:
        raise BindError(f"run_as: unknown user or group {exc.args[0]}") from None
    try:
        os.setgroups([gid])
        os.setgid(gid)
        if pw is not None:
            os.setuid(pw.pw_uid)
    except PermissionError:
        raise BindError("run_as: changing user needs root") from None
