"""One SMB connection: NetBIOS session framing, then SMB1 or SMB2 messages.

On 139 a NetBIOS SESSION REQUEST comes first and is answered POSITIVE RESPONSE; on 445 the
four-byte header carries a 24-bit length. A message over `max_message` closes the
connection, as Windows and Samba drop a client that announces more than they take.
"""

from __future__ import annotations

from muscipula.machine import Action, BaseMachine, Close, Emit, Send
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.auth import Setup
from muscipula.protocols.smb.files import Files
from muscipula.protocols.smb.smb1 import Smb1
from muscipula.protocols.smb.smb2 import Smb2

SESSION_MESSAGE, SESSION_REQUEST, POSITIVE, KEEPALIVE = 0x00, 0x81, 0x82, 0x85


class SmbMachine(BaseMachine):
    protocol = "smbd"

    def __init__(self, setup: Setup, remote_host: str) -> None:
        self.s = setup
        self.remote_host = remote_host
        self.buf = bytearray()
        self.files = Files(setup, remote_host)
        self.smb1 = Smb1(self)
        self.smb2 = Smb2(self)
        self.errors = 0
        self.close_after = False
        self.done = False

    def buffered(self) -> int:
        return len(self.buf) + self.files.buffered()

    def closed(self, now: float) -> list[Action]:
        return self.files.close_all()

    def share_status(self, share: str) -> tuple[int, str]:
        """(status, kind) of a TREE_CONNECT to `share`, per the configured shares."""
        name = share.upper()
        if name in ("ADMIN$", "C$") and not self.s.admin_shares:
            return W.ACCESS_DENIED, ""
        if name == "IPC$":
            return W.SUCCESS, "pipe"
        if name in ("ADMIN$", "C$"):
            return W.SUCCESS, "disk"
        kind = self.s.shares.get(name)
        if kind is None:
            return W.BAD_NETWORK_NAME, ""
        return W.SUCCESS, kind

    def receive(self, data: bytes, now: float) -> list[Action]:
        out: list[Action] = []
        if self.done:
            return out
        self.buf += data
        while len(self.buf) >= 4 and not self.done:
            kind = self.buf[0]
            length = int.from_bytes(self.buf[1:4], "big")
            if kind not in (SESSION_MESSAGE, SESSION_REQUEST, KEEPALIVE) or \
                    length > self.s.max_message:
                self.done = True
                detail = "message too long" if kind == SESSION_MESSAGE else \
                    f"NetBIOS session packet type 0x{kind:02x}"
                out += [Emit("protocol.error", {"detail": detail,
                                                "data": bytes(self.buf[:512])}),
                        Close(detail)]
                self.buf.clear()
                break
            if len(self.buf) < 4 + length:
                break
            message = bytes(self.buf[4:4 + length])
            del self.buf[:4 + length]
            if kind == SESSION_REQUEST:
                out.append(Send(b"\x82\0\0\0"))
            elif kind == SESSION_MESSAGE:
                out += self._message(message, now)
        return out

    def _message(self, message: bytes, now: float) -> list[Action]:
        if message[:4] == W.SMB2_MAGIC:
            replies, out = self.smb2.handle(message, now)
            replies = [_chain(replies)] if len(replies) > 1 else replies
        elif message[:4] == W.SMB1_MAGIC and not self.smb2.dialect:
            replies, out = self.smb1.handle(message, now)
        else:
            # neither SMB nor the dialect already chosen: both servers hang up
            self.done = True
            return [Emit("protocol.error", {"detail": "not an SMB message",
                                            "data": message[:512]}), Close("not smb")]
        actions: list[Action] = list(out)
        for reply in replies:
            actions.append(Send(len(reply).to_bytes(4, "big") + reply))
        if self.close_after or self.errors > self.s.max_protocol_errors:
            self.done = True
            actions.append(Close("protocol"))
        return actions


def _chain(replies: list[bytes]) -> bytes:
    """Compounded responses: each padded to 8 bytes, NextCommand pointing at the next."""
    out = bytearray()
    for i, reply in enumerate(replies):
        body = bytearray(reply)
        if i < len(replies) - 1:
            body += bytes((8 - len(body) % 8) % 8)
            body[20:24] = len(body).to_bytes(4, "little")
        out += body
    return bytes(out)
