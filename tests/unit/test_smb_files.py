"""Writes to disk shares fed bytes: create dispositions, captures in file order, bounds,
the url a capture gets, and names that never become our paths."""

from __future__ import annotations

import struct

from muscipula.machine import CaptureData, CaptureEnd
from muscipula.protocols.smb import client as K
from muscipula.protocols.smb import wire as W
from tests.unit.test_smb import NOW, emits, make, messages, smb2_login, status2


def share(tmp_path, name="drop", **svc):
    m, _ = make(tmp_path, shares={name: "disk"}, **svc)
    sid, _c, _t, _a = smb2_login(m)
    reply = messages(m.receive(K.nbss(K.smb2_tree_connect(f"\\\\srv\\{name}", sid=sid)),
                               NOW))[0]
    return m, sid, struct.unpack_from("<I", reply, 36)[0]


def create(m, sid, tid, name, disposition, options=0):
    acts = m.receive(K.nbss(K.smb2_create(name, sid=sid, tid=tid, disposition=disposition,
                                          options=options)), NOW)
    reply = messages(acts)[0]
    fid = struct.unpack_from("<Q", reply, 64 + 72)[0] if status2(reply) == 0 else 0
    action = struct.unpack_from("<I", reply, 64 + 4)[0] if status2(reply) == 0 else None
    return status2(reply), fid, action


def write(m, sid, tid, fid, data, offset):
    acts = m.receive(K.nbss(K.smb2_write(fid, data, offset, sid=sid, tid=tid)), NOW)
    return status2(messages(acts)[0]), acts


def captured(acts):
    return b"".join(a.data for a in acts if isinstance(a, CaptureData))


def test_dispositions_against_what_the_connection_made(tmp_path):
    m, sid, tid = share(tmp_path)
    assert create(m, sid, tid, "a.exe", 1)[0] == W.OBJECT_NAME_NOT_FOUND  # OPEN
    assert create(m, sid, tid, "a.exe", 4)[0] == W.OBJECT_NAME_NOT_FOUND  # OVERWRITE
    assert create(m, sid, tid, "dir\\a.exe", 5)[0] == W.OBJECT_PATH_NOT_FOUND
    status, fid, action = create(m, sid, tid, "a.exe", 2)  # CREATE
    assert status == W.SUCCESS and action == 2
    assert create(m, sid, tid, "A.EXE", 2)[0] == W.OBJECT_NAME_COLLISION
    assert create(m, sid, tid, "a.exe", 1)[2] == 1  # FILE_OPENED
    assert create(m, sid, tid, "a.exe", 5)[2] == 3  # FILE_OVERWRITTEN
    assert create(m, sid, tid, "tools", 2, options=1)[2] == 2  # a directory
    assert create(m, sid, tid, "tools\\b.dll", 5)[0] == W.SUCCESS
    assert create(m, sid, tid, "tools", 1, options=0x40)[0] == W.FILE_IS_A_DIRECTORY
    status, root, action = create(m, sid, tid, "", 1)  # the share's root directory
    assert status == W.SUCCESS and action == 1
    reply = messages(m.receive(K.nbss(K.smb2_read(root, 10, sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.INVALID_DEVICE_REQUEST
    # reading a file never written: end of file
    reply = messages(m.receive(K.nbss(K.smb2_read(fid, 10, sid=sid, tid=tid)), NOW))[0]
    assert status2(reply) == W.END_OF_FILE


def test_writes_captured_in_order_and_stored_on_close(tmp_path):
    m, sid, tid = share(tmp_path)
    status, fid, _ = create(m, sid, tid, "..\\..\\etc\\evil.exe", 5)
    assert status == W.OBJECT_PATH_NOT_FOUND  # no parent by that name here
    status, fid, _ = create(m, sid, tid, "evil.exe", 5)
    out = []
    st, acts = write(m, sid, tid, fid, b"MZ\x90\0", 0)
    out += acts
    st, acts = write(m, sid, tid, fid, b"CCCC", 8)  # ahead of the end: waits
    assert st == W.SUCCESS and captured(acts) == b"" and m.buffered() >= 4
    out += acts
    st, acts = write(m, sid, tid, fid, b"BBBB", 4)  # fills the gap: both go out
    assert captured(acts) == b"BBBBCCCC"
    out += acts
    acts = m.receive(K.nbss(K.smb2_close(fid, sid=sid, tid=tid)), NOW)
    out += acts
    reply = messages(acts)[0]
    assert status2(reply) == W.SUCCESS and struct.unpack_from("<Q", reply, 64 + 48)[0] == 12
    assert captured(out) == b"MZ\x90\0BBBBCCCC"
    ends = [a for a in out if isinstance(a, CaptureEnd)]
    assert len(ends) == 1 and ends[0].complete
    assert ends[0].url == "smb://10.1.2.3/DROP/evil.exe"
    assert {a.stream for a in out if isinstance(a, CaptureData)} == {ends[0].stream}
    assert "evil" not in ends[0].stream and m.buffered() == 0
    cmds = emits(out, "smb.command")
    assert any(c["command"] == "WRITE" and c["detail"]["offset"] == 8 for c in cmds)


def test_gaps_and_rewrites_and_bounds(tmp_path):
    m, sid, tid = share(tmp_path, max_file_size=1000, max_write_pending=16)
    _s, fid, _ = create(m, sid, tid, "x.bin", 5)
    out = []
    out += write(m, sid, tid, fid, b"A" * 4, 0)[1]
    out += write(m, sid, tid, fid, b"Z" * 4, 2)[1]  # rewrites 2 bytes already captured
    out += write(m, sid, tid, fid, b"D" * 4, 20)[1]  # leaves a gap that is never filled
    st, acts = write(m, sid, tid, fid, b"E" * 40, 100)  # over the pending budget: dropped
    assert st == W.SUCCESS and emits(acts, "protocol.error")
    st, _ = write(m, sid, tid, fid, b"F", 1000)
    assert st == W.DISK_FULL
    out += m.receive(K.nbss(K.smb2_close(fid, sid=sid, tid=tid)), NOW)
    data = captured(out)
    assert data[:6] == b"AAAAZZ" and data[20:24] == b"DDDD" and data[6:20] == bytes(14)
    assert len(data) == 140  # the file's end, zeros where nothing arrived
    assert next(a for a in out if isinstance(a, CaptureEnd)).complete is False


def test_connection_loss_keeps_what_was_written(tmp_path):
    m, sid, tid = share(tmp_path)
    _s, fid, _ = create(m, sid, tid, "half.exe", 5)
    _s, _empty, _ = create(m, sid, tid, "empty.txt", 5)
    write(m, sid, tid, fid, b"MZ" * 10, 0)
    acts = m.closed(NOW)
    ends = [a for a in acts if isinstance(a, CaptureEnd)]
    assert len(ends) == 1 and not ends[0].complete and ends[0].url.endswith("/half.exe")


def test_names_bounded_and_listed(tmp_path):
    m, sid, tid = share(tmp_path, max_names=2)
    assert create(m, sid, tid, "1", 5)[0] == W.SUCCESS
    assert create(m, sid, tid, "2", 5)[0] == W.SUCCESS
    assert create(m, sid, tid, "3", 5)[0] == W.DISK_FULL
    _s, root, _ = create(m, sid, tid, "", 1)
    query = K.smb2(14, struct.pack("<HBBI16sHHI", 33, 37, 0, 0, K.fid16(root), 64 + 32, 2,
                                   65536) + "*".encode("utf-16-le"), sid=sid, tid=tid)
    reply = messages(m.receive(K.nbss(query), NOW))[0]
    assert status2(reply) == W.SUCCESS
    assert "1".encode("utf-16-le") in reply[72:] and "..".encode("utf-16-le") in reply[72:]
    reply = messages(m.receive(K.nbss(query), NOW))[0]
    assert status2(reply) == W.NO_MORE_FILES


def test_admin_shares_take_writes_only_when_on(tmp_path):
    m, _ = make(tmp_path, admin_shares=True)
    sid, _c, _t, _a = smb2_login(m)
    reply = messages(m.receive(K.nbss(K.smb2_tree_connect("\\\\srv\\ADMIN$", sid=sid)),
                               NOW))[0]
    tid = struct.unpack_from("<I", reply, 36)[0]
    status, fid, _ = create(m, sid, tid, "svc.exe", 5)
    assert status == W.SUCCESS
    write(m, sid, tid, fid, b"MZ", 0)
    acts = m.receive(K.nbss(K.smb2_close(fid, sid=sid, tid=tid)), NOW)
    assert [a.url for a in acts if isinstance(a, CaptureEnd)] == [
        "smb://10.1.2.3/ADMIN$/svc.exe"]


def test_announced_write_size_fits_max_message(tmp_path):
    m, _ = make(tmp_path, "debian-12")
    reply = messages(m.receive(K.nbss(K.smb2_negotiate((0x0202, 0x0210, 0x0300))), NOW))[0]
    assert struct.unpack_from("<III", reply, 64 + 28) == (1024 * 1024,) * 3
    m, _ = make(tmp_path, "debian-12", max_message=8 * 1024 * 1024 + 65536)
    reply = messages(m.receive(K.nbss(K.smb2_negotiate((0x0202, 0x0210, 0x0300))), NOW))[0]
    assert struct.unpack_from("<III", reply, 64 + 28) == (8 * 1024 * 1024,) * 3  # Samba's


def test_compound_create_query_close_with_related_file_id(tmp_path):
    m, sid, tid = share(tmp_path)
    create(m, sid, tid, "c.txt", 5)
    parts = [bytearray(K.smb2_create("c.txt", sid=sid, tid=tid, disposition=1, mid=20)),
             bytearray(K.smb2(16, struct.pack("<HBBIHHIII", 41, 1, 5, 1024, 0, 0, 0, 0, 0)
                              + K.fid16(2**64 - 1), mid=21, sid=2**64 - 1, tid=2**32 - 1)),
             bytearray(K.smb2_close(2**64 - 1, sid=sid, tid=tid, mid=22))]
    for part in parts[1:]:
        part[16:20] = struct.pack("<I", 0x4)  # SMB2_FLAGS_RELATED_OPERATIONS
    blob = b""
    for i, part in enumerate(parts):
        if i < len(parts) - 1:
            part += bytes((8 - len(part) % 8) % 8)
            part[20:24] = struct.pack("<I", len(part))
        blob += bytes(part)
    reply = messages(m.receive(K.nbss(blob), NOW))[0]
    statuses = []
    pos = 0
    while True:
        statuses.append(status2(reply[pos:]))
        step = struct.unpack_from("<I", reply, pos + 20)[0]
        if not step:
            break
        pos += step
    assert statuses == [W.SUCCESS, W.SUCCESS, W.SUCCESS]
    assert len(m.files.opens) == 1  # the first open only: the compound closed its own
