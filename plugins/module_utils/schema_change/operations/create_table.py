# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""create_table: a new table exists from start; rollback drops it."""

from __future__ import annotations

from typing import Any, Dict, List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import (
    check_expression,
    expression_sql,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, check_identifier
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import canonical_type

try:
    from psycopg import sql
except ImportError:
    sql = None

COLUMN_KEYS = {"name", "type", "not_null", "default", "primary_key", "unique"}


class CreateTable(Operation):
    kind = "create_table"
    reverts_by_rollback = True
    required = ("table", "columns")

    def parse(self) -> None:
        self.table = self.table_option()
        columns = self.spec.get("columns")
        if not isinstance(columns, list) or not columns:
            raise InvalidOption(self.sub("columns"), "expected a non-empty list of {name, type, ...}")
        self.columns: List[Dict[str, Any]] = [self._parse_column(c, i) for i, c in enumerate(columns)]
        names = [c["name"] for c in self.columns]
        if len(set(names)) != len(names):
            raise InvalidOption(self.sub("columns"), "column names repeat")

    def _parse_column(self, column: Any, position: int) -> Dict[str, Any]:
        field = "{0}[{1}]".format(self.sub("columns"), position)
        if not isinstance(column, dict) or set(column) - COLUMN_KEYS or "type" not in column:
            raise InvalidOption(field, "expected {name, type, not_null, default, primary_key, unique}")
        return {"name": check_identifier(column.get("name"), field + ".name"), "type": str(column["type"]),
                "not_null": bool(column.get("not_null")), "default": column.get("default"),
                "primary_key": bool(column.get("primary_key")), "unique": bool(column.get("unique")),
                "field": field}

    def describe(self) -> str:
        return "create_table {0}".format(self.table)

    def targets(self) -> Set[Target]:
        return {(str(self.table), None)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def validate(self, ctx: MigrationContext) -> None:
        if ctx.maybe_table(self.table) is not None:
            raise InvalidOption(self.sub("table"), "table {0} already exists".format(self.table))
        for column in self.columns:
            column["type"] = canonical_type(ctx.conn, column["type"], column["field"] + ".type")
            if column["default"] is not None:
                check_expression(ctx.conn, None, str(column["default"]), column["field"] + ".default",
                                 result_type=column["type"])

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        if phase == "start":
            return [p.step("start", self.describe(), "CREATE TABLE", p.NO_TABLE_LOCK)]
        if phase == "rollback":
            return [p.step("rollback", self.describe(), "DROP TABLE", p.ACCESS_EXCLUSIVE)]
        if phase == "revert":
            return [p.step("revert", self.describe(), "DROP TABLE", p.ACCESS_EXCLUSIVE,
                           warning="rows written to {0} since completion go with it: the old shape has no such "
                                   "table".format(self.table))]
        return []

    def _column_sql(self, column: Dict[str, Any]) -> Any:
        parts = [sql.Identifier(column["name"]), sql.SQL(column["type"])]
        if column["primary_key"]:
            parts.append(sql.SQL("PRIMARY KEY"))
        if column["unique"]:
            parts.append(sql.SQL("UNIQUE"))
        if column["not_null"]:
            parts.append(sql.SQL("NOT NULL"))
        if column["default"] is not None:
            parts.append(sql.SQL("DEFAULT {0}").format(expression_sql(str(column["default"]))))
        return sql.SQL(" ").join(parts)

    def _identifier(self) -> Any:
        return sql.Identifier(*[part for part in self.table if part])

    def start(self, ctx: MigrationContext) -> None:
        statement = sql.SQL("CREATE TABLE IF NOT EXISTS {0} ({1})").format(
            self._identifier(), sql.SQL(", ").join(self._column_sql(c) for c in self.columns))
        ctx.guarded("create table {0}".format(self.table), [], lambda conn: conn.execute(statement))

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statement = sql.SQL("DROP TABLE IF EXISTS {0}").format(sql.Identifier(info.schema, info.name))
        ctx.guarded("drop table {0}".format(info.qualified), [info.qualified], lambda conn: conn.execute(statement))
