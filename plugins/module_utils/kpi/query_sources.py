# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the measured queries come from: the ``queries`` option, or pg_stat_statements.

``queries`` is a list of ``{name, sql}``; every mistake is an ``InvalidOption``
naming the path of the entry at fault (``queries[1].sql``).

``top_statements: N`` takes the N statements of the current database with the
largest total execution time in pg_stat_statements. pg_stat_statements stores
statements normalized, with constants replaced by ``$1``, ``$2`` ..., so only
statements without parameters can be run again as recorded; the others, and
utility statements (``BEGIN``, ``SET``, DDL, ``VACUUM`` ...), are skipped and
reported with the reason. Without ``allow_writes``, statements that write or
lock rows are skipped too, because they would fail in a READ ONLY transaction.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import SOURCE_QUERIES, SOURCE_TOP_STATEMENTS, LatencyQuery
from ansible_collections.keel.postgres.plugins.module_utils.option_shapes import named_sql_entries

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None
    sql = None

# Statements keel.postgres sends for itself carry this comment, which pg_stat_statements keeps in the text.
OWN_STATEMENT_MARKER = "/* keel.postgres query_latency */"

# How far down the ranking top_statements looks for statements it can run.
CANDIDATE_LIMIT = 500
SKIPPED_TEXT_CHARS = 200

_READING_KEYWORDS = {"select", "with", "values", "table"}
_WRITING_KEYWORDS = {"insert", "update", "delete", "merge"}
_TRANSACTION_CONTROL = {"begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare"}

_COMMENTS_AND_LITERALS = re.compile(
    r"--[^\n]*"  # line comment
    r"|/\*.*?\*/"  # block comment (not nested)
    r"|\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?\$(?P=tag)?\$"  # dollar-quoted string
    r"|(?<![A-Za-z0-9_])[eE]'(?:''|\\.|[^'\\])*'"  # escape string literal: backslash escapes
    r"|'(?:''|[^'])*'"  # standard string literal
    r'|"(?:""|[^"])*"',  # quoted identifier
    re.DOTALL,
)
_PARAMETER = re.compile(r"\$\d+")
_ROW_LOCK = re.compile(r"\bfor\s+(?:update|no\s+key\s+update|share|key\s+share)\b", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[(\s]*([A-Za-z]+)")


def parse_queries(value: Any, field_name: str = "queries") -> List[LatencyQuery]:
    """``[{name, sql}]`` with unique names and no transaction control; at least one entry."""
    if isinstance(value, list) and not value:
        raise InvalidOption(field_name, "must hold at least one {name, sql} entry")
    queries: List[LatencyQuery] = []
    for entry in named_sql_entries(value, field_name, "a name for the query, used to match it with a baseline", "the SQL statement to time"):
        control = transaction_control(entry.sql)
        if control:
            raise InvalidOption(entry.where + ".sql", "must not control the transaction it is measured in ({0}); each execution already runs in a "
                                "transaction of its own".format(control.upper()))
        queries.append(LatencyQuery(name=entry.name, sql=entry.sql, source=SOURCE_QUERIES, field=entry.where))
    return queries


def statement_keywords(text: str) -> List[str]:
    """The first keyword of each statement in ``text`` (lower case), ignoring comments and quoted text."""
    code = strip_comments_and_literals(text)
    keywords = []
    for statement in code.split(";"):
        match = _FIRST_WORD.match(statement)
        if match:
            keywords.append(match.group(1).lower())
    return keywords


def strip_comments_and_literals(text: str) -> str:
    return _COMMENTS_AND_LITERALS.sub(" ", text)


def transaction_control(text: str) -> Optional[str]:
    """The first transaction control keyword that starts a statement in ``text``, or None."""
    for keyword in statement_keywords(text):
        if keyword in _TRANSACTION_CONTROL:
            return keyword
    return None


def skip_reason(text: str, allow_writes: bool) -> Optional[str]:
    """Why a pg_stat_statements entry cannot be re-run as recorded, or None when it can."""
    if OWN_STATEMENT_MARKER in text:
        return "keel.postgres's own statement"
    if "pg_stat_statements" in text:
        return "reads or resets pg_stat_statements"
    if text.startswith("<insufficient privilege>"):
        return "text hidden: the login role needs pg_read_all_stats to see other roles' statements"
    code = strip_comments_and_literals(text)
    if _PARAMETER.search(code):
        return "has parameters ($1, ...): pg_stat_statements replaces constants by parameters; give it in queries with values"
    keywords = statement_keywords(text)
    if not keywords:
        return "empty statement"
    if len(keywords) > 1:
        return "several statements"
    keyword = keywords[0]
    if keyword in _WRITING_KEYWORDS:
        return None if allow_writes else "writes: set allow_writes to time it in a transaction that is rolled back"
    if keyword not in _READING_KEYWORDS:
        return "utility statement ({0})".format(keyword.upper())
    if not allow_writes and _ROW_LOCK.search(code):
        return "locks rows (FOR UPDATE/SHARE): set allow_writes to time it in a transaction that is rolled back"
    return None


def statement_name(text: str) -> str:
    """A stable name for a pg_stat_statements entry: the hash of its normalized text (queryid changes with table OIDs)."""
    return "statement_" + hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:12]


def top_statements(conn: Any, limit: int, allow_writes: bool, field_name: str = "top_statements") -> Tuple[List[LatencyQuery], List[Dict[str, Any]]]:
    """The ``limit`` statements of the current database with the largest total execution time that can be re-run.

    Returns the queries (most expensive first) and the entries skipped on the way, each with ``reason``.
    """
    if limit < 1:
        raise InvalidOption(field_name, "must be at least 1, got {0}".format(limit))
    schema = _extension_schema(conn, field_name)
    total = "total_exec_time" if conn.info.server_version >= 130000 else "total_time"
    statement = sql.SQL(
        OWN_STATEMENT_MARKER + " SELECT s.queryid, s.query, s.calls, s.{total} FROM {view} s"
        " JOIN pg_catalog.pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
        " ORDER BY s.{total} DESC LIMIT {limit}"
    ).format(total=sql.Identifier(total), view=sql.Identifier(schema, "pg_stat_statements"), limit=sql.Literal(CANDIDATE_LIMIT))
    try:
        rows = conn.execute(statement).fetchall()
    except psycopg.Error as exc:
        # 55000: installed in the database but not loaded through shared_preload_libraries.
        raise InvalidOption(field_name, "pg_stat_statements cannot be read ({0}): it must be in shared_preload_libraries of the server and "
                            "readable by the login role".format(getattr(exc, "sqlstate", None) or type(exc).__name__)) from None
    queries: List[LatencyQuery] = []
    skipped: List[Dict[str, Any]] = []
    seen = set()
    for queryid, text, calls, total_ms in rows:
        if len(queries) >= limit:
            break
        text = (text or "").strip()
        reason = skip_reason(text, allow_writes)
        name = statement_name(text)
        if reason is None and name in seen:
            reason = "same text as a statement already selected"
        if reason is not None:
            skipped.append({"queryid": str(queryid), "query": _shorten(text), "calls": int(calls), "total_exec_time_ms": round(float(total_ms), 3),
                            "reason": reason})
            continue
        seen.add(name)
        queries.append(LatencyQuery(name=name, sql=text, source=SOURCE_TOP_STATEMENTS, field="{0}[{1}]".format(field_name, len(queries))))
    if not queries:
        raise InvalidOption(field_name, "pg_stat_statements holds no statement of database {0!r} that can be re-run as recorded "
                            "({1} skipped); give the queries in queries instead".format(conn.info.dbname, len(skipped)))
    return queries, skipped


def _extension_schema(conn: Any, field_name: str) -> str:
    row = conn.execute(
        OWN_STATEMENT_MARKER + " SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    if row is None:
        raise InvalidOption(field_name, "needs the pg_stat_statements extension, which is not installed in database {0!r}: add "
                            "pg_stat_statements to shared_preload_libraries and run CREATE EXTENSION pg_stat_statements, or give "
                            "the queries in queries instead".format(conn.info.dbname))
    return str(row[0])


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SKIPPED_TEXT_CHARS else flat[: SKIPPED_TEXT_CHARS - 3] + "..."
