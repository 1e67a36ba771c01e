"""SPNEGO (RFC 4178) as an SMB server wraps NTLMSSP: the NegTokenInit offered in NEGOTIATE,
the NegTokenResp legs of SESSION_SETUP, and the client's NTLM token found in its blob.

Only the DER this needs; reading is a bounded walk that never raises."""

from __future__ import annotations

import functools

SPNEGO_OID = "1.3.6.1.5.5.2"
NTLMSSP_OID = "1.3.6.1.4.1.311.2.2.10"
MS_KRB5_OID = "1.2.840.48018.1.2.2"
KRB5_OID = "1.2.840.113554.1.2.2"
KRB5_U2U_OID = "1.2.840.113554.1.2.2.3"
HINT = b"not_defined_in_RFC4178@please_ignore"
ACCEPT_COMPLETED, ACCEPT_INCOMPLETE, REJECT = 0, 1, 2


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _len(len(value)) + value


@functools.lru_cache(maxsize=64)
def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


@functools.lru_cache(maxsize=16)
def neg_token_init(mechs: tuple[str, ...], hint: bool = True) -> bytes:
    """The server's initial token (NEGOTIATE's security buffer): mechanisms and negHints."""
    body = tlv(0xA0, tlv(0x30, b"".join(oid(m) for m in mechs)))
    if hint:
        body += tlv(0xA3, tlv(0x30, tlv(0xA0, tlv(0x1B, HINT))))
    return tlv(0x60, oid(SPNEGO_OID) + tlv(0xA0, tlv(0x30, body)))


def neg_token_resp(state: int, token: bytes = b"", mech: bool = True) -> bytes:
    """A NegTokenResp leg: negState, supportedMech (first answer), responseToken."""
    body = tlv(0xA0, tlv(0x0A, bytes([state])))
    if mech:
        body += tlv(0xA1, oid(NTLMSSP_OID))
    if token:
        body += tlv(0xA2, tlv(0x04, token))
    return tlv(0xA1, tlv(0x30, body))


def _read(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(tag, value start, value end) of the TLV at `pos`, or None if it does not fit."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            return None
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        return None
    return tag, pos, pos + length


_CONSTRUCTED = {0x60, 0x30, 0xA0, 0xA1, 0xA2, 0xA3}


def ntlm_token(blob: bytes, max_nodes: int = 64) -> bytes | None:
    """The NTLMSSP message in a security blob: raw, or the mechToken/responseToken of a
    NegTokenInit/NegTokenResp (the first OCTET STRING holding one); None if there is none."""
    if blob.startswith(b"NTLMSSP\0"):
        return blob
    stack = [(0, len(blob))]
    nodes = 0
    while stack and nodes < max_nodes:
        pos, end = stack.pop()
        while pos < end and nodes < max_nodes:
            nodes += 1
            item = _read(blob[:end], pos)
            if item is None:
                break
            tag, start, stop = item
            if tag == 0x04 and blob[start:start + 8] == b"NTLMSSP\0":
                return blob[start:stop]
            if tag in _CONSTRUCTED:
                stack.append((stop, end))
                pos, end = start, stop
                if tag == 0x60:  # GSS-API framing: the OID, then the choice
                    inner = _read(blob[:end], pos)
                    if inner is not None and inner[0] == 0x06:
                        pos = inner[2]
                continue
            pos = stop
    return None
