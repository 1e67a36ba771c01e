"""Which destinations a fetch may reach: public addresses, and the operator's allow-list.

A host name is resolved once, every address it gives is checked, and the client then
connects to the checked addresses only: a second lookup could answer differently (DNS
rebinding). One bad address refuses the whole name, since an attacker controls which
address a client would have picked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

from muscipula.capture.download.errors import FetchError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CLASSES = ("unspecified", "loopback", "link_local", "multicast", "reserved", "private")
#: not for the public internet although Python's is_global admits them: IETF protocol
#: assignments, 6to4 relay anycast, AS112, and IPv6 site-local (deprecated, still routed
#: inside some networks)
_SPECIAL = tuple(ipaddress.ip_network(n) for n in (
    "192.0.0.0/24", "192.88.99.0/24", "192.31.196.0/24", "192.175.48.0/24", "fec0::/10"))


def address(text: str) -> Address:
    """An address from getaddrinfo or a URL, without an IPv6 zone."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _plain(addr: Address) -> Address:
    """IPv4-mapped (::ffff:a.b.c.d) and 6to4 (2002:aabb:ccdd::) addresses as their IPv4,
    which is what they reach."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
    return addr


class Policy:
    def __init__(self, allow_networks: list[str], resolvers: int = 8) -> None:
        self.allowed: list[Network] = [ipaddress.ip_network(n, strict=False)
                                       for n in allow_networks]
        #: lookups run here, not in the loop's default pool: a lookup given up at its
        #: timeout still holds its thread until the system resolver returns, and an
        #: attacker's slow name servers must not starve what else uses that pool
        self._resolvers = ThreadPoolExecutor(resolvers, thread_name_prefix="resolve")

    def refusal(self, addr: Address) -> str | None:
        """Why `addr` may not be reached (its class), or None."""
        plain = _plain(addr)
        for candidate in {addr, plain}:
            if any(candidate in net for net in self.allowed if net.version == candidate.version):
                return None
        for name in _CLASSES:
            if getattr(plain, f"is_{name}"):
                return name.replace("_", "-")
        if not plain.is_global or any(plain in net for net in _SPECIAL
                                      if net.version == plain.version):
            return "not global"
        return None

    def check(self, addresses: list[str]) -> list[str]:
        """`addresses` if every one may be reached, else FetchError("destination")."""
        if not addresses:
            raise FetchError("dns", "no address")
        for text in addresses:
            why = self.refusal(address(text))
            if why is not None:
                raise FetchError("destination", f"{text} is {why}")
        return addresses

    async def resolve(self, host: str, port: int, kind: socket.SocketKind,
                      timeout: float) -> list[str]:
        """The checked addresses of `host`, in the resolver's order, without duplicates."""
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                self._resolvers, functools.partial(socket.getaddrinfo, host, port, type=kind)),
                timeout)
        except TimeoutError:
            raise FetchError("dns", "timeout") from None
        except (OSError, UnicodeError) as exc:
            raise FetchError("dns", str(exc)) from None
        seen: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = str(sockaddr[0])
            if ip not in seen:
                seen.append(ip)
        return self.check(seen)

    def close(self) -> None:
        self._resolvers.shutdown(wait=False, cancel_futures=True)
