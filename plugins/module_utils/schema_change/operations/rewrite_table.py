# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rewrite_table: rebuild a table (reclaim bloat) while the application keeps writing — the pg_repack use case.

``start`` creates a shadow table of the same shape, installs a row trigger
that mirrors every INSERT/UPDATE/DELETE on the table into it, copies the rows
in keyset batches (each batch locks its source rows FOR SHARE, so a
concurrent delete can never be resurrected by a copy that read the row just
before), then builds the other indexes CONCURRENTLY. ``complete`` swaps the
two tables by renaming them in one short transaction and drops the old one.
Grants, sequence ownership and index names are carried over.
"""

from __future__ import annotations

from typing import Any, List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import backfill_key, run_batches
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.concurrent_index import build_index_concurrently
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import DOLLAR_TAG
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
        facts = ctx.conn.execute(
            "SELECT c.relispartition,"
            " (SELECT count(*) FROM pg_constraint WHERE confrelid = c.oid AND conrelid <> c.oid),"
            " (SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype IN ('f', 'x')),"
            " (SELECT count(*) FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal),"
            " (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid OR inhrelid = c.oid),"
            " (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid)"
            " FROM pg_class c WHERE c.oid = %s", (info.oid,)).fetchone()
        refusals = [
            (facts[0], "it is a partition (detaching and attaching is not supported yet)"),
            (facts[1], "foreign keys of other tables reference it"),
            (facts[2], "it has foreign keys or exclusion constraints"),
            (facts[3], "it has user triggers"),
            (facts[4], "it takes part in inheritance"),
            (facts[5], "it has row level security policies"),
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

    def _copyable_columns(self, ctx: MigrationContext, info: TableInfo) -> List[str]:
        rows = ctx.conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0"
                                " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (info.oid,)).fetchall()
        return [row[0] for row in rows]

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
        columns = self._copyable_columns(ctx, info)
        self._install_mirror_trigger(ctx, info, shadow, key, columns)
        column_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)

        def copy(key_range: Any) -> Any:
            return sql.SQL("INSERT INTO {shadow} ({columns}) OVERRIDING SYSTEM VALUE"
                           " (SELECT {columns} FROM {table} WHERE {key_range} FOR SHARE)"
                           " ON CONFLICT DO NOTHING").format(shadow=shadow, columns=column_list,
                                                             table=table_identifier(info), key_range=key_range)

        run_batches(ctx, "{0}:copy".format(self.index), info, copy, self.sub("table"))
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

    def _install_mirror_trigger(self, ctx: MigrationContext, info: TableInfo, shadow: Any, key: List[str],
                                columns: List[str]) -> None:
        name = self._trigger(ctx)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        new_values = sql.SQL(", ").join(sql.SQL("NEW.{0}").format(sql.Identifier(c)) for c in columns)
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns)
        key_cols = sql.SQL(", ").join(sql.Identifier(c) for c in key)
        match_old = sql.SQL(" AND ").join(sql.SQL("{0} = OLD.{0}").format(sql.Identifier(c)) for c in key)
        key_changed = sql.SQL(" OR ").join(sql.SQL("NEW.{0} IS DISTINCT FROM OLD.{0}").format(sql.Identifier(c))
                                           for c in key)
        body = sql.SQL(
            "BEGIN"
            " IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({key_changed})) THEN"
            "   DELETE FROM {shadow} WHERE {match_old};"
            " END IF;"
            " IF TG_OP IN ('INSERT', 'UPDATE') THEN"
            "   INSERT INTO {shadow} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({new_values})"
            "   ON CONFLICT ({key_cols}) DO UPDATE SET {updates};"
            " END IF;"
            " RETURN NULL;"
            " END").format(key_changed=key_changed, shadow=shadow, match_old=match_old, cols=cols,
                           new_values=new_values, key_cols=key_cols, updates=updates)
        function = sql.SQL("CREATE OR REPLACE FUNCTION keel.{name}() RETURNS trigger LANGUAGE plpgsql AS "
                           "{tag}{body}{tag}").format(name=sql.Identifier(name), tag=sql.SQL(DOLLAR_TAG), body=body)
        drop = sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
            name=sql.Identifier(name), table=table_identifier(info))
        trigger = sql.SQL("CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
                          " FOR EACH ROW EXECUTE FUNCTION keel.{name}()").format(
            name=sql.Identifier(name), table=table_identifier(info))
        ctx.guarded("install mirror trigger on {0}".format(info.qualified), [info.qualified],
                    lambda conn: [conn.execute(function), conn.execute(drop), conn.execute(trigger)])

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
        ctx.guarded("swap {0} with its rewritten copy".format(info.qualified), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    def _swap_statements(self, ctx: MigrationContext, info: TableInfo, shadow_name: str) -> List[Any]:
        table, old = table_identifier(info), sql.Identifier(self._old(ctx))
        swapped = sql.Identifier(info.schema, self._old(ctx))
        statements: List[Any] = [
            sql.SQL("LOCK TABLE {0} IN ACCESS EXCLUSIVE MODE").format(table),
            sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(self._trigger(ctx)), table),
            sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table, old),
            sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(sql.Identifier(info.schema, shadow_name),
                                                            sql.Identifier(info.name)),
        ]
        statements += self._carry_sequences(ctx, info, swapped)
        statements += self._carry_grants(ctx, info)
        statements.append(sql.SQL("DROP TABLE {0}").format(swapped))
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

    def _carry_sequences(self, ctx: MigrationContext, info: TableInfo, swapped: Any) -> List[Any]:
        """Serial sequences belong to the old table's columns and would be dropped with it; identity
        sequences of the copy must continue where the old ones stopped."""
        statements = []
        for column in info.columns:
            sequence = ctx.conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (info.qualified, column)).fetchone()[0]
            if sequence is None:
                continue
            identity = ctx.conn.execute("SELECT attidentity FROM pg_attribute WHERE attrelid = %s AND attname = %s",
                                        (info.oid, column)).fetchone()[0]
            if identity:
                statements.append(sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({table}, {column}),"
                    " (SELECT last_value FROM {old_sequence}), (SELECT is_called FROM {old_sequence}))").format(
                    table=sql.Literal(info.qualified), column=sql.Literal(column), old_sequence=sql.SQL(sequence)))
            else:
                statements.append(sql.SQL("ALTER SEQUENCE {0} OWNED BY {1}.{2}").format(
                    sql.SQL(sequence), table_identifier(info), sql.Identifier(column)))
        return statements

    def _carry_grants(self, ctx: MigrationContext, info: TableInfo) -> List[Any]:
        rows = ctx.conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type,"
            " a.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
            " LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = %s AND a.grantee <> c.relowner",
            (info.oid,)).fetchall()
        return [sql.SQL("GRANT {0} ON {1} TO {2}{3}").format(
            sql.SQL(privilege), table_identifier(info), sql.SQL(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else "")) for grantee, privilege, grantable in rows]

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
