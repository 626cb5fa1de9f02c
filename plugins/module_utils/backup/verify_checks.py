# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of restore verification: restored tables against the manifest, masking, assertions.

Comparisons are pure (``compare_tables``, ``judge_result``); database steps run
on the scratch database's connection. A check that fails raises
``VerificationProblem`` with the reason it is recorded under, and no message
quotes a row value: SQL errors are described by SQLSTATE only (see
``sql_conditions``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.table_stats import (
    FINGERPRINT_METHOD,
    TableStats,
    apply_row_text_settings,
    collect_table_stats,
    tables_in_scope,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_options import Assertion, MaskingRule
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import describe_condition, sql_condition

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None
    sql = None

_FIND_MASKED_COLUMN = """
SELECT n.nspname, c.relname, c.relkind,
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = %(column)s AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(CASE WHEN %(schema)s::text IS NULL THEN quote_ident(%(table)s)
                               ELSE quote_ident(%(schema)s) || '.' || quote_ident(%(table)s) END)
"""
# pg_restore created them in dependency order, so oid order refreshes a view's sources before the view.
_POPULATED_MATVIEWS = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid
"""


class VerificationProblem(KeelError):
    """One backup failed one step; recorded with ``kind`` as its reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- comparison ----------------------------------------------------------------------------------------------------


def compare_tables(expected: Sequence[Mapping[str, Any]], found: Sequence[TableStats], mode: str) -> List[Dict[str, Any]]:
    """The tables whose restored rows differ from the manifest's, and tables present on one side only."""
    wanted = {(entry["schema"], entry["name"]): entry for entry in expected}
    restored = {(stats.schema, stats.name): stats for stats in found}
    mismatches: List[Dict[str, Any]] = []
    for key in sorted(set(wanted) | set(restored)):
        entry, stats = wanted.get(key), restored.get(key)
        table = "{0}.{1}".format(*key)
        if stats is None:
            mismatches.append(_mismatch(table, "missing after restore", entry["rows"], None, False))
        elif entry is None:
            mismatches.append(_mismatch(table, "not in the manifest", None, stats.rows, False))
        else:
            fingerprint_match = None if mode != "fingerprints" else str(entry.get("fingerprint")) == stats.fingerprint
            if entry["rows"] != stats.rows or fingerprint_match is False:
                problem = "row count differs" if entry["rows"] != stats.rows else "fingerprint differs"
                mismatches.append(_mismatch(table, problem, entry["rows"], stats.rows, fingerprint_match))
    return mismatches


def _mismatch(table: str, problem: str, rows_expected: Optional[int], rows_found: Optional[int], fingerprint_match: Optional[bool]) -> Dict[str, Any]:
    return {"table": table, "problem": problem, "rows_expected": rows_expected, "rows_found": rows_found, "fingerprint_match": fingerprint_match}


def judge_result(description: Optional[Sequence[Any]], rows: Sequence[Sequence[Any]]) -> Optional[str]:
    """None when an assertion returned exactly one row holding one true; else why not, never quoting a value.

    ``rows`` is at most the first two rows.
    """
    if description is None:
        return "returns no result: it must be a query returning one boolean"
    if len(description) != 1:
        return "returns {0} columns, not one boolean".format(len(description))
    if not rows:
        return "returns no row"
    if len(rows) > 1:
        return "returns more than one row"
    value = rows[0][0]
    if value is True:
        return None
    if value is False:
        return "returned false"
    if value is None:
        return "returned NULL"
    return "returned a value of type {0}, not a boolean".format(type(value).__name__)


# -- database steps ----------------------------------------------------------------------------------------------


def check_tables(conn: Any, manifest: Mapping[str, Any]) -> Tuple[int, List[Dict[str, Any]]]:
    """Tables counted in the database ``conn`` is on, and how they differ from what ``manifest`` recorded at dump time."""
    mode = manifest.get("table_stats") or "none"
    if mode == "none":
        return 0, []
    if mode == "fingerprints" and manifest.get("fingerprint_method") != FINGERPRINT_METHOD:
        raise VerificationProblem("unsupported_manifest", "the manifest's fingerprints use method {0!r}; this version computes {1}".format(
            manifest.get("fingerprint_method"), FINGERPRINT_METHOD))
    schemas = (manifest.get("scope") or {}).get("schemas") or []
    try:
        found = restored_stats(conn, schemas, mode, manifest_row_hashes(manifest))
    except psycopg.Error as exc:
        raise VerificationProblem("stats_failed", "counting the restored tables failed with {0}".format(describe_condition(sql_condition(exc)))) from None
    return len(found), compare_tables(manifest.get("tables") or [], found, mode)


def restored_stats(conn: Any, schemas: Sequence[str], mode: str, row_hashes: Optional[Dict[tuple, str]] = None) -> List[TableStats]:
    """Counts (and fingerprints) of the restored tables in scope, each with the row hash the manifest recorded for it."""
    with conn.transaction(), conn.cursor() as cursor:
        apply_row_text_settings(cursor)
        return collect_table_stats(cursor, tables_in_scope(cursor, schemas), mode, row_hashes)


def manifest_row_hashes(manifest: Mapping[str, Any]) -> Dict[tuple, str]:
    """(schema, name) -> the row hash the dump side used, so both sides hash rows the same way."""
    return {(table["schema"], table["name"]): table["row_hash"] for table in manifest.get("tables") or [] if table.get("row_hash")}


def apply_masking(conn: Any, rules: Sequence[MaskingRule]) -> List[Dict[str, Any]]:
    """Apply every rule, then refresh populated materialized views, in one transaction: all or nothing."""
    applied: List[Dict[str, Any]] = []
    try:
        with conn.transaction(), conn.cursor() as cursor:
            for rule in rules:
                applied.append(_mask_column(cursor, rule))
            cursor.execute(_POPULATED_MATVIEWS)
            for schema, name in cursor.fetchall():
                _run_step(cursor, sql.SQL("REFRESH MATERIALIZED VIEW {0}").format(sql.Identifier(schema, name)),
                          "masking_failed", "refreshing materialized view {0}.{1} after masking".format(schema, name))
    except psycopg.Error as exc:  # e.g. a deferred constraint at commit
        raise VerificationProblem("masking_failed", "masking failed with {0}".format(describe_condition(sql_condition(exc)))) from None
    return applied


def _mask_column(cursor: Any, rule: MaskingRule) -> Dict[str, Any]:
    cursor.execute(_FIND_MASKED_COLUMN, {"schema": rule.schema, "table": rule.table, "column": rule.column})
    found = cursor.fetchone()
    named = "{0}.{1}".format(rule.schema, rule.table) if rule.schema else rule.table
    if found is None:
        raise VerificationProblem("masking_failed", "{0}.table: the restored backup has no table {1}".format(rule.field, named))
    schema, table, relkind, has_column = found
    if relkind not in ("r", "p"):
        raise VerificationProblem("masking_failed", "{0}.table: {1}.{2} is not a table (materialized views are refreshed after masking; "
                                  "mask their source tables)".format(rule.field, schema, table))
    if not has_column:
        raise VerificationProblem("masking_failed", "{0}.column: table {1}.{2} has no column {3}".format(rule.field, schema, table, rule.column))
    statement = sql.SQL("UPDATE {0} SET {1} = ({2})").format(sql.Identifier(schema, table), sql.Identifier(rule.column), sql.SQL(rule.expression))
    _run_step(cursor, statement, "masking_failed", "{0}.expression on {1}.{2}.{3}".format(rule.field, schema, table, rule.column))
    return {"table": "{0}.{1}".format(schema, table), "column": rule.column, "rows": cursor.rowcount}


def _run_step(cursor: Any, statement: Any, reason: str, what: str) -> None:
    try:
        cursor.execute(statement)
    except psycopg.Error as exc:
        raise VerificationProblem(reason, "{0} failed with {1}".format(what, describe_condition(sql_condition(exc)))) from None


def run_assertion(conn: Any, assertion: Assertion, timeout_ms: int) -> Dict[str, Any]:
    """One assertion in its own READ ONLY transaction under a statement timeout."""
    result: Dict[str, Any] = {"name": assertion.name, "passed": False}
    try:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
            cursor.execute(assertion.sql)
            problem = judge_result(cursor.description, cursor.fetchmany(2) if cursor.description is not None else [])
    except psycopg.Error as exc:
        condition = sql_condition(exc)
        result.update(condition, problem="raised " + describe_condition(condition))
        return result
    result["passed"] = problem is None
    if problem:
        result["problem"] = problem
    return result
