"""IPC$ pipes and share writes with real clients on 127.0.0.2:445: smbclient -L and put,
rpcclient srvinfo, nmap smb-enum-shares (SMB1) and impacket's listShares / putFile."""

from __future__ import annotations

import hashlib
import os
import subprocess

from impacket.smbconnection import SMBConnection

from tests.integration.test_smb import HOST, _hp

SRVSVC = "4b324fc8-1670-01d3-1278-5a47bf6ee188"


def _run(*cmd: str, cwd: str | None = None) -> str:
    run = subprocess.run(list(cmd), capture_output=True, text=True, timeout=90, cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _stored(hp, data: bytes, url_end: str) -> None:
    digest = hashlib.md5(data).hexdigest()
    assert (hp.state / "binaries" / digest).read_bytes() == data
    rows = hp.rows("SELECT download_url FROM downloads WHERE download_md5_hash = ?", digest)
    assert any(u.startswith("smb://127.0.0.") and u.endswith(url_end) for (u,) in rows), rows


def test_windows_shares_server_info_and_put(honeypot_factory, tmp_path):
    hp = _hp(honeypot_factory, shares={"Public": "disk"},
             share_comments={"Public": "Scans"})
    out = _run("smbclient", "-L", f"//{HOST}", "-N")
    for line in ("ADMIN$          Disk      Remote Admin",
                 "C$              Disk      Default share",
                 "IPC$            IPC       Remote IPC", "Public          Disk      Scans"):
        assert line in out, out

    out = _run("rpcclient", "-U", "", "-N", HOST, "-c", "srvinfo")
    assert "WIN-" in out and "platform_id     :\t500" in out
    assert "os version      :\t6.1" in out and "server type     :\t0x9003" in out

    out = _run("nmap", "-Pn", "-n", "-p445", "--script", "smb-enum-shares", HOST)
    for name in ("ADMIN$", "C$", "IPC$", "Public"):
        assert f"\\\\{HOST}\\{name}:" in out, out
    assert "Type: STYPE_IPC_HIDDEN" in out and "Comment: Remote IPC" in out

    payload = os.urandom(150_000) + b"MZ"
    (tmp_path / "drop.exe").write_bytes(payload)
    _run("smbclient", f"//{HOST}/Public", "-N", "-c", "put drop.exe tools.exe",
         cwd=str(tmp_path))

    conn = SMBConnection(HOST, HOST, timeout=10)
    conn.login("", "")
    assert {s["shi1_netname"][:-1] for s in conn.listShares()} == {
        "ADMIN$", "C$", "IPC$", "Public"}
    small = b"impacket upload\n" * 300
    conn.putFile("Public", "note.txt", _reader(small))
    conn.close()

    hp.stop()
    _stored(hp, payload, "/PUBLIC/tools.exe")
    _stored(hp, small, "/PUBLIC/note.txt")
    binds = hp.rows("SELECT dcerpcbind_uuid, dcerpcbind_transfersyntax FROM dcerpcbinds")
    assert (SRVSVC, "8a885d04-1ceb-11c9-9fe8-08002b104860") in binds
    ops = {r for r in hp.rows("SELECT dcerpcrequest_uuid, dcerpcrequest_opnum "
                              "FROM dcerpcrequests")}
    assert {(SRVSVC, 15), (SRVSVC, 21), (SRVSVC, 16)} <= ops
    names = hp.rows("SELECT s.dcerpcservice_name, o.dcerpcserviceop_name FROM dcerpcrequests r "
                    "JOIN dcerpcservices s ON s.dcerpcservice_uuid = r.dcerpcrequest_uuid "
                    "JOIN dcerpcserviceops o ON o.dcerpcservice = s.dcerpcservice "
                    "AND o.dcerpcserviceop_opnum = r.dcerpcrequest_opnum")
    assert ("SRVSVC", "NetShareEnum") in names
    lines = hp.json_lines()
    requests = [r for line in lines for r in line.get("dcerpc", {}).get("requests", [])]
    assert any(r["opnum"] == 21 and r["operation"] == "NetServerGetInfo" for r in requests)
    downloads = [d for line in lines for d in line.get("downloads", [])]
    assert any(d["url"].endswith("/PUBLIC/tools.exe") for d in downloads)
    # nmap checks write access over SMB1 by writing a file: that is captured too
    urls = [u for (u,) in hp.rows("SELECT download_url FROM downloads")]
    assert any(u.endswith("/PUBLIC/nmap-test-file") for u in urls)


def _reader(data: bytes):
    """impacket's putFile callback: called with a size, returns the next chunk."""
    pos = 0

    def read(size: int) -> bytes:
        nonlocal pos
        chunk = data[pos:pos + size]
        pos += len(chunk)
        return chunk

    return read


def test_samba_share_list_and_put_over_smb3(honeypot_factory, tmp_path):
    hp = _hp(honeypot_factory, "debian-12", shares={"backup": "disk"})
    out = _run("smbclient", "-L", f"//{HOST}", "-N")
    assert "backup          Disk" in out and "IPC Service (" in out and "Samba, Ubuntu)" in out
    assert "ADMIN$" not in out
    out = _run("rpcclient", "-U", "", "-N", HOST, "-c", "srvinfo")
    assert "Wk Sv PrQ Unx NT SNT" in out and "0x809a03" in out
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB writes
    (tmp_path / "db.tar").write_bytes(payload)
    out = _run("smbclient", f"//{HOST}/backup", "-N", "-c", "put db.tar; ls",
               cwd=str(tmp_path))
    assert "db.tar" in out and str(len(payload)) in out
    hp.stop()
    _stored(hp, payload, "/BACKUP/db.tar")
    dialects = {r[0] for r in hp.rows("SELECT smb_command_dialect FROM smb_commands "
                                      "WHERE smb_command_name = 'WRITE'")}
    assert dialects == {"3.1.1"}
