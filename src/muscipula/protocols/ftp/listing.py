"""Directory listings in each product's format: `ls -l` (vsftpd), MS-DOS style (IIS), MLSD facts."""

from __future__ import annotations

import fnmatch
import time

from muscipula.protocols.ftp.vfs import Node

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HALF_YEAR = 182 * 86400


def sorted_children(node: Node) -> list[Node]:
    return sorted((node.children or {}).values(), key=lambda n: n.name)


def unix_line(node: Node, now: float) -> str:
    """One line as vsftpd's built-in ls writes it."""
    mode = "drwxr-xr-x" if node.is_dir else "-rw-r--r--"
    links = 2 if node.is_dir else 1
    t = time.gmtime(node.mtime)
    month = _MONTHS[t.tm_mon - 1]
    if abs(now - node.mtime) < _HALF_YEAR:
        stamp = f"{month} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}"
    else:
        stamp = f"{month} {t.tm_mday:02d}  {t.tm_year}"
    size = 4096 if node.is_dir else node.size
    owner = str(node.owner)
    return f"{mode} {links:>4} {owner:<8} {owner:<8} {size:>8} {stamp} {node.name}"


def dos_line(node: Node) -> str:
    """One line in IIS's default MS-DOS listing style."""
    t = time.gmtime(node.mtime)
    hour = t.tm_hour % 12 or 12
    ampm = "AM" if t.tm_hour < 12 else "PM"
    stamp = f"{t.tm_mon:02d}-{t.tm_mday:02d}-{t.tm_year % 100:02d}  {hour:02d}:{t.tm_min:02d}{ampm}"
    if node.is_dir:
        return f"{stamp}       <DIR>          {node.name}"
    return f"{stamp} {node.size:>20} {node.name}"


def mlsx_facts(node: Node, name: str | None = None, kind: str | None = None) -> str:
    """RFC 3659 facts; `kind` overrides type (cdir, pdir)."""
    t = time.gmtime(node.mtime)
    modify = (f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"
              f"{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}")
    if node.is_dir:
        return f"type={kind or 'dir'};modify={modify}; {name if name is not None else node.name}"
    return f"type=file;modify={modify};size={node.size}; {name if name is not None else node.name}"


def mdtm(node: Node) -> str:
    t = time.gmtime(node.mtime)
    return (f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"
            f"{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}")


def matches(nodes: list[Node], pattern: str, fold: bool) -> list[Node]:
    if not pattern:
        return nodes
    if fold:
        pat = pattern.lower()
        return [n for n in nodes if fnmatch.fnmatchcase(n.name.lower(), pat)]
    return [n for n in nodes if fnmatch.fnmatchcase(n.name, pattern)]


def render(lines: list[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape")
