"""MSSQL request budget: a request's text and statements are charged what they cost before
the work is done, so one request holds the event loop ~1 s at most however it is written."""

from __future__ import annotations

import struct
import time

import pytest
import sqlglot

from muscipula.protocols.mssql import batch, int_param, rpc_param
from muscipula.protocols.mssql import rpc_request as rpc
from muscipula.protocols.mssql import tds as T
from muscipula.protocols.mssql.sql import TOKEN_STEPS, split_counted
from tests.unit.test_mssql import emits, logged_in, make, send, text
from tests.unit.test_mssql_limits import well_formed


def plp(text: str) -> bytes:
    """An nvarchar(max) RPC parameter: text past 64 KiB comes this way."""
    raw = text.encode("utf-16-le")
    return rpc_param("", b"\xe7\xff\xff" + T.COLLATION,
                     struct.pack("<QI", len(raw), len(raw)) + raw + b"\0\0\0\0")


def errors(acts) -> list[object]:
    return [n for k, n in well_formed(text(acts)) if k == 0xAA]


#: batches of ~2 MB (a 4 MiB message) and what splitting them would cost, in steps a
#: character, measured on 200,000 characters of each
HUGE = {
    "semicolons": (";" * 1_000_000, 256),
    "go lines": ("GO\n" * 330_000, 250),
    "one statement of tokens": ("SELECT " + "1," * 499_990 + "1", 282),
}


@pytest.mark.parametrize("name", sorted(HUGE))
def test_a_huge_batch_is_charged_what_it_costs(tmp_path, name):
    m, _ = logged_in(make(tmp_path)[0])
    sql, measured = HUGE[name]
    start = time.perf_counter()
    acts = send(m, T.SQL_BATCH, batch(sql), 32767)
    elapsed = time.perf_counter() - start
    spent = m.sql.meter.spent
    # charged at least what splitting it would have cost: refused, the text never tokenized
    assert spent >= measured * len(sql) > m.sql.meter.limit
    assert spent >= elapsed * 1e8 / 2  # what it was charged covers what it took
    assert elapsed < 3  # ~0.1 s now; ~5 s when it was tokenized whole
    assert errors(acts) == [8645]
    assert emits(acts, "connection.limit") == [{"limit": "max_request_steps", "value": spent}]
    assert emits(acts, "mssql.command")[0]["cmd"] == sql  # recorded whole all the same
    assert errors(send(m, T.SQL_BATCH, batch("SELECT 1"))) == []  # the next one runs


def test_sp_executesql_text_is_charged_before_it_is_bound_or_split(tmp_path):
    m, _ = logged_in(make(tmp_path)[0])
    sql = ";" * 1_000_000
    start = time.perf_counter()
    acts = send(m, T.RPC, rpc(10, plp(sql), plp("@a int"), int_param("@a", 1)), 32767)
    elapsed = time.perf_counter() - start
    assert m.sql.meter.spent >= HUGE["semicolons"][1] * len(sql) > m.sql.meter.limit
    assert elapsed < 3  # ~0.1 s now; ~5 s bound and split whole
    assert 8645 in errors(acts) and emits(acts, "connection.limit")


def test_a_300_kb_batch_of_inserts_still_runs(tmp_path):
    m, _ = logged_in(make(tmp_path)[0])
    rows = [f"INSERT INTO f VALUES ({n}, '{(format(n, '04x') * 150)}')" for n in range(498)]
    sql = "CREATE TABLE f (id INT, data VARCHAR(1000))\n" + "\n".join(rows)
    assert len(sql) > 300_000
    acts = send(m, T.SQL_BATCH, batch(sql), 32767)
    assert errors(acts) == [] and not emits(acts, "connection.limit")
    assert m.sql.meter.spent < m.sql.meter.limit // 2
    out = text(send(m, T.SQL_BATCH, batch("SELECT COUNT(*) AS n FROM f")))
    assert b"\xd1\x04" + struct.pack("<i", 498) in out


#: statements of 64 KiB and what parsing, translating and generating them cost, in steps a
#: token, measured (Python 3.11, sqlglot 30)
PARSED = {
    "a+a+..": ("SELECT " + "+".join(["a"] * 32_000), 1_710),
    "1+1+..": ("SELECT " + "+".join(["1"] * 32_000), 1_180),
    "IN list": ("SELECT 1 WHERE 1 IN (" + ",".join(["1"] * 30_000) + ")", 880),
    "1=1 OR ..": ("SELECT 1 WHERE " + " OR ".join(["1=1"] * 9_000), 1_310),
    "casts": ("SELECT " + ",".join(["CAST(1 AS int)"] * 3_000), 3_170),
    "unions": (" UNION ALL ".join(["SELECT 1"] * 3_000), 2_190),
}


@pytest.mark.parametrize("name", sorted(PARSED))
def test_the_parse_model_covers_what_parsing_costs(name):
    stmt, measured = PARSED[name]
    (_, units), = split_counted(stmt)
    tokens = len(sqlglot.tokenize(stmt, read="tsql"))
    assert TOKEN_STEPS * units >= measured * tokens
    assert TOKEN_STEPS * units <= 2 * measured * tokens  # and not far over


def test_a_long_select_list_is_translated_in_linear_time(tmp_path):
    m, _ = logged_in(make(tmp_path)[0])
    sql = "SELECT " + ",".join(["N'a'"] * 10_000)  # each N'..' replaced in the tree
    start = time.perf_counter()
    send(m, T.SQL_BATCH, batch(sql), 32767)
    assert time.perf_counter() - start < 2  # ~0.2 s; ~4 s replacing one item at a time


def test_blank_lines_split_in_linear_time(tmp_path):
    m, _ = logged_in(make(tmp_path)[0])
    start = time.perf_counter()
    acts = send(m, T.SQL_BATCH, batch("\n" * 200_000 + "SELECT 1\nGO\n\n\nSELECT 2"), 32767)
    assert time.perf_counter() - start < 3  # ~0.1 s; ~2 min when a GO line spanned lines
    assert errors(acts) == [] and [k for k, _ in well_formed(text(acts))].count(0xD1) == 2
