"""The read-only site: files held in memory, looked up by a normalised path, and lures.

Files are read once at start (bounded), so a machine never touches the disk and
no request path is ever joined to a directory: a lookup is a dict access, which
is traversal-proof by construction.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import unquote_to_bytes

from muscipula.persona import PersonaView
from muscipula.protocols.http.config import HttpConfig, Lure

MIME = {
    "html": "text/html", "htm": "text/html", "txt": "text/plain", "css": "text/css",
    "js": "application/javascript", "json": "application/json", "xml": "text/xml",
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "ico": "image/x-icon", "svg": "image/svg+xml", "pdf": "application/pdf",
    "zip": "application/zip", "exe": "application/octet-stream",
}

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class File:
    data: bytes
    mtime: int
    content_type: str
    #: the mtime's 100 ns ticks within its second: NTFS keeps them and IIS's ETag shows them
    frac: int = 0


@dataclass(slots=True)
class Site:
    """Paths (case-folded where the OS is) to files; directories are the key prefixes."""

    files: dict[str, File] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    index_names: tuple[str, ...] = ()
    fold_case: bool = False

    def key(self, path: str) -> str:
        return path.lower() if self.fold_case else path

    def add(self, path: str, f: File) -> None:
        self.files[self.key(path)] = f
        parent = posixpath.dirname(path)
        while parent and parent != "/":
            self.dirs.add(self.key(parent + "/"))
            parent = posixpath.dirname(parent)

    def lookup(self, path: str) -> tuple[str, File | None]:
        """("file"|"dir"|"dir-noslash"|"missing", file)."""
        key = self.key(path)
        if key.endswith("/"):
            if key not in self.dirs:
                return "missing", None
            for name in self.index_names:
                f = self.files.get(key + name)
                if f is not None:
                    return "file", f
            return "dir", None
        f = self.files.get(key)
        if f is not None:
            return "file", f
        if key + "/" in self.dirs:
            return "dir-noslash", None
        return "missing", None


def normalise(target: str, windows: bool) -> str | None:
    """The decoded path of a request target, or None if it leaves the root or is unusable."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if "://" in path[:10]:  # absolute-form: only the path counts, the host is never contacted
        rest = path.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if _BAD_ESCAPE.search(path):
        return None
    raw = unquote_to_bytes(path)
    if b"\x00" in raw:
        return None
    text = raw.decode("utf-8", "surrogateescape")
    if windows:
        text = text.replace("\\", "/")
    if not text.startswith("/"):
        return None
    parts: list[str] = []
    for seg in text.split("/")[1:]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(seg)
    out = "/" + "/".join(parts)
    if text.endswith("/") and out != "/":
        out += "/"
    return out


def mime(path: str, default: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return MIME.get(ext, default)


def _builtin(persona: PersonaView, windows: bool, installed: int) -> Site:
    base = resources.files("muscipula").joinpath("data", "http")
    if windows:
        site = Site(index_names=("default.htm", "default.asp", "index.htm", "index.html",
                                 "iisstart.htm", "default.aspx"), fold_case=True)
        # setup wrote both files within the same second; NTFS keeps the 100 ns ticks
        frac = persona.secrets.number("http.site_mtime_frac", 1, 9_000_000)
        later = frac + persona.secrets.number("http.site_mtime_png", 1_000, 999_999)
        site.add("/iisstart.htm", File(base.joinpath("iis", "iisstart.htm").read_bytes(),
                                       installed, "text/html", frac))
        site.add("/welcome.png", File(welcome_png(), installed, "image/png", later))
        site.dirs.add("/aspnet_client/")
    else:
        site = Site(index_names=("index.html", "index.htm", "index.nginx-debian.html"))
        page = base.joinpath("nginx", "index.nginx-debian.html").read_bytes()
        site.add("/index.nginx-debian.html", File(page, installed, "text/html"))
    return site


def _from_dir(root: Path, windows: bool, budget: int, default_type: str) -> Site:
    site = Site(index_names=("index.html", "index.htm", "default.htm"), fold_case=windows)
    used = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        size = p.stat().st_size
        if used + size > budget:
            break
        used += size
        rel = "/" + p.relative_to(root).as_posix()
        ns = p.stat().st_mtime_ns
        site.add(rel, File(p.read_bytes(), ns // 10**9, mime(rel, default_type),
                           ns % 10**9 // 100))
    return site


def build_site(cfg: HttpConfig, persona: PersonaView, windows: bool, installed: int,
               default_type: str) -> Site:
    if cfg.docroot:
        return _from_dir(Path(cfg.docroot).expanduser(), windows, cfg.max_docroot_bytes,
                         default_type)
    return _builtin(persona, windows, installed)


# ------------------------------------------------------------------- lures


@dataclass(frozen=True, slots=True)
class LureBody:
    lure: Lure
    body: bytes


def _fill(text: str, persona: PersonaView) -> str:
    import base64
    import re

    def token(m: re.Match[str]) -> str:
        raw = persona.secrets.token(f"http.lure.{m.group(2)}", 32 if m.group(1) == "b64" else 16)
        return base64.b64encode(raw).decode() if m.group(1) == "b64" else raw.hex()

    text = re.sub(r"\{(token|b64):([a-z_]+)\}", token, text)
    return text.replace("{hostname}", persona.hostname)


def build_lures(cfg: HttpConfig, persona: PersonaView) -> list[LureBody]:
    base = resources.files("muscipula").joinpath("data", "http", "lures")
    out = []
    for lure in cfg.lures:
        if lure.body_file:
            packaged = base.joinpath(lure.body_file)
            text = (packaged.read_text("utf-8") if packaged.is_file()
                    else Path(lure.body_file).expanduser().read_text("utf-8"))
        else:
            text = lure.body
        out.append(LureBody(lure, _fill(text, persona).encode("utf-8")))
    return out


def find_lure(lures: list[LureBody], path: str, fold: bool) -> LureBody | None:
    p = path.lower() if fold else path
    for lb in lures:
        lp = lb.lure.path.lower() if fold else lb.lure.path
        if p == lp or (lb.lure.match == "prefix" and p.startswith(lp)):
            return lb
    return None


def welcome_png(width: int = 571, height: int = 411) -> bytes:
    """A plain PNG of IIS's welcome image size, so the default page's image resolves."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack("!I", len(data)) + kind + data
                + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + b"\xb3\xb3\xb3" * width
    raw = zlib.compress(row * height, 9)
    header = struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
