"""`muscipula tree` over a real run's database: connections, their children and rows."""

from __future__ import annotations

import ftplib
import subprocess
import sys

from impacket.dcerpc.v5 import transport
from impacket.dcerpc.v5.dcomrt import IObjectExporter

from tests.conftest import only


def _tree(*args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "muscipula", "tree", *args],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_tree_shows_rpc_calls_by_name_logins_and_child_connections(honeypot_factory):
    hp = honeypot_factory(only({"epmapper": {}, "ftp": {}}))
    rpc = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{hp.port(135)}]")
    dce = rpc.get_dce_rpc()
    dce.connect()
    IObjectExporter(dce).ServerAlive2()
    dce.disconnect()
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", hp.port(21), timeout=10)
    ftp.login("anonymous", "bot@example.com")
    ftp.nlst()
    ftp.quit()
    hp.stop()
    db = str(hp.state / "logsql.sqlite")

    out = _tree("--db", db)
    lines = out.splitlines()
    call = lines.index("  dcerpcrequests: dcerpcrequest_uuid='99fcfec4-5260-101b-bbcb-"
                       "00aa0021347a' dcerpcrequest_opnum=5 (IOXIDResolver ServerAlive2)")
    head = max(i for i in range(call) if lines[i].startswith("connection "))
    assert " epmapper tcp accept 127.0.0.1:" in lines[head]
    assert any(x.startswith("  dcerpcbinds: dcerpcbind_uuid='99fcfec4") and
               x.endswith("(IOXIDResolver)") for x in lines[head:call])
    ftp_head = next(i for i, x in enumerate(lines) if " ftpd tcp accept " in x)
    assert any("logins: login_username='anonymous' login_password='bot@example.com'" in x
               for x in lines[ftp_head:])
    assert any(x.startswith("  connection ") and " ftpd tcp " in x for x in lines[ftp_head:])

    (ftp_id,) = hp.rows("SELECT connection FROM connections WHERE connection_protocol='ftpd' "
                        "AND connection_parent IS NULL")[0]
    only_ftp = _tree("--db", db, "--connection", str(ftp_id))
    assert "epmapper" not in only_ftp and " ftpd tcp accept " in only_ftp
    assert "epmapper" in _tree("--db", db, "--protocol", "epmapper", "--limit", "1")
    assert _tree("--db", db, "--remote-host", "192.0.2.99").strip() == ""
