"""End to end: TLS inside TDS against FreeTDS tsql, pytds, impacket and nmap's ssl-cert."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytds

from tests.conftest import only


def _hp(honeypot_factory, persona: str = "windows-2008r2", offset=None, **svc):
    config = only({"mssql": {"tcp_ports": [1433], **svc}})
    config["persona"] = {"preset": persona}
    return honeypot_factory(config) if offset is None else honeypot_factory(config, offset=offset)


def _fingerprints(hp) -> list[dict]:
    return [fp for obj in hp.json_lines() if "mssql" in obj
            for fp in obj["mssql"].get("fingerprints", [])]


def test_tsql_with_encryption_required(honeypot_factory, tmp_path):
    hp = _hp(honeypot_factory, login={"mode": "list", "users": {"sa": "Enc0ded!"}})
    conf = tmp_path / "freetds.conf"
    conf.write_text(f"[global]\n\ttds version = 7.4\n[hp]\n\thost = 127.0.0.1\n"
                    f"\tport = {hp.port(1433)}\n\tencryption = require\n")
    run = subprocess.run(["tsql", "-S", "hp", "-U", "sa", "-P", "Enc0ded!"],
                         input="SELECT @@VERSION\ngo\n", capture_output=True, text=True,
                         timeout=20, env={**os.environ, "FREETDSCONF": str(conf)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "10.50.6000.34" in run.stdout
    assert hp.stop() == 0
    assert hp.rows("SELECT login_username, login_password FROM logins") == [("sa", "Enc0ded!")]
    cmds = [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]
    assert any("@@VERSION" in c for c in cmds)
    (fp,) = _fingerprints(hp)
    assert fp["encryption"]["answered"] == 1 and fp["encryption"]["tls"] == "TLSv1.2"
    ((ciphers,),) = hp.rows("SELECT tls_hello_ciphers FROM tls_hellos")
    assert ciphers
    assert any("tls" in obj for obj in hp.json_lines())


def test_pytds_verifies_the_fallback_certificate(honeypot_factory):
    hp = _hp(honeypot_factory, "debian-12")
    cafile = hp.state / "tls" / "mssql" / "fallback.crt"
    with pytds.connect("127.0.0.1", port=hp.port(1433), user="sa", password="tls-pw",
                       cafile=str(cafile), validate_host=False, login_timeout=5,
                       timeout=5) as conn:
        cur = conn.cursor()
        cur.execute("SELECT @@VERSION")
        assert "Microsoft SQL Server 2019" in cur.fetchone()[0]
    with pytds.connect("127.0.0.1", port=hp.port(1433), user="sa", password="login-only",
                       cafile=str(cafile), validate_host=False, enc_login_only=True,
                       login_timeout=5, timeout=5) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 42")
        assert cur.fetchone()[0] == 42
    assert hp.stop() == 0
    assert sorted(p for (p,) in hp.rows("SELECT login_password FROM logins")) == [
        "login-only", "tls-pw"]
    answered = sorted(fp["encryption"]["answered"] for fp in _fingerprints(hp))
    assert answered == [0, 1]  # ENCRYPT_OFF (login only), ENCRYPT_ON
    assert "SELECT 42" in [c for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands")]


def test_impacket_logs_in_through_tls(honeypot_factory):
    hp = _hp(honeypot_factory)
    client = shutil.which("mssqlclient.py") or shutil.which("impacket-mssqlclient")
    assert client
    run = subprocess.run([client, "-port", str(hp.port(1433)), "sa:ImpTls1@127.0.0.1"],
                         input="select @@servername\nexit\n", capture_output=True, text=True,
                         timeout=30)
    out = run.stdout + run.stderr
    assert "Encryption required, switching to TLS" in out or "SQL (sa" in out, out
    assert hp.stop() == 0
    assert ("sa", "ImpTls1") in hp.rows("SELECT login_username, login_password FROM logins")
    (fp,) = _fingerprints(hp)
    assert fp["encryption"]["answered"] == 0 and fp["encryption"]["tls"].startswith("TLSv1")
    assert any("@@servername" in c.lower()
               for (c,) in hp.rows("SELECT mssql_command_cmd FROM mssql_commands"))


def test_nmap_ssl_cert_sees_the_fallback_certificate(honeypot_factory):
    hp = _hp(honeypot_factory, offset=0)
    port = str(hp.port(1433))
    run = subprocess.run(["nmap", "-Pn", "-n", "-sV", "-p", port, "--script", "ssl-cert",
                          "127.0.0.1"], capture_output=True, text=True, timeout=120)
    out = run.stdout
    assert "Subject: commonName=SSL_Self_Signed_Fallback" in out, out
    assert "Issuer: commonName=SSL_Self_Signed_Fallback" in out
    assert "Public Key bits: 1024" in out and "sha1WithRSAEncryption" in out
    before = re.search(r"Not valid before: (\d{4})", out)
    after = re.search(r"Not valid after: +(\d{4})", out)
    assert before and after and int(after[1]) - int(before[1]) == 30
    assert "Microsoft SQL Server 2008 R2" in out
