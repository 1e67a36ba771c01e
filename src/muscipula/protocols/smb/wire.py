"""SMB1 and SMB2 headers, NT status codes and command names: packing and bounded reading."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SMB1_MAGIC = b"\xffSMB"
SMB2_MAGIC = b"\xfeSMB"

SUCCESS = 0x00000000
MORE_PROCESSING_REQUIRED = 0xC0000016
INVALID_PARAMETER = 0xC000000D
NOT_IMPLEMENTED = 0xC0000002
ACCESS_DENIED = 0xC0000022
OBJECT_NAME_NOT_FOUND = 0xC0000034
LOGON_FAILURE = 0xC000006D
NOT_SUPPORTED = 0xC00000BB
BAD_NETWORK_NAME = 0xC00000CC
NETWORK_NAME_DELETED = 0xC00000C9
USER_SESSION_DELETED = 0xC0000203
FILE_CLOSED = 0xC0000128
INSUFFICIENT_RESOURCES = 0xC000009A
PENDING = 0x00000103
BUFFER_OVERFLOW = 0x80000005
NO_MORE_FILES = 0x80000006
INVALID_INFO_CLASS = 0xC0000003
INFO_LENGTH_MISMATCH = 0xC0000004
INVALID_HANDLE = 0xC0000008
INVALID_DEVICE_REQUEST = 0xC0000010
END_OF_FILE = 0xC0000011
NO_SUCH_FILE = 0xC000000F
OBJECT_NAME_COLLISION = 0xC0000035
OBJECT_PATH_NOT_FOUND = 0xC000003A
DISK_FULL = 0xC000007F
FILE_IS_A_DIRECTORY = 0xC00000BA
NOT_A_DIRECTORY = 0xC0000103
TOO_MANY_OPENED_FILES = 0xC000011F
CANCELLED = 0xC0000120
NOT_FOUND = 0xC0000225
SMB_BAD_UID = 0x005B0002  # ERRSRV/ERRbaduid, as Windows answers SMB1 without a session
SMB_BAD_TID = 0x00050002  # ERRSRV/ERRinvnid

STATUS_NAMES = {
    SUCCESS: "STATUS_SUCCESS", MORE_PROCESSING_REQUIRED: "STATUS_MORE_PROCESSING_REQUIRED",
    INVALID_PARAMETER: "STATUS_INVALID_PARAMETER", NOT_IMPLEMENTED: "STATUS_NOT_IMPLEMENTED",
    ACCESS_DENIED: "STATUS_ACCESS_DENIED", OBJECT_NAME_NOT_FOUND: "STATUS_OBJECT_NAME_NOT_FOUND",
    LOGON_FAILURE: "STATUS_LOGON_FAILURE", NOT_SUPPORTED: "STATUS_NOT_SUPPORTED",
    BAD_NETWORK_NAME: "STATUS_BAD_NETWORK_NAME", NETWORK_NAME_DELETED:
    "STATUS_NETWORK_NAME_DELETED", USER_SESSION_DELETED: "STATUS_USER_SESSION_DELETED",
    FILE_CLOSED: "STATUS_FILE_CLOSED",
    INSUFFICIENT_RESOURCES: "STATUS_INSUFFICIENT_RESOURCES", SMB_BAD_UID: "ERRSRV/ERRbaduid",
    SMB_BAD_TID: "ERRSRV/ERRinvnid", PENDING: "STATUS_PENDING",
    BUFFER_OVERFLOW: "STATUS_BUFFER_OVERFLOW", NO_MORE_FILES: "STATUS_NO_MORE_FILES",
    INVALID_INFO_CLASS: "STATUS_INVALID_INFO_CLASS",
    INFO_LENGTH_MISMATCH: "STATUS_INFO_LENGTH_MISMATCH", INVALID_HANDLE: "STATUS_INVALID_HANDLE",
    INVALID_DEVICE_REQUEST: "STATUS_INVALID_DEVICE_REQUEST", END_OF_FILE: "STATUS_END_OF_FILE",
    NO_SUCH_FILE: "STATUS_NO_SUCH_FILE", OBJECT_NAME_COLLISION: "STATUS_OBJECT_NAME_COLLISION",
    OBJECT_PATH_NOT_FOUND: "STATUS_OBJECT_PATH_NOT_FOUND", DISK_FULL: "STATUS_DISK_FULL",
    FILE_IS_A_DIRECTORY: "STATUS_FILE_IS_A_DIRECTORY", NOT_A_DIRECTORY: "STATUS_NOT_A_DIRECTORY",
    TOO_MANY_OPENED_FILES: "STATUS_TOO_MANY_OPENED_FILES", CANCELLED: "STATUS_CANCELLED",
    NOT_FOUND: "STATUS_NOT_FOUND",
}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


SMB2_COMMANDS = ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT",
                 "CREATE", "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO",
                 "QUERY_DIRECTORY", "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")

SMB1_COMMANDS = {
    0x04: "CLOSE", 0x06: "DELETE", 0x24: "LOCKING_ANDX", 0x25: "TRANSACTION",
    0x26: "TRANSACTION_SECONDARY", 0x2B: "ECHO", 0x2D: "OPEN_ANDX", 0x2E: "READ_ANDX",
    0x2F: "WRITE_ANDX", 0x32: "TRANSACTION2", 0x33: "TRANSACTION2_SECONDARY",
    0x71: "TREE_DISCONNECT", 0x72: "NEGOTIATE", 0x73: "SESSION_SETUP_ANDX", 0x74: "LOGOFF_ANDX",
    0x75: "TREE_CONNECT_ANDX", 0xA0: "NT_TRANSACT", 0xA2: "NT_CREATE_ANDX", 0xA4: "NT_CANCEL",
}


def smb2_name(command: int) -> str:
    return SMB2_COMMANDS[command] if command < len(SMB2_COMMANDS) else f"0x{command:04X}"


def smb1_name(command: int) -> str:
    return SMB1_COMMANDS.get(command, f"0x{command:02X}")


_SMB2 = struct.Struct("<4sHHIHHIIQIIQ16s")
_SMB1 = struct.Struct("<4sBIBHH8sHHHHH")
SMB2_HEADER = _SMB2.size  # 64
SMB1_HEADER = _SMB1.size  # 32
FLAG_RESPONSE = 0x00000001
FLAG_ASYNC = 0x00000002
FLAG_RELATED = 0x00000004
FLAG_SIGNED = 0x00000008


@dataclass(slots=True)
class Smb2Header:
    credit_charge: int
    status: int
    command: int
    credits: int
    flags: int
    next_command: int
    message_id: int
    process_id: int
    tree_id: int
    session_id: int


def parse_smb2(data: bytes) -> Smb2Header | None:
    if len(data) < SMB2_HEADER or data[:4] != SMB2_MAGIC:
        return None
    (_m, _size, charge, status, command, credits, flags, nxt, mid, pid, tid, sid,
     _sig) = _SMB2.unpack_from(data)
    return Smb2Header(charge, status, command, credits, flags, nxt, mid, pid, tid, sid)


def smb2_header(req: Smb2Header, status: int, credits: int, *, session_id: int | None = None,
                tree_id: int | None = None, next_command: int = 0, command: int | None = None,
                message_id: int | None = None) -> bytes:
    flags = FLAG_RESPONSE | (req.flags & FLAG_RELATED)
    return _SMB2.pack(SMB2_MAGIC, 64, req.credit_charge, status,
                      req.command if command is None else command, credits, flags,
                      next_command, req.message_id if message_id is None else message_id,
                      req.process_id, req.tree_id if tree_id is None else tree_id,
                      req.session_id if session_id is None else session_id, bytes(16))


@dataclass(slots=True)
class Smb1Header:
    command: int
    flags: int
    flags2: int
    pid_high: int
    tid: int
    pid: int
    uid: int
    mid: int


def parse_smb1(data: bytes) -> Smb1Header | None:
    if len(data) < SMB1_HEADER or data[:4] != SMB1_MAGIC:
        return None
    (_m, command, _status, flags, flags2, pid_high, _sec, _res, tid, pid, uid,
     mid) = _SMB1.unpack_from(data)
    return Smb1Header(command, flags, flags2, pid_high, tid, pid, uid, mid)


#: REPLY; the request's CASE_INSENSITIVE and CANONICALIZED_PATHS are echoed
SMB1_REPLY = 0x80
SMB1_ECHOED_FLAGS = 0x18
#: UNICODE | NT_STATUS | EXTENDED_SECURITY | IS_LONG_NAME | EAS | LONG_NAMES (Windows' answer)
SMB1_REPLY_FLAGS2 = 0xC843
NT_STATUS = 0x4000


def smb1_header(req: Smb1Header, status: int, *, uid: int | None = None,
                tid: int | None = None, flags2: int | None = None) -> bytes:
    """Windows answers with the request's own flags (of those it knows) and NT statuses:
    nmap tells 2008 R2 from 2003 by its 0x88/0x4001 answer to a 0x08/0x4001 request."""
    f2 = (SMB1_REPLY_FLAGS2 if flags2 is None else flags2) & (req.flags2 | NT_STATUS)
    flags = SMB1_REPLY | (req.flags & SMB1_ECHOED_FLAGS)
    return _SMB1.pack(SMB1_MAGIC, req.command, status, flags, f2, req.pid_high,
                      bytes(8), 0, req.tid if tid is None else tid, req.pid,
                      req.uid if uid is None else uid, req.mid)


def smb1_body(words: bytes, data: bytes) -> bytes:
    """WordCount, the parameter words, ByteCount and the data."""
    return bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data


def smb1_error(req: Smb1Header, status: int, **kw: int) -> bytes:
    return smb1_header(req, status, **kw) + b"\0\0\0"


def smb2_error(req: Smb2Header, status: int, credits: int, **kw: int) -> bytes:
    return smb2_header(req, status, credits, **kw) + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"


def message_room(max_message: int) -> int:
    """The largest read or write announced: never more than a message may carry (Samba's
    8 MiB comes down to what max_message leaves room for)."""
    return max(65536, (max_message - 65536) // 65536 * 65536)


def filetime(seconds: float) -> int:
    return int((seconds + 11644473600) * 10_000_000) if seconds > 0 else 0


def utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def read_utf16z(data: bytes, pos: int, limit: int = 1024) -> tuple[str, int]:
    """A NUL-terminated UTF-16LE string at `pos` (at most `limit` chars) and the position after."""
    end = pos
    stop = min(len(data) - 1, pos + 2 * limit)
    while end < stop and data[end:end + 2] != b"\0\0":
        end += 2
    return data[pos:end].decode("utf-16-le", "replace"), end + 2
