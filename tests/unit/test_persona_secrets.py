"""Per-install secrets: made once and reused; two installs differ; a certificate per persona."""

from __future__ import annotations

import datetime as dt
import re
import ssl
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from muscipula import certs
from muscipula import config as configmod
from muscipula.persona import PRESETS, PersonaView, resolve
from muscipula.secrets import Secrets


def persona(state: Path, preset: str = "windows-2008r2", **extra) -> PersonaView:
    cfg = configmod.load(extra={"persona": {"preset": preset, **extra}})
    return resolve(cfg, state)


def test_secret_is_made_once_and_kept(tmp_path):
    s = Secrets(tmp_path / "secrets.json")
    calls = []
    first = s.get("k", lambda: calls.append(1) or "v1")
    assert s.get("k", lambda: "v2") == first == "v1" and calls == [1]
    again = Secrets(tmp_path / "secrets.json")  # a restart
    assert again.get("k", lambda: "other") == "v1"
    token = again.token("challenge", 8)
    assert len(token) == 8 and Secrets(tmp_path / "secrets.json").token("challenge", 8) == token
    n = again.number("base", 10, 20)
    assert 10 <= n <= 20 and Secrets(tmp_path / "secrets.json").number("base", 10, 20) == n
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0  # not readable by others


def test_corrupt_secrets_file_is_a_clear_error(tmp_path):
    (tmp_path / "secrets.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable secrets file"):
        Secrets(tmp_path / "secrets.json")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_restart_looks_like_the_same_host(tmp_path, preset):
    a = persona(tmp_path, preset)
    facts = (a.hostname, a.guid("smb.server"), a.id_base, a.secrets.token("mysql.salt"))
    b = persona(tmp_path, preset)
    assert (b.hostname, b.guid("smb.server"), b.id_base, b.secrets.token("mysql.salt")) == facts


@pytest.mark.parametrize("preset", list(PRESETS))
def test_two_installs_differ(tmp_path, preset):
    a, b = persona(tmp_path / "a", preset), persona(tmp_path / "b", preset)
    assert a.guid("smb.server") != b.guid("smb.server")
    assert a.secrets.token("challenge") != b.secrets.token("challenge")
    assert (a.id_base, a.boot_time_offset) != (b.id_base, b.boot_time_offset)
    if preset == "windows-2008r2":
        assert a.hostname != b.hostname
        assert re.fullmatch(r"WIN-[A-Z0-9]{11}", a.hostname)
        assert a.netbios_name == a.hostname.upper()[:15]


def test_config_overrides_the_generated_names(tmp_path):
    p = persona(tmp_path, hostname="FILESRV01", domain="corp.local", workgroup="CORP")
    assert (p.hostname, p.fqdn, p.workgroup) == ("FILESRV01", "FILESRV01.corp.local", "CORP")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_certificate_is_plausible_for_the_persona(tmp_path, preset):
    p = persona(tmp_path / "a", preset)
    key_path, cert_path = certs.ensure(p)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == p.fqdn and cert.issuer == cert.subject  # self-signed, named after the host
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc < now - dt.timedelta(days=19)  # made a while ago
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life == dt.timedelta(days=PRESETS[preset]["cert_validity_days"])
    assert cert.not_valid_after_utc > now
    if p.os_family == "windows":  # as IIS makes them: server auth, no SAN
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    else:  # as Debian's ssl-cert makes them: CA:FALSE, host name as SAN
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [p.fqdn]
    assert key_path.stat().st_mode & 0o077 == 0
    # reused on restart, different on another install
    assert certs.ensure(persona(tmp_path / "a", preset))[1].read_bytes() == cert_path.read_bytes()
    other = x509.load_pem_x509_certificate(certs.ensure(persona(tmp_path / "b", preset))[1]
                                           .read_bytes())
    assert other.serial_number != cert.serial_number
    assert other.public_key().public_numbers() != key.public_numbers()
    ctx = certs.server_context(p)
    assert isinstance(ctx, ssl.SSLContext)
    # the persona's own TLS stack: SChannel on 2008 R2 has TLS 1.0-1.2, no 1.3, no ChaCha20
    names = {c["name"] for c in ctx.get_ciphers() if not c["name"].startswith("TLS_")}
    if p.os_family == "windows":
        assert (ctx.minimum_version, ctx.maximum_version) == (ssl.TLSVersion.TLSv1,
                                                              ssl.TLSVersion.TLSv1_2)
        assert not any("CHACHA" in n or n.startswith("ECDHE-RSA-AES128-GCM") for n in names)
        assert ctx.options & ssl.OP_NO_TICKET
    else:
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.maximum_version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.MAXIMUM_SUPPORTED)
        assert "AES256-SHA" in names  # nginx's HIGH list, not the library's short default


def test_shipped_text_never_names_the_project():
    for name in ("personas.yaml", "default.yaml"):
        text = resources.files("muscipula").joinpath(name).read_text().lower()
        body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        for word in ("muscipula", "dionaea", "honeypot", "honeyd", "python"):
            assert word not in body, f"{name} says {word}"


def test_presets_are_coherent():
    win, deb = PRESETS["windows-2008r2"], PRESETS["debian-12"]
    assert win["os_family"] == "windows" and "2008 R2" in win["os_name"]
    assert "2008 R2" in win["products"]["smb"]["native_os"]
    assert "IIS/7.5" in win["products"]["http"]["server"]  # IIS 7.5 is 2008 R2's
    assert deb["os_family"] == "linux" and "Debian" in deb["os_name"]
    assert "Debian" in deb["products"]["smb"]["native_lan_manager"]
    assert deb["products"]["ftp"]["product"] == "vsftpd"
    assert set(win["products"]) == set(deb["products"])


def test_emulated_identity_follows_the_persona(tmp_path):
    win = persona(tmp_path / "w", hostname="filesrv02", workgroup="CORP")
    assert win.emulated_identity() == {"hostname": "FILESRV02", "domain": "CORP",
                                       "user": "Administrator", "version": "6.1.7601"}
    # no cmd.exe on a Linux host: its identity names no Windows build to answer shells with
    linux = persona(tmp_path / "l", preset="debian-12")
    assert "version" not in linux.emulated_identity()
