# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rewrite_table: rebuild a table (reclaim bloat) while the application keeps writing — the pg_repack use case.

``start`` creates a shadow table of the same shape, installs a row trigger
that mirrors every INSERT/UPDATE/DELETE on the table into it, copies the rows
in keyset batches (each batch locks its source rows FOR SHARE, so a
concurrent delete can never be resurrected by a copy that read the row just
before), then builds the other indexes CONCURRENTLY. ``complete`` swaps the
two tables by renaming them in one short transaction, repoints keel's version
views to the new table and drops the old one. Grants, sequence ownership and
index names are carried over. Not revertible after completion: the copy has the
identical shape and data, so there is nothing to go back to.
"""

from __future__ import annotations

from typing import Any, List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import shadow_copy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import backfill_key
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.concurrent_index import build_index_concurrently
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    table_identifier,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_relations import table_relations

try:
    from psycopg import sql
except ImportError:
    sql = None


class RewriteTable(Operation):
    kind = "rewrite_table"
    required = ("table",)

    def parse(self) -> None:
        self.table = self.table_option()

    def describe(self) -> str:
        return "rewrite_table {0}".format(self.table)

    def targets(self) -> Set[Target]:
        return {(str(self.table), None)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def _shadow(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "shadow", self.table.name)

    def _old(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "old", self.table.name)

    def _trigger(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "mirror", self.table.name)

    def _shadow_index(self, ctx: MigrationContext, position: int) -> str:
        return ctx.helper_name(self.index, "ix{0}".format(position), self.table.name)

    # -- validate -------------------------------------------------------------------

    def validate(self, ctx: MigrationContext) -> None:
        field = self.sub("table")
        info = ctx.table(self.table, field)
        if info.partitioned:
            raise InvalidOption(field, "{0} is partitioned; neither it nor its partitions can be rewritten online yet".format(info.qualified))
        backfill_key(info, field)
        relations = table_relations(ctx.conn, info.oid)
        refusals = [
            (relations.is_partition, "it is a partition (detaching and attaching is not supported yet)"),
            (relations.referenced_by, "foreign keys of other tables reference it"),
            (relations.foreign_keys or relations.exclusion_constraints, "it has foreign keys or exclusion constraints"),
            (relations.triggers, "it has user triggers"),
            (relations.in_inheritance, "it takes part in inheritance"),
            (relations.has_policies, "it has row level security policies"),
            (info.dependent_views, "views read it ({0})".format(", ".join(info.dependent_views))),
        ]
        reasons = [reason for present, reason in refusals if present]
        if reasons:
            raise InvalidOption(field, "cannot rewrite {0} online: {1}".format(info.qualified, "; ".join(reasons)))

    # -- plan -------------------------------------------------------------------------

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        info = ctx.maybe_table(self.table)
        rows = info.rows_estimate if info else None
        name = self.describe()
        if phase == "start":
            return [
                p.step("start", name, "CREATE TABLE {0} (LIKE ...) with the primary key".format(self._shadow(ctx)),
                       p.NO_TABLE_LOCK),
                p.step("start", name, "trigger mirrors every write into the shadow table", p.SHARE_ROW_EXCLUSIVE),
                p.step("start", name, "copy rows in batches (source rows locked FOR SHARE per batch)", p.ROW_EXCLUSIVE,
                       held="batches", scans=True, rows=rows),
                p.step("start", name, "CREATE INDEX CONCURRENTLY on the shadow table for every other index",
                       p.NO_TABLE_LOCK, held="scan", rows=rows),
            ]
        if phase == "complete":
            return [p.step("complete", name, "swap tables by rename, carry grants and sequences, drop the old table",
                           p.ACCESS_EXCLUSIVE, warning="sessions holding prepared plans on the table re-plan once")]
        return [p.step("rollback", name, "drop the trigger and the shadow table", p.SHARE_ROW_EXCLUSIVE)]

    # -- start --------------------------------------------------------------------------

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        shadow = sql.Identifier(info.schema, self._shadow(ctx))
        key = backfill_key(info, self.sub("table"))
        if ctx.maybe_table(TableName(info.schema, self._shadow(ctx))) is None:
            create = sql.SQL("CREATE TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                             " INCLUDING IDENTITY INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)").format(
                shadow=shadow, table=table_identifier(info))
            unique_key = sql.SQL("CREATE UNIQUE INDEX {name} ON {shadow} ({key})").format(
                name=sql.Identifier(self._shadow_index(ctx, 0)), shadow=shadow,
                key=sql.SQL(", ").join(sql.Identifier(c) for c in key))
            ctx.guarded("create shadow table of {0}".format(info.qualified), [],
                        lambda conn: [conn.execute(create), conn.execute(unique_key)])
        columns = shadow_copy.copyable_columns(ctx.conn, info.oid)
        shadow_copy.install_mirror(ctx, info, self._trigger(ctx), shadow, key, columns)
        shadow_copy.copy_rows(ctx, "{0}:copy".format(self.index), info, shadow, columns, self.sub("table"))
        self._compact_key_index(ctx, info)
        for position, index in enumerate(self._other_indexes(info), start=1):
            self._build_shadow_index(ctx, info, index.definition, position)
        ctx.conn.execute(sql.SQL("ANALYZE {0}").format(shadow))

    def _compact_key_index(self, ctx: MigrationContext, info: TableInfo) -> None:
        """Rebuild the copy's key index once the copy is done.

        The mirror trigger inserts the application's newest keys at the right edge of the
        index before the ascending copy arrives there, so pages split half-full: left as it
        is, the "rewritten" table's key index ends up bigger than before.
        """
        state = ctx.load_state(self.state_key)
        if state.get("key_index_compacted"):
            return
        leftovers = ctx.conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND NOT i.indisvalid",
            ('"{0}"."{1}"'.format(info.schema, self._shadow(ctx)),)).fetchall()
        for (name,) in leftovers:  # an interrupted REINDEX CONCURRENTLY leaves an invalid twin
            ctx.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {0}").format(sql.Identifier(info.schema, name)))
        reindex = sql.SQL("REINDEX INDEX CONCURRENTLY {0}").format(
            sql.Identifier(info.schema, self._shadow_index(ctx, 0)))
        ctx.concurrently("compact the key index of {0}".format(self._shadow(ctx)), [], reindex)
        ctx.save_state(self.state_key, dict(state, key_index_compacted=True))

    def _other_indexes(self, info: TableInfo) -> list:
        return [index for index in info.indexes if not index.primary]

    def _build_shadow_index(self, ctx: MigrationContext, info: TableInfo, definition: str, position: int) -> None:
        name = self._shadow_index(ctx, position)
        unique = "UNIQUE " if definition.startswith("CREATE UNIQUE") else ""
        create = sql.SQL("CREATE {unique}INDEX CONCURRENTLY {name} ON {shadow} USING {rest}").format(
            unique=sql.SQL(unique), name=sql.Identifier(name),
            shadow=sql.Identifier(info.schema, self._shadow(ctx)), rest=sql.SQL(definition.split(" USING ", 1)[1]))
        build_index_concurrently(ctx, info.schema, name, create, [])

    # -- complete -------------------------------------------------------------------------

    def complete(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        shadow_name = self._shadow(ctx)
        if ctx.maybe_table(TableName(info.schema, shadow_name)) is None:
            return  # already swapped by an earlier run
        statements = self._swap_statements(ctx, info, shadow_name)
        cleanup = self._cleanup_statements(ctx, info)

        def swap(conn: Any) -> None:
            shadow_copy.lock_for_swap(conn, info.oid, table_identifier(info))
            for statement in statements:
                conn.execute(statement)
            # Version views bind to the table's OID: they follow the new table (same shape) before
            # the old one can be dropped.
            ctx.repoint_views(conn, info.oid, info.qualified)
            for statement in cleanup:
                conn.execute(statement)

        ctx.guarded("swap {0} with its rewritten copy".format(info.qualified), [info.qualified], swap)

    def _swap_statements(self, ctx: MigrationContext, info: TableInfo, shadow_name: str) -> List[Any]:
        table, old = table_identifier(info), sql.Identifier(self._old(ctx))
        swapped = sql.Identifier(info.schema, self._old(ctx))
        statements: List[Any] = [
            sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(self._trigger(ctx)), table),
            sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table, old),
            sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(sql.Identifier(info.schema, shadow_name),
                                                            sql.Identifier(info.name)),
        ]
        statements += shadow_copy.carry_sequences(ctx, info, swapped, table)
        statements += shadow_copy.carry_grants(ctx, info, table)
        return statements

    def _cleanup_statements(self, ctx: MigrationContext, info: TableInfo) -> List[Any]:
        table = table_identifier(info)
        statements = [sql.SQL("DROP TABLE {0}").format(sql.Identifier(info.schema, self._old(ctx)))]
        pk_name = next((i.name for i in info.indexes if i.primary), None)
        if pk_name:
            statements.append(sql.SQL("ALTER TABLE {0} ADD CONSTRAINT {1} PRIMARY KEY USING INDEX {2}").format(
                table, sql.Identifier(pk_name), sql.Identifier(self._shadow_index(ctx, 0))))
        else:
            statements.append(sql.SQL("DROP INDEX {0}").format(
                sql.Identifier(info.schema, self._shadow_index(ctx, 0))))
        for position, index in enumerate(self._other_indexes(info), start=1):
            statements.append(sql.SQL("ALTER INDEX {0} RENAME TO {1}").format(
                sql.Identifier(info.schema, self._shadow_index(ctx, position)), sql.Identifier(index.name)))
        statements.append(sql.SQL("DROP FUNCTION IF EXISTS keel.{0}()").format(sql.Identifier(self._trigger(ctx))))
        return statements

    # -- rollback ---------------------------------------------------------------------------

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statements = [
            sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(self._trigger(ctx)),
                                                                table_identifier(info)),
            sql.SQL("DROP FUNCTION IF EXISTS keel.{0}()").format(sql.Identifier(self._trigger(ctx))),
            sql.SQL("DROP TABLE IF EXISTS {0}").format(sql.Identifier(info.schema, self._shadow(ctx))),
        ]
        ctx.guarded("roll back {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
