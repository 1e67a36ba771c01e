"""Form bodies: urlencoded fields and multipart parts (fields and uploaded files).

Works on the bounded copy of the body the machine keeps; never raises on
malformed input, it just finds fewer parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_FIELDS = 200


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def _param(header: str, key: str) -> str | None:
    m = re.search(rf'(?i)(?:^|;)\s*{key}\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', header)
    if m is None:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def multipart(body: bytes, content_type: str, max_parts: int = 64) -> list[Part]:
    boundary = _param(content_type, "boundary")
    if not boundary:
        return []
    delim = b"--" + boundary.encode("latin-1", "replace")
    parts: list[Part] = []
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--") or len(parts) >= max_parts:
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        elif chunk.startswith(b"\n"):
            chunk = chunk[1:]
        sep = chunk.find(b"\r\n\r\n")
        skip = 4
        if sep < 0:
            sep, skip = chunk.find(b"\n\n"), 2
            if sep < 0:
                continue
        head = chunk[:sep].decode("latin-1")
        data = chunk[sep + skip:]
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        disposition = ctype = ""
        for line in re.split(r"\r?\n", head):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
            elif name.strip().lower() == "content-type":
                ctype = value.strip()
        parts.append(Part(_param(disposition, "name") or "", _param(disposition, "filename"),
                          ctype, data))
    return parts


def fields(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """Form fields of a urlencoded or multipart body (file contents left out)."""
    ct = content_type.lower()
    if ct.startswith("multipart/form-data"):
        return [(p.name, p.data.decode("utf-8", "replace")) for p in multipart(body, content_type)
                if p.filename is None][:MAX_FIELDS]
    if ct.startswith("application/x-www-form-urlencoded") or not ct:
        try:
            text = body.decode("utf-8", "replace")
            return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            return []
    return []


def credentials(pairs: list[tuple[str, str]], user_keys: list[str],
                pass_keys: list[str]) -> tuple[str, str] | None:
    found = {k.lower(): v for k, v in pairs}
    user = next((found[k.lower()] for k in user_keys if k.lower() in found), None)
    pw = next((found[k.lower()] for k in pass_keys if k.lower() in found), None)
    if user is None and pw is None:
        return None
    return user or "", pw or ""
