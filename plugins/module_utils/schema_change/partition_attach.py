# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""partition_table, method attach: the live table becomes the first partition of a new parent.

Nothing is copied. ``start`` makes the key NOT NULL (through a validated
CHECK, so no scan under a strong lock), builds the unique index the parent's
primary key needs CONCURRENTLY and turns it into a constraint, and creates
the empty parent. ``complete`` adds the first partition's bound as a CHECK
(NOT VALID, then VALIDATE, online) so ATTACH skips its scan, premakes the
following partitions on the still unused parent, then in one short
transaction attaches the table, swaps the names and repoints keel's version
views. The bound lies beyond now + revert_window + a margin, so writes of the
revert window land in the first partition and ``revert`` is metadata only:
DETACH, rename back, drop the parent. Rows written past the bound anyway (an
integer key, or a very long window) are moved back into the table under the
same lock.
"""

from __future__ import annotations

from typing import Any, List

from ansible_collections.keel.postgres.plugins.module_utils.schema_change import partition_bounds as bounds
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import shadow_copy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.concurrent_index import build_index_concurrently
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.constraints import (
    add_validated_constraint,
    drop_constraint,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.partition_parent import (
    create_partition_statement,
    create_statements,
    primary_key,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    constraint_validated,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


class AttachMethod:
    def __init__(self, op: Any) -> None:
        self.op = op

    # -- names ------------------------------------------------------------------------------------

    def parent_name(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "parent", self.op.table.name)

    def bound_check(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "bound", self.op.table.name)

    def not_null_check(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "nn", self.op.table.name)

    def first_partition(self) -> str:
        return bounds.first_partition_name(self.op.table.name)

    def unique_name(self) -> str:
        return bounds.first_partition_name(self.op.table.name)[:59] + "_key"

    # -- plan -------------------------------------------------------------------------------------

    def plan(self, ctx: MigrationContext, phase: str, rows: Any, name: str) -> List[p.PlanStep]:
        if phase == "start":
            return [
                p.step(phase, name, "make {0} NOT NULL through a validated CHECK (skipped when it is)".format(
                    self.op.key), p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows),
                p.step(phase, name, "CREATE UNIQUE INDEX CONCURRENTLY over the primary key and {0}, then "
                       "ADD CONSTRAINT ... UNIQUE USING INDEX".format(self.op.key), p.SHARE_UPDATE_EXCLUSIVE,
                       held="scan", scans=True, rows=rows,
                       warning="the primary key of the partitioned table includes {0}: the old key alone is "
                               "unique per partition only".format(self.op.key)),
                p.step(phase, name, "CREATE TABLE {0} (empty, PARTITION BY RANGE ({1})) with the table's indexes, "
                       "checks, defaults and identity continuing from its current value".format(
                           self.parent_name(ctx), self.op.key), p.NO_TABLE_LOCK),
            ]
        if phase == "complete":
            return [
                p.step(phase, name, "ADD CONSTRAINT {0} CHECK ({1} < first bound) NOT VALID, then VALIDATE; the bound "
                       "lies beyond now + revert_window + {2}".format(
                           self.bound_check(ctx), self.op.key, bounds.CUTOFF_MARGIN),
                       p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows),
                p.step(phase, name, "premake {0} partitions after the first bound on the unused parent".format(
                    self.op.premake), p.NO_TABLE_LOCK),
                p.step(phase, name, "one transaction: lock views, table, referenced tables; ATTACH PARTITION (scan "
                       "skipped: implied by the CHECK); rename {0} -> {1}, parent -> {0}; repoint version "
                       "views".format(self.op.table.name, self.first_partition()), p.ACCESS_EXCLUSIVE,
                       client_impact="same columns; sessions holding prepared plans on the table re-plan once"),
            ]
        if phase == "revert":
            return [p.step(phase, name, "one transaction: DETACH {0}, move rows written past its bound back, rename "
                           "back, repoint views, drop the parent and its empty partitions".format(
                               self.first_partition()), p.ACCESS_EXCLUSIVE)]
        if phase == "finalize":
            return [p.step(phase, name, "drop the bound CHECK {0} (the partition bound enforces it)".format(
                self.bound_check(ctx)), p.ACCESS_EXCLUSIVE)]
        return [p.step(phase, name, "drop the parent, the unique constraint and NOT NULL keel added",
                       p.ACCESS_EXCLUSIVE)]

    # -- start ------------------------------------------------------------------------------------

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        self._ensure_not_null(ctx, info)
        info = ctx.table(self.op.table, self.op.sub("table"))
        self._ensure_unique_with_key(ctx, info)
        info = ctx.table(self.op.table, self.op.sub("table"))
        if ctx.maybe_table(TableName(info.schema, self.parent_name(ctx))) is None:
            parent = sql.Identifier(info.schema, self.parent_name(ctx))
            statements = create_statements(ctx, info, parent, self.op.key, "range")
            ctx.guarded("create partitioned parent for {0}".format(info.qualified), [],
                        lambda conn: [conn.execute(s) for s in statements])

    def _ensure_not_null(self, ctx: MigrationContext, info: TableInfo) -> None:
        """ATTACH needs the key NOT NULL like the parent's; SET NOT NULL skips its scan given a validated
        CHECK (key IS NOT NULL), which is dropped again afterwards."""
        if info.columns[self.op.key].not_null:
            return
        state = ctx.load_state(self.op.state_key)
        ctx.save_state(self.op.state_key, dict(state, set_not_null=True))
        check = self.not_null_check(ctx)
        add_validated_constraint(ctx, info, check, sql.SQL("CHECK ({0} IS NOT NULL)").format(
            sql.Identifier(self.op.key)), [], "NOT NULL on {0}".format(self.op.key))
        statement = sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET NOT NULL").format(
            table_identifier(info), sql.Identifier(self.op.key))
        ctx.guarded("set {0} NOT NULL on {1}".format(self.op.key, info.qualified), [info.qualified],
                    lambda conn: conn.execute(statement))
        drop_constraint(ctx, info, check)

    def _ensure_unique_with_key(self, ctx: MigrationContext, info: TableInfo) -> None:
        """The parent's primary key includes the key; ATTACH adopts a matching unique constraint of the
        table instead of building an index under its lock."""
        if not info.primary_key or self.op.key in info.primary_key:
            return
        name = self.unique_name()
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in primary_key(info, self.op.key))
        if constraint_validated(ctx.conn, info.oid, name) is not None:
            return
        state = ctx.load_state(self.op.state_key)
        ctx.save_state(self.op.state_key, dict(state, unique=name))
        create = sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {0} ON {1} ({2})").format(
            sql.Identifier(name), table_identifier(info), columns)
        build_index_concurrently(ctx, info.schema, name, create, [info.qualified])
        statement = sql.SQL("ALTER TABLE {0} ADD CONSTRAINT {1} UNIQUE USING INDEX {1}").format(
            table_identifier(info), sql.Identifier(name))
        ctx.guarded("turn index {0} into a constraint".format(name), [info.qualified],
                    lambda conn: conn.execute(statement))

    # -- complete ---------------------------------------------------------------------------------

    def first_bound(self, ctx: MigrationContext, info: TableInfo) -> Any:
        key_type = info.columns[self.op.key].type
        interval = bounds.key_interval(self.op.interval, key_type, self.op.sub("interval"))
        highest = ctx.conn.execute(sql.SQL("SELECT max({0}) FROM {1}").format(
            sql.Identifier(self.op.key), table_identifier(info))).fetchone()[0]
        if bounds.is_time_type(key_type):
            now = ctx.conn.execute(sql.SQL("SELECT now()::{0}").format(sql.SQL(key_type))).fetchone()[0]
            cover = bounds.time_cover(now, ctx.revert_window)
            if key_type == "date":
                cover = cover.date()
            return bounds.first_upper(interval, max(cover, highest) if highest is not None else cover)
        # An integer key cannot be projected over the revert window: one interval of headroom for the
        # writes made while the swap is prepared; later ones go to the next partitions.
        return interval.add(bounds.first_upper(interval, highest if highest is not None else 0))

    def complete(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        if info.partitioned:
            return  # swapped by an earlier run
        key_type = info.columns[self.op.key].type
        upper = self._ensure_bound_check(ctx, info, key_type)
        parent = sql.Identifier(info.schema, self.parent_name(ctx))
        interval = bounds.key_interval(self.op.interval, key_type, self.op.sub("interval"))
        premade = [create_partition_statement(info.schema, parent, bound, key_type)
                   for bound in bounds.following(info.name, upper, interval, self.op.premake)]
        ctx.guarded("premake partitions of {0}".format(info.qualified), [],
                    lambda conn: [conn.execute(s) for s in premade])
        self._swap(ctx, info, parent, upper, key_type)

    def _ensure_bound_check(self, ctx: MigrationContext, info: TableInfo, key_type: str) -> Any:
        wanted = self.first_bound(ctx, info)
        state = ctx.load_state(self.op.state_key)
        check = self.bound_check(ctx)
        current = bounds.from_text(ctx.conn, state.get("upper"), key_type)
        if current is not None and current >= wanted and constraint_validated(ctx.conn, info.oid, check):
            return current
        drop_constraint(ctx, info, check)  # an interrupted run's bound, now too close
        self._drop_premade(ctx, info)
        ctx.save_state(self.op.state_key, dict(state, upper=bounds.to_text(wanted)))
        add_validated_constraint(ctx, info, check, sql.SQL("CHECK ({0} < {1})").format(
            sql.Identifier(self.op.key), bounds.literal(wanted, key_type)), [],
            "the first partition's bound {0} < {1}".format(self.op.key, bounds.to_text(wanted)))
        return wanted

    def _drop_premade(self, ctx: MigrationContext, info: TableInfo) -> None:
        parent = TableName(info.schema, self.parent_name(ctx))
        if ctx.maybe_table(parent) is None:
            return
        names = [row[0] for row in ctx.conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
            ('"{0}"."{1}"'.format(*parent),)).fetchall()]
        ctx.guarded("drop premade partitions of {0}".format(parent.name), [],
                    lambda conn: [conn.execute(sql.SQL("DROP TABLE {0}").format(sql.SQL(n))) for n in names])

    def _swap(self, ctx: MigrationContext, info: TableInfo, parent: Any, upper: Any, key_type: str) -> None:
        table = table_identifier(info)
        attach = sql.SQL("ALTER TABLE {parent} ATTACH PARTITION {table} FOR VALUES FROM (MINVALUE) TO ({upper})").format(
            parent=parent, table=table, upper=bounds.literal(upper, key_type))
        sequences = shadow_copy.carry_sequences(ctx, info, table, parent)
        renames = [sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table, sql.Identifier(self.first_partition())),
                   sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(parent, sql.Identifier(info.name))]

        def work(conn: Any) -> None:
            shadow_copy.lock_for_swap(conn, info.oid, table)
            conn.execute(attach)
            for statement in sequences + renames:
                conn.execute(statement)
            ctx.repoint_views(conn, info.oid, info.qualified)
            ctx.save_state(self.op.state_key, dict(ctx.load_state(self.op.state_key), swapped=True))

        ctx.guarded("attach {0} as the first partition and swap names".format(info.qualified),
                    [info.qualified, "{0}.{1}".format(info.schema, self.parent_name(ctx))], work)

    # -- revert -----------------------------------------------------------------------------------

    def revert(self, ctx: MigrationContext) -> None:
        parent_info = ctx.table(self.op.table, self.op.sub("table"))
        if not parent_info.partitioned:
            return  # reverted by an earlier run
        state = ctx.load_state(self.op.state_key)
        parent = table_identifier(parent_info)
        first = sql.Identifier(parent_info.schema, self.first_partition())
        first_info = ctx.table(TableName(parent_info.schema, self.first_partition()), self.op.sub("table"))
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in shadow_copy.copyable_columns(ctx.conn,
                                                                                             first_info.oid))
        statements = [
            sql.SQL("ALTER TABLE {0} DETACH PARTITION {1}").format(parent, first),
            sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(first, sql.Identifier(
                self.bound_check(ctx))),
            # Rows written past the first bound during the window (none for a time key within it).
            sql.SQL("INSERT INTO {0} ({1}) OVERRIDING SYSTEM VALUE SELECT {1} FROM {2}").format(first, columns, parent),
        ]
        statements += shadow_copy.carry_sequences(ctx, parent_info, parent, first)
        statements += [
            sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(parent, sql.Identifier(self.parent_name(ctx))),
            sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(first, sql.Identifier(parent_info.name)),
        ]
        table = sql.Identifier(parent_info.schema, parent_info.name)
        cleanup = [sql.SQL("DROP TABLE {0}").format(sql.Identifier(parent_info.schema, self.parent_name(ctx)))]
        cleanup += self._undo_start_statements(table, state)

        def work(conn: Any) -> None:
            shadow_copy.lock_for_swap(conn, parent_info.oid, parent)
            conn.execute(sql.SQL("LOCK TABLE {0} IN ACCESS EXCLUSIVE MODE").format(first))
            moved = 0
            for statement in statements:
                cursor = conn.execute(statement)
                moved += cursor.rowcount if statement is statements[2] else 0
            ctx.metrics.count("rows_moved_back", moved)
            ctx.repoint_views(conn, parent_info.oid, parent_info.qualified)
            for statement in cleanup:
                conn.execute(statement)
            ctx.save_state(self.op.state_key, {})

        ctx.guarded("detach {0} and put it back as {1}".format(self.first_partition(), parent_info.qualified),
                    [parent_info.qualified, "{0}.{1}".format(parent_info.schema, self.first_partition())], work)

    def _undo_start_statements(self, table: Any, state: dict) -> List[Any]:
        statements = []
        if state.get("unique"):
            statements.append(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
                table, sql.Identifier(state["unique"])))
        if state.get("set_not_null"):
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} DROP NOT NULL").format(
                table, sql.Identifier(self.op.key)))
        return statements

    # -- finalize and rollback --------------------------------------------------------------------

    def finalize(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        first = ctx.maybe_table(TableName(info.schema, self.first_partition()))
        if first is not None:
            drop_constraint(ctx, first, self.bound_check(ctx))

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.op.table)
        if info is None or info.partitioned:
            return
        state = ctx.load_state(self.op.state_key)
        table = table_identifier(info)
        statements = [sql.SQL("DROP TABLE IF EXISTS {0}").format(sql.Identifier(info.schema, self.parent_name(ctx))),
                      sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
                          table, sql.Identifier(self.bound_check(ctx))),
                      sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
                          table, sql.Identifier(self.not_null_check(ctx)))]
        statements += self._undo_start_statements(table, state)
        # A build interrupted before it became a constraint leaves the index alone.
        statements.append(sql.SQL("DROP INDEX IF EXISTS {0}").format(sql.Identifier(info.schema, self.unique_name())))
        ctx.guarded("roll back {0}".format(self.op.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
        ctx.save_state(self.op.state_key, {})
