"""The nginx persona against real nginx 1.22.1 (Debian 12, default site), byte for byte.

tests/unit/data/nginx-1.22.1.json holds requests and what the real server sent
(recorded on loopback from Debian's nginx-light with its default site); dates,
Last-Modified and ETag values are per install and masked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.http_helpers import Conn

REF = json.loads((Path(__file__).parent / "data" / "nginx-1.22.1.json").read_text())

# Where we knowingly differ from nginx, and why.
DIVERGES = {
    "expect": "we send 100 Continue to get the body; nginx answers 404 and discards it",
    "badchunk": "nginx had answered 404 before reading the broken body; we answer 400",
    "nocolon": "nginx ignores a header line without a colon; llhttp refuses it (400)",
}
_MASK = [
    (re.compile(rb"Date: [^\r]+"), b"Date: X"),
    (re.compile(rb"Last-Modified: [^\r]+"), b"Last-Modified: X"),
    (re.compile(rb'ETag: (W/)?"[0-9a-f]+-[0-9a-f]+"'), rb'ETag: \1"X"'),
]


def mask(data: bytes) -> bytes:
    for rx, repl in _MASK:
        data = rx.sub(repl, data)
    return data


@pytest.mark.parametrize("name", sorted(set(REF) - set(DIVERGES)))
def test_same_bytes_as_nginx(name: str) -> None:
    req = REF[name]["request"].encode("latin-1")
    want = REF[name]["response"].encode("latin-1")
    marker = re.search(rb"<<(EOF|OPEN|RST)>>$", want)
    assert marker is not None
    want = want[: marker.start()]
    c = Conn("debian-12")
    got = c.send(req)
    assert mask(got) == mask(want)
    if marker.group(1) == b"EOF":
        assert c.closed, "nginx closed here"
    elif name != "big413":  # nginx says close but lingers for the body
        assert not c.closed, "nginx kept the connection open here"
