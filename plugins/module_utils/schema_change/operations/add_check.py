# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""add_check: a CHECK constraint added NOT VALID, then validated without blocking writes."""

from __future__ import annotations

from typing import List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.constraints import (
    add_validated_constraint,
    drop_constraint,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import (
    check_expression,
    expression_sql,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target

try:
    from psycopg import sql
except ImportError:
    sql = None


class AddCheck(Operation):
    kind = "add_check"
    reverts_by_rollback = True
    required = ("table", "name", "check")

    def parse(self) -> None:
        self.table = self.table_option()
        self.name = self.identifier_option("name")
        self.check = self.text_option("check")

    def describe(self) -> str:
        return "add_check {0} on {1}".format(self.name, self.table)

    def targets(self) -> Set[Target]:
        return {(str(self.table), "constraint:" + self.name)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        if self.name in info.constraints:
            raise InvalidOption(self.sub("name"), "table {0} already has a constraint {1}".format(
                info.qualified, self.name))
        check_expression(ctx.conn, info, self.check, self.sub("check"), result_type="boolean",
                         planned_columns=ctx.planned(info))

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        info = ctx.maybe_table(self.table)
        if phase == "start":
            return [p.step("start", self.describe(), "ADD CONSTRAINT ... NOT VALID (brief)", p.ACCESS_EXCLUSIVE),
                    p.step("start", self.describe(), "VALIDATE CONSTRAINT (reads and writes go on)",
                           p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True,
                           rows=info.rows_estimate if info else None)]
        if phase == "rollback":
            return [p.step("rollback", self.describe(), "DROP CONSTRAINT", p.ACCESS_EXCLUSIVE)]
        return []

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        add_validated_constraint(ctx, info, self.name, sql.SQL("CHECK {0}").format(expression_sql(self.check)), [],
                                 meaning="CHECK {0} ({1})".format(self.name, self.check))

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is not None:
            drop_constraint(ctx, info, self.name)
