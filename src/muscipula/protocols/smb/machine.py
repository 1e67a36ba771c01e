"""One SMB connection: NetBIOS session framing, then SMB1 or SMB2 messages.

On 139 a NetBIOS SESSION REQUEST comes first and is answered POSITIVE RESPONSE; on 445 the
four-byte header carries a 24-bit length. A message over `max_message` closes the
connection, as Windows and Samba drop a client that announces more than they take.

A large message that is not SMB is what EternalBlue grooms the kernel pool with: the server
reads all of it into one buffer before dropping the connection, and the bytes carry the kernel
shellcode and its payload. They are captured as they come (never held) and the connection is
closed once the announced length is in.
"""

from __future__ import annotations

from muscipula.machine import Action, BaseMachine, CaptureData, CaptureEnd, Close, Emit, Send
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.auth import Setup
from muscipula.protocols.smb.files import Files
from muscipula.protocols.smb.smb1 import Smb1
from muscipula.protocols.smb.smb2 import Smb2

SESSION_MESSAGE, SESSION_REQUEST, POSITIVE, KEEPALIVE = 0x00, 0x81, 0x82, 0x85
#: a non-SMB message at least this long is taken as a pool grooming buffer and captured
GROOM_MIN = 4096


def _is_smb(head: bytes) -> bool:
    return head[:4] == W.SMB1_MAGIC or (head[:4] == W.SMB2_MAGIC and head[4:6] == b"\x40\0")


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
        #: bytes of a grooming message still to come, and what came of it
        self.groom_left = 0
        self.groom_size = 0
        self.groom_head = b""

    def buffered(self) -> int:
        return len(self.buf) + self.files.buffered() + self.smb1.trans.buffered()

    def closed(self, now: float) -> list[Action]:
        out = self.files.close_all() + self.smb1.trans.closed()
        if self.groom_left:
            out += self._groom_end(complete=False)
        return out

    def _groom(self, data: bytes) -> list[Action]:
        take = data[:self.groom_left]
        self.groom_left -= len(take)
        self.groom_size += len(take)
        if len(self.groom_head) < 512:
            self.groom_head += take[:512 - len(self.groom_head)]
        out: list[Action] = [CaptureData("smb-groom", take)] if take else []
        if not self.groom_left:
            self.done = True
            out += [*self._groom_end(complete=True), Close("not smb")]
        return out

    def _groom_end(self, complete: bool) -> list[Action]:
        self.groom_left = 0
        return [Emit("smb.ms17_010", {"stage": "groom", "size": self.groom_size,
                                      "data": self.groom_head, "command": None}),
                CaptureEnd("smb-groom", f"smb://{self.remote_host}/ms17-010", complete)]

    def share_status(self, share: str) -> tuple[int, str]:
        """(status, kind) of a TREE_CONNECT to `share`, per the configured shares."""
        name = share.upper()
        if name in ("ADMIN$", "C$") and not self.s.cfg.admin_shares:
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
        if self.groom_left:
            return self._groom(data)
        self.buf += data
        while len(self.buf) >= 4 and not self.done:
            kind = self.buf[0]
            length = int.from_bytes(self.buf[1:4], "big")
            if kind == SESSION_MESSAGE and GROOM_MIN <= length <= self.s.cfg.max_message and \
                    len(self.buf) >= 10 and not _is_smb(self.buf[4:10]):
                rest = bytes(self.buf[4:])
                self.buf.clear()
                self.groom_left, self.groom_size, self.groom_head = length, 0, b""
                return out + self._groom(rest)
            if kind not in (SESSION_MESSAGE, SESSION_REQUEST, KEEPALIVE) or \
                    length > self.s.cfg.max_message:
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
        if message[:4] == W.SMB2_MAGIC and not self.smb1.dialect:
            replies, out = self.smb2.handle(message, now)
            replies = [_chain(replies)] if len(replies) > 1 else replies
        elif message[:4] == W.SMB1_MAGIC and not self.smb2.dialect:
            replies, out = self.smb1.handle(message, now)
        else:
            # neither SMB nor the dialect already chosen (SMB2 after an SMB1 NEGOTIATE, SMB1
            # after SMB2): both servers hang up
            self.done = True
            return [Emit("protocol.error", {"detail": "not an SMB message",
                                            "data": message[:512]}), Close("not smb")]
        actions: list[Action] = list(out)
        for reply in replies:
            actions.append(Send(len(reply).to_bytes(4, "big") + reply))
        if self.close_after or self.errors > self.s.cfg.max_protocol_errors:
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
