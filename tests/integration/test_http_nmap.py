"""nmap -sV and its HTTP/TLS scripts must name the persona's server, never a honeypot."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import only

GIVEAWAYS = re.compile(r"(?i)honeypot|dionaea|muscipula|python|uvicorn|twisted|asyncio")


@pytest.mark.parametrize("preset,product,title", [
    ("debian-12", "nginx 1.22.1", "Welcome to nginx!"),
    ("windows-2008r2", "Microsoft IIS httpd 7.5", "IIS7"),
])
def test_nmap_names_the_persona_server(honeypot_factory, preset, product, title):
    hp = honeypot_factory(only({"http": {}}, persona={"preset": preset}))
    http, https = hp.port(80), hp.port(443)
    r = subprocess.run(
        ["nmap", "-Pn", "-n", "-sV", "--version-all", "-p", f"{http},{https}", "--script",
         "http-title,http-headers,http-methods,ssl-cert", "127.0.0.1"],
        capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, r.stderr
    assert re.search(rf"{http}/tcp\s+open\s+http\s+{re.escape(product)}", out), out
    assert re.search(rf"{https}/tcp\s+open\s+ssl/http\s+{re.escape(product)}", out), out
    assert out.count(f"http-title: {title}") == 2, out
    assert "ssl-cert: Subject: commonName=" in out and "Public Key bits: 2048" in out, out
    assert not GIVEAWAYS.search(out), out
    if preset == "windows-2008r2":
        assert "Supported Methods: OPTIONS TRACE GET HEAD POST" in out
        assert re.search(r"commonName=WIN-[A-Z0-9]{11}\n", out), out
    else:
        assert "Subject Alternative Name: DNS:" in out
    assert hp.stop() == 0
