# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""create_index: built CONCURRENTLY, so writes go on; an invalid leftover is dropped and rebuilt."""

from __future__ import annotations

from typing import List, Optional, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import (
    check_expression,
    expression_sql,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    require_column,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None

METHODS = ("btree", "hash", "gist", "gin", "brin", "spgist")


class CreateIndex(Operation):
    kind = "create_index"
    required = ("table", "name", "columns")
    optional = ("unique", "method", "where")

    def parse(self) -> None:
        self.table = self.table_option()
        self.name = self.identifier_option("name")
        self.columns = self.identifier_list_option("columns")
        self.unique = self.bool_option("unique")
        self.method = (self.text_option("method") or "btree").lower()
        if self.method not in METHODS:
            raise InvalidOption(self.sub("method"), "must be one of {0}".format(", ".join(METHODS)))
        self.where = self.text_option("where")

    def describe(self) -> str:
        return "create_index {0} on {1}".format(self.name, self.table)

    def targets(self) -> Set[Target]:
        return {(str(self.table), "index:" + self.name)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def _index_state(self, ctx: MigrationContext, info: TableInfo) -> Optional[bool]:
        """None when absent, else whether the index is valid."""
        row = ctx.conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = %s AND c.relnamespace = %s::regnamespace", (self.name, info.schema)).fetchone()
        return None if row is None else row[0]

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        for position, column in enumerate(self.columns):
            require_column(info, column, "{0}[{1}]".format(self.sub("columns"), position))
        if self._index_state(ctx, info) is not None:
            raise InvalidOption(self.sub("name"), "an index {0} already exists in schema {1}".format(
                self.name, info.schema))
        if self.where:
            check_expression(ctx.conn, info, self.where, self.sub("where"), result_type="boolean")

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        info = ctx.maybe_table(self.table)
        rows = info.rows_estimate if info else None
        if phase == "start":
            return [p.step("start", self.describe(), "CREATE {0}INDEX CONCURRENTLY".format(
                "UNIQUE " if self.unique else ""), p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows)]
        if phase == "rollback":
            return [p.step("rollback", self.describe(), "DROP INDEX CONCURRENTLY", p.SHARE_UPDATE_EXCLUSIVE)]
        return []

    def _drop(self, info: TableInfo):
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {0}").format(sql.Identifier(info.schema, self.name))

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        state = self._index_state(ctx, info)
        if state:
            return
        if state is False:
            ctx.conn.execute(self._drop(info))  # left invalid by an interrupted build
        statement = sql.SQL("CREATE {unique}INDEX CONCURRENTLY {name} ON {table} USING {method} ({columns})").format(
            unique=sql.SQL("UNIQUE " if self.unique else ""), name=sql.Identifier(self.name),
            table=table_identifier(info), method=sql.SQL(self.method),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in self.columns))
        if self.where:
            statement = sql.SQL("{0} WHERE {1}").format(statement, expression_sql(self.where))
        try:
            ctx.concurrently("create index {0}".format(self.name), [info.qualified], statement,
                             on_lock_timeout=lambda: ctx.conn.execute(self._drop(info)))
        except Exception:
            # A failed build (duplicate key for a unique index, cancel) leaves an INVALID index behind.
            ctx.conn.execute(self._drop(info))
            raise

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is not None and self._index_state(ctx, info) is not None:
            ctx.concurrently("drop index {0}".format(self.name), [info.qualified], self._drop(info))
