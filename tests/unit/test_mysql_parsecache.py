"""The service's statement cache: bounded, reused, and never a way for sessions to mix."""

from __future__ import annotations

import sqlglot

from muscipula.protocols.mysql import auth as A
from muscipula.protocols.mysql.parsecache import StatementCache, split
from muscipula.protocols.mysql.query import select_names
from tests.unit.test_mysql import error, login, make, query, rows

NATIVE = {"auth_plugin": "mysql_native_password"}


def session(factory, user: str = "root"):
    m, _g, _ = login(factory, user=user, plugin=A.NATIVE)
    return m


def cache_of(m) -> StatementCache:
    assert m.sql is not None and m.sql.cache is not None
    return m.sql.cache


def test_bounded_by_entries_and_characters():
    cache = StatementCache(entries=4, chars=32 * 40)
    for i in range(50):
        cache.parsed(f"SELECT {i}", select_names)
        assert len(cache) <= 4
    assert cache.misses == 50 and cache.hits == 0
    kept = [f"SELECT {i}" for i in range(46, 50)]
    for text in kept:  # the four most recent are still there
        assert cache.parsed(text, select_names).tree is not None
    assert cache.hits == 4
    # characters: a statement over a thirty-second of the budget is never kept
    long = "SELECT " + "1+" * 30 + "1"
    assert len(long) * 32 > cache.chars
    cache.parsed(long, select_names)
    cache.parsed(long, select_names)
    assert cache.hits == 4 and all(key != long for _kind, key in cache._lru)
    # and the text held stays under the budget however many fit the entry count
    wide = StatementCache(entries=1000, chars=32 * 40)
    for i in range(200):
        wide.parsed(f"SELECT {i} + {i} + {i}", select_names)
        assert wide.held <= wide.chars
    assert wide.held == sum(len(t) for _k, t in wide._lru) and len(wide) < 200


def test_zero_entries_keeps_nothing():
    cache = StatementCache(entries=0, chars=1024)
    cache.parsed("SELECT 1", select_names)
    cache.split("SELECT 1; SELECT 2")
    assert len(cache) == 0 and cache.held == 0


def test_split_and_parse_errors_are_kept_as_text_decides():
    cache = StatementCache(entries=8, chars=64 * 1024)
    assert cache.split("SELECT ';'; SELECT 2") == split("SELECT ';'; SELECT 2") == (
        "SELECT ';'", " SELECT 2")
    assert cache.split("SELECT ';'; SELECT 2") is cache.split("SELECT ';'; SELECT 2")
    bad = cache.parsed("selec 1", select_names)
    assert bad.tree is None and bad.error is not None
    assert cache.parsed("selec 1", select_names) is bad


def test_repeated_statements_skip_parsing_and_answer_the_same(tmp_path):
    factory, _ = make(tmp_path, **NATIVE)
    m = session(factory)
    cache = cache_of(m)
    for _ in range(3):
        assert rows(query(m, "SELECT @@version_comment LIMIT 1")) == [
            [b"MySQL Community Server - GPL"]]
        assert rows(query(m, "SELECT 1 AS one, 2")) == [[b"1", b"2"]]
        code, _state, msg = error(query(m, "selec 1"))
        assert code == 1064 and "near '1' at line 1" in msg
    assert cache.hits >= 6
    # the cached tree is the parse of the text, untouched by the rewrites made from it
    entry = cache.parsed("SELECT @@version_comment LIMIT 1", select_names)
    assert entry.tree == sqlglot.parse_one("SELECT @@version_comment LIMIT 1", read="mysql")


def test_sessions_never_share_state_through_the_cache(tmp_path):
    factory, _ = make(tmp_path, **NATIVE)
    a, b = session(factory, "alice"), session(factory, "bob")
    assert cache_of(a) is cache_of(b)  # one cache for the service
    # variables: a SET in one session is not what the other reads
    query(a, "SET sql_mode = 'ANSI_QUOTES'")
    mode = "SELECT @@sql_mode"
    assert rows(query(a, mode)) == [[b"ANSI_QUOTES"]]
    assert rows(query(b, mode)) != [[b"ANSI_QUOTES"]]
    assert rows(query(a, mode)) == [[b"ANSI_QUOTES"]]
    # user variables
    query(a, "SET @x = 'from-a'")
    query(b, "SET @x = 7")
    assert rows(query(a, "SELECT @x")) == [[b"from-a"]]
    assert rows(query(b, "SELECT @x")) == [[b"7"]]
    # who is asking
    assert rows(query(a, "SELECT CURRENT_USER")) == [[b"alice@%"]]
    assert rows(query(b, "SELECT CURRENT_USER")) == [[b"bob@%"]]
    # the session's database, for unqualified and qualified tables
    count = "SELECT COUNT(*) FROM wp_options"
    assert error(query(a, count))[0] == 1046  # no database yet
    query(a, "USE wordpress")
    assert int(rows(query(a, count))[0][0]) > 0
    assert error(query(b, count))[0] == 1046
    query(b, "USE shop")
    assert error(query(b, count)) == (1146, "42S02", "Table 'shop.wp_options' doesn't exist")
    assert int(rows(query(a, count))[0][0]) > 0
    # a database one session made is not one the other knows
    query(a, "CREATE DATABASE mine")
    query(a, "CREATE TABLE mine.t (v int)")
    assert rows(query(a, "SELECT COUNT(*) FROM mine.t")) == [[b"0"]]
    assert error(query(b, "SELECT COUNT(*) FROM mine.t"))[0] == 1146
    # the rewrites (variables in, tables qualified) worked on copies of the cached trees
    for text in (count, mode, "SELECT @x"):
        entry = cache_of(a).parsed(text, select_names)
        assert entry.tree == sqlglot.parse_one(text, read="mysql")


def test_cache_off_answers_alike(tmp_path):
    statements = ["SELECT @@version_comment LIMIT 1", "SELECT 1+1, 'a'", "SELECT @@nope",
                  "USE wordpress", "SELECT user_login FROM wp_users WHERE ID=1",
                  "SELECT DATABASE(), CURRENT_USER()", "selec 1"]
    answers = []
    for entries in (512, 0):
        factory, _ = make(tmp_path / str(entries), statement_cache=entries, **NATIVE)
        m = session(factory)
        answers.append([query(m, s) for s in statements * 2])
        assert (len(cache_of(m)) > 0) == (entries > 0)
    on, off = answers
    assert [[getattr(a, "data", a) for a in acts] for acts in on] == \
        [[getattr(a, "data", a) for a in acts] for acts in off]


def test_negative_zero_of_one_session_is_not_the_zero_of_another(tmp_path):
    factory, _ctx = make(tmp_path, **NATIVE)
    a, b = session(factory), session(factory)
    query(a, "SET @x = 0.0")
    assert rows(query(a, "SELECT @x")) == [[b"0"]]
    query(b, "SET @x = -0.0")
    assert rows(query(b, "SELECT @x")) == [[b"-0"]]  # its own value, not a's rewrite


def test_a_rewrite_holding_a_large_session_value_is_not_kept(tmp_path):
    factory, _ctx = make(tmp_path, **NATIVE)
    m = session(factory)
    query(m, "SET @a = '" + "x" * 100_000 + "'")
    assert rows(query(m, "SELECT LENGTH(@a), 1")) == [[b"100000", b"1"]]
    kept = [v for (kind, _k), v in cache_of(m)._lru.items() if kind == "parse"]
    assert kept and all(p.rewritten is None or len(p.rewritten.sql) < 10_000 for p in kept)
    # small ones are kept and reused
    assert rows(query(m, "SELECT 1 + 1")) == [[b"2"]]
    assert any(p.rewritten is not None for (kind, _k), p in cache_of(m)._lru.items()
               if kind == "parse")
