# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dual-read verification: the same read queries through the old and the new version schema must agree.

While a migration is started, clients of the old shape read through one
version schema and clients of the new shape through another. Before the
migration completes, ``verify_reads`` runs each read query through both and
compares what they return, so a wrong backfill expression fails the task
instead of reaching the applications.

How a query is compared:

- Both sides run in ONE ``REPEATABLE READ READ ONLY`` transaction, switching
  only ``search_path`` between them, so both read the same snapshot: writers
  running meanwhile cannot cause a false mismatch, and the query cannot write.
- Each side is reduced to ``count(*)`` and ``sum(hashtextextended(row::text, 0))``:
  order-insensitive, and duplicates count (an XOR of row hashes would cancel
  two equal rows). Row text depends on type and settings, so TimeZone,
  DateStyle, IntervalStyle, extra_float_digits and bytea_output are fixed for
  the transaction; a type change that alters the text form (``numeric(10,2)``
  against ``numeric``, ``timestamp`` against ``timestamptz``) is a mismatch
  unless the query casts.
- Which side runs first alternates from query to query, and each side's time is
  reported, so a slower new version schema shows up without one side always
  paying for a cold cache.
- On a mismatch the differing rows are found in the same snapshot. One query
  cannot ``EXCEPT ALL`` the two sides, because the same query text resolves its
  names through one ``search_path`` only, so rows are grouped into
  ``HASH_BUCKETS`` buckets by row hash, the buckets whose count or hash sum
  differ are found, and only the rows of a few of those buckets are fetched and
  compared as multisets of row hashes. The sample holds the key columns of those
  rows as text, masked columns replaced by ``MASK``.

Server-side prepared statements are disabled while this runs: a statement
prepared under one ``search_path`` and run under another fails with SQLSTATE
0A000 (cached plan must not change result type).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError, QueryFailed
from ansible_collections.keel.postgres.plugins.module_utils.option_shapes import named_entries, required_text
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import check_identifier
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import describe_condition, sql_condition

try:
    import psycopg
    from psycopg import sql
    from psycopg.pq import TransactionStatus
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None
    sql = None
    TransactionStatus = None

# What a masked column shows in a sample: a fixed marker, never the value nor a hash of it (a hash of a
# small domain such as amounts or birth dates is reversed by trying every value). NULL stays NULL, because
# "the new column was left NULL" is the most common backfill bug and shows no data.
MASK = "***"
# Rows are grouped by the low bits of their hash to find differing rows without fetching every row.
HASH_BUCKETS = 1024
# The alias of the user's query in the wrapping statements; a result column of this name is refused,
# because PostgreSQL would read ``_keel_row`` as that column rather than as the whole row.
ROW_ALIAS = "_keel_row"
_READ_KEYWORDS = ("select", "with", "values", "table")
_LEADING_NOISE = re.compile(r"\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\(", re.DOTALL)
# Settings that make a row's text form the same from one run to the next (reported hashes comparable).
_STABLE_TEXT_SETTINGS = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
)


class ReadQuery(NamedTuple):
    name: str
    query: str  # one SELECT, WITH, VALUES or TABLE statement, without a trailing semicolon
    key: Optional[List[str]] = None  # result columns shown for differing rows; None: all of them


class ReadOutcome(NamedTuple):
    name: str
    ok: bool
    old_rows: int
    new_rows: int
    old_hash: str
    new_hash: str
    old_ms: float
    new_ms: float
    only_in_old: List[Dict[str, Optional[str]]]
    only_in_new: List[Dict[str, Optional[str]]]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name, "ok": self.ok, "old_rows": self.old_rows, "new_rows": self.new_rows,
            "old_hash": self.old_hash, "new_hash": self.new_hash, "old_ms": self.old_ms, "new_ms": self.new_ms,
            "only_in_old": [dict(row) for row in self.only_in_old],
            "only_in_new": [dict(row) for row in self.only_in_new],
        }


class ReadMismatch(KeelError):
    """At least one read query returns different rows through the old and the new version schema."""

    kind = "read_mismatch"

    def __init__(self, outcomes: Sequence[ReadOutcome], field: str = "verify_reads") -> None:
        failed = [(index, outcome) for index, outcome in enumerate(outcomes) if not outcome.ok]
        described = "; ".join(_describe_mismatch(outcome, "{0}[{1}]".format(field, index)) for index, outcome in failed)
        message = "{0} of {1} read queries differ between the old and the new version schema: {2}".format(
            len(failed), len(outcomes), described)
        first_field = "{0}[{1}]".format(field, failed[0][0]) if failed else field
        super().__init__(message, field=first_field, cause="read_mismatch")
        self.details = {"read_verification": [outcome.as_dict() for outcome in outcomes]}


# -- options ------------------------------------------------------------------------------------------------


def parse_verify_reads(value: Any, field: str = "verify_reads") -> List[ReadQuery]:
    """``[{name, query, key}]``: unique names, one read statement each, keys plain column names."""
    if value is None:
        return []
    return [ReadQuery(name=entry.name, query=single_read_statement(entry.mapping.get("query"), entry.where + ".query"),
                      key=_parse_key(entry.mapping.get("key"), entry.where + ".key"))
            for entry in named_entries(value, field, ("name", "query", "key"), "a name for the read query")]


def single_read_statement(value: Any, where: str) -> str:
    """The text of one SELECT / WITH / VALUES / TABLE statement; a trailing semicolon is dropped."""
    text = required_text(value, where, "one SELECT, WITH, VALUES or TABLE statement")
    text = text.rstrip().rstrip(";").rstrip()
    if ";" in text:
        raise InvalidOption(where, "must be a single statement: remove the ';' "
                                   "(inside a string literal, write chr(59))")
    keyword = _first_keyword(text)
    if keyword not in _READ_KEYWORDS:
        raise InvalidOption(where, "must be a read query starting with SELECT, WITH, VALUES or TABLE, not {0!r}".format(
            keyword or text[:20]))
    return text


def _first_keyword(text: str) -> str:
    """The first word after leading whitespace, comments and opening parentheses, lower case."""
    position = 0
    while True:
        noise = _LEADING_NOISE.match(text, position)
        if noise is None or noise.end() == position:
            break
        position = noise.end()
    word = re.match(r"[A-Za-z_]+", text[position:])
    return word.group(0).lower() if word else ""


def _parse_key(value: Any, where: str) -> Optional[List[str]]:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidOption(where, "must be a non-empty list of result column names (leave it out for all columns)")
    key: List[str] = []
    for position, column in enumerate(value):
        column_field = "{0}[{1}]".format(where, position)
        check_identifier(column, column_field)
        if column in key:
            raise InvalidOption(column_field, "{0!r} is listed twice".format(column))
        key.append(column)
    return key


# -- comparison ---------------------------------------------------------------------------------------------


class _Side(NamedTuple):
    label: str  # "old" or "new"
    path: List[str]

    def describe(self) -> str:
        return "the {0} version schema (search_path {1})".format(self.label, ", ".join(self.path))


class _Reading(NamedTuple):
    columns: List[str]
    rows: int
    hash: str
    ms: float


def compare_reads(
    conn: Any,
    old_path: List[str],
    new_path: List[str],
    queries: Sequence[ReadQuery],
    sample_size: int = 5,
    masked_columns: Sequence[str] = (),
    *,
    field: str = "verify_reads",
    statement_timeout_ms: Optional[int] = None,
) -> List[ReadOutcome]:
    """Run every query through ``old_path`` and ``new_path`` (search_path lists) and compare; one outcome each.

    ``conn`` must not be inside a transaction: each query gets its own. A query that fails on either side
    raises ``QueryFailed`` naming ``<field>[i].query`` and the side; mismatches are returned, not raised
    (see ``require_matching_reads``).
    """
    sides = (_Side("old", _checked_path(old_path, "old_path")), _Side("new", _checked_path(new_path, "new_path")))
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 0:
        raise InvalidOption("sample_size", "must be a whole number of rows, 0 or more, not {0!r}".format(sample_size))
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("compare_reads needs a connection outside any transaction; it opens one per query")
    saved_threshold = conn.prepare_threshold
    conn.prepare_threshold = None  # a statement prepared under one search_path fails under the other (0A000)
    try:
        return [
            _compare_one(conn, sides, query, "{0}[{1}]".format(field, index), index % 2 == 1, sample_size,
                         frozenset(masked_columns), statement_timeout_ms)
            for index, query in enumerate(queries)
        ]
    finally:
        conn.prepare_threshold = saved_threshold


def require_matching_reads(outcomes: Sequence[ReadOutcome], field: str = "verify_reads") -> None:
    """Raise ``ReadMismatch`` (every outcome in its details) unless every query matched."""
    if not all(outcome.ok for outcome in outcomes):
        raise ReadMismatch(outcomes, field)


def _checked_path(path: Sequence[str], name: str) -> List[str]:
    if isinstance(path, str) or not path or not all(isinstance(schema, str) and schema for schema in path):
        raise ValueError("{0} must be a non-empty list of schema names, not {1!r}".format(name, path))
    return list(path)


def _compare_one(conn: Any, sides: Tuple[_Side, _Side], query: ReadQuery, where: str, new_first: bool,
                 sample_size: int, masked: frozenset, statement_timeout_ms: Optional[int]) -> ReadOutcome:
    """Both sides of one query, and on a mismatch a sample of differing rows, in one snapshot."""
    order = (sides[1], sides[0]) if new_first else sides
    with conn.transaction(), conn.cursor() as cursor:
        _begin_snapshot(cursor, statement_timeout_ms)
        readings = {side.label: _read_side(cursor, side, query, where) for side in order}
        old, new = readings["old"], readings["new"]
        ok = old.rows == new.rows and old.hash == new.hash
        only_in_old: List[Dict[str, Optional[str]]] = []
        only_in_new: List[Dict[str, Optional[str]]] = []
        if not ok and sample_size > 0:
            only_in_old, only_in_new = _differing_rows(cursor, sides, readings, query, where, sample_size, masked)
    return ReadOutcome(name=query.name, ok=ok, old_rows=old.rows, new_rows=new.rows, old_hash=old.hash,
                       new_hash=new.hash, old_ms=old.ms, new_ms=new.ms, only_in_old=only_in_old,
                       only_in_new=only_in_new)


def _begin_snapshot(cursor: Any, statement_timeout_ms: Optional[int]) -> None:
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    settings = list(_STABLE_TEXT_SETTINGS)
    if statement_timeout_ms is not None:
        settings.append(("statement_timeout", str(int(statement_timeout_ms))))
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({0}, {1}, true)").format(sql.Literal(name), sql.Literal(value)) for name, value in settings)
    cursor.execute(sql.SQL("SELECT {0}").format(calls))


def _use_path(cursor: Any, side: _Side) -> None:
    cursor.execute(sql.SQL("SET LOCAL search_path TO {0}").format(
        sql.SQL(", ").join(sql.Identifier(schema) for schema in side.path)))


def _read_side(cursor: Any, side: _Side, query: ReadQuery, where: str) -> _Reading:
    """Result columns, row count and order-insensitive hash of the query on one side; hash and count timed."""
    with _failures_named(query, where, side):
        _use_path(cursor, side)
        cursor.execute(sql.SQL("SELECT * FROM (\n{0}\n) AS {1} LIMIT 0").format(
            sql.SQL(query.query), sql.Identifier(ROW_ALIAS)))
        columns = [column.name for column in cursor.description]
        _check_columns(columns, query, where, side)
        started = time.perf_counter()
        cursor.execute(sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended({1}::text, 0)::numeric), 0)::text FROM (\n{0}\n) AS {1}"
        ).format(sql.SQL(query.query), sql.Identifier(ROW_ALIAS)))
        rows, total = cursor.fetchone()
        elapsed_ms = round((time.perf_counter() - started) * 1000.0, 3)
    return _Reading(columns=columns, rows=rows, hash=total, ms=elapsed_ms)


def _check_columns(columns: List[str], query: ReadQuery, where: str, side: _Side) -> None:
    if ROW_ALIAS in columns:
        raise InvalidOption(where + ".query", "a result column may not be named {0}; rename it".format(ROW_ALIAS))
    for position, column in enumerate(query.key or []):
        if column not in columns:
            raise InvalidOption("{0}.key[{1}]".format(where, position), "{0!r} is not a result column of the query "
                                "on {1}; its columns are {2}".format(column, side.describe(), ", ".join(columns)))


@contextmanager
def _failures_named(query: ReadQuery, where: str, side: _Side) -> Iterator[None]:
    """Turns a server error on one side into QueryFailed naming the field and the side."""
    try:
        yield
    except psycopg.Error as exc:
        raise _query_failed(query, where, side, exc) from None


def _query_failed(query: ReadQuery, where: str, side: _Side, exc: BaseException) -> QueryFailed:
    """A failing read by SQLSTATE; the server's text only for class 42 (names objects, never row values)."""
    condition = sql_condition(exc)
    server_text = ""
    diagnostic = getattr(exc, "diag", None)
    if (condition.get("sqlstate") or "").startswith("42") and diagnostic is not None and diagnostic.message_primary:
        server_text = ": " + diagnostic.message_primary
    field = where + ".query"
    error = QueryFailed("{0} ({1!r}) failed on {2} with {3}{4}".format(
        field, query.name, side.describe(), describe_condition(condition), server_text),
        field=field, cause=condition.get("condition") or condition.get("condition_class"))
    error.details = {"query": query.name, "side": side.label, "search_path": list(side.path),
                     "sqlstate": condition.get("sqlstate"), "condition": condition.get("condition")}
    return error


# -- differing rows -----------------------------------------------------------------------------------------


BucketSums = Dict[int, Tuple[int, str]]
Sample = List[Dict[str, Optional[str]]]


def _differing_rows(cursor: Any, sides: Tuple[_Side, _Side], readings: Dict[str, _Reading], query: ReadQuery,
                    where: str, sample_size: int, masked: frozenset) -> Tuple[Sample, Sample]:
    """Up to ``sample_size`` rows only in the old result and only in the new one (duplicates counted)."""
    sums = {}
    for side in sides:
        with _failures_named(query, where, side):
            _use_path(cursor, side)
            sums[side.label] = _bucket_sums(cursor, query)
    buckets = _differing_buckets(sums["old"], sums["new"])[:max(2 * sample_size, 16)]
    fetched = {}
    for side in sides:
        columns = query.key or readings[side.label].columns
        with _failures_named(query, where, side):
            _use_path(cursor, side)
            fetched[side.label] = _rows_in_buckets(cursor, query, buckets, columns, masked)
    only_old = _multiset_difference(fetched["old"], fetched["new"])
    only_new = _multiset_difference(fetched["new"], fetched["old"])
    return _first_rows(only_old, sample_size), _first_rows(only_new, sample_size)


def _bucket_sums(cursor: Any, query: ReadQuery) -> BucketSums:
    cursor.execute(sql.SQL(
        "SELECT (hashtextextended({1}::text, 0) & {2})::int, count(*),"
        " sum(hashtextextended({1}::text, 0)::numeric)::text"
        " FROM (\n{0}\n) AS {1} GROUP BY 1"
    ).format(sql.SQL(query.query), sql.Identifier(ROW_ALIAS), sql.Literal(HASH_BUCKETS - 1)))
    return {bucket: (rows, total) for bucket, rows, total in cursor.fetchall()}


def _differing_buckets(old: BucketSums, new: BucketSums) -> List[int]:
    return sorted(bucket for bucket in set(old) | set(new) if old.get(bucket) != new.get(bucket))


def _rows_in_buckets(cursor: Any, query: ReadQuery, buckets: List[int], columns: Sequence[str],
                     masked: frozenset) -> List[Tuple[int, Dict[str, Optional[str]]]]:
    """(row hash, the shown columns as text) of every row whose hash falls in one of ``buckets``."""
    alias = sql.Identifier(ROW_ALIAS)
    cursor.execute(sql.SQL(
        "SELECT hashtextextended({1}::text, 0), {2} FROM (\n{0}\n) AS {1}"
        " WHERE (hashtextextended({1}::text, 0) & {3}) = ANY({4}::int[])"
    ).format(sql.SQL(query.query), alias, sql.SQL(", ").join(_shown_column(column, masked) for column in columns),
             sql.Literal(HASH_BUCKETS - 1), sql.Literal(list(buckets))))
    return [(row[0], dict(zip(columns, row[1:]))) for row in cursor.fetchall()]


def _shown_column(column: str, masked: frozenset) -> Any:
    """The column as text, or MASK in its place, computed on the server so masked values never leave it."""
    value = sql.SQL("{0}.{1}").format(sql.Identifier(ROW_ALIAS), sql.Identifier(column))
    if column in masked:
        return sql.SQL("CASE WHEN {0} IS NULL THEN NULL ELSE {1} END").format(value, sql.Literal(MASK))
    return sql.SQL("{0}::text").format(value)


def _multiset_difference(rows: List[Tuple[int, Dict[str, Optional[str]]]],
                         other: List[Tuple[int, Dict[str, Optional[str]]]]) -> Sample:
    """Rows of ``rows`` left after removing one row per equal row hash in ``other``."""
    remaining = Counter(row_hash for row_hash, _row in other)
    left: Sample = []
    for row_hash, shown in rows:
        if remaining[row_hash] > 0:
            remaining[row_hash] -= 1
        else:
            left.append(shown)
    return left


def _first_rows(rows: Sample, limit: int) -> Sample:
    """A stable sample: rows ordered by their shown values (NULLs last), then cut to ``limit``."""
    return sorted(rows, key=lambda row: [_sortable(value) for value in row.values()])[:limit]


def _sortable(value: Optional[str]) -> Tuple[bool, bool, int, str]:
    # Whole numbers first and as numbers, so ids read 7, 14, 21 rather than 14, 21, 7.
    if value is not None and re.fullmatch(r"-?\d{1,18}", value):
        return (False, False, int(value), "")
    return (value is None, True, 0, value or "")


def _describe_mismatch(outcome: ReadOutcome, where: str) -> str:
    return ("{0!r} ({1}): old version schema {2} rows, new version schema {3} rows; "
            "only in old: {4}; only in new: {5}").format(
        outcome.name, where, outcome.old_rows, outcome.new_rows, _sample_text(outcome.only_in_old),
        _sample_text(outcome.only_in_new))


def _sample_text(rows: Sample) -> str:
    return json.dumps(rows, separators=(", ", ": ")) if rows else "none in the sample"
