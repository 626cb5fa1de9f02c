# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""alter_column: change a column's type, NOT NULL or default without blocking the application.

A type change never runs ``ALTER COLUMN TYPE`` (a table rewrite under ACCESS
EXCLUSIVE). Instead ``start`` adds a new column of the new type beside the
old one, keeps it filled by a trigger from the same conversion the batched
backfill uses, and builds its indexes concurrently; ``complete`` swaps the
two columns by renaming them in one short transaction and drops the old one
(metadata only). NOT NULL goes through a validated CHECK so that the final
``SET NOT NULL`` does not scan.
"""

from __future__ import annotations

from typing import Any, List, Optional, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import backfill_key, run_backfill
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.column_sync import (
    Guard,
    SyncColumns,
    sync_trigger_statements,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.concurrent_index import build_index_concurrently
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
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.reverse_guard import reverse_guard
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    Index,
    TableInfo,
    canonical_type,
    table_identifier,
    views_using_column,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.triggers import drop_fill_trigger_statements
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import ViewColumn, ViewShape

try:
    from psycopg import sql
except ImportError:
    sql = None


TYPE_SWAP_WARNING = ("clients reading the table directly see {0} change type: those using SELECT * also see it move "
                     "to the end, and sessions "
                     "holding server-side prepared statements on the table (psycopg 3 after 5 executions, pgJDBC, "
                     "asyncpg) fail with 'cached plan must not change result type' until they re-prepare")


class AlterColumn(Operation):
    kind = "alter_column"
    required = ("table", "column")
    optional = ("type", "using", "down", "not_null", "default", "drop_default")

    def parse(self) -> None:
        self.table = self.table_option()
        self.column = self.identifier_option("column")
        self.type = self.text_option("type")
        self.using = self.text_option("using")
        self.down = self.text_option("down")
        value = self.spec.get("not_null")
        if value is not None and not isinstance(value, bool):
            raise InvalidOption(self.sub("not_null"), "expected true or false, got {0!r}".format(value))
        self.not_null: Optional[bool] = value
        self.default = self.text_option("default")
        self.drop_default = self.bool_option("drop_default")
        if self.using is not None and self.type is None:
            raise InvalidOption(self.sub("using"), "only makes sense with type")
        if self.down is not None and self.type is None:
            raise InvalidOption(self.sub("down"), "only makes sense with type")
        if self.default is not None and self.drop_default:
            raise InvalidOption(self.sub("drop_default"), "conflicts with default")
        if self.type is None and self.not_null is None and self.default is None and not self.drop_default:
            raise InvalidOption(self.field, "nothing to change: give type, not_null, default or drop_default")

    def describe(self) -> str:
        return "alter_column {0}.{1}".format(self.table, self.column)

    def targets(self) -> Set[Target]:
        return {(str(self.table), self.column)}

    def tables(self) -> List[TableName]:
        return [self.table]

    def _new_column(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "new", self.column)

    def _old_column(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "old", self.column)

    def _not_null_check(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "nn", self.column)

    def _trigger(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "sync", self.column)

    def _guard(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "rev", self.column)

    def _old_index_name(self, ctx: MigrationContext, position: int) -> str:
        return ctx.helper_name(self.index, "oldix{0}".format(position), self.column)

    def _down(self, old_type: str) -> str:
        """new -> old, written over the column's own name (which reads the new value)."""
        expression = self.down if self.down is not None else '"{0}"'.format(self.column)
        return "({0})::{1}".format(expression, old_type)

    def _up(self) -> str:
        return "({0})::{1}".format(self._conversion(), self.type)

    def _old_type(self, ctx: MigrationContext) -> str:
        state = ctx.load_state(self.state_key)
        return state["old_type"]

    def _sync_names(self, ctx: MigrationContext, swapped: bool) -> SyncColumns:
        if swapped:
            return SyncColumns(self.column, self._old_column(ctx), self.column, self.type)
        return SyncColumns(self.column, self.column, self._new_column(ctx), self.type)

    def _sync_statements(self, ctx: MigrationContext, info: TableInfo, swapped: bool) -> List[Any]:
        names = self._sync_names(ctx, swapped)
        # Without `using`, the new value depends on the column alone: updates that touch neither column
        # (the most common kind) skip the trigger.
        update_of = [] if self.using is not None else [names.old, names.new]
        return sync_trigger_statements(info, self._trigger(ctx), names, self._up(), self._down(self._old_type(ctx)),
                                       update_of, self._guard_for(ctx, names.new))

    def _guard_expression(self, ctx: MigrationContext, column_sql: str) -> Optional[str]:
        """The revert guard over ``column_sql`` (the new column, or ``NEW.<column>`` in the trigger), if any."""
        guard = reverse_guard(self._old_type(ctx), self.type) if ctx.revert_window != 0 else None
        return None if guard is None else guard.format(column=column_sql)

    def _guard_for(self, ctx: MigrationContext, physical: str) -> Optional[Guard]:
        check = self._guard_expression(ctx, "NEW." + sql.Identifier(physical).as_string(ctx.conn))
        return None if check is None else Guard(self._guard(ctx), check)

    def _conversion(self) -> str:
        if self.using is not None:
            return self.using
        return '"{0}"::{1}'.format(self.column, self.type)

    # -- validate -------------------------------------------------------------------

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        column = info.columns.get(self.column)
        if column is None:
            raise InvalidOption(self.sub("column"), "table {0} has no column {1!r}".format(info.qualified, self.column))
        if self.type is not None:
            self.type = canonical_type(ctx.conn, self.type, self.sub("type"))
            self._refuse_unsupported_type_change(ctx, info)
            check_expression(ctx.conn, info, self._conversion(), self.sub("using" if self.using else "type"),
                             result_type=self.type)
            self._check_conversion_of_existing_rows(ctx, info)
            if self.down is not None:
                self._check_down(ctx, column.type)
        if self.default is not None:
            check_expression(ctx.conn, None, self.default, self.sub("default"), result_type=self.type or column.type)

    def _refuse_unsupported_type_change(self, ctx: MigrationContext, info: TableInfo) -> None:
        field = self.sub("type")
        if info.partitioned:
            raise InvalidOption(field, "{0} is partitioned; change the type on each partition's parent is not "
                                       "supported online yet".format(info.qualified))
        if self.column in info.primary_key:
            raise InvalidOption(field, "{0} is part of the primary key of {1}; changing its type online is not "
                                       "supported (use rewrite_table or raw_sql)".format(self.column, info.qualified))
        backfill_key(info, self.sub("table"))
        # Every reason at once, the ones keel cannot work around first: advice to drop a constraint is
        # useless (and harmful) when a view refuses the change anyway.
        reasons = []
        views = views_using_column(ctx.conn, info.oid, info.columns[self.column].attnum)
        if views:
            reasons.append("views {0} read {1}; a column they use cannot be swapped".format(", ".join(views), self.column))
        identity = ctx.conn.execute("SELECT attidentity FROM pg_attribute WHERE attrelid = %s AND attname = %s",
                                    (info.oid, self.column)).fetchone()[0]
        if identity:
            reasons.append("{0} is an identity column; changing its type online is not supported".format(self.column))
        for name, definition in info.constraints.items():
            if self._mentions_column(definition) and not definition.startswith("PRIMARY KEY"):
                reasons.append("constraint {0} ({1}) uses {2}; drop it first, then add it again after "
                               "the type change".format(name, definition, self.column))
        for index in self._indexes_on_column(info):
            if not index.simple:
                reasons.append("index {0} uses {1} with an expression, predicate or INCLUDE; drop it "
                               "first and create it again after the type change".format(index.name, self.column))
        if reasons:
            raise InvalidOption(field, "; ".join(reasons))

    def _mentions_column(self, definition: str) -> bool:
        return any(token.strip('(),"') == self.column for token in definition.replace("(", " ( ").split())

    def _indexes_on_column(self, info: TableInfo) -> List[Index]:
        return [index for index in info.indexes if self.column in index.columns or (
            not index.simple and self._mentions_column(index.definition.split(" USING ", 1)[1]))]

    def _check_down(self, ctx: MigrationContext, old_type: str) -> None:
        query = sql.SQL("EXPLAIN SELECT {down} FROM (SELECT NULL::{type} AS {column}) AS src").format(
            down=sql.SQL(self._down(old_type)), type=sql.SQL(self.type), column=sql.Identifier(self.column))
        try:
            with ctx.conn.transaction():
                ctx.conn.execute(query)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0]
            raise InvalidOption(self.sub("down"), "expression {0!r} is not valid here (it may read only {1}, "
                                "holding the new value): {2}".format(self.down, self.column, reason)) from None

    def _check_conversion_of_existing_rows(self, ctx: MigrationContext, info: TableInfo) -> None:
        """Refuse a type whose conversion fails on a sample of rows, before anything changes."""
        query = sql.SQL("SELECT count({conversion}) FROM (SELECT * FROM {table} LIMIT 1000) AS src").format(
            conversion=sql.SQL("{0}::{1}").format(expression_sql(self._conversion()), sql.SQL(self.type)),
            table=table_identifier(info))
        try:
            with ctx.conn.transaction():
                ctx.conn.execute(query)
        except Exception as exc:
            raise InvalidOption(self.sub("type"), "existing values of {0} cannot be converted to {1}: {2}".format(
                self.column, self.type, str(exc).strip().splitlines()[0])) from None

    # -- plan -------------------------------------------------------------------------

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        name, info = self.describe(), ctx.maybe_table(self.table)
        rows = info.rows_estimate if info else None
        steps: List[p.PlanStep] = []
        if phase == "start":
            if self.type:
                steps += [
                    p.step("start", name, "ADD COLUMN {0} {1} (new shape beside the old)".format(
                        self._new_column(ctx), self.type), p.ACCESS_EXCLUSIVE),
                    p.step("start", name, "trigger converts {0} on every write".format(self.column),
                           p.SHARE_ROW_EXCLUSIVE),
                    p.step("start", name, "backfill {0} = {1} in batches".format(self._new_column(ctx),
                                                                                 self._conversion()),
                           p.ROW_EXCLUSIVE, held="batches", rows=rows),
                ]
                for index in self._indexes_on_column(info) if info else []:
                    steps.append(p.step("start", name, "CREATE INDEX CONCURRENTLY like {0}".format(index.name),
                                        p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows))
            if self.not_null or (self.type and info and info.columns.get(self.column, None) and
                                 info.columns[self.column].not_null):
                steps.append(p.step("start", name, "CHECK (... IS NOT NULL) NOT VALID, then VALIDATE",
                                    p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows))
            if (self.default is not None or self.drop_default) and not self.type:
                steps.append(p.step("start", name, "SET/DROP DEFAULT (metadata only)", p.ACCESS_EXCLUSIVE))
        elif phase == "complete":
            if self.type:
                steps.append(p.step("complete", name, "swap columns by rename; the old column is kept in sync for a "
                                    "revert until finalize (metadata only)", p.ACCESS_EXCLUSIVE,
                                    client_impact=TYPE_SWAP_WARNING.format(self.column)))
            if self.not_null is True and not self.type:
                steps.append(p.step("complete", name, "SET NOT NULL using the validated check (no scan)",
                                    p.ACCESS_EXCLUSIVE))
            if self.not_null is False:
                steps.append(p.step("complete", name, "DROP NOT NULL (metadata only)", p.ACCESS_EXCLUSIVE))
        elif phase == "revert":
            if self.type:
                steps.append(p.step("revert", name, "swap the columns back, drop the new column (metadata only)",
                                    p.ACCESS_EXCLUSIVE, client_impact=TYPE_SWAP_WARNING.format(self.column)))
            else:
                steps.append(p.step("revert", name, "restore NOT NULL and default as they were", p.ACCESS_EXCLUSIVE))
        elif phase == "finalize":
            if self.type:
                steps.append(p.step("finalize", name, "drop the old column, the sync trigger and the revert guard "
                                    "(metadata only)", p.ACCESS_EXCLUSIVE))
        else:
            steps.append(p.step("rollback", name, "drop the new column, trigger and helper check",
                                p.ACCESS_EXCLUSIVE))
        return steps

    # -- start --------------------------------------------------------------------------

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        state = ctx.load_state(self.state_key)
        if "was_not_null" not in state:
            ctx.save_state(self.state_key, dict(state, was_not_null=info.columns[self.column].not_null))
        if self.type:
            self._start_type_change(ctx, info)
        elif self.not_null:
            add_validated_constraint(ctx, info, self._not_null_check(ctx), sql.SQL("CHECK ({0} IS NOT NULL)").format(
                sql.Identifier(self.column)), [], meaning="NOT NULL on column {0} (rows with NULL)".format(self.column))
        if not self.type and (self.default is not None or self.drop_default):
            self._change_default(ctx, info)

    def _start_type_change(self, ctx: MigrationContext, info: TableInfo) -> None:
        new = self._new_column(ctx)
        state = ctx.load_state(self.state_key)
        if "old_type" not in state:
            ctx.save_state(self.state_key, dict(state, old_type=info.columns[self.column].type))
        if new not in info.columns:
            # No table default on the new column while both shapes are live: an empty new column is
            # how the sync trigger recognises a write from the old application.
            add = sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {new} {type}").format(
                table=table_identifier(info), new=sql.Identifier(new), type=sql.SQL(self.type))
            ctx.guarded("add column {0}".format(new), [info.qualified], lambda conn: conn.execute(add))
            info = ctx.table(self.table)
        statements = self._sync_statements(ctx, info, swapped=False)
        ctx.guarded("install trigger {0} on {1}".format(self._trigger(ctx), info.qualified), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
        run_backfill(ctx, "{0}:{1}".format(self.index, self.column), info,
                     sql.SQL("{new} = {up}").format(new=sql.Identifier(new), up=sql.SQL(self._up())),
                     self.sub("table"))
        for position, index in enumerate(self._indexes_on_column(info)):
            self._build_index_for_new_column(ctx, info, index, position)
        if self.not_null or info.columns[self.column].not_null:
            add_validated_constraint(ctx, info, self._not_null_check(ctx), sql.SQL("CHECK ({0} IS NOT NULL)").format(
                sql.Identifier(new)), [], meaning="NOT NULL on column {0} (rows whose conversion is NULL)".format(
                    self.column))
        guard = self._guard_expression(ctx, sql.Identifier(new).as_string(ctx.conn))
        if guard is not None:
            meaning = "values of {0} that {1} cannot hold (the migration must stay revertible)".format(
                self.column, self._old_type(ctx))
            add_validated_constraint(ctx, info, self._guard(ctx), sql.SQL("CHECK ({0})").format(sql.SQL(guard)), [],
                                     meaning=meaning)

    def _shadow_index_name(self, ctx: MigrationContext, position: int) -> str:
        return ctx.helper_name(self.index, "ix{0}".format(position), self.column)

    def _build_index_for_new_column(self, ctx: MigrationContext, info: TableInfo, index: Index, position: int) -> None:
        name = self._shadow_index_name(ctx, position)
        columns = [self._new_column(ctx) if column == self.column else column for column in index.columns]
        create = sql.SQL("CREATE {unique}INDEX CONCURRENTLY {name} ON {table} USING {method} ({columns})").format(
            unique=sql.SQL("UNIQUE " if index.unique else ""), name=sql.Identifier(name),
            table=table_identifier(info), method=sql.SQL(index.method),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        build_index_concurrently(ctx, info.schema, name, create, [info.qualified])
        ctx.save_state(self.state_key + ":ix{0}".format(position), {"replaces": index.name})

    def _change_default(self, ctx: MigrationContext, info: TableInfo) -> None:
        state = ctx.load_state(self.state_key)
        if "old_default" not in state:
            ctx.save_state(self.state_key, dict(state, old_default=info.columns[self.column].default))
        if self.drop_default:
            statement = sql.SQL("ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT")
        else:
            statement = sql.SQL("ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {default}")
        statement = statement.format(table=table_identifier(info), column=sql.Identifier(self.column),
                                     default=expression_sql(self.default or "NULL"))
        ctx.guarded("change default of {0}".format(self.column), [info.qualified], lambda conn: conn.execute(statement))

    # -- complete -----------------------------------------------------------------------

    def complete(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        if self.type:
            if self._new_column(ctx) in info.columns:
                self._swap_columns(ctx, info)
            return
        statements: List[Any] = []
        column = sql.Identifier(self.column)
        if self.not_null and not info.columns[self.column].not_null:
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET NOT NULL").format(
                table_identifier(info), column))
        if self.not_null is False and info.columns[self.column].not_null:
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} DROP NOT NULL").format(
                table_identifier(info), column))
        statements.append(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
            table_identifier(info), sql.Identifier(self._not_null_check(ctx))))
        ctx.guarded("complete {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    def _replaced_indexes(self, ctx: MigrationContext) -> List[tuple]:
        """(position, original index name) of the indexes start rebuilt on the new column."""
        found = []
        for position in range(64):
            state = ctx.load_state(self.state_key + ":ix{0}".format(position))
            if not state:
                break
            found.append((position, state["replaces"]))
        return found

    def _index_swap_statements(self, ctx: MigrationContext, info: TableInfo, swapped: bool) -> List[Any]:
        """The original index names go with the column under the column's name: to the rebuilt indexes when
        ``swapped``, back to the originals otherwise; the others step aside under helper names."""
        statements = []
        for position, original in self._replaced_indexes(ctx):
            aside, taking = self._old_index_name(ctx, position), self._shadow_index_name(ctx, position)
            if not swapped:
                aside, taking = taking, aside
            statements.append(sql.SQL("ALTER INDEX {0} RENAME TO {1}").format(
                sql.Identifier(info.schema, original), sql.Identifier(aside)))
            statements.append(sql.SQL("ALTER INDEX {0} RENAME TO {1}").format(
                sql.Identifier(info.schema, taking), sql.Identifier(original)))
        return statements

    def _swap_columns(self, ctx: MigrationContext, info: TableInfo) -> None:
        """Old column out of the way (kept, in sync, for a revert), new column under the old name."""
        table, new, old = table_identifier(info), self._new_column(ctx), self._old_column(ctx)
        column = info.columns[self.column]
        statements: List[Any] = [
            sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(table, sql.Identifier(self.column),
                                                                       sql.Identifier(old)),
            sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(table, sql.Identifier(new),
                                                                       sql.Identifier(self.column)),
        ]
        statements += self._move_sequence(ctx, info, self.column, to_column=self.column)
        if self.not_null is not False and (self.not_null or column.not_null):
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET NOT NULL").format(
                table, sql.Identifier(self.column)))
        statements.append(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
            table, sql.Identifier(self._not_null_check(ctx))))
        statements += self._index_swap_statements(ctx, info, swapped=True)

        def work(conn: Any) -> None:
            for statement in statements:
                conn.execute(statement)
            swapped = ctx.table(self.table)
            for statement in self._sync_statements(ctx, swapped, swapped=True):
                conn.execute(statement)

        ctx.guarded("swap {0} to type {1}".format(self.column, self.type), [info.qualified], work)

    def _move_sequence(self, ctx: MigrationContext, info: TableInfo, column: str, to_column: str) -> List[Any]:
        """A serial's sequence belongs to its column and would be dropped with it."""
        sequence = ctx.conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (info.qualified, column)).fetchone()[0]
        if not sequence:
            return []
        return [sql.SQL("ALTER SEQUENCE {0} OWNED BY {1}.{2}").format(
            sql.SQL(sequence), table_identifier(info), sql.Identifier(to_column))]

    # -- revert and finalize --------------------------------------------------------------

    def shape_views(self, ctx: MigrationContext, shapes: List[ViewShape]) -> List[ViewShape]:
        if not self.type:
            return shapes
        info = ctx.table(self.table)
        default = self.default if self.default is not None else (
            None if self.drop_default else info.columns[self.column].default)

        def change(columns: List[ViewColumn]) -> List[ViewColumn]:
            return [ViewColumn(c.name, self._new_column(ctx), default) if c.name == self.column else c
                    for c in columns]

        return self._map_columns(ctx, shapes, self.table, change)

    def check_revertible(self, ctx: MigrationContext) -> None:
        if not self.type:
            return
        info = ctx.table(self.table)
        if self._new_column(ctx) not in info.columns:
            return
        if reverse_guard(self._old_type(ctx), self.type) is not None:
            return  # start validated the guard: every value can go back
        query = sql.SQL("SELECT count({down}) FROM (SELECT {new} AS {column} FROM {table}) AS src").format(
            down=sql.SQL(self._down(self._old_type(ctx))), new=sql.Identifier(self._new_column(ctx)),
            column=sql.Identifier(self.column), table=table_identifier(info))
        try:
            with ctx.conn.transaction():
                ctx.conn.execute(query)
        except Exception as exc:
            raise InvalidOption(self.sub("down" if self.down else "type"), "values of {0} cannot be converted back "
                                "to {1}, so the migration could not be reverted without losing them: {2}; fix them, "
                                "give a down expression, or complete with revert_window: 0".format(
                                    self.column, self._old_type(ctx), str(exc).strip().splitlines()[0])) from None

    def revert(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        if self.type:
            if self._old_column(ctx) in info.columns:
                self._swap_back(ctx, info)
            return
        self._revert_constraints_and_default(ctx, info)

    def _swap_back(self, ctx: MigrationContext, info: TableInfo) -> None:
        """The mirror of the swap; the old column has every write since completion, the new one goes."""
        table, new, old = table_identifier(info), self._new_column(ctx), self._old_column(ctx)
        statements: List[Any] = drop_fill_trigger_statements(info, self._trigger(ctx))
        statements += self._move_sequence(ctx, info, self.column, to_column=old)
        statements.append(sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(
            table, sql.Identifier(self.column), sql.Identifier(new)))
        statements.append(sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(
            table, sql.Identifier(old), sql.Identifier(self.column)))
        statements += self._index_swap_statements(ctx, info, swapped=False)
        statements.append(sql.SQL("ALTER TABLE {0} DROP COLUMN {1}").format(table, sql.Identifier(new)))
        ctx.guarded("revert {0} to type {1}".format(self.column, self._old_type(ctx)), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    def _revert_constraints_and_default(self, ctx: MigrationContext, info: TableInfo) -> None:
        statements: List[Any] = []
        column = sql.Identifier(self.column)
        was_not_null = ctx.load_state(self.state_key).get("was_not_null")
        if self.not_null and not was_not_null and info.columns[self.column].not_null:
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} DROP NOT NULL").format(
                table_identifier(info), column))
        if self.not_null is False and was_not_null and not info.columns[self.column].not_null:
            # Rows written since completion may hold NULL: prove they do not before the lock.
            add_validated_constraint(ctx, info, self._not_null_check(ctx), sql.SQL("CHECK ({0} IS NOT NULL)").format(
                column), [], meaning="NOT NULL on column {0} (rows written with NULL since completion)".format(
                    self.column))
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET NOT NULL").format(
                table_identifier(info), column))
            statements.append(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
                table_identifier(info), sql.Identifier(self._not_null_check(ctx))))
        statements += self._restore_default_statements(ctx, info)
        if statements:
            ctx.guarded("revert {0}".format(self.describe()), [info.qualified],
                        lambda conn: [conn.execute(s) for s in statements])

    def _restore_default_statements(self, ctx: MigrationContext, info: TableInfo) -> List[Any]:
        state = ctx.load_state(self.state_key)
        if "old_default" not in state:
            return []
        old = state["old_default"]
        return [sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} {2}").format(
            table_identifier(info), sql.Identifier(self.column),
            sql.SQL("DROP DEFAULT") if old is None else sql.SQL("SET DEFAULT {0}").format(expression_sql(old)))]

    def finalize(self, ctx: MigrationContext) -> None:
        if not self.type:
            return
        info = ctx.table(self.table)
        table = table_identifier(info)
        statements: List[Any] = drop_fill_trigger_statements(info, self._trigger(ctx))
        if self._old_column(ctx) in info.columns:
            old_default = info.columns[self._old_column(ctx)].default
            default = self.default if self.default is not None else (None if self.drop_default else old_default)
            if default is not None:
                statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET DEFAULT {2}").format(
                    table, sql.Identifier(self.column), expression_sql(default)))
            statements.append(sql.SQL("ALTER TABLE {0} DROP COLUMN {1}").format(
                table, sql.Identifier(self._old_column(ctx))))
        statements.append(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
            table, sql.Identifier(self._guard(ctx))))
        ctx.guarded("finalize {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    # -- rollback -------------------------------------------------------------------------

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statements: List[Any] = drop_fill_trigger_statements(info, self._trigger(ctx))
        statements.append(sql.SQL("ALTER TABLE {0} DROP COLUMN IF EXISTS {1}").format(
            table_identifier(info), sql.Identifier(self._new_column(ctx))))
        statements += self._restore_default_statements(ctx, info)
        ctx.guarded("roll back {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
        drop_constraint(ctx, info, self._not_null_check(ctx))
