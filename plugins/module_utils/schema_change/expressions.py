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

from typing import Any, Optional

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
                     result_type: Optional[str] = None) -> None:
    if DOLLAR_TAG in expression:
        raise InvalidOption(field, "the expression must not contain {0}".format(DOLLAR_TAG))
    # This query carries a parameter, so a literal % must be doubled for psycopg.
    value = sql.SQL("({0})").format(sql.SQL(expression.replace("%", "%%")))
    if result_type:
        value = sql.SQL("{0}::{1}").format(value, sql.SQL(result_type))
    source = _source(info, added_column, added_type)
    query = sql.SQL("EXPLAIN SELECT {value} FROM {source} WHERE %s").format(value=value, source=source)
    try:
        with conn.transaction():
            conn.execute(query, (False,))
    except Exception as exc:
        message = str(exc).strip().splitlines()[0]
        raise InvalidOption(field, "expression {0!r} is not valid here: {1}".format(expression, message)) from None


def _source(info: Optional[TableInfo], added_column: Optional[str], added_type: Optional[str]) -> Any:
    if info is None:
        return sql.SQL("(SELECT 1) AS src")
    table = sql.Identifier(info.schema, info.name)
    if added_column is None:
        return sql.SQL("{0} AS src").format(table)
    # The column does not exist yet: give the expression a NULL stand-in of its type.
    return sql.SQL("(SELECT t.*, NULL::{type} AS {column} FROM {table} AS t) AS src").format(
        type=sql.SQL(added_type), column=sql.Identifier(added_column), table=table)
