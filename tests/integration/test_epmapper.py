"""The endpoint mapper on TCP 135 with real clients: impacket's DCE/RPC over TCP (bind,
ServerAlive2 as network-interface scanners call it, ept_lookup) and nmap -sV."""

from __future__ import annotations

import socket
import subprocess

import pytest
from impacket.dcerpc.v5 import epm, transport
from impacket.dcerpc.v5.dcomrt import IObjectExporter
from impacket.dcerpc.v5.rpcrt import DCERPCException

from tests.conftest import only

OXID = "99fcfec4-5260-101b-bbcb-00aa0021347a"


def _dce(port: int):
    rpc = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    rpc.set_connect_timeout(10)
    dce = rpc.get_dce_rpc()
    dce.connect()
    return dce


def test_server_alive2_lookup_and_nmap_name_windows_rpc(honeypot_factory):
    hp = honeypot_factory(only({"epmapper": {}}))
    port = hp.port(135)

    dce = _dce(port)
    bindings = IObjectExporter(dce).ServerAlive2()
    names = [b["aNetworkAddr"].rstrip("\0") for b in bindings]
    assert "127.0.0.1" in names
    hostname = next(n for n in names if n != "127.0.0.1")
    assert hostname.startswith("WIN-") and len(hostname) == 15
    dce.disconnect()

    dce = _dce(port)
    dce.bind(epm.MSRPC_UUID_PORTMAP)
    with pytest.raises(DCERPCException) as err:
        dce.request(epm.ept_lookup())
    assert "ept_s_not_registered" in str(err.value).lower()
    dce.disconnect()

    run = subprocess.run(["nmap", "-Pn", "-n", "-sV", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith(f"{port}/tcp"))
    assert "msrpc" in line and "Microsoft Windows RPC" in line, run.stdout

    hp.stop()
    binds = hp.rows("SELECT dcerpcbind_uuid FROM dcerpcbinds")
    assert (OXID,) in binds and ("e1af8308-5d1f-11c9-91a4-08002b14a0fa",) in binds
    requests = hp.rows("SELECT dcerpcrequest_uuid, dcerpcrequest_opnum FROM dcerpcrequests")
    assert (OXID, 5) in requests and ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 2) in requests
    assert hp.rows("SELECT DISTINCT connection_protocol FROM connections") == [("epmapper",)]


def test_a_linux_persona_has_no_port_135(honeypot_factory):
    hp = honeypot_factory(only({"epmapper": {}, "blackhole": {"tcp_ports": [23],
                                                             "udp_ports": []}},
                               persona={"preset": "debian-12"}))
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.1", hp.port(135))) != 0
    with socket.create_connection(("127.0.0.1", hp.port(23)), 5):
        pass
