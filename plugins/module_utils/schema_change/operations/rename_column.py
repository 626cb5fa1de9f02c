# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rename_column: renamed at the switch-over (a catalog-only change), not before."""

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
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import ViewShape

try:
    from psycopg import sql
except ImportError:
    sql = None


class RenameColumn(Operation):
    kind = "rename_column"
    required = ("table", "from", "to")

    def parse(self) -> None:
        self.table = self.table_option()
        self.old = self.identifier_option("from")
        self.new = self.identifier_option("to")
        if self.old == self.new:
            raise InvalidOption(self.sub("to"), "is the same name as from")

    def describe(self) -> str:
        return "rename_column {0}.{1} -> {2}".format(self.table, self.old, self.new)

    def targets(self) -> Set[Target]:
        return {(str(self.table), self.old), (str(self.table), self.new)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        require_column(info, self.old, self.sub("from"))
        if self.new in info.columns:
            raise InvalidOption(self.sub("to"), "table {0} already has a column {1!r}".format(info.qualified, self.new))
        # Trigger arguments are plain strings: a trigger function given the column *by name*
        # (tsvector_update_trigger, for one) fails on every write after the rename.
        rows = ctx.conn.execute("SELECT tgname, tgargs FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal"
                                " AND tgnargs > 0 ORDER BY tgname", (info.oid,)).fetchall()
        naming = [name for name, args in rows if self.old in bytes(args).decode("utf-8", "replace").split("\0")]
        if naming:
            raise InvalidOption(self.sub("from"), "trigger(s) {0} on {1} pass the column name {2!r} as an argument; after "
                                "the rename every write to the table would fail. Re-create them with the new name "
                                "(raw_sql) in the same change window, or drop them first".format(
                                    ", ".join(naming), info.qualified, self.old))

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        if phase in ("complete", "revert"):
            before, after = (self.old, self.new) if phase == "complete" else (self.new, self.old)
            return [p.step(phase, self.describe(), "RENAME COLUMN {0} TO {1} (metadata only)".format(before, after),
                           p.ACCESS_EXCLUSIVE, client_impact="clients reading the table directly by the name {0} "
                           "fail with 42703 from here on; views and version schemas keep working".format(before))]
        return []

    def shape_views(self, ctx: MigrationContext, shapes: List[ViewShape]) -> List[ViewShape]:
        return self._map_columns(ctx, shapes, self.table, lambda columns: [
            c._replace(name=self.new) if c.name == self.old else c for c in columns])

    def complete(self, ctx: MigrationContext) -> None:
        self._rename(ctx, self.old, self.new)

    def revert(self, ctx: MigrationContext) -> None:
        self._rename(ctx, self.new, self.old)

    def _rename(self, ctx: MigrationContext, before: str, after: str) -> None:
        """Only when ``before`` is still there: a repeated run finds the rename done."""
        info = ctx.table(self.table)
        if before not in info.columns:
            return
        statement = sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(
            table_identifier(info), sql.Identifier(before), sql.Identifier(after))
        ctx.guarded("rename column {0} to {1}".format(before, after), [info.qualified],
                    lambda conn: conn.execute(statement))
