# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""drop_table: only in the contract phase; until then the old application keeps the table."""

from __future__ import annotations

from typing import List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import ViewShape

try:
    from psycopg import sql
except ImportError:
    sql = None


class DropTable(Operation):
    kind = "drop_table"
    required = ("table",)

    def parse(self) -> None:
        self.table = self.table_option()

    def describe(self) -> str:
        return "drop_table {0}".format(self.table)

    def targets(self) -> Set[Target]:
        return {(str(self.table), None)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        if info.dependent_views:
            raise InvalidOption(self.sub("table"), "views {0} read {1}; drop them first".format(
                ", ".join(info.dependent_views), info.qualified))
        referencing = ctx.conn.execute(
            "SELECT conname, conrelid::regclass::text FROM pg_constraint WHERE confrelid = %s AND conrelid <> %s",
            (info.oid, info.oid)).fetchall()
        if referencing:
            raise InvalidOption(self.sub("table"), "foreign keys reference {0}: {1}; drop them first".format(
                info.qualified, ", ".join("{0} on {1}".format(*row) for row in referencing)))

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        if phase == "finalize":
            return [p.step("finalize", self.describe(), "DROP TABLE (after the older version schemas are gone)",
                           p.ACCESS_EXCLUSIVE,
                           client_impact="clients still using {0} directly fail from here on".format(self.table))]
        return []

    def shape_views(self, ctx: MigrationContext, shapes: List[ViewShape]) -> List[ViewShape]:
        return [shape for shape in shapes if not self._is_my_table(ctx, shape, self.table)]

    def revert(self, ctx: MigrationContext) -> None:
        """Completion dropped nothing: the table is still there, and was written by old clients all along."""

    def finalize(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statement = sql.SQL("DROP TABLE IF EXISTS {0}").format(sql.Identifier(info.schema, info.name))
        ctx.guarded("drop table {0}".format(info.qualified), [info.qualified], lambda conn: conn.execute(statement))
