# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""drop_column: hidden from the new version at start, dropped at finalize, so old clients keep their column
through the revert window."""

from __future__ import annotations

from typing import List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.constraints import add_validated_constraint
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    require_column,
    table_identifier,
    views_using_column,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import ViewShape

try:
    from psycopg import sql
except ImportError:
    sql = None


class DropColumn(Operation):
    kind = "drop_column"
    reverts_by_rollback = True
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
        if phase == "start":
            return [p.step("start", self.describe(), "DROP NOT NULL on {0} if set, so clients of the new version "
                           "can insert without it (metadata only)".format(self.column), p.ACCESS_EXCLUSIVE)]
        if phase == "finalize":
            return [p.step("finalize", self.describe(), "DROP COLUMN {0} (metadata only)".format(self.column),
                           p.ACCESS_EXCLUSIVE, client_impact="clients reading {0} directly fail with 42703 from here "
                           "on, and prepared SELECT * on the table with 0A000".format(self.column))]
        if phase in ("rollback", "revert"):
            return [p.step(phase, self.describe(), "restore NOT NULL on {0} if start dropped it (validated CHECK "
                           "first)".format(self.column), p.ACCESS_EXCLUSIVE)]
        return []

    def shape_views(self, ctx: MigrationContext, shapes: List[ViewShape]) -> List[ViewShape]:
        return self._map_columns(ctx, shapes, self.table,
                                 lambda columns: [c for c in columns if c.name != self.column])

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        state = ctx.load_state(self.state_key)
        if "was_not_null" not in state:
            ctx.save_state(self.state_key, {"was_not_null": info.columns[self.column].not_null})
        if info.columns[self.column].not_null:
            statement = sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} DROP NOT NULL").format(
                table_identifier(info), sql.Identifier(self.column))
            ctx.guarded("drop not null on {0}".format(self.column), [info.qualified],
                        lambda conn: conn.execute(statement))

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None or self.column not in info.columns or info.columns[self.column].not_null:
            return
        if not ctx.load_state(self.state_key).get("was_not_null"):
            return
        check = ctx.helper_name(self.index, "nn", self.column)
        # Clients of the new version may have inserted rows without the column.
        add_validated_constraint(ctx, info, check, sql.SQL("CHECK ({0} IS NOT NULL)").format(
            sql.Identifier(self.column)), [], meaning="NOT NULL on {0} (rows written without it by the new "
                                                      "version)".format(self.column))
        statements = [sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET NOT NULL").format(
            table_identifier(info), sql.Identifier(self.column)),
            sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
                table_identifier(info), sql.Identifier(check))]
        ctx.guarded("restore not null on {0}".format(self.column), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    def finalize(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        if self.column not in info.columns:
            return
        statement = sql.SQL("ALTER TABLE {0} DROP COLUMN IF EXISTS {1}").format(
            table_identifier(info), sql.Identifier(self.column))
        ctx.guarded("drop column {0}".format(self.column), [info.qualified], lambda conn: conn.execute(statement))
