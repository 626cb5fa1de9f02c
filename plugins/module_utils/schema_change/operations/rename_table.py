# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rename_table: renamed at the switch-over (catalog only); views and foreign keys follow by OID."""

from __future__ import annotations

from typing import List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, check_identifier
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import ViewShape

try:
    from psycopg import sql
except ImportError:
    sql = None


class RenameTable(Operation):
    kind = "rename_table"
    required = ("table", "to")

    def parse(self) -> None:
        self.table = self.table_option()
        self.new_name = check_identifier(self.spec.get("to"), self.sub("to"))

    def describe(self) -> str:
        return "rename_table {0} -> {1}".format(self.table, self.new_name)

    def _renamed(self) -> TableName:
        return TableName(self.table.schema, self.new_name)

    def targets(self) -> Set[Target]:
        return {(str(self.table), None), (str(self._renamed()), None)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        if ctx.maybe_table(TableName(info.schema, self.new_name)) is not None:
            raise InvalidOption(self.sub("to"), "table {0}.{1} already exists".format(info.schema, self.new_name))

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        if phase in ("complete", "revert"):
            return [p.step(phase, self.describe(), "RENAME TO (metadata only)", p.ACCESS_EXCLUSIVE,
                           client_impact="clients naming the table {0} directly fail with 42P01 from here on; "
                                         "version schemas keep working".format(
                                             self.table if phase == "complete" else self.new_name))]
        return []

    def shape_views(self, ctx: MigrationContext, shapes: List[ViewShape]) -> List[ViewShape]:
        return [shape._replace(name=self.new_name) if self._is_my_table(ctx, shape, self.table) else shape
                for shape in shapes]

    def revert(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self._renamed())
        if info is None:
            return
        statement = sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(
            sql.Identifier(info.schema, info.name), sql.Identifier(self.table.name))
        ctx.guarded("rename table {0} back".format(info.qualified), [info.qualified],
                    lambda conn: conn.execute(statement))

    def complete(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statement = sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(
            sql.Identifier(info.schema, info.name), sql.Identifier(self.new_name))
        ctx.guarded("rename table {0}".format(info.qualified), [info.qualified], lambda conn: conn.execute(statement))
