# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""partition_table, method copy: the rows are split across new partitions while the application writes.

``start`` creates the partitioned copy with partitions covering every existing
row (range: from min to max of the key plus ``premake``; list: one partition
per value, rows of other values refused before anything changes), mirrors
every write into it with a trigger and copies the rows in resumable batches.
``complete`` checks both tables hold the same number of rows, then swaps them
by rename in one short transaction, repoints keel's version views and installs
the reverse mirror, so the old table stays current for a ``revert``.
``finalize`` counts again and drops the old table.
"""

from __future__ import annotations

from typing import Any, List

from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import partition_bounds as bounds
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import shadow_copy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import backfill_key
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.partition_parent import (
    create_list_partition_statement,
    create_partition_statement,
    create_statements,
    parent_indexes,
    primary_key,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


class CopyMethod:
    def __init__(self, op: Any) -> None:
        self.op = op

    def shadow_name(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "shadow", self.op.table.name)

    def old_name(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "old", self.op.table.name)

    def mirror(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "mirror", self.op.table.name)

    def reverse(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.op.index, "reverse", self.op.table.name)

    # -- partitions ---------------------------------------------------------------------------

    def partition_statements(self, ctx: MigrationContext, info: TableInfo, parent: Any) -> List[Any]:
        key_type = info.columns[self.op.key].type
        if self.op.strategy == "list":
            return [create_list_partition_statement(info.schema, parent, bounds.list_partition_name(info.name, i),
                                                    value, key_type) for i, value in enumerate(self.op.values)]
        return [create_partition_statement(info.schema, parent, bound, key_type)
                for bound in self.range_bounds(ctx, info)]

    def partition_names(self, ctx: MigrationContext, info: TableInfo) -> List[str]:
        if self.op.strategy == "list":
            return [bounds.list_partition_name(info.name, i) for i in range(len(self.op.values))]
        return [bound.name for bound in self.range_bounds(ctx, info)]

    def range_bounds(self, ctx: MigrationContext, info: TableInfo) -> List[bounds.Bound]:
        key_type = info.columns[self.op.key].type
        interval = bounds.key_interval(self.op.interval, key_type, self.op.sub("interval"))
        low, high = ctx.conn.execute(sql.SQL("SELECT min({0}), max({0}) FROM {1}").format(
            sql.Identifier(self.op.key), table_identifier(info))).fetchone()
        if bounds.is_time_type(key_type):
            now = ctx.conn.execute(sql.SQL("SELECT now()::{0}").format(sql.SQL(key_type))).fetchone()[0]
            low, high = min(low, now) if low is not None else now, max(high, now) if high is not None else now
        else:
            low, high = low if low is not None else 0, high if high is not None else 0
        return bounds.covering(info.name, low, high, interval, self.op.premake)

    # -- plan ---------------------------------------------------------------------------------------

    def plan(self, ctx: MigrationContext, phase: str, rows: Any, name: str) -> List[p.PlanStep]:
        if phase == "start":
            return [
                p.step(phase, name, "CREATE TABLE {0} PARTITION BY {1} ({2}) with partitions covering every row".format(
                    self.shadow_name(ctx), self.op.strategy.upper(), self.op.key), p.NO_TABLE_LOCK),
                p.step(phase, name, "trigger mirrors every write into the partitioned copy", p.SHARE_ROW_EXCLUSIVE),
                p.step(phase, name, "copy rows in batches (source rows locked FOR SHARE per batch)", p.ROW_EXCLUSIVE,
                       held="batches", scans=True, rows=rows),
            ]
        if phase == "complete":
            return [
                p.step(phase, name, "count rows of both tables in one snapshot; refuse to swap if they differ",
                       p.ACCESS_SHARE, held="scan", scans=True, rows=rows),
                p.step(phase, name, "one transaction: lock views, table, referenced tables; swap by rename; carry "
                       "sequences; repoint version views; reverse mirror trigger keeps the old table current",
                       p.ACCESS_EXCLUSIVE,
                       client_impact="same columns; sessions holding prepared plans on the table re-plan once"),
            ]
        if phase == "revert":
            return [p.step(phase, name, "one transaction: swap back by rename, repoint views, drop the partitioned "
                           "table", p.ACCESS_EXCLUSIVE)]
        if phase == "finalize":
            return [p.step(phase, name, "count rows of both tables again, then drop the reverse trigger and the old "
                           "table", p.ACCESS_EXCLUSIVE, scans=True, rows=rows)]
        return [p.step(phase, name, "drop the trigger and the partitioned copy", p.SHARE_ROW_EXCLUSIVE)]

    # -- start --------------------------------------------------------------------------------------

    def forward_key(self, info: TableInfo) -> List[str]:
        return primary_key(info, self.op.key) or backfill_key(info, self.op.sub("table"))

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        shadow = sql.Identifier(info.schema, self.shadow_name(ctx))
        if ctx.maybe_table(TableName(info.schema, self.shadow_name(ctx))) is None:
            statements = create_statements(ctx, info, shadow, self.op.key, self.op.strategy)
            statements += self.partition_statements(ctx, info, shadow)
            ctx.guarded("create partitioned copy of {0}".format(info.qualified), [],
                        lambda conn: [conn.execute(s) for s in statements])
        columns = shadow_copy.copyable_columns(ctx.conn, info.oid)
        shadow_copy.install_mirror(ctx, info, self.mirror(ctx), shadow, self.forward_key(info), columns)
        shadow_copy.copy_rows(ctx, "{0}:copy".format(self.op.index), info, shadow, columns, self.op.sub("table"))
        ctx.conn.execute(sql.SQL("ANALYZE {0}").format(shadow))

    # -- complete -----------------------------------------------------------------------------------

    def complete(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        if info.partitioned:
            return  # swapped by an earlier run
        table, shadow = table_identifier(info), sql.Identifier(info.schema, self.shadow_name(ctx))
        old = sql.Identifier(info.schema, self.old_name(ctx))
        require_equal_counts(ctx, table, shadow, "before the swap")
        statements = shadow_copy.drop_mirror_statements(self.mirror(ctx), table)
        statements += shadow_copy.carry_sequences(ctx, info, table, shadow)
        statements += [sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table, sql.Identifier(self.old_name(ctx))),
                       sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(shadow, sql.Identifier(info.name))]
        columns = shadow_copy.copyable_columns(ctx.conn, info.oid)
        statements += shadow_copy.mirror_statements(self.reverse(ctx), table, old, backfill_key(info, self.op.sub(
            "table")), columns)

        def work(conn: Any) -> None:
            shadow_copy.lock_for_swap(conn, info.oid, table)
            for statement in statements:
                conn.execute(statement)
            ctx.repoint_views(conn, info.oid, info.qualified)

        ctx.guarded("swap {0} with its partitioned copy".format(info.qualified),
                    [info.qualified, "{0}.{1}".format(info.schema, self.shadow_name(ctx))], work)

    # -- revert -------------------------------------------------------------------------------------

    def revert(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        if not info.partitioned:
            return  # reverted by an earlier run
        table = table_identifier(info)
        old = sql.Identifier(info.schema, self.old_name(ctx))
        shadow = sql.Identifier(info.schema, self.shadow_name(ctx))
        statements = shadow_copy.drop_mirror_statements(self.reverse(ctx), table)
        statements += shadow_copy.carry_sequences(ctx, info, table, old)
        statements += [sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table, sql.Identifier(self.shadow_name(ctx))),
                       sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(old, sql.Identifier(info.name))]

        def work(conn: Any) -> None:
            shadow_copy.lock_for_swap(conn, info.oid, table)
            conn.execute(sql.SQL("LOCK TABLE {0} IN ACCESS EXCLUSIVE MODE").format(old))
            for statement in statements:
                conn.execute(statement)
            ctx.repoint_views(conn, info.oid, info.qualified)
            conn.execute(sql.SQL("DROP TABLE {0}").format(shadow))

        ctx.guarded("swap {0} back to the unpartitioned table".format(info.qualified),
                    [info.qualified, "{0}.{1}".format(info.schema, self.old_name(ctx))], work)

    # -- finalize and rollback ------------------------------------------------------------------------

    def finalize(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.op.table, self.op.sub("table"))
        old_info = ctx.maybe_table(TableName(info.schema, self.old_name(ctx)))
        if old_info is None:
            return
        table, old = table_identifier(info), table_identifier(old_info)
        require_equal_counts(ctx, table, old, "before the old table is dropped")
        # The original index names are free once the old table is gone.
        old_pkey = next((index.name for index in old_info.indexes if index.primary), None)
        renames = [sql.SQL("ALTER INDEX {0} RENAME TO {1}").format(
            sql.Identifier(info.schema, index.name), sql.Identifier(index.original or old_pkey))
            for index in parent_indexes(ctx, old_info._replace(name=info.name), table, self.op.key)]
        statements = shadow_copy.drop_mirror_statements(self.reverse(ctx), table)
        statements.append(sql.SQL("DROP TABLE {0}").format(old))
        ctx.guarded("drop the unpartitioned {0}".format(old_info.qualified), [info.qualified, old_info.qualified],
                    lambda conn: [conn.execute(s) for s in statements + renames])

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.op.table)
        if info is None or info.partitioned:
            return
        statements = shadow_copy.drop_mirror_statements(self.mirror(ctx), table_identifier(info))
        statements.append(sql.SQL("DROP TABLE IF EXISTS {0}").format(sql.Identifier(info.schema, self.shadow_name(ctx))))
        ctx.guarded("roll back {0}".format(self.op.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])


def require_equal_counts(ctx: MigrationContext, left: Any, right: Any, when: str) -> None:
    counts = shadow_copy.snapshot_counts(ctx.conn, left, right)
    ctx.metrics.maximum("rows_verified", counts[0])
    if counts[0] != counts[1]:
        raise KeelError("row counts differ {0}: {1} has {2} rows, {3} has {4}; nothing was swapped or dropped "
                        "(the mirror trigger was bypassed?)".format(when, left.as_string(ctx.conn), counts[0],
                                                                    right.as_string(ctx.conn), counts[1]))
