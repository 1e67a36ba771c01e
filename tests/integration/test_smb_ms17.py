"""MS17-010 on the real server (127.0.0.2:445): nmap's smb-vuln-ms17-010 says VULNERABLE on
the Windows persona, and a raw-socket client doing what DoublePulsar tools do (login, IPC$,
ping, XOR-keyed exec upload) gets its payload stored, with logsql rows and JSON lines."""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess

from muscipula.protocols.smb import client as K
from muscipula.protocols.smb import doublepulsar as D
from tests.integration.test_smb import HOST, _hp


def test_nmap_ms17_010_vulnerable_on_windows(honeypot_factory):
    hp = _hp(honeypot_factory)
    run = subprocess.run(["nmap", "-Pn", "-n", "-p445", "--script", "smb-vuln-ms17-010", HOST],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "VULNERABLE" in run.stdout and "CVE-2017-0143" in run.stdout, run.stdout
    hp.stop()
    rows = hp.rows("SELECT smb_exploit_kind, smb_exploit_stage FROM smb_exploits")
    assert ("ms17-010", "check") in rows
    status = hp.rows("SELECT smb_command_status FROM smb_commands "
                     "WHERE smb_command_name = 'TRANSACTION'")
    assert ("0xC0000205",) in status


class Raw:
    """A bare SMB1 client on a socket: one NetBIOS message out, one in."""

    def __init__(self) -> None:
        self.sock = socket.create_connection((HOST, 445), timeout=10)

    def call(self, message: bytes) -> bytes:
        self.sock.sendall(K.nbss(message))
        return self.read()

    def read(self) -> bytes:
        head = self._exact(4)
        return self._exact(int.from_bytes(head[1:], "big"))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            part = self.sock.recv(n - len(data))
            assert part, "connection closed"
            data += part
        return data


def test_doublepulsar_ping_and_exec_upload_stored(honeypot_factory):
    hp = _hp(honeypot_factory)
    c = Raw()
    c.call(K.smb1_negotiate())
    leg = c.call(K.smb1_session_setup(K.spnego_init(K.ntlm_negotiate())))
    uid = struct.unpack_from("<H", leg, 28)[0]
    c.call(K.smb1_session_setup(K.spnego_resp(K.ntlm_authenticate("", "", "", b"", b"\0")),
                                uid=uid))
    reply = c.call(K.smb1_tree_connect("\\\\127.0.0.2\\IPC$", uid=uid))
    tid = struct.unpack_from("<H", reply, 24)[0]
    # EternalBlue: an NT_TRANSACT over 64 KiB finished by TRANSACTION2_SECONDARY
    fea = bytes(range(256)) * 272
    reply = c.call(K.smb1_nt_trans(bytes(30), fea, 2000, uid=uid, tid=tid))
    assert struct.unpack_from("<I", reply, 5)[0] == 0  # the interim response
    for pos in range(2000, len(fea), 4096):
        c.sock.sendall(K.nbss(K.smb1_trans2_secondary(fea[pos:pos + 4096], pos, len(fea),
                                                      uid=uid, tid=tid)))
    reply = c.read()  # only the last secondary is answered: STATUS_INVALID_PARAMETER
    assert reply[4] == 0x32 and struct.unpack_from("<I", reply, 5)[0] == 0xC000000D
    # ping: Timeout bytes summing to 0x23; the implant answers MID + 0x10 with its signature
    reply = c.call(K.smb1_trans2(0x0E, 0x00A4D9A6, bytes(12), b"", uid=uid, tid=tid, mid=0x41))
    assert struct.unpack_from("<I", reply, 5)[0] == 0xC0000002
    assert struct.unpack_from("<H", reply, 30)[0] == 0x51
    key = D.xor_key(reply[14:22])

    shellcode = b"\xfc\x48\x83\xe4\xf0" + bytes(range(251))
    dll = bytearray(b"MZ\x90\0" + bytes(0x3C))
    struct.pack_into("<I", dll, 0x3C, 0x40)
    dll += b"PE\0\0" + b"integration dll body " * 400
    payload = shellcode + bytes(dll)
    pos, mid = 0, 0x42
    while pos < len(payload):
        chunk = payload[pos:pos + 4096]
        params = D.unxor(struct.pack("<III", len(payload), len(chunk), pos), key)
        reply = c.call(K.smb1_trans2(0x0E, 0xC8, params, D.unxor(chunk, key), uid=uid, tid=tid,
                                     mid=mid))
        assert struct.unpack_from("<H", reply, 30)[0] == mid + 0x10
        pos += len(chunk)
        mid += 1
    c.sock.close()
    hp.stop()

    digest = hashlib.md5(bytes(dll)).hexdigest()
    assert (hp.state / "binaries" / digest).read_bytes() == bytes(dll)
    urls = hp.rows("SELECT download_url FROM downloads WHERE download_md5_hash = ?", digest)
    assert urls and all(u.startswith("smb://127.0.0.") and u.endswith("/doublepulsar")
                        for (u,) in urls)
    digest = hashlib.md5(bytes(30) + fea).hexdigest()
    assert (hp.state / "binaries" / digest).read_bytes() == bytes(30) + fea
    urls = hp.rows("SELECT download_url FROM downloads WHERE download_md5_hash = ?", digest)
    assert urls and urls[0][0].endswith("/ms17-010")
    rows = hp.rows("SELECT smb_exploit_kind, smb_exploit_stage, smb_exploit_detail "
                   "FROM smb_exploits")
    assert ("ms17-010", "trigger", '{"command":"NT_TRANSACT"}') in rows
    pulsar = [r for r in rows if r[0] == "doublepulsar"]
    stages = [r[1] for r in pulsar]
    assert stages[0] == "ping" and stages.count("exec") == -(-len(payload) // 4096)
    assert f'"key":"{key:08x}"' in pulsar[0][2]
    exploits = [e for line in hp.json_lines() for e in line.get("smb", {}).get("exploits", [])]
    assert {"ping", "exec"} <= {e["stage"] for e in exploits}
