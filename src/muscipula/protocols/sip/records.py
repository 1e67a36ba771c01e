"""logsql rows in dionaea's sip_* tables (in sinks/schema.sql), our sip_rtp, and JSON `sip`.

One `sip.command` incident is a sip_commands row and the rows that point to it:
its addresses (request URI, to, contact, from), Vias, and the SDP origin,
connection data and media lines. Imported by the sink process on its own: only
the standard library, incidents and sinks here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from muscipula.incidents import Incident
from muscipula.sinks import jsonlog, logsql

_BITS = {
    "UNKNOWN": 1, "ACK": 2, "BYE": 4, "CANCEL": 8, "INFO": 16, "INVITE": 32, "MESSAGE": 64,
    "NOTIFY": 128, "OPTIONS": 256, "PRACK": 512, "PUBLISH": 1024, "REFER": 2048,
    "REGISTER": 4096, "SUBSCRIBE": 8192, "UPDATE": 16384,
}


def allow_mask(methods: Any) -> int:
    mask = 0
    for m in methods or ():
        mask |= _BITS.get(str(m).upper(), 1)
    return mask


def _addr(cur: sqlite3.Cursor, cmd: int | None, kind: str, a: Mapping[str, Any] | None) -> None:
    if not a:
        return
    logsql.insert(cur, "sip_addrs", sip_command=cmd, sip_addr_type=kind,
                  sip_addr_display_name=a.get("display_name"),
                  sip_addr_uri_scheme=a.get("scheme"), sip_addr_uri_user=a.get("user"),
                  sip_addr_uri_password=a.get("password"), sip_addr_uri_host=a.get("host"),
                  sip_addr_uri_port=a.get("port"))


@logsql.writer("sip.command")
def _command(cur: sqlite3.Cursor, inc: Incident, conn: int) -> None:
    f = inc.fields
    cmd = logsql.insert(cur, "sip_commands", connection=conn,
                        sip_command_method=logsql.text(f.get("method")),
                        sip_command_call_id=logsql.text(f.get("call_id")),
                        sip_command_user_agent=logsql.text(f.get("user_agent")),
                        sip_command_allow=allow_mask(f.get("allow")))
    _addr(cur, cmd, "addr", f.get("addr"))
    _addr(cur, cmd, "to", f.get("to"))
    for c in f.get("contact") or ():
        _addr(cur, cmd, "contact", c)
    for a in f.get("from") or ():
        _addr(cur, cmd, "from", a)
    for v in f.get("via") or ():
        logsql.insert(cur, "sip_vias", sip_command=cmd, sip_via_protocol=v.get("protocol"),
                      sip_via_address=v.get("address"), sip_via_port=v.get("port"))
    body = f.get("sdp")
    if not body:
        return
    o = body.get("o")
    if o:
        logsql.insert(cur, "sip_sdp_origins", sip_command=cmd,
                      sip_sdp_origin_username=o.get("username"),
                      sip_sdp_origin_sess_id=o.get("sess_id"),
                      sip_sdp_origin_sess_version=o.get("sess_version"),
                      sip_sdp_origin_nettype=o.get("nettype"),
                      sip_sdp_origin_addrtype=o.get("addrtype"),
                      sip_sdp_origin_unicast_address=o.get("unicast_address"))
    for c in body.get("c") or ():
        logsql.insert(cur, "sip_sdp_connectiondatas", sip_command=cmd,
                      sip_sdp_connectiondata_nettype=c.get("nettype"),
                      sip_sdp_connectiondata_addrtype=c.get("addrtype"),
                      sip_sdp_connectiondata_connection_address=c.get("connection_address"),
                      sip_sdp_connectiondata_ttl=c.get("ttl"),
                      sip_sdp_connectiondata_number_of_addresses=c.get("number_of_addresses"))
    for m in body.get("m") or ():
        logsql.insert(cur, "sip_sdp_medias", sip_command=cmd,
                      sip_sdp_media_media=m.get("media"), sip_sdp_media_port=m.get("port"),
                      sip_sdp_media_number_of_ports=m.get("number_of_ports"),
                      sip_sdp_media_proto=m.get("proto"))


def _json_command(f: Mapping[str, Any]) -> dict[str, Any]:
    return {"method": f.get("method"), "call_id": f.get("call_id"), "status": f.get("status"),
            "user_agent": f.get("user_agent"), "addr": f.get("addr"), "to": f.get("to"),
            "from": list(f.get("from") or ()), "contact": list(f.get("contact") or ()),
            "via": list(f.get("via") or ()), "allow": list(f.get("allow") or ()),
            "sdp": f.get("sdp")}


jsonlog.collect("sip.command", ("sip", "commands"), _json_command)


# The reference system kept no RTP; one row per stream, at its end, beside its sip_commands.
logsql.table("""
CREATE TABLE IF NOT EXISTS sip_rtp (
    sip_rtp INTEGER PRIMARY KEY,
    connection INTEGER,
    sip_rtp_call_id TEXT,
    sip_rtp_local_port INTEGER,
    sip_rtp_remote_host TEXT,
    sip_rtp_remote_port INTEGER,
    sip_rtp_codec TEXT,
    sip_rtp_packets INTEGER,
    sip_rtp_bytes INTEGER,
    sip_rtp_payload_types TEXT,
    sip_rtp_ssrcs TEXT,
    sip_rtp_duration REAL,
    sip_rtp_dtmf TEXT,
    sip_rtp_ignored INTEGER,
    sip_rtp_malformed INTEGER,
    sip_rtp_recorded INTEGER,
    sip_rtp_end TEXT
);
CREATE INDEX IF NOT EXISTS sip_rtp_connection_idx ON sip_rtp (connection);
CREATE INDEX IF NOT EXISTS sip_rtp_call_id_idx ON sip_rtp (sip_rtp_call_id);
""")

_RTP_COLUMNS = ("call_id", "local_port", "remote_host", "remote_port", "codec", "packets",
                "bytes", "payload_types", "ssrcs", "duration", "dtmf", "ignored", "malformed",
                "recorded", "end")


@logsql.rows("sip.rtp", "sip_rtp", tuple(f"sip_rtp_{c}" for c in _RTP_COLUMNS))
def _rtp(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (logsql.text(f.get("call_id")), f.get("local_port"), f.get("remote_host"),
            f.get("remote_port"), f.get("codec"), f.get("packets"), f.get("bytes"),
            logsql.as_json(f.get("payload_types")), logsql.as_json(f.get("ssrc")),
            f.get("duration"), f.get("dtmf"), f.get("ignored"), f.get("malformed"),
            f.get("recorded"), f.get("end"))


jsonlog.collect("sip.rtp", ("sip", "rtp"))
