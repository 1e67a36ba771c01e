"""Open files and pipes of one connection, the same for SMB1 and SMB2.

Pipes on IPC$ carry DCE/RPC (dcerpc.Pipe). Disk shares are empty volumes that take writes:
every file created is captured (CaptureData in file order, CaptureEnd on CLOSE). Writes at
the next offset go straight out; a write ahead of it waits in a per-connection budget until
the gap is filled or the file is closed (then gaps are zeros, as in a sparse file). Rewrites
of bytes already captured are dropped and mark the capture incomplete. Names are attacker
input: they appear in the url and incidents only, never as paths on our disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from muscipula.machine import Action, CaptureData, CaptureEnd, Emit
from muscipula.protocols.smb import dcerpc
from muscipula.protocols.smb import wire as W
from muscipula.protocols.smb.interfaces import PIPES

if TYPE_CHECKING:
    from muscipula.protocols.smb.auth import Setup

SUPERSEDE, OPEN, CREATE, OPEN_IF, OVERWRITE, OVERWRITE_IF = range(6)
#: CreateAction
SUPERSEDED, OPENED, CREATED, OVERWRITTEN = range(4)
DIRECTORY_FILE, NON_DIRECTORY_FILE = 0x1, 0x40
CHUNK = 64 * 1024


@dataclass(slots=True)
class Open:
    handle: int
    session: int
    tree: int
    share: str
    path: str
    kind: str  # "pipe", "file" or "dir"
    pipe: dcerpc.Pipe | None = None
    stream: str = ""
    #: the next file offset the capture takes, and the file's end
    next: int = 0
    size: int = 0
    pending: dict[int, bytes] = field(default_factory=dict)
    lossy: bool = False
    #: some bytes were written through this handle
    wrote: bool = False


def pipe_name(name: str) -> str:
    """`\\PIPE\\srvsvc`, `\\srvsvc` and `srvsvc` are one pipe."""
    name = name.replace("/", "\\").lstrip("\\")
    if name.lower().startswith("pipe\\"):
        name = name[5:]
    return name.lower()


def clean_path(name: str) -> str:
    return "\\".join(p for p in name.replace("/", "\\").split("\\") if p).rstrip("\0")


class Files:
    def __init__(self, s: Setup, remote_host: str) -> None:
        self.s = s
        self.remote_host = remote_host
        self.opens: dict[int, Open] = {}
        #: (share, lower path) -> "file" / "dir": what this connection created
        self.names: dict[tuple[str, str], str] = {}
        #: (share, lower path) -> the size a file had when last closed
        self.sizes: dict[tuple[str, str], int] = {}
        self.pending = 0
        self.count = 0

    def buffered(self) -> int:
        return self.pending + sum(o.pipe.buffered() for o in self.opens.values() if o.pipe)

    def get(self, handle: int, session: int) -> Open | None:
        o = self.opens.get(handle)
        return o if o is not None and o.session == session else None

    def _add(self, session: int, tree: int, share: str, path: str, kind: str) -> Open:
        self.count += 1
        handle = (self.s.file_base + self.count) & 0xFFFFFFFFFFFF
        o = Open(handle, session, tree, share, path, kind)
        self.opens[handle] = o
        return o

    def create(self, session: int, tree: int, share: str, share_kind: str, name: str,
               disposition: int, options: int) -> tuple[int, Open | None, int]:
        """(status, open, CreateAction) of a CREATE / NT_CREATE_ANDX."""
        if len(self.opens) >= self.s.cfg.max_open_files:
            return W.TOO_MANY_OPENED_FILES, None, 0
        if share_kind == "pipe":
            pipe = pipe_name(name)
            if pipe not in PIPES:
                return W.OBJECT_NAME_NOT_FOUND, None, 0
            o = self._add(session, tree, share, pipe, "pipe")
            limits = dcerpc.Limits(self.s.cfg.max_rpc_request, self.s.cfg.max_pipe_output)
            o.pipe = dcerpc.Pipe(pipe, self.s.interfaces, limits,
                                 int.from_bytes(self.s.random(2), "little") | 0x10000)
            return W.SUCCESS, o, OPENED
        path = clean_path(name)
        key = (share, path.lower())
        exists = self.names.get(key) if path else "dir"
        parent = path.rsplit("\\", 1)[0] if "\\" in path else ""
        if parent and self.names.get((share, parent.lower())) != "dir":
            return W.OBJECT_PATH_NOT_FOUND, None, 0
        if disposition > OVERWRITE_IF:
            return W.INVALID_PARAMETER, None, 0
        if exists == "dir" and options & NON_DIRECTORY_FILE:
            return W.FILE_IS_A_DIRECTORY, None, 0
        if exists == "file" and options & DIRECTORY_FILE:
            return W.NOT_A_DIRECTORY, None, 0
        if exists:
            if disposition == CREATE:
                return W.OBJECT_NAME_COLLISION, None, 0
            if exists == "dir" and disposition in (SUPERSEDE, OVERWRITE, OVERWRITE_IF):
                return W.ACCESS_DENIED if not path else W.INVALID_PARAMETER, None, 0
            action = {SUPERSEDE: SUPERSEDED, OVERWRITE: OVERWRITTEN,
                      OVERWRITE_IF: OVERWRITTEN}.get(disposition, OPENED)
        else:
            if disposition in (OPEN, OVERWRITE):
                return W.OBJECT_NAME_NOT_FOUND, None, 0
            if len(self.names) >= self.s.cfg.max_names:
                return W.DISK_FULL, None, 0
            exists = "dir" if options & DIRECTORY_FILE else "file"
            self.names[key] = exists
            action = CREATED
        o = self._add(session, tree, share, path, exists)
        if exists == "file":
            o.stream = f"smb-{o.handle:x}"
            if action == OPENED:
                # an earlier file opened again: what it gets is captured from its end on
                o.size = o.next = self.sizes.get(key, 0)
                o.lossy = o.size > 0
        return W.SUCCESS, o, action

    def delete(self, share: str, name: str) -> int:
        """An SMB1 DELETE: a file this connection made goes; anything else was never there."""
        path = clean_path(name)
        key = (share, path.lower())
        kind = self.names.get(key)
        if kind is None:
            parent = path.rsplit("\\", 1)[0] if "\\" in path else ""
            if parent and self.names.get((share, parent.lower())) != "dir":
                return W.OBJECT_PATH_NOT_FOUND
            return W.OBJECT_NAME_NOT_FOUND
        if kind == "dir":
            return W.FILE_IS_A_DIRECTORY
        del self.names[key]
        self.sizes.pop(key, None)
        return W.SUCCESS

    def url(self, o: Open) -> str:
        path = quote(o.path.replace("\\", "/"), safe="/!$&'()+,;=@~-._")
        return f"smb://{self.remote_host}/{quote(o.share, safe='$')}/{path}"

    def write(self, o: Open, offset: int, data: bytes) -> tuple[int, list[Action]]:
        """A write to a file: the status and the capture actions."""
        out: list[Action] = []
        if offset + len(data) > self.s.cfg.max_file_size:
            return W.DISK_FULL, out
        o.size = max(o.size, offset + len(data))
        if offset < o.next:
            o.lossy = True  # bytes already captured are kept as first written
            data = data[o.next - offset:]
            offset = o.next
        if not data:
            return W.SUCCESS, out
        o.wrote = True
        if offset > o.next:
            if self.pending + len(data) > self.s.cfg.max_write_pending or \
                    len(o.pending) >= 1024:
                o.lossy = True
                out.append(Emit("protocol.error", {"detail": "out-of-order write dropped",
                                                   "data": b""}))
                return W.SUCCESS, out
            old = o.pending.get(offset, b"")
            if len(data) > len(old):
                o.pending[offset] = data
                self.pending += len(data) - len(old)
            return W.SUCCESS, out
        out.append(CaptureData(o.stream, data))
        o.next += len(data)
        out += self._drain(o, fill=False)
        return W.SUCCESS, out

    def _drain(self, o: Open, fill: bool) -> list[Action]:
        """Pending writes that now follow the capture (with `fill`, all of them, the gaps
        zero-filled: bounded by max_file_size)."""
        out: list[Action] = []
        for offset in sorted(o.pending):
            if offset > o.next and not fill:
                break
            data = o.pending.pop(offset)
            self.pending -= len(data)
            while offset > o.next:
                gap = min(CHUNK, offset - o.next)
                out.append(CaptureData(o.stream, bytes(gap)))
                o.next += gap
            data = data[o.next - offset:] if offset < o.next else data
            if data:
                out.append(CaptureData(o.stream, data))
                o.next += len(data)
        return out

    def close(self, handle: int, complete: bool = True) -> list[Action]:
        o = self.opens.pop(handle, None)
        if o is None or o.kind != "file":
            return []
        self.sizes[(o.share, o.path.lower())] = o.size
        if not o.wrote:
            return []
        out = self._drain(o, fill=True)
        while o.next < o.size:  # a file extended past its last write ends in zeros
            gap = min(CHUNK, o.size - o.next)
            out.append(CaptureData(o.stream, bytes(gap)))
            o.next += gap
        out.append(CaptureEnd(o.stream, self.url(o), complete=complete and not o.lossy))
        return out

    def close_where(self, session: int, tree: int | None = None) -> list[Action]:
        """Handles a LOGOFF or TREE_DISCONNECT closes."""
        out: list[Action] = []
        for handle, o in list(self.opens.items()):
            if o.session == session and (tree is None or o.tree == tree):
                out += self.close(handle)
        return out

    def close_all(self) -> list[Action]:
        """The connection is gone: what was written is kept, marked incomplete."""
        out: list[Action] = []
        for handle in list(self.opens):
            out += self.close(handle, complete=False)
        return out
