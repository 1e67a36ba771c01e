"""HTTP and HTTPS fetches with httpx, one connection per checked address.

The request goes to the checked IP address itself, with the URL's host in the Host
header and as TLS SNI, so that the name is never looked up a second time. Certificates
are not verified (malware hosts rarely have good ones). Redirects are followed here,
not by httpx, so that every hop's destination passes the policy and counts toward
`max_redirects`. Only 2xx bodies are stored.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin

import httpx

from muscipula.capture.download.body import Body
from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import Target, parse
from muscipula.config import Download

_REDIRECTS = (301, 302, 303, 307, 308)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _client(cfg: Download) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        verify=False, trust_env=False, follow_redirects=False, http2=False,
        timeout=httpx.Timeout(connect=cfg.connect_timeout, read=None, write=cfg.connect_timeout,
                              pool=cfg.connect_timeout),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0))
    # what the reference's fetcher sent: a user agent and Accept, no compression
    client.headers.clear()
    client.headers.update({"User-Agent": cfg.user_agent, "Accept": "*/*"})
    return client


async def _hop(client: httpx.AsyncClient, target: Target, addrs: list[str],
               body: Body) -> str | None:
    """One request: the redirect's Location, or None once the body is stored in `body`."""
    try:
        url = httpx.URL(target.url.strip())
        host_header = url.netloc.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise FetchError("url", str(exc)) from None
    extensions = {} if _is_ip(target.host) else {"sni_hostname": target.host}
    last: Exception | None = None
    for ip in addrs[:4]:
        request = client.build_request("GET", url.copy_with(host=ip),
                                       headers={"Host": host_header}, extensions=extensions)
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectTimeout:
            last = FetchError("connect", f"{ip}: timeout")
            continue
        except httpx.ConnectError as exc:
            last = FetchError("connect", f"{ip}: {exc}")
            continue
        except httpx.HTTPError as exc:
            raise FetchError("protocol", f"{type(exc).__name__}: {exc}") from None
        try:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                return urljoin(target.url, response.headers["location"])
            if not 200 <= response.status_code < 300:
                raise FetchError("status", str(response.status_code))
            body.open()
            # the bytes as served: never decoded (a Content-Encoding chain is a
            # decompression bomb, and the file's hash is of what the server holds)
            async for chunk in response.aiter_raw():
                if not body.write(chunk):
                    break
            return None
        except httpx.HTTPError as exc:
            raise FetchError("protocol", f"{type(exc).__name__}: {exc}") from None
        finally:
            await response.aclose()
    assert last is not None
    raise last


async def fetch(target: Target, cfg: Download, policy: Policy, body: Body) -> None:
    """Fetch `target` (redirects included) into `body`, or raise FetchError."""
    hops = 0
    async with _client(cfg) as client:
        while True:
            addrs = await policy.resolve(target.host, target.port, socket.SOCK_STREAM,
                                         cfg.connect_timeout)
            location = await _hop(client, target, addrs, body)
            if location is None:
                return
            hops += 1
            if hops > cfg.max_redirects:
                raise FetchError("redirects", f"more than {cfg.max_redirects}")
            schemes = [s for s in cfg.schemes if s in ("http", "https")]
            try:
                target = parse(location, schemes)
            except FetchError as exc:
                raise FetchError("redirect", f"{exc.reason}: {location[:256]}") from None
