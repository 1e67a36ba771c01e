"""GnuTLS clients check the server certificate's key usage before an ECDHE handshake.

GnuTLS (gnutls-cli, lftp, curl/wget builds on it) refuses a server key exchange signed
with a certificate whose KeyUsage lacks digitalSignature. The Windows persona's
SChannel profile prefers ECDHE suites, so its host certificate must allow signatures
for HTTPS on 443 and FTPS (AUTH TLS on 21) to negotiate ECDHE with those clients.
"""

from __future__ import annotations

import re
import subprocess

from tests.conftest import only


def gnutls(port: int, *args: str) -> str:
    out = subprocess.run(["gnutls-cli", "--insecure", "-p", str(port), *args, "127.0.0.1"],
                         input="", capture_output=True, text=True, timeout=20)
    return out.stdout + out.stderr


def description(text: str) -> str:
    m = re.search(r"- Description: (\S+)", text)
    assert m, text
    return m.group(1)


def test_gnutls_negotiates_ecdhe_with_the_windows_certificate(honeypot_factory):
    hp = honeypot_factory(only({"http": {}, "ftp": {}}, persona={"preset": "windows-2008r2"}))

    web = gnutls(hp.port(443))
    assert "Key usage violation" not in web, web
    # SChannel's order: ECDHE on P-256 first, signed with the RSA key, TLS 1.2 at most
    assert re.fullmatch(r"\(TLS1\.2-X\.509\)-\(ECDHE-SECP256R1\)-\(RSA-[A-Z0-9-]+\)-\(AES-.+",
                        description(web)), web

    ftp = gnutls(hp.port(21), "--starttls-proto=ftp")
    assert "Key usage violation" not in ftp, ftp
    assert "(ECDHE-SECP256R1)" in description(ftp), ftp

    # lftp (GnuTLS) logs in over AUTH TLS and lists the root
    out = subprocess.run(["lftp", "-p", str(hp.port(21)), "-u", "anonymous,a@b.c", "-e",
                          "set ssl:verify-certificate no; set ftp:ssl-force yes; cls -1; bye",
                          "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert hp.stop() == 0
    verbs = [c for (c,) in hp.rows("SELECT ftp_command_command FROM ftp_commands")]
    assert "AUTH" in verbs and "PROT" in verbs
