"""The ClientHello parser and JA3: real hellos from OpenSSL, handmade ones, and garbage."""

from __future__ import annotations

import hashlib
import ssl
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from muscipula.net.tls import TlsLayer, parse_client_hello


def ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def hello(ciphers: list[int], extensions: list[bytes], version: int = 0x0303,
          session_id: bytes = b"") -> bytes:
    body = struct.pack("!H", version) + b"\x07" * 32 + bytes([len(session_id)]) + session_id
    body += struct.pack("!H", 2 * len(ciphers)) + struct.pack(f"!{len(ciphers)}H", *ciphers)
    body += b"\x01\x00"
    exts = b"".join(extensions)
    body += struct.pack("!H", len(exts)) + exts
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def sni(name: str) -> bytes:
    raw = name.encode()
    entry = b"\x00" + struct.pack("!H", len(raw)) + raw
    return ext(0, struct.pack("!H", len(entry)) + entry)


def groups(*values: int) -> bytes:
    return ext(10, struct.pack("!H", 2 * len(values)) + struct.pack(f"!{len(values)}H", *values))


def point_formats(*values: int) -> bytes:
    return ext(11, bytes([len(values), *values]))


def alpn(*names: str) -> bytes:
    items = b"".join(bytes([len(n)]) + n.encode() for n in names)
    return ext(16, struct.pack("!H", len(items)) + items)


def openssl_hello(server_name: str = "files.example.test") -> bytes:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def test_handmade_hello_gives_the_exact_ja3():
    record = hello([0x1301, 0xC02F, 0x002F],
                   [sni("a.example"), groups(29, 23), point_formats(0), alpn("http/1.1"),
                    ext(13, b"\x00\x02\x04\x03")])
    h = parse_client_hello(record)
    assert h is not None
    assert h.sni == "a.example" and h.alpn == ["http/1.1"]
    assert h.ciphers == [0x1301, 0xC02F, 0x002F]
    assert h.ja3() == "771,4865-49199-47,0-10-11-16-13,29-23,0"
    fields = h.fields()
    assert fields["ja3_hash"] == hashlib.md5(b"771,4865-49199-47,0-10-11-16-13,29-23,0").hexdigest()


def test_grease_values_are_left_out_of_ja3():
    record = hello([0x0A0A, 0x1301, 0xFAFA], [ext(0x2A2A, b""), groups(0x3A3A, 29),
                                              ext(43, b"\x02\x03\x04")])
    h = parse_client_hello(record)
    assert h is not None
    assert h.ja3() == "771,4865,10-43,29,"
    assert 0x0A0A in h.ciphers  # still recorded, only JA3 drops them


def test_real_openssl_hello():
    record = openssl_hello()
    h = parse_client_hello(record)
    assert h is not None
    assert h.version == 0x0303
    assert h.sni == "files.example.test"
    assert h.alpn == ["h2", "http/1.1"]
    assert 0 in h.extensions and 16 in h.extensions and 10 in h.extensions
    assert len(h.ciphers) > 5 and h.groups
    parts = h.ja3().split(",")
    assert len(parts) == 5 and parts[0] == "771"


def test_hello_split_across_reads_is_collected():
    record = openssl_hello("split.example")
    layer = TlsLayer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    got = None
    for i in range(0, len(record), 7):
        got = layer.take_hello(record[i:i + 7]) or got
    assert got is not None and got.sni == "split.example"
    assert layer.hello_done and layer.hello_buf == b""


def test_not_a_hello():
    assert parse_client_hello(b"GET / HTTP/1.1\r\n\r\n") is None
    assert parse_client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # ServerHello
    assert parse_client_hello(b"") is None
    record = openssl_hello()
    assert parse_client_hello(record[:40]) is None  # cut inside the fixed part


def test_oversized_first_record_gives_up_with_bounded_buffer():
    layer = TlsLayer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    junk = b"\x16\x03\x01\xff\xff" + b"\x00" * 1000
    for _ in range(40):
        layer.take_hello(junk)
        assert len(layer.hello_buf) <= TlsLayer.MAX_HELLO + len(junk)
    assert layer.hello_done


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 300), st.binary(max_size=8))
def test_parser_never_raises(noise, cut, patch):
    record = hello([0x1301, 0xC02F], [sni("x.example"), groups(29), alpn("h2")])
    parse_client_hello(noise)
    mutated = bytearray(record)
    pos = cut % len(mutated)
    mutated[pos:pos + len(patch)] = patch
    parse_client_hello(bytes(mutated))
    parse_client_hello(record[:cut])
