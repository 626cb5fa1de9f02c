# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Privacy-safe reporting of SQL errors: SQLSTATE and condition names, never the server's message.

A PostgreSQL error message (and pg_restore's DETAIL and CONTEXT lines) can
quote the row values that caused it, for example the offending key of a
unique violation or the text that failed a cast. Restore verification runs on
raw restored data, so what it returns or records about an error is only the
SQLSTATE, its condition name and its class, and pg_restore's messages are
stripped of the lines and quoted values that can hold row data.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional

try:
    import psycopg
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None

# PostgreSQL's condition classes (Appendix A): what an error is, without its message.
_CONDITION_CLASSES = {
    "01": "warning", "02": "no_data", "03": "sql_statement_not_yet_complete", "08": "connection_exception",
    "09": "triggered_action_exception", "0A": "feature_not_supported", "0B": "invalid_transaction_initiation",
    "0F": "locator_exception", "0L": "invalid_grantor", "0P": "invalid_role_specification", "0Z": "diagnostics_exception",
    "20": "case_not_found", "21": "cardinality_violation", "22": "data_exception", "23": "integrity_constraint_violation",
    "24": "invalid_cursor_state", "25": "invalid_transaction_state", "26": "invalid_sql_statement_name",
    "27": "triggered_data_change_violation", "28": "invalid_authorization_specification",
    "2B": "dependent_privilege_descriptors_still_exist", "2D": "invalid_transaction_termination", "2F": "sql_routine_exception",
    "34": "invalid_cursor_name", "38": "external_routine_exception", "39": "external_routine_invocation_exception",
    "3B": "savepoint_exception", "3D": "invalid_catalog_name", "3F": "invalid_schema_name", "40": "transaction_rollback",
    "42": "syntax_error_or_access_rule_violation", "44": "with_check_option_violation", "53": "insufficient_resources",
    "54": "program_limit_exceeded", "55": "object_not_in_prerequisite_state", "57": "operator_intervention", "58": "system_error",
    "72": "snapshot_too_old", "F0": "config_file_error", "HV": "fdw_error", "P0": "plpgsql_error", "XX": "internal_error",
}

# pg_restore lines that quote rows or statements, and values quoted after a colon (`... for type integer: "x"`).
_ROW_TEXT_LINES = re.compile(r"^\s*(?:pg_restore:\s*)?(?:(?:error|warning|detail):\s*)?(?:DETAIL|CONTEXT|Command was|LINE \d+):", re.IGNORECASE)
_QUOTED_VALUE = re.compile(r'(:\s*)"[^"]*"')


def sql_condition(exc: BaseException) -> Dict[str, Optional[str]]:
    """SQLSTATE, condition name and class of a database error: never its message, which can quote row values."""
    sqlstate = getattr(exc, "sqlstate", None)
    condition = None
    if sqlstate and psycopg is not None:
        try:
            condition = re.sub(r"(?<!^)(?=[A-Z])", "_", psycopg.errors.lookup(sqlstate).__name__).lower()
        except KeyError:
            condition = None
    return {
        "sqlstate": sqlstate,
        "condition": condition,
        "condition_class": _CONDITION_CLASSES.get((sqlstate or "")[:2]) if sqlstate else type(exc).__name__,
    }


def describe_condition(condition: Mapping[str, Optional[str]]) -> str:
    return "SQLSTATE {0} ({1})".format(condition.get("sqlstate") or "unknown", condition.get("condition") or condition.get("condition_class") or "error")


def withhold_row_text(message: str) -> str:
    """A pg_restore failure message without the lines and quoted values that can hold row data."""
    kept = [line for line in message.split(" | ") if not _ROW_TEXT_LINES.match(line)]
    return _QUOTED_VALUE.sub(r'\1"(withheld)"', " | ".join(kept))
