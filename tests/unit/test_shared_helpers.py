"""The helpers services and their records share: building a service, writing its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from muscipula import config as configmod
from muscipula import services
from muscipula.incidents import Incident
from muscipula.machine import Peer, Send
from muscipula.sinks import jsonlog, logsql


def test_context_is_the_engines(tmp_path: Path):
    cfg = configmod.load(extra={"limits": {"idle_timeout": 50},
                                "services": {"ftp": {"limits": {"idle_timeout": 7}}}})
    ctx = services.context("ftp", cfg, tmp_path)
    assert ctx.config is cfg.services["ftp"] and ctx.state_dir == tmp_path
    assert ctx.limits == cfg.service_limits("ftp") and ctx.limits.idle_timeout == 7
    assert ctx.persona.preset_name == cfg.persona.preset
    own = cfg.services["ftp"].model_copy(update={"max_line": 64})
    assert services.context("ftp", cfg, tmp_path, service=own).config.max_line == 64


def test_factory_builds_working_machines(tmp_path: Path):
    make = services.factory("ftp", configmod.load(), tmp_path)
    actions = make(Peer("127.0.0.1", 21, "127.0.0.9", 40000)).start(0.0)
    assert any(isinstance(a, Send) and a.data.startswith(b"220") for a in actions)
    with pytest.raises(KeyError):
        services.factory("no-such-service", configmod.load(), tmp_path)


def test_insert_writes_named_columns_and_returns_the_rowid():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (t INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
    db.execute("CREATE TABLE u (t INTEGER, i INTEGER, v TEXT)")
    cur = db.cursor()
    first = logsql.insert(cur, "t", b=2, a="x")
    second = logsql.insert(cur, "t", a="y")
    logsql.insert_many(cur, "u", ("t", "i", "v"), [(second, 0, "p"), (second, 1, "q")])
    assert (first, second) == (1, 2)
    assert db.execute("SELECT * FROM t").fetchall() == [(1, "x", 2), (2, "y", None)]
    assert db.execute("SELECT * FROM u").fetchall() == [(2, 0, "p"), (2, 1, "q")]


def test_collect_appends_shaped_fields_up_to_the_cap():
    jsonlog.collect("test.collect", ("proto", "things"), lambda f: f["n"])
    fold = jsonlog.FOLDERS.pop("test.collect")
    obj: dict = {"_cap": 2}
    for n in range(3):
        fold(obj, Incident("test.collect", 1, 0.0, {"n": n}))
    assert obj["proto"] == {"things": [0, 1]}
