"""What a server profile provides, and picking one for the persona's Server string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from muscipula.protocols.http.content import LureBody, Site
from muscipula.protocols.http.request import Context, Reply, Request


@dataclass(frozen=True, slots=True)
class ProductLimits:
    """Where the real product draws its lines (used when config leaves them null)."""

    request_line: int
    header_line: int
    header_bytes: int
    body_size: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float


#: reasons a request is refused before it is served; each profile answers them its own way
REJECTS = (
    "bad_request",      # unparsable request line or head
    "bad_method",       # a method token the server's parser refuses
    "bad_url",          # a target the server refuses (NUL, escapes the root, bad escapes)
    "bad_header",       # a header line the parser refuses
    "no_host",          # HTTP/1.1 without Host
    "bad_version",      # HTTP/2+ on the plain port
    "uri_too_long",     # request line over the limit
    "header_too_large",  # one header line or the whole head over the limit, or too many
    "length_required",  # a body-carrying request with neither length nor chunking
    "te_unsupported",   # a transfer coding other than chunked
    "body_too_large",   # declared or streamed body over the limit
    "bad_chunk",        # broken chunked framing
    "connect",          # CONNECT: never tunnelled anywhere
)


class Profile(Protocol):
    windows: bool
    length_required: tuple[str, ...]
    server: str
    limits: ProductLimits
    default_type: str

    def reject(self, kind: str, req: Request | None, ctx: Context) -> Reply: ...

    def serve(self, req: Request, ctx: Context, site: Site,
              lure: LureBody | None, path: str | None) -> Reply: ...

    def valid_method(self, method: str) -> bool: ...

    def http09(self, site: Site, target: str) -> bytes | None: ...


def pick(product: dict[str, str], gzip: bool, listing: bool) -> Profile:
    server = product.get("server", "nginx/1.22.1")
    if server.startswith("Microsoft-IIS"):
        from muscipula.protocols.http.iis import IIS

        return IIS(server, product.get("powered_by", "ASP.NET"), listing)
    from muscipula.protocols.http.nginx import Nginx

    return Nginx(server, gzip, listing)
