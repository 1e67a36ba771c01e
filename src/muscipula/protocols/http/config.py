"""HTTP service config: ports, document root, lures and every request limit.

Limits left at `null` take the persona's product default (nginx's 8k buffers
and 1m body, HTTP.sys's 16k request bytes and IIS's 30 MB body), so the edges
a scanner probes sit where the real server has them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from muscipula.config import NonNegInt, Port, PositiveInt, Seconds, ServiceConfig, Strict


class Lure(Strict):
    """A canned answer for one path (or path prefix); form posts to it are logins."""

    path: str = Field(pattern=r"^/")
    match: Literal["exact", "prefix"] = "exact"
    status: int = Field(200, ge=100, le=599)
    content_type: str = "text/html; charset=UTF-8"
    headers: list[tuple[str, str]] = []
    #: inline body, or `body_file`: a file name under the package's lure folder or a path
    body: str = ""
    body_file: str | None = None
    #: form field names that carry the user name and the password
    username_fields: list[str] = ["username", "user", "login", "log", "pma_username", "email"]
    password_fields: list[str] = ["password", "pass", "pwd", "passwd", "pma_password"]


DEFAULT_LURES: list[Lure] = [
    Lure(path="/wp-login.php", body_file="wp-login.html"),
    Lure(path="/phpmyadmin/", match="prefix", body_file="phpmyadmin.html"),
    Lure(path="/.env", content_type="text/plain", body_file="env.txt"),
]


class HttpConfig(ServiceConfig):
    tcp_ports: list[Port] = [80]
    tls_ports: list[Port] = [443]
    #: a read-only folder served instead of the persona's default site (null: built in)
    docroot: str | None = None
    #: most bytes read from `docroot` at start (files are served from memory)
    max_docroot_bytes: PositiveInt = 32 * 1024 * 1024
    directory_listing: bool = False
    lures: list[Lure] = DEFAULT_LURES
    #: nginx compresses text/html for clients that ask (Debian's `gzip on`)
    gzip: bool = True

    # request limits (null: the persona's product default)
    max_request_line: PositiveInt | None = None
    max_header_line: PositiveInt | None = None
    max_header_bytes: PositiveInt | None = None
    max_headers: PositiveInt = 500
    max_body_size: PositiveInt | None = None
    max_requests_per_connection: PositiveInt = 1000
    header_timeout: Seconds | None = None
    body_timeout: Seconds | None = None
    keepalive_timeout: Seconds | None = None

    # what is recorded
    #: body bytes kept in memory per request to parse forms and multipart uploads
    max_body_keep: PositiveInt = 1024 * 1024
    #: body bytes written into the request's logsql row and JSON line
    max_body_log: NonNegInt = 4096
    #: bytes of a header value kept in the logs
    max_header_log: PositiveInt = 8192
    #: multipart file parts stored per request
    max_files: PositiveInt = 16

    # repeated identical bodiless requests reuse the answer built for the first one
    # within the same second (answers.py); 0 turns this off
    answer_cache_entries: NonNegInt = 128
    answer_cache_max_head: PositiveInt = 4096
    answer_cache_max_reply: PositiveInt = 32 * 1024
