# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""create_index: built CONCURRENTLY, so writes go on; an invalid leftover is dropped and rebuilt."""

from __future__ import annotations

from typing import Any, List, Optional, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.concurrent_index import (
    drop_index_statement,
    index_validity,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import (
    check_expression,
    expression_sql,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None

METHODS = ("btree", "hash", "gist", "gin", "brin", "spgist")


class CreateIndex(Operation):
    kind = "create_index"
    reverts_by_rollback = True
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
        return index_validity(ctx.conn, info.schema, self.name)

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        if info.partitioned and any(kind == "p" for _schema, _name, kind in self._partitions(ctx, info)):
            raise InvalidOption(self.sub("table"), "{0} has sub-partitioned partitions; only one level of "
                                                   "partitioning is supported".format(info.qualified))
        for position, column in enumerate(self.columns):
            ctx.require_column(info, column, "{0}[{1}]".format(self.sub("columns"), position))
        if self._index_state(ctx, info) is not None:
            raise InvalidOption(self.sub("name"), "an index {0} already exists in schema {1}".format(
                self.name, info.schema))
        if self.where:
            check_expression(ctx.conn, info, self.where, self.sub("where"), result_type="boolean",
                             planned_columns=ctx.planned(info))

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
        return drop_index_statement(info.schema, self.name)

    def _definition(self, table: Any, only: bool = False, concurrently: bool = True, name: Optional[str] = None) -> Any:
        statement = sql.SQL("CREATE {unique}INDEX {concurrently}{name} ON {only}{table} USING {method} ({columns})").format(
            unique=sql.SQL("UNIQUE " if self.unique else ""), concurrently=sql.SQL("CONCURRENTLY " if concurrently else ""),
            name=sql.Identifier(name or self.name), only=sql.SQL("ONLY " if only else ""), table=table,
            method=sql.SQL(self.method), columns=sql.SQL(", ").join(sql.Identifier(c) for c in self.columns))
        if self.where:
            statement = sql.SQL("{0} WHERE {1}").format(statement, expression_sql(self.where))
        return statement

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        if info.partitioned:
            self._start_partitioned(ctx, info)
            return
        state = self._index_state(ctx, info)
        if state:
            return
        if state is False:
            ctx.conn.execute(self._drop(info))  # left invalid by an interrupted build
        try:
            ctx.concurrently("create index {0}".format(self.name), [info.qualified],
                             self._definition(table_identifier(info)),
                             on_lock_timeout=lambda: ctx.conn.execute(self._drop(info)))
        except Exception:
            # A failed build (duplicate key for a unique index, cancel) leaves an INVALID index behind.
            ctx.conn.execute(self._drop(info))
            raise

    def _partitions(self, ctx: MigrationContext, info: TableInfo) -> List[Any]:
        return ctx.conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s ORDER BY c.relname",
            (info.oid,)).fetchall()

    def _start_partitioned(self, ctx: MigrationContext, info: TableInfo) -> None:
        """PostgreSQL cannot build a partitioned index CONCURRENTLY, so: an (invalid) index on the
        parent ONLY, a concurrent build on each partition, and each one attached; the parent's
        index becomes valid once every partition has its own."""
        if self._index_state(ctx, info) is None:
            parent = self._definition(table_identifier(info), only=True, concurrently=False)
            ctx.guarded("create index {0} on {1} only".format(self.name, info.qualified), [info.qualified],
                        lambda conn: conn.execute(parent))
        for schema, partition, _kind in self._partitions(ctx, info):
            child = "{0}_{1}".format(self.name, partition)[:63]
            attached = ctx.conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = to_regclass(%s) AND c.relname = %s)",
                ('"{0}"."{1}"'.format(info.schema, self.name), child)).fetchone()[0]
            if attached:
                continue
            drop_child = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {0}").format(sql.Identifier(schema, child))
            ctx.conn.execute(drop_child)  # an invalid or unattached leftover of an interrupted run
            ctx.concurrently("create index {0}".format(child), ["{0}.{1}".format(schema, partition)],
                             self._definition(sql.Identifier(schema, partition), name=child),
                             on_lock_timeout=lambda statement=drop_child: ctx.conn.execute(statement))
            attach = sql.SQL("ALTER INDEX {0} ATTACH PARTITION {1}").format(
                sql.Identifier(info.schema, self.name), sql.Identifier(schema, child))
            ctx.guarded("attach index {0}".format(child), [info.qualified], lambda conn, a=attach: conn.execute(a))

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        if info.partitioned:
            # Dropping the parent's index drops the attached ones; unattached leftovers go one by one.
            statement = sql.SQL("DROP INDEX IF EXISTS {0}").format(sql.Identifier(info.schema, self.name))
            ctx.guarded("drop index {0}".format(self.name), [info.qualified], lambda conn: conn.execute(statement))
            for schema, partition, _kind in self._partitions(ctx, info):
                child = "{0}_{1}".format(self.name, partition)[:63]
                ctx.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {0}").format(sql.Identifier(schema, child)))
        elif self._index_state(ctx, info) is not None:
            ctx.concurrently("drop index {0}".format(self.name), [info.qualified], self._drop(info))
