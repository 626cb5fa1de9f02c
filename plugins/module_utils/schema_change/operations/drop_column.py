# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""drop_column: nothing changes until the contract phase, so the old application keeps its column."""

from __future__ import annotations

from typing import List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    require_column,
    table_identifier,
    views_using_column,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


class DropColumn(Operation):
    kind = "drop_column"
    required = ("table", "column")

    def parse(self) -> None:
        self.table = self.table_option()
        self.column = self.identifier_option("column")

    def describe(self) -> str:
        return "drop_column {0}.{1}".format(self.table, self.column)

    def targets(self) -> Set[Target]:
        return {(str(self.table), self.column)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        column = require_column(info, self.column, self.sub("column"))
        views = views_using_column(ctx.conn, info.oid, column.attnum)
        if views:
            raise InvalidOption(self.sub("column"), "views {0} read {1}; drop or change them first".format(
                ", ".join(views), self.column))

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        if phase == "complete":
            return [p.step("complete", self.describe(), "DROP COLUMN {0} (metadata only)".format(self.column),
                           p.ACCESS_EXCLUSIVE, warning="clients still reading {0} fail from here on".format(self.column))]
        return []

    def complete(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        if self.column not in info.columns:
            return
        statement = sql.SQL("ALTER TABLE {0} DROP COLUMN IF EXISTS {1}").format(
            table_identifier(info), sql.Identifier(self.column))
        ctx.guarded("drop column {0}".format(self.column), [info.qualified], lambda conn: conn.execute(statement))
