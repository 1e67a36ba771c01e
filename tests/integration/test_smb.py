"""SMB with real clients on 127.0.0.2:445 (impacket and nmap's SMB scripts take no other
port): smbclient, impacket and nmap's smb-protocols / smb2-security-mode / smb-os-discovery."""

from __future__ import annotations

import subprocess

from impacket.smbconnection import SMBConnection

from tests.conftest import only

HOST = "127.0.0.2"


def _hp(honeypot_factory, preset="windows-2008r2", **svc):
    # port offset 0 and a second loopback address: a taken 445 makes the start fail loudly
    return honeypot_factory(only({"smb": {"tcp_ports": [445], **svc}},
                                 persona={"preset": preset}),
                            offset=0, extra_args=["--listen", HOST])


def _nmap() -> str:
    run = subprocess.run(["nmap", "-Pn", "-n", "-p445", "--script",
                          "smb-protocols,smb2-security-mode,smb-os-discovery", HOST],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_windows_persona_with_smbclient_impacket_and_nmap(honeypot_factory):
    hp = _hp(honeypot_factory)
    run = subprocess.run(["smbclient", "-L", f"//{HOST}", "-U", "smbuser%Winter2024!"],
                         capture_output=True, text=True, timeout=60)
    # the login is taken, but a real user's session must be signed and we cannot sign
    # without the password: the listing stops there (the anonymous one works, test_smb_rpc)
    assert run.returncode != 0

    conn = SMBConnection(HOST, HOST, timeout=10)
    assert conn.getDialect() == 0x0210  # SMB 2.1, 2008 R2's highest
    assert conn.login("alice", "Secret1", "CORP")
    assert conn.getServerOSMajor() == 6 and conn.getServerOSBuild() == 7601
    name = conn.getServerName()
    assert name.startswith("WIN-") and len(name) == 15
    conn.close()

    out = _nmap()
    assert "NT LM 0.12 (SMBv1)" in out and "210" in out
    assert "Windows Server 2008 R2 Standard 7601 Service Pack 1" in out
    assert f"Computer name: {name}" in out and "Workgroup: WORKGROUP" in out
    assert "Message signing enabled but not required" in out
    assert "HOMEUSER" not in out and "dionaea" not in out.lower()
    version = subprocess.run(["nmap", "-Pn", "-n", "-sV", "-p445,139", HOST],
                             capture_output=True, text=True, timeout=120).stdout
    line = next(x for x in version.splitlines() if x.startswith("445/tcp"))
    assert " ".join(line.split()) == "445/tcp open microsoft-ds Microsoft Windows Server " \
        "2008 R2 microsoft-ds (workgroup: WORKGROUP)", version
    assert "cpe:/o:microsoft:windows_server_2008:r2" in version

    hp.stop()
    logins = hp.rows("SELECT login_username FROM logins ORDER BY login")
    assert ("WORKGROUP\\smbuser",) in logins or ("smbuser",) in logins
    assert ("CORP\\alice",) in logins
    rows = hp.rows("SELECT smb_command_dialect, smb_command_name, smb_command_status, "
                   "smb_command_detail FROM smb_commands")
    hashes = [r[3] for r in rows if r[1] == "SESSION_SETUP" and r[2] == "STATUS_SUCCESS"
              and r[3] and '"hash"' in r[3]]
    assert any("smbuser::" in h for h in hashes) and any("alice::CORP:" in h for h in hashes)
    assert ("2.1", "TREE_CONNECT", "STATUS_SUCCESS") in [r[:3] for r in rows]
    assert ("SMB1", "NEGOTIATE", "STATUS_SUCCESS") in [r[:3] for r in rows]
    lines = hp.json_lines()
    creds = [c["username"] for line in lines for c in line.get("credentials", [])]
    assert "CORP\\alice" in creds
    cmds = [c for line in lines for c in line.get("smb", {}).get("commands", [])]
    assert any(c["command"] == "SESSION_SETUP" and "hash" in c.get("detail", {})
               for c in cmds)
    assert all(line["connection"]["protocol"] == "smbd" for line in lines)


def test_samba_persona_speaks_smb3_and_no_smb1(honeypot_factory):
    hp = _hp(honeypot_factory, "debian-12", login={"mode": "list", "users": {"bob": "x"}})
    conn = SMBConnection(HOST, HOST, timeout=10)
    assert conn.getDialect() == 0x0311
    try:
        conn.login("mallory", "pw")
        refused = False
    except Exception as exc:  # impacket raises SessionError on STATUS_LOGON_FAILURE
        refused = "LOGON_FAILURE" in str(exc)
    assert refused
    out = _nmap()
    assert "311" in out and "NT LM 0.12" not in out and "smb-os-discovery" not in out
    hp.stop()
    assert hp.rows("SELECT login_username FROM logins") == [("mallory",)]
