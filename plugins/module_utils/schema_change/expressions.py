# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQL expressions from migrations (defaults, checks, ``up``/``using`` conversions).

An expression is checked by the server before anything changes: it is
planned with EXPLAIN (never run) against the table's columns, plus the
column being added when there is one. The check goes through the extended
query protocol, which refuses more than one statement, so an expression
cannot smuggle a second command into the DDL built from it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo

try:
    from psycopg import sql
except ImportError:
    sql = None

DOLLAR_TAG = "$keel$"


def expression_sql(expression: str) -> Any:
    """The expression, parenthesized, for statements executed without parameters."""
    return sql.SQL("({0})").format(sql.SQL(expression))


def check_expression(conn: Any, info: Optional[TableInfo], expression: str, field: str,
                     added_column: Optional[str] = None, added_type: Optional[str] = None,
                     result_type: Optional[str] = None, planned_columns: Optional[Dict[str, str]] = None) -> None:
    """``planned_columns`` (name -> type) are columns earlier operations of the migration add."""
    if DOLLAR_TAG in expression:
        raise InvalidOption(field, "the expression must not contain {0}".format(DOLLAR_TAG))
    # This query carries a parameter, so a literal % must be doubled for psycopg.
    value = sql.SQL("({0})").format(sql.SQL(expression.replace("%", "%%")))
    if result_type:
        value = sql.SQL("{0}::{1}").format(value, sql.SQL(result_type))
    added = dict(planned_columns or {})
    if added_column is not None:
        added[added_column] = added_type
    source = _source(info, added)
    query = sql.SQL("EXPLAIN SELECT {value} FROM {source} WHERE %s").format(value=value, source=source)
    try:
        with conn.transaction():
            conn.execute(query, (False,))
    except Exception as exc:
        message = str(exc).strip().splitlines()[0]
        raise InvalidOption(field, "expression {0!r} is not valid here: {1}".format(expression, message)) from None


def _source(info: Optional[TableInfo], added: Dict[str, str]) -> Any:
    if info is None:
        return sql.SQL("(SELECT 1) AS src")
    table = sql.Identifier(info.schema, info.name)
    if not added:
        return sql.SQL("{0} AS src").format(table)
    # The columns do not exist yet: give the expression NULL stand-ins of their types.
    stand_ins = sql.SQL(", ").join(sql.SQL("NULL::{0} AS {1}").format(sql.SQL(type_), sql.Identifier(name))
                                   for name, type_ in added.items())
    return sql.SQL("(SELECT t.*, {stand_ins} FROM {table} AS t) AS src").format(stand_ins=stand_ins, table=table)
