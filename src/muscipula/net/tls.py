"""TLS on memory buffers, so the driver sees the raw ClientHello and can start TLS mid-stream.

asyncio's own TLS hides the ClientHello (no SNI-independent cipher list, no
JA3) and cannot take bytes already read; a MemoryBIO pair gives us both with
the same code path for implicit TLS (443) and STARTTLS (FTP AUTH TLS, MySQL).
"""

from __future__ import annotations

import hashlib
import ssl
import struct
from dataclasses import dataclass, field

# GREASE values (RFC 8701) are left out of JA3, as its definition says.
_GREASE = {0x0A0A + 0x1010 * i for i in range(16)}


@dataclass(slots=True)
class ClientHello:
    version: int = 0
    ciphers: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    sni: str = ""
    alpn: list[str] = field(default_factory=list)

    def ja3(self) -> str:
        def join(values: list[int]) -> str:
            return "-".join(str(v) for v in values if v not in _GREASE)

        return ",".join((str(self.version), join(self.ciphers), join(self.extensions),
                         join(self.groups), join(self.point_formats)))

    def fields(self) -> dict[str, object]:
        ja3 = self.ja3()
        return {
            "sni": self.sni, "version": self.version, "ciphers": self.ciphers,
            "extensions": self.extensions, "groups": self.groups,
            "point_formats": self.point_formats, "alpn": self.alpn, "ja3": ja3,
            "ja3_hash": hashlib.md5(ja3.encode(), usedforsecurity=False).hexdigest(),
        }


def parse_client_hello(record: bytes) -> ClientHello | None:
    """Parse the first TLS record if it is a ClientHello; None if not (yet) one."""
    try:
        if len(record) < 5 or record[0] != 0x16:
            return None
        (rec_len,) = struct.unpack_from("!H", record, 3)
        body = record[5 : 5 + rec_len]
        if len(body) < 4 or body[0] != 0x01:
            return None
        hello = ClientHello()
        pos = 4
        (hello.version,) = struct.unpack_from("!H", body, pos)
        pos += 2 + 32
        pos += 1 + body[pos]  # session id
        (n,) = struct.unpack_from("!H", body, pos)
        pos += 2
        hello.ciphers = list(struct.unpack_from(f"!{n // 2}H", body, pos))
        pos += n
        pos += 1 + body[pos]  # compression methods
        if pos + 2 > len(body):
            return hello
        (ext_total,) = struct.unpack_from("!H", body, pos)
        pos += 2
        end = min(pos + ext_total, len(body))
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", body, pos)
            data = body[pos + 4 : pos + 4 + ext_len]
            pos += 4 + ext_len
            hello.extensions.append(ext_type)
            if ext_type == 0 and len(data) >= 5:  # server_name
                (name_len,) = struct.unpack_from("!H", data, 3)
                hello.sni = data[5 : 5 + name_len].decode("ascii", "replace")
            elif ext_type == 10 and len(data) >= 2:  # supported_groups
                (glen,) = struct.unpack_from("!H", data, 0)
                hello.groups = list(struct.unpack_from(f"!{glen // 2}H", data, 2))
            elif ext_type == 11 and data:  # ec_point_formats
                hello.point_formats = list(data[1 : 1 + data[0]])
            elif ext_type == 16 and len(data) >= 2:  # ALPN
                p = 2
                while p < len(data):
                    ln = data[p]
                    hello.alpn.append(data[p + 1 : p + 1 + ln].decode("ascii", "replace"))
                    p += 1 + ln
        return hello
    except (struct.error, IndexError):
        return None


class TlsLayer:
    """Server-side TLS over two memory BIOs: raw bytes in, plaintext and raw bytes out."""

    __slots__ = ("_in", "_obj", "_out", "handshaken", "hello_buf", "hello_done", "plain")

    MAX_HELLO = 16 * 1024 + 5

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.handshaken = False
        self.hello_buf = b""
        self.hello_done = False
        #: the peer spoke something else than TLS first (plain HTTP to 443): no TLS from here
        self.plain = False

    @staticmethod
    def looks_plain(first: int) -> bool:
        """A first byte no ClientHello starts with: a TLS record is 0x16, an SSLv2-style
        hello has the top bit set (the test nginx makes before its handshake)."""
        return first != 0x16 and not first & 0x80

    def take_hello(self, raw: bytes) -> ClientHello | None:
        """Collect the first record until a ClientHello parses (or can't)."""
        if self.hello_done:
            return None
        self.hello_buf += raw
        if len(self.hello_buf) >= 5:
            need = 5 + int.from_bytes(self.hello_buf[3:5], "big")
            if len(self.hello_buf) >= need or len(self.hello_buf) >= self.MAX_HELLO:
                self.hello_done = True
                hello = parse_client_hello(self.hello_buf)
                self.hello_buf = b""
                return hello
        return None

    def feed(self, raw: bytes) -> tuple[bytes, bytes]:
        """Raw bytes from the peer -> (plaintext for the machine, raw bytes to send).

        Raises ssl.SSLError on a failed handshake or a corrupt record.
        """
        self._in.write(raw)
        plain = b""
        if not self.handshaken:
            try:
                self._obj.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                return b"", self._out.read()
        chunks = []
        while True:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        plain = b"".join(chunks)
        return plain, self._out.read()

    def pending(self) -> bytes:
        """Raw bytes OpenSSL has queued for the peer (an alert after a failed handshake)."""
        return self._out.read()

    def encrypt(self, plain: bytes) -> bytes:
        if self.plain:  # the peer never spoke TLS: answers go out as they are
            return plain
        if plain:
            self._obj.write(plain)
        return self._out.read()

    def close_notify(self) -> bytes:
        """The raw close_notify alert to send before closing."""
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # the peer's close_notify is not awaited
        return self._out.read()

    def version(self) -> str | None:
        return self._obj.version()
