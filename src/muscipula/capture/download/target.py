"""Offered URLs taken apart into what a client needs, refusing what no client should send.

Nothing here touches the network: a bad URL is a FetchError("url") before any lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from muscipula.capture.download.errors import FetchError

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "tftp": 69}
#: schemes without a default port: the URL must name one (a stager's handler)
PORT_REQUIRED = frozenset({"tcp"})
#: bytes no FTP command or TFTP filename may carry (command injection, truncation)
_CONTROL = ("\r", "\n", "\x00")
#: the anonymous FTP login of the browser the default User-Agent names
ANONYMOUS = ("anonymous", "IEUser@")


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    #: http(s): the URL as given; ftp and tftp: the decoded path without its leading "/"
    path: str
    user: str
    password: str


def parse(url: str, schemes: list[str] | tuple[str, ...]) -> Target:
    """The parts of `url`; FetchError("scheme") or ("url") when it cannot be fetched."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise FetchError("url", str(exc)) from None
    if (scheme not in DEFAULT_PORTS and scheme not in PORT_REQUIRED) or scheme not in schemes:
        raise FetchError("scheme", scheme or "none")
    if not host:
        raise FetchError("url", "no host")
    if port == 0 or (port is None and scheme in PORT_REQUIRED):
        raise FetchError("url", "no port")
    port = port or DEFAULT_PORTS[scheme]
    user, password = ANONYMOUS
    if parts.username:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
    path = parts.path
    if scheme in ("ftp", "tftp"):
        path = unquote(path.split(";", 1)[0]).lstrip("/")  # ;type=i / ;mode=octet
        if not path or path.endswith("/"):
            raise FetchError("url", "no file name")
        if any(c in s for c in _CONTROL for s in (path, user, password)):
            raise FetchError("url", "control character")
        if len(path) > 1024:
            raise FetchError("url", "file name too long")
        path_out = path
    else:
        path_out = url.strip()
    return Target(url, scheme, host, port, path_out, user, password)
