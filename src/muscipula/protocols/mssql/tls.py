"""TLS inside TDS (MS-TDS 2.2.6.5, 3.2.5.2): the server side, on memory buffers.

After a PRELOGIN that negotiates encryption the client's TLS handshake records come
wrapped in TDS PRELOGIN (0x12) packets, and SQL Server answers its handshake flights
the same way. Once the handshake is done the records flow bare on the TCP stream,
each carrying TDS packets. With ENCRYPT_OFF only the LOGIN7 travels that way: the
server drops TLS after it and answers in the clear.

Pure computation over ssl.MemoryBIO: no socket, no clock. Every byte held is counted
against `limit`.
"""

from __future__ import annotations

import ssl
import struct
from dataclasses import dataclass

from muscipula.net.tls import ClientHello, parse_client_hello
from muscipula.protocols.mssql import tds as T

#: first bytes of bare TLS records (change_cipher_spec, alert, handshake, application_data)
RECORD_TYPES = frozenset((0x14, 0x15, 0x16, 0x17))
MAX_HELLO = 16 * 1024 + 5


class TlsFailure(Exception):
    """The peer's TLS could not be used; `alert` is what OpenSSL wrote back (maybe empty)."""

    def __init__(self, detail: str, alert: bytes) -> None:
        super().__init__(detail)
        self.detail = detail
        self.alert = alert


@dataclass(slots=True)
class Fed:
    """What one call to `TdsTls.feed` gave: bytes for the peer, plaintext, the hello."""

    send: bytes = b""
    plain: bytes = b""
    hello: ClientHello | None = None
    #: the client sent TDS in the clear where a handshake was due (a plain LOGIN7)
    clear: bytes = b""
    done: bool = False


class TdsTls:
    def __init__(self, context: ssl.SSLContext, limit: int) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.limit = limit
        self.handshaken = False
        self.raw = bytearray()  # handshake phase: bytes not yet unwrapped from TDS
        self.hello_buf = bytearray()
        self.hello_done = False

    def held(self) -> int:
        return len(self.raw) + len(self.hello_buf) + self._in.pending + self._out.pending

    def version(self) -> str | None:
        return self._obj.version()

    def cipher(self) -> str | None:
        info = self._obj.cipher()
        return info[0] if info else None

    # -------------------------------------------------------------- input

    def feed(self, data: bytes) -> Fed:
        """Bytes from the peer. Raises TlsFailure on broken TLS or a bound exceeded.

        A read may be far larger than `limit` (the event loop hands up to 256 KiB): it is
        taken in slices, each decrypted before the next goes in, so only bytes that stay
        held (an unfinished record or handshake packet) count against the bound."""
        fed = Fed()
        view = memoryview(data)
        step = max(self.limit // 2, 1)
        while view and not self.handshaken:
            piece, view = view[:step], view[step:]
            self._handshake_input(bytes(piece), fed)
            if fed.clear:  # no TLS after all: the rest of the read is clear TDS too
                fed.clear += bytes(view)
                return fed
        if not self.handshaken:
            return fed
        plain = [self._read_plain()]  # what the handshake's last slice carried behind it
        while view:
            room = self.limit - self._in.pending
            if room <= 0:
                raise TlsFailure("max_tls_buffer", b"")
            piece, view = view[:room], view[room:]
            self._in.write(piece)
            plain.append(self._read_plain())
        fed.plain = b"".join(plain)
        return fed

    def _push(self, data: bytes) -> None:
        if self._in.pending + len(data) > self.limit:
            raise TlsFailure("max_tls_buffer", b"")
        self._in.write(data)

    def _handshake_input(self, data: bytes, fed: Fed) -> None:
        self.raw += data
        if len(self.raw) > self.limit:
            raise TlsFailure("max_tls_buffer", b"")
        while self.raw and not self.handshaken:
            first = self.raw[0]
            bare = first in RECORD_TYPES
            if bare:
                # bare records before the handshake ended (a client whose last flight
                # is sent unwrapped, as with TLS 1.3): taken as they come
                chunk = bytes(self.raw)
                self.raw.clear()
            elif first == T.PRELOGIN:
                if len(self.raw) < T.HEADER:
                    return
                length = struct.unpack_from(">H", self.raw, 2)[0]
                if length < T.HEADER:
                    raise TlsFailure("bad TDS length in TLS handshake", b"")
                if len(self.raw) < length:
                    return
                chunk = bytes(self.raw[T.HEADER:length])
                del self.raw[:length]
            else:
                # TDS in the clear (a LOGIN7 from a client that never meant to do TLS)
                fed.clear = bytes(self.raw)
                self.raw.clear()
                return
            self._note_hello(chunk, fed)
            self._push(chunk)
            self._step(fed, wrap=not bare)
        if self.handshaken and self.raw:  # bare records behind the last wrapped flight
            rest = bytes(self.raw)
            self.raw.clear()
            self._push(rest)

    def _note_hello(self, chunk: bytes, fed: Fed) -> None:
        if self.hello_done:
            return
        self.hello_buf += chunk[:MAX_HELLO - len(self.hello_buf)]
        buf = self.hello_buf
        if len(buf) >= 5:
            need = 5 + int.from_bytes(buf[3:5], "big")
            if len(buf) >= need or len(buf) >= MAX_HELLO:
                self.hello_done = True
                fed.hello = parse_client_hello(bytes(buf))
                self.hello_buf = bytearray()

    def _step(self, fed: Fed, wrap: bool) -> None:
        try:
            self._obj.do_handshake()
            self.handshaken = True
            fed.done = True
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ValueError) as exc:
            raise TlsFailure(_reason(exc), self._out.read()) from None
        out = self._out.read()
        if out:
            # handshake flights go back wrapped in PRELOGIN packets, as SQL Server's; to a
            # client already sending bare records (TLS 1.3 tickets) they go bare too
            fed.send += T.packets(T.PRELOGIN, out, 4096, 0) if wrap else out

    def _read_plain(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._obj.read(16384)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break
            except (ssl.SSLError, ValueError) as exc:
                raise TlsFailure(_reason(exc), self._out.read()) from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    # -------------------------------------------------------------- output

    def encrypt(self, plain: bytes) -> bytes:
        if plain:
            self._obj.write(plain)
        return self._out.read()

    def leftover(self) -> bytes:
        """Raw bytes still unread (for dropping TLS after the login, ENCRYPT_OFF)."""
        return self._in.read()


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return f"tls: {reason or exc.__class__.__name__}"
