"""The per-session virtual filesystem an FTP client sees.

A seed tree (a configured directory, or a default one that fits the persona)
is made once per service; a session copies it on first use and changes only
its copy, so DELE, RNTO, MKD, RMD and uploads never touch a disk and never
show to another session. Attacker-chosen names only ever become keys in this
tree, never paths joined to a directory.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(slots=True)
class Node:
    name: str
    is_dir: bool
    mtime: float
    size: int = 0
    children: dict[str, Node] | None = None
    #: a seed file on disk, read through SeedFiles (never written)
    source: Path | None = None
    #: bytes kept in memory (generated seed files, small uploads)
    data: bytes | None = None
    #: shown as owner/group in vsftpd listings
    owner: int = 0
    #: the store's md5 for an uploaded file
    md5: str = ""

    def copy(self) -> Node:
        kids = None
        if self.children is not None:
            kids = {k: v.copy() for k, v in self.children.items()}
        return Node(self.name, self.is_dir, self.mtime, self.size, kids, self.source,
                    self.data, self.owner, self.md5)


def new_dir(name: str, mtime: float, owner: int = 0) -> Node:
    return Node(name, True, mtime, 4096, {}, owner=owner)


@dataclass(frozen=True, slots=True)
class SeedLimits:
    max_entries: int = 2000
    max_depth: int = 8
    #: files larger than this are listed but cannot be fetched
    max_file_bytes: int = 8 * 1024 * 1024


class SeedFiles:
    """Read-only access to the files of a configured seed directory."""

    def __init__(self, root: Path | None, limits: SeedLimits) -> None:
        self.root = root.resolve() if root is not None else None
        self.limits = limits

    def read(self, node: Node) -> bytes | None:
        if node.data is not None:
            return node.data
        if node.source is None or self.root is None or node.size > self.limits.max_file_bytes:
            return None
        try:
            # `source` was found by walking `root`; it is never built from client input.
            with open(node.source, "rb") as fh:
                return fh.read(self.limits.max_file_bytes + 1)[: self.limits.max_file_bytes]
        except OSError:
            return None


def key_of(name: str, fold: bool) -> str:
    return name.lower() if fold else name


def load_dir(root: Path, limits: SeedLimits, fold: bool) -> Node:
    """Walk `root` (no symlinks, bounded) into a tree of nodes."""
    top = new_dir("", root.stat().st_mtime)
    count = 0

    def walk(path: Path, node: Node, depth: int) -> None:
        nonlocal count
        if depth > limits.max_depth:
            return
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if count >= limits.max_entries:
                return
            try:
                if entry.is_symlink():
                    continue
                st = entry.stat(follow_symlinks=False)
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            count += 1
            assert node.children is not None
            if is_dir:
                child = new_dir(entry.name, st.st_mtime)
                node.children[key_of(entry.name, fold)] = child
                walk(Path(entry.path), child, depth + 1)
            elif entry.is_file(follow_symlinks=False):
                node.children[key_of(entry.name, fold)] = Node(
                    entry.name, False, st.st_mtime, st.st_size, source=Path(entry.path))

    walk(root, top, 0)
    return top


def _file(name: str, mtime: float, text: str) -> Node:
    data = text.encode()
    return Node(name, False, mtime, len(data), data=data)


def default_tree(dialect: str, epoch: float, hostname: str) -> Node:
    """A small tree an admin of this kind of host could have left behind."""
    day = 86400.0
    if dialect == "iis":
        top = new_dir("", epoch)
        kids = top.children
        assert kids is not None
        pub = new_dir("Public", epoch + 2 * day)
        assert pub.children is not None
        pub.children["readme.txt"] = _file(
            "readme.txt", epoch + 2 * day + 3600,
            f"Files for {hostname} users.\r\nUpload to the Upload folder; "
            "contact the administrator for access.\r\n")
        kids["public"] = pub
        kids["upload"] = new_dir("Upload", epoch + 2 * day)
        kids["backup"] = new_dir("Backup", epoch + 9 * day)
        return top
    top = new_dir("", epoch)
    kids = top.children
    assert kids is not None
    pub = new_dir("pub", epoch + day)
    assert pub.children is not None
    pub.children["README"] = _file(
        "README", epoch + day + 600,
        f"This is the FTP area of {hostname}.\nPut files for pick-up in upload/.\n")
    kids["pub"] = pub
    kids["upload"] = new_dir("upload", epoch + day, owner=0)
    return top


@dataclass
class Vfs:
    """One session's view: a copy of the seed tree, a current directory, bounded growth."""

    root: Node
    fold: bool
    max_entries: int = 5000
    cwd: str = "/"
    entries: int = field(default=0)

    # -------------------------------------------------------------- paths

    def absolute(self, arg: str) -> str:
        """Normalise a client path against the cwd; '..' never leaves the root."""
        path = arg.replace("\\", "/") if self.fold else arg
        if not path.startswith("/"):
            path = posixpath.join(self.cwd, path)
        norm = posixpath.normpath(path)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        return norm if norm != "." else "/"

    def lookup(self, path: str) -> Node | None:
        node = self.root
        for part in self._parts(path):
            if node.children is None:
                return None
            nxt = node.children.get(key_of(part, self.fold))
            if nxt is None:
                return None
            node = nxt
        return node

    def _parts(self, path: str) -> list[str]:
        return [p for p in path.split("/") if p]

    def parent_of(self, path: str) -> tuple[Node | None, str]:
        parts = self._parts(path)
        if not parts:
            return None, ""
        parent = self.lookup("/" + "/".join(parts[:-1]))
        if parent is None or not parent.is_dir:
            return None, parts[-1]
        return parent, parts[-1]

    def display(self, path: str) -> str:
        """The path as the server would print it (names as stored)."""
        node = self.root
        out: list[str] = []
        for part in self._parts(path):
            nxt = node.children.get(key_of(part, self.fold)) if node.children else None
            if nxt is None:
                out.append(part)
                continue
            out.append(nxt.name)
            node = nxt
        return "/" + "/".join(out)

    # ------------------------------------------------------------ changes

    def chdir(self, arg: str) -> bool:
        path = self.absolute(arg)
        node = self.lookup(path)
        if node is None or not node.is_dir:
            return False
        self.cwd = self.display(path)
        return True

    def mkdir(self, arg: str, mtime: float, owner: int) -> str | None:
        path = self.absolute(arg)
        parent, name = self.parent_of(path)
        if parent is None or not name or self.entries >= self.max_entries:
            return None
        assert parent.children is not None
        key = key_of(name, self.fold)
        if key in parent.children:
            return None
        parent.children[key] = new_dir(name, mtime, owner)
        parent.mtime = mtime
        self.entries += 1
        return self.display(path)

    def remove(self, arg: str, want_dir: bool) -> bool:
        path = self.absolute(arg)
        parent, name = self.parent_of(path)
        if parent is None or parent.children is None:
            return False
        key = key_of(name, self.fold)
        node = parent.children.get(key)
        if node is None or node.is_dir != want_dir or (want_dir and node.children):
            return False
        if want_dir and self.cwd.lower() == path.lower():
            return False
        del parent.children[key]
        return True

    def rename(self, src: str, dst: str, mtime: float) -> bool:
        spath, dpath = self.absolute(src), self.absolute(dst)
        sparent, sname = self.parent_of(spath)
        dparent, dname = self.parent_of(dpath)
        if sparent is None or dparent is None or not dname:
            return False
        assert sparent.children is not None and dparent.children is not None
        node = sparent.children.get(key_of(sname, self.fold))
        if node is None:
            return False
        if node.is_dir and (dpath + "/").startswith(spath + "/"):
            return False  # a directory into itself
        dkey = key_of(dname, self.fold)
        if self.fold and dkey in dparent.children and dparent.children[dkey] is not node:
            return False  # Windows refuses to overwrite on rename
        del sparent.children[key_of(sname, self.fold)]
        node.name = dname
        dparent.children[dkey] = node
        dparent.mtime = mtime
        return True

    def store(self, arg: str, mtime: float, owner: int) -> tuple[str, Node] | None:
        """Create (or truncate) a file for an upload; None when the name cannot be made."""
        path = self.absolute(arg)
        parent, name = self.parent_of(path)
        if parent is None or not name:
            return None
        assert parent.children is not None
        key = key_of(name, self.fold)
        old = parent.children.get(key)
        if old is not None and old.is_dir:
            return None
        if old is None and self.entries >= self.max_entries:
            return None
        node = Node(name, False, mtime, 0, owner=owner)
        parent.children[key] = node
        parent.mtime = mtime
        if old is None:
            self.entries += 1
        return self.display(path), node

    def unique(self, arg: str) -> str:
        """A name not yet taken, the way vsftpd (and wu-ftpd) picks one for STOU."""
        base = arg or "STOU"
        if arg and self.lookup(self.absolute(arg)) is None:
            return arg
        for n in range(1, 10000):
            name = f"{base}.{n}"
            if self.lookup(self.absolute(name)) is None:
                return name
        return f"{base}.{self.entries}"
