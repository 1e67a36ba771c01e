"""TLS inside TDS fed through the MSSQL machine by a real client-side ssl.SSLObject."""

from __future__ import annotations

import datetime as dt
import ssl
import struct
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.name import _ASN1Type

from muscipula import config as C
from muscipula import services
from muscipula.machine import Close, Emit, Send
from muscipula.protocols.mssql import batch, login7, prelogin
from muscipula.protocols.mssql import login as L
from muscipula.protocols.mssql import tds as T
from tests.unit.test_mssql import PEER, emits, make, replies, send


class Client:
    """The client half of TLS-in-TDS, as FreeTDS and impacket drive it."""

    def __init__(self, machine, max_version=ssl.TLSVersion.MAXIMUM_SUPPORTED) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = max_version
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="srv")
        self.m = machine
        self.actions: list = []
        self.kinds: list[int] = []

    def handshake(self, chunk: int = 0) -> None:
        for _ in range(10):
            try:
                self.obj.do_handshake()
                return
            except ssl.SSLWantReadError:
                pass
            raw = T.packets(T.PRELOGIN, self.out.read(), 4096)
            pieces = [raw[i:i + chunk] for i in range(0, len(raw), chunk)] if chunk else [raw]
            acts = [a for piece in pieces for a in self.m.receive(piece, 0.0)]
            self.actions += acts
            for kind, _pid, payload in replies(acts):
                self.kinds.append(kind)
                self.inc.write(payload)
        raise AssertionError("no handshake")

    def send(self, kind: int, payload: bytes) -> list:
        self.obj.write(T.packets(kind, payload, 4096))
        acts = self.m.receive(self.out.read(), 0.0)
        self.actions += acts
        return acts

    def plain(self, acts) -> bytes:
        """The TDS the server sent through TLS."""
        raw = b"".join(a.data for a in acts if isinstance(a, Send))
        assert raw[:1] == b"\x17"  # application data records, not TDS packets
        self.inc.write(raw)
        return self.obj.read(1 << 20)


def connect(tmp_path: Path, encryption: int = L.ENCRYPT_ON, preset: str = "windows-2008r2",
            **svc):
    factory, _ = make(tmp_path, preset, **svc)
    m = factory(PEER)
    acts = send(m, T.PRELOGIN, prelogin(5, encryption))
    answer = dict(L.parse_prelogin(replies(acts)[0][2]))[1]
    return m, answer


def test_encrypt_on_carries_login_and_batches_inside_tls(tmp_path):
    m, answer = connect(tmp_path, L.ENCRYPT_ON)
    assert answer == bytes([L.ENCRYPT_ON])
    c = Client(m)
    c.handshake()
    assert c.kinds and set(c.kinds) == {T.PRELOGIN}  # handshake flights wrapped in 0x12
    (hello,) = emits(c.actions, "connection.tls.hello")
    assert hello["ciphers"] and hello["sni"] == "srv" and len(hello["ja3_hash"]) == 32
    acts = c.send(T.LOGIN7, login7("sa", "Tls!pass"))
    (login,) = emits(acts, "login")
    assert login["username"] == "sa" and login["password"] == "Tls!pass" and login["success"]
    (fp,) = emits(acts, "mssql.fingerprint")
    enc = fp["extra"]["encryption"]
    assert enc["asked"] == L.ENCRYPT_ON and enc["answered"] == L.ENCRYPT_ON
    assert enc["tls"] == "TLSv1.2"  # SChannel on 2008 R2 stops at TLS 1.2
    reply = c.plain(acts)
    assert reply[0] == T.REPLY and b"\xad" in reply  # LOGINACK, decrypted
    acts = c.send(T.SQL_BATCH, batch("SELECT @@VERSION"))
    assert emits(acts, "mssql.command")[0]["cmd"] == "SELECT @@VERSION"
    assert T.ucs2("10.50.6000.34") in c.plain(acts)


def test_encrypt_off_encrypts_the_login_only(tmp_path):
    m, answer = connect(tmp_path, L.ENCRYPT_OFF)
    assert answer == bytes([L.ENCRYPT_OFF])
    c = Client(m)
    c.handshake(chunk=7)  # TLS records cut across TCP segments and TDS headers
    acts = c.send(T.LOGIN7, login7("sa", "only-login"))
    assert emits(acts, "login")[0]["password"] == "only-login"
    (kind, _pid, body), = replies(acts)  # the LOGINACK comes back in the clear
    assert kind == T.REPLY and b"\xad" in body
    acts = send(m, T.SQL_BATCH, batch("SELECT 1"))
    assert emits(acts, "mssql.command")[0]["cmd"] == "SELECT 1"
    assert replies(acts)[0][0] == T.REPLY
    assert m.tls is None and m.buffered() == 0


def test_not_sup_stays_clear_unless_forced(tmp_path):
    m, answer = connect(tmp_path, L.ENCRYPT_NOT_SUP)
    assert answer == bytes([L.ENCRYPT_NOT_SUP]) and m.tls is None
    _m, acts = m, send(m, T.LOGIN7, login7("sa", "clear"))
    assert emits(acts, "login")[0]["password"] == "clear"

    factory, _ = make(tmp_path / "forced", encryption="forced")
    acts = send(factory(PEER), T.PRELOGIN, prelogin(5, L.ENCRYPT_NOT_SUP))
    assert dict(L.parse_prelogin(replies(acts)[0][2]))[1] == bytes([L.ENCRYPT_REQ])
    assert isinstance(acts[-1], Close)
    acts = send(factory(PEER), T.PRELOGIN, prelogin(5, L.ENCRYPT_OFF))
    assert dict(L.parse_prelogin(replies(acts)[0][2]))[1] == bytes([L.ENCRYPT_REQ])
    assert not any(isinstance(a, Close) for a in acts)


def test_negotiation_matrix():
    assert [L.negotiate(v, "offered") for v in range(4)] == [0, 1, 2, 1]
    assert [L.negotiate(v, "forced") for v in range(4)] == [3, 1, 3, 1]
    assert [L.negotiate(v, "none") for v in range(4)] == [2, 2, 2, 2]
    assert L.negotiate(0x80 | L.ENCRYPT_OFF, "offered") == L.ENCRYPT_OFF  # client-cert bit


def test_fallback_certificate_has_sql_servers_shape(tmp_path):
    for preset, bits, algo, version in (("windows-2008r2", 1024, "sha1", "TLSv1.2"),
                                        ("debian-12", 2048, "sha256", "TLSv1.2")):
        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        m, _ = connect(tmp_path / preset, L.ENCRYPT_ON, preset)
        c = Client(m)
        c.handshake()
        assert c.obj.version() == version
        cert = x509.load_der_x509_certificate(c.obj.getpeercert(binary_form=True))
        (cn,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert cn.value == "SSL_Self_Signed_Fallback" and cn._type == _ASN1Type.BMPString
        assert cert.issuer == cert.subject and len(cert.extensions) == 0
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == bits
        assert cert.signature_hash_algorithm.name == algo
        start = cert.not_valid_before_utc
        assert abs((start - before).total_seconds()) < 60  # made at the service start
        assert cert.not_valid_after_utc.year - start.year == 30
        assert len(cert.serial_number.to_bytes(16, "big").lstrip(b"\0")) == 16


def test_certificate_is_new_per_start_unless_kept(tmp_path):
    def serial(path: Path, **svc) -> int:
        m, _ = connect(path, L.ENCRYPT_ON, **svc)
        c = Client(m)
        c.handshake()
        return x509.load_der_x509_certificate(c.obj.getpeercert(True)).serial_number

    first = serial(tmp_path)
    assert serial(tmp_path) != first
    kept = serial(tmp_path / "k", tls_cert_per_start=False)
    assert serial(tmp_path / "k", tls_cert_per_start=False) == kept


def test_malformed_tls_gets_an_alert_and_an_incident(tmp_path):
    m, _ = connect(tmp_path, L.ENCRYPT_ON)
    junk = b"\x16\x03\x01\x00\x05" + b"\x02\x00\x00\x01\x00"  # a ServerHello from a client
    acts = m.receive(T.packets(T.PRELOGIN, junk, 4096), 0.0)
    assert any("tls" in e["detail"] for e in emits(acts, "protocol.error"))
    assert isinstance(acts[-1], Close)
    sent = b"".join(a.data for a in acts if isinstance(a, Send))
    assert sent[0] == T.PRELOGIN and sent[8] == 0x15  # the alert, wrapped like the handshake
    assert m.receive(b"more", 0.0) == []


def test_garbage_after_the_handshake_closes_without_raising(tmp_path):
    m, _ = connect(tmp_path, L.ENCRYPT_ON)
    c = Client(m)
    c.handshake()
    acts = m.receive(b"\x17\x03\x03\x00\x20" + b"\x00" * 32, 0.0)  # fails its MAC
    assert emits(acts, "protocol.error") and isinstance(acts[-1], Close)


def test_tls_buffer_is_bounded(tmp_path):
    m, _ = connect(tmp_path, L.ENCRYPT_ON, max_tls_buffer=1024)
    # a PRELOGIN header announcing more than will ever come: held, then refused
    acts = m.receive(struct.pack(">BBHHBB", T.PRELOGIN, 1, 4000, 0, 1, 0) + b"\x16" * 900, 0.0)
    assert acts == [] and m.buffered() <= 1024
    acts = m.receive(b"\x16" * 500, 0.0)
    assert emits(acts, "connection.limit")[0]["limit"] == "max_tls_buffer"
    assert isinstance(acts[-1], Close)


def test_clear_login_where_tls_was_due_is_still_recorded(tmp_path):
    m, answer = connect(tmp_path, L.ENCRYPT_OFF)
    assert answer == bytes([L.ENCRYPT_OFF])
    acts = send(m, T.LOGIN7, login7("scanner", "guess"))
    assert emits(acts, "login")[0]["password"] == "guess"
    assert any("clear" in e["detail"] for e in emits(acts, "protocol.error"))
    assert replies(acts)[0][0] == T.REPLY


def test_second_prelogin_does_not_restart_tls(tmp_path):
    m, _ = connect(tmp_path, L.ENCRYPT_NOT_SUP)
    acts = send(m, T.PRELOGIN, prelogin(5, L.ENCRYPT_ON))
    assert dict(L.parse_prelogin(replies(acts)[0][2]))[1] == bytes([L.ENCRYPT_NOT_SUP])
    assert m.tls is None
    assert all(not isinstance(a, Emit) or a.name != "connection.tls.hello" for a in acts)


def test_tls13_client_finishing_bare_as_impacket_does(tmp_path):
    # an operator's profile allowing TLS 1.3: impacket sends its last flight unwrapped,
    # with the LOGIN7 behind it; the server's tickets and answer must come bare as well
    overrides = {"mssql": {"tls_profile": {"min_version": "TLSv1_2", "max_version": "TLSv1_3"}}}
    cfg = C.load(extra={"persona": {"preset": "debian-12", "overrides": overrides}})
    factory = services.get("mssql").build(services.context("mssql", cfg, tmp_path))
    m = factory(PEER)
    send(m, T.PRELOGIN, prelogin(5, L.ENCRYPT_ON))
    c = Client(m)
    c.handshake()
    assert c.obj.version() == "TLSv1.3" and c.out.pending  # the client Finished, unsent
    acts = c.send(T.LOGIN7, login7("sa", "pw13"))
    assert emits(acts, "login")[0]["password"] == "pw13"
    assert b"\xad" in c.plain(acts)
