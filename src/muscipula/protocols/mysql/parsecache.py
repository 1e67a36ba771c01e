"""Statements parsed once per service: text sent again skips sqlglot's tokenizer and parser.

Drivers and tools send the same few statements over and over (`SET NAMES utf8mb4`,
`SELECT @@version_comment LIMIT 1`, a scanner's probes), and parsing is most of
what a simple statement costs. An entry holds only what its text alone decides:
the parse tree (read, never changed: the rewrite works on a copy), the column
names MySQL shows, or the syntax error. The SQLite text the last rewrite of it
made is kept with every session value that rewrite read (`Rewritten.reads`); a
session reuses it only when it reads the very same values, so nothing of one
session (its variables, database, user) reaches another.

Bounded twice: `entries` statements and `chars` characters of statement text in all
(a tree takes about a hundred bytes per character); a statement longer than a
thirty-second of `chars` is never kept. Least recently used goes first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.tokens import TokenType

#: one session value a rewrite read: (source, argument, (type, value))
Read = tuple[str, str, tuple[type, Any]]
#: select_names: (statement, tree) -> the result's column names
Names = Callable[[str, exp.Expression], list[str]]


@dataclass(slots=True)
class Rewritten:
    """SQLite text a rewrite made, and what it read from the session to make it."""

    reads: tuple[Read, ...]
    sql: str
    insert: bool


@dataclass(slots=True)
class Parsed:
    """What a statement's text alone decides."""

    tree: exp.Expression | None
    #: result column names as MySQL shows them (select_names), empty if not a SELECT
    names: tuple[str, ...] = ()
    #: the text a syntax error names (near '...'), or None if the statement parsed
    error: str | None = None
    rewritten: Rewritten | None = None


def parse(stmt: str, names: Names) -> Parsed:
    """Parse `stmt` as MySQL; `names(stmt, tree)` gives the result's column names."""
    try:
        tree = sqlglot.parse_one(stmt, read="mysql")
    except (ParseError, TokenError) as exc:
        return Parsed(None, error=near(stmt, exc))
    except (SqlglotError, RecursionError, ValueError):
        return Parsed(None, error=stmt)
    if tree is None:
        return Parsed(None)
    return Parsed(tree, tuple(names(stmt, tree)))


def near(stmt: str, exc: Exception) -> str:
    """Where MySQL's "near '...'" starts: the text from sqlglot's first error on."""
    errors = getattr(exc, "errors", None) or []
    if errors:
        e = errors[0]
        highlight = e.get("highlight") or ""
        start = e.get("start_context") or ""
        pos = stmt.find(start + highlight) if start else -1
        if pos >= 0:
            return stmt[pos + len(start):]
        pos = stmt.rfind(highlight) if highlight else -1
        if pos >= 0:
            return stmt[pos:]
    return stmt


def split(sql: str) -> tuple[str, ...]:
    """Top-level `;` splits (quotes and comments respected by sqlglot's tokenizer)."""
    try:
        tokens = sqlglot.tokenize(sql, read="mysql")
    except (TokenError, SqlglotError):
        return (sql,)
    parts: list[str] = []
    start = 0
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            parts.append(sql[start:tok.start])
            start = tok.end + 1
    parts.append(sql[start:])
    out = tuple(p for p in parts if p.strip())
    return out or (sql,)


class StatementCache:
    """Least-recently-used map from statement text to its `Parsed`, and query text to its
    `split`: one order for both, so one bound holds them."""

    def __init__(self, entries: int, chars: int) -> None:
        self.entries = entries
        self.chars = chars
        #: characters of text the keys hold
        self.held = 0
        self._lru: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._lru)

    def _get(self, key: tuple[str, str]) -> Any:
        found = self._lru.get(key)
        if found is not None:
            self._lru.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return found

    def _put(self, key: tuple[str, str], value: Any) -> None:
        if self.entries <= 0 or len(key[1]) * 32 > self.chars:
            return
        self._lru[key] = value
        self.held += len(key[1])
        while len(self._lru) > self.entries or self.held > self.chars:
            (_kind, old), _ = self._lru.popitem(last=False)
            self.held -= len(old)

    def parsed(self, stmt: str, names: Names) -> Parsed:
        """The statement parsed, from the cache when it was parsed before."""
        found = self._get(("parse", stmt))
        if found is None:
            found = parse(stmt, names)
            self._put(("parse", stmt), found)
        return found

    def split(self, sql: str) -> tuple[str, ...]:
        """`split(sql)`, from the cache when that text was split before."""
        found = self._get(("split", sql))
        if found is None:
            found = split(sql)
            self._put(("split", sql), found)
        return found
