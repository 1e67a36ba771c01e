"""TYPE A line ends the way a Windows FTP server handles them: every line ends in CRLF.

On the wire (NVT-ASCII) and on a Windows disk a line ends in CR LF, so an IIS
server in ASCII mode turns each bare LF into CR LF in both directions and leaves
CR LF pairs alone. Uploads arrive in chunks, so the converter remembers whether
the previous chunk ended in CR.
"""

from __future__ import annotations


def to_crlf(data: bytes, after_cr: bool = False) -> bytes:
    """`data` with every LF not preceded by CR made CR LF; `after_cr`: the byte before was CR."""
    if b"\n" not in data:
        return data
    head = b""
    if after_cr and data.startswith(b"\n"):
        head, data = b"\n", data[1:]
    return head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class CrlfStream:
    """Converts an upload chunk by chunk; the output is what the server writes to disk."""

    __slots__ = ("after_cr",)

    def __init__(self) -> None:
        self.after_cr = False

    def feed(self, chunk: bytes) -> bytes:
        out = to_crlf(chunk, self.after_cr)
        if chunk:
            self.after_cr = chunk.endswith(b"\r")
        return out
