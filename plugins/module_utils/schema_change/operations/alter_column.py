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
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    Index,
    TableInfo,
    canonical_type,
    table_identifier,
    views_using_column,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.triggers import (
    drop_fill_trigger_statements,
    install_fill_trigger,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


TYPE_SWAP_WARNING = ("clients see {0} change type: those using SELECT * also see it move to the end, and sessions "
                     "holding server-side prepared statements on the table (psycopg 3 after 5 executions, pgJDBC, "
                     "asyncpg) fail with 'cached plan must not change result type' until they re-prepare")


class AlterColumn(Operation):
    kind = "alter_column"
    required = ("table", "column")
    optional = ("type", "using", "not_null", "default", "drop_default")

    def parse(self) -> None:
        self.table = self.table_option()
        self.column = self.identifier_option("column")
        self.type = self.text_option("type")
        self.using = self.text_option("using")
        value = self.spec.get("not_null")
        if value is not None and not isinstance(value, bool):
            raise InvalidOption(self.sub("not_null"), "expected true or false, got {0!r}".format(value))
        self.not_null: Optional[bool] = value
        self.default = self.text_option("default")
        self.drop_default = self.bool_option("drop_default")
        if self.using is not None and self.type is None:
            raise InvalidOption(self.sub("using"), "only makes sense with type")
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
                steps.append(p.step("complete", name, "swap columns by rename, drop the old column (metadata only)",
                                    p.ACCESS_EXCLUSIVE, warning=TYPE_SWAP_WARNING.format(self.column)))
            if self.not_null is True and not self.type:
                steps.append(p.step("complete", name, "SET NOT NULL using the validated check (no scan)",
                                    p.ACCESS_EXCLUSIVE))
            if self.not_null is False:
                steps.append(p.step("complete", name, "DROP NOT NULL (metadata only)", p.ACCESS_EXCLUSIVE))
        else:
            steps.append(p.step("rollback", name, "drop the new column, trigger and helper check",
                                p.ACCESS_EXCLUSIVE))
        return steps

    # -- start --------------------------------------------------------------------------

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        if self.type:
            self._start_type_change(ctx, info)
        elif self.not_null:
            add_validated_constraint(ctx, info, self._not_null_check(ctx), sql.SQL("CHECK ({0} IS NOT NULL)").format(
                sql.Identifier(self.column)), [], meaning="NOT NULL on column {0} (rows with NULL)".format(self.column))
        if not self.type and (self.default is not None or self.drop_default):
            self._change_default(ctx, info)

    def _start_type_change(self, ctx: MigrationContext, info: TableInfo) -> None:
        new = self._new_column(ctx)
        if new not in info.columns:
            add = sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {new} {type}").format(
                table=table_identifier(info), new=sql.Identifier(new), type=sql.SQL(self.type))
            ctx.guarded("add column {0}".format(new), [info.qualified], lambda conn: conn.execute(add))
            info = ctx.table(self.table)
        conversion = sql.SQL("{0}::{1}").format(expression_sql(self._conversion()), sql.SQL(self.type))
        # Without `using`, the new value depends on the column alone: updates that do not set it
        # (including the backfill's) need no conversion.
        install_fill_trigger(ctx, info, self._trigger(ctx), new, conversion.as_string(ctx.conn), only_when_null=False,
                             update_of=None if self.using is not None else [self.column])
        run_backfill(ctx, "{0}:{1}".format(self.index, self.column), info,
                     sql.SQL("{new} = {conversion}").format(new=sql.Identifier(new), conversion=conversion),
                     self.sub("table"))
        for position, index in enumerate(self._indexes_on_column(info)):
            self._build_index_for_new_column(ctx, info, index, position)
        if self.not_null or info.columns[self.column].not_null:
            add_validated_constraint(ctx, info, self._not_null_check(ctx), sql.SQL("CHECK ({0} IS NOT NULL)").format(
                sql.Identifier(new)), [], meaning="NOT NULL on column {0} (rows whose conversion is NULL)".format(
                    self.column))

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
            ctx.save_state(self.state_key, {"old_default": info.columns[self.column].default})
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

    def _swap_columns(self, ctx: MigrationContext, info: TableInfo) -> None:
        table, new, old = table_identifier(info), self._new_column(ctx), self._old_column(ctx)
        column = info.columns[self.column]
        statements: List[Any] = drop_fill_trigger_statements(info, self._trigger(ctx))
        sequence = ctx.conn.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                    (info.qualified, self.column)).fetchone()[0]
        statements.append(sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(
            table, sql.Identifier(self.column), sql.Identifier(old)))
        statements.append(sql.SQL("ALTER TABLE {0} RENAME COLUMN {1} TO {2}").format(
            table, sql.Identifier(new), sql.Identifier(self.column)))
        default = self.default if self.default is not None else (None if self.drop_default else column.default)
        if default is not None:
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET DEFAULT {2}").format(
                table, sql.Identifier(self.column), expression_sql(default)))
        if sequence:
            # A serial's sequence belongs to the old column and would be dropped with it.
            statements.append(sql.SQL("ALTER SEQUENCE {0} OWNED BY {1}.{2}").format(
                sql.SQL(sequence), table, sql.Identifier(self.column)))
        if self.not_null is not False and (self.not_null or column.not_null):
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET NOT NULL").format(
                table, sql.Identifier(self.column)))
        statements.append(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {1}").format(
            table, sql.Identifier(self._not_null_check(ctx))))
        statements.append(sql.SQL("ALTER TABLE {0} DROP COLUMN {1}").format(table, sql.Identifier(old)))
        for position, index in enumerate(self._indexes_on_column(info)):
            statements.append(sql.SQL("ALTER INDEX {0} RENAME TO {1}").format(
                sql.Identifier(info.schema, self._shadow_index_name(ctx, position)), sql.Identifier(index.name)))
        ctx.guarded("swap {0} to type {1}".format(self.column, self.type), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    # -- rollback -------------------------------------------------------------------------

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statements: List[Any] = drop_fill_trigger_statements(info, self._trigger(ctx))
        statements.append(sql.SQL("ALTER TABLE {0} DROP COLUMN IF EXISTS {1}").format(
            table_identifier(info), sql.Identifier(self._new_column(ctx))))
        state = ctx.load_state(self.state_key)
        if "old_default" in state:
            old = state["old_default"]
            statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} {2}").format(
                table_identifier(info), sql.Identifier(self.column),
                sql.SQL("DROP DEFAULT") if old is None else sql.SQL("SET DEFAULT {0}").format(expression_sql(old))))
        ctx.guarded("roll back {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
        drop_constraint(ctx, info, self._not_null_check(ctx))
