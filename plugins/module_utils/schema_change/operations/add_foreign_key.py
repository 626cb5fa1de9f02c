# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""add_foreign_key: NOT VALID first (a brief SHARE ROW EXCLUSIVE on both tables), then VALIDATE."""

from __future__ import annotations

from typing import List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.constraints import (
    add_validated_constraint,
    drop_constraint,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import (
    TableName,
    check_identifier,
    parse_table_name,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    require_column,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None

ON_DELETE = ("no action", "restrict", "cascade", "set null", "set default")
PARTITIONED_FOREIGN_KEY = ("{0} is partitioned: PostgreSQL cannot add a NOT VALID foreign key to it, and a validated one "
                           "would block writes while it scans; add it to each partition with raw_sql instead")


class AddForeignKey(Operation):
    kind = "add_foreign_key"
    reverts_by_rollback = True
    required = ("table", "name", "columns", "references")
    optional = ("on_delete",)

    def parse(self) -> None:
        self.table = self.table_option()
        self.name = self.identifier_option("name")
        self.columns = self.identifier_list_option("columns")
        references = self.spec.get("references")
        field = self.sub("references")
        if not isinstance(references, dict) or "table" not in references or "columns" not in references:
            raise InvalidOption(field, "expected {table: ..., columns: [...]}")
        self.target = parse_table_name(references["table"], field + ".table")
        target_columns = references["columns"]
        if isinstance(target_columns, str):
            target_columns = [target_columns]
        self.target_columns = [check_identifier(c, "{0}.columns[{1}]".format(field, i))
                               for i, c in enumerate(target_columns or [])]
        if len(self.target_columns) != len(self.columns):
            raise InvalidOption(field + ".columns", "must name as many columns as columns ({0})".format(
                len(self.columns)))
        self.on_delete = str(self.spec.get("on_delete") or "no action").lower()
        if self.on_delete not in ON_DELETE:
            raise InvalidOption(self.sub("on_delete"), "must be one of {0}".format(", ".join(ON_DELETE)))

    def describe(self) -> str:
        return "add_foreign_key {0} on {1}".format(self.name, self.table)

    def targets(self) -> Set[Target]:
        return {(str(self.table), "constraint:" + self.name)}

    def tables(self) -> List[TableName]:
        return [self.table, self.target]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        if info.partitioned:
            raise InvalidOption(self.sub("table"), PARTITIONED_FOREIGN_KEY.format(info.qualified))
        target = ctx.table(self.target, self.sub("references.table"))
        for i, column in enumerate(self.columns):
            ctx.require_column(info, column, "{0}[{1}]".format(self.sub("columns"), i))
        for i, column in enumerate(self.target_columns):
            require_column(target, column, "{0}.columns[{1}]".format(self.sub("references"), i))
        if self.name in info.constraints:
            raise InvalidOption(self.sub("name"), "table {0} already has a constraint {1}".format(
                info.qualified, self.name))

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        info = ctx.maybe_table(self.table)
        if phase == "start":
            return [p.step("start", self.describe(), "ADD FOREIGN KEY ... NOT VALID (brief, both tables)",
                           p.SHARE_ROW_EXCLUSIVE),
                    p.step("start", self.describe(), "VALIDATE CONSTRAINT (reads and writes go on)",
                           p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True,
                           rows=info.rows_estimate if info else None)]
        if phase == "rollback":
            return [p.step("rollback", self.describe(), "DROP CONSTRAINT", p.ACCESS_EXCLUSIVE)]
        return []

    def start(self, ctx: MigrationContext) -> None:
        info, target = ctx.table(self.table), ctx.table(self.target)
        definition = sql.SQL("FOREIGN KEY ({columns}) REFERENCES {target} ({target_columns}) ON DELETE {action}").format(
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in self.columns), target=table_identifier(target),
            target_columns=sql.SQL(", ").join(sql.Identifier(c) for c in self.target_columns),
            action=sql.SQL(self.on_delete.upper()))
        add_validated_constraint(ctx, info, self.name, definition, [target.qualified],
                                 meaning="foreign key {0} (rows without a match in {1})".format(self.name, target.qualified))

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is not None:
            drop_constraint(ctx, info, self.name)
