# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""add_column: a new column, optionally with default, NOT NULL, check and foreign key.

NOT NULL is reached without a table scan under ACCESS EXCLUSIVE: existing rows
are filled in batches (from ``up``, else the default), rows the old
application writes are filled by a trigger, a ``CHECK (col IS NOT NULL)`` is
added NOT VALID then validated, and at completion ``SET NOT NULL`` uses that
validated check instead of scanning.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import backfill_key, run_backfill
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.constraints import (
    add_validated_constraint,
    drop_constraint,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import (
    check_expression,
    expression_sql,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import (
    TableName,
    check_identifier,
    parse_table_name,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.add_foreign_key import (
    PARTITIONED_FOREIGN_KEY,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    canonical_type,
    table_identifier,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.triggers import (
    drop_fill_trigger_statements,
    install_fill_trigger,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


class AddColumn(Operation):
    kind = "add_column"
    reverts_by_rollback = True
    required = ("table", "column", "type")
    optional = ("default", "not_null", "check", "references", "up")

    def parse(self) -> None:
        self.table = self.table_option()
        self.column = self.identifier_option("column")
        self.type = self.text_option("type")
        self.default = self.text_option("default")
        self.not_null = self.bool_option("not_null")
        self.check = self.text_option("check")
        self.up = self.text_option("up")
        self.references = self._parse_references(self.spec.get("references"))

    def _parse_references(self, value: Any) -> Optional[Dict[str, Any]]:
        if value is None:
            return None
        field = self.sub("references")
        if not isinstance(value, dict) or set(value) - {"table", "column", "on_delete"} or "table" not in value:
            raise InvalidOption(field, "expected {table: ..., column: ..., on_delete: ...}")
        on_delete = str(value.get("on_delete", "no action")).lower()
        if on_delete not in ("no action", "restrict", "cascade", "set null", "set default"):
            raise InvalidOption(field + ".on_delete", "must be one of no action, restrict, cascade, set null, set default")
        return {"table": parse_table_name(value["table"], field + ".table"),
                "column": check_identifier(value.get("column", "id"), field + ".column"), "on_delete": on_delete}

    def describe(self) -> str:
        return "add_column {0}.{1}".format(self.table, self.column)

    def targets(self) -> Set[Target]:
        return {(str(self.table), self.column)}

    def tables(self) -> List[TableName]:
        return [self.table] + ([self.references["table"]] if self.references else [])

    # -- helper object names (deterministic, so resumed runs find them) ------

    def _not_null_check(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "nn", self.column)

    def _check_name(self) -> str:
        return "{0}_{1}_check".format(self.table.name, self.column)[:63]

    def _fk_name(self) -> str:
        return "{0}_{1}_fkey".format(self.table.name, self.column)[:63]

    def _trigger(self, ctx: MigrationContext) -> str:
        return ctx.helper_name(self.index, "fill", self.column)

    def _fill_expression(self) -> Optional[str]:
        """What fills the column for rows that do not get a value by themselves.

        A non-volatile default needs nothing: PostgreSQL returns it for existing
        rows without writing them. ``up`` (or a volatile default) is applied to
        existing rows in batches and to rows the old application writes.
        """
        return self.up

    # -- steps -----------------------------------------------------------------

    def validate(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table, self.sub("table"))
        if self.column in info.columns or self.column in ctx.planned(info):
            raise InvalidOption(self.sub("column"), "table {0} already has a column {1!r}".format(
                info.qualified, self.column))
        self.type = canonical_type(ctx.conn, self.type, self.sub("type"))
        if self.default is not None:
            check_expression(ctx.conn, None, self.default, self.sub("default"), result_type=self.type)
        if self.up is not None:
            check_expression(ctx.conn, info, self.up, self.sub("up"), self.column, self.type, result_type=self.type)
        if self.check is not None:
            check_expression(ctx.conn, info, self.check, self.sub("check"), self.column, self.type,
                             result_type="boolean")
        if self.not_null and self.default is None and self.up is None:
            raise InvalidOption(self.sub("not_null"), "existing rows and rows the old application inserts need a "
                                                      "value: give a default or an up expression")
        if self.up is not None or (self.default is not None and not self._default_is_fast(ctx)):
            backfill_key(info, self.sub("table"))
        if self.references:
            if info.partitioned:
                raise InvalidOption(self.sub("references"), PARTITIONED_FOREIGN_KEY.format(info.qualified))
            target = ctx.table(self.references["table"], self.sub("references.table"))
            if self.references["column"] not in target.columns:
                raise InvalidOption(self.sub("references.column"), "table {0} has no column {1!r}".format(
                    target.qualified, self.references["column"]))
        ctx.plan_column(info, self.column, self.type)

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        name, info = self.describe(), ctx.maybe_table(self.table)
        rows = info.rows_estimate if info else None
        if phase == "start":
            steps = [p.step("start", name, "ADD COLUMN {0} {1}{2}".format(
                self.column, self.type, " DEFAULT {0}".format(self.default) if self.default else ""),
                p.ACCESS_EXCLUSIVE, warning=self._volatile_warning(ctx),
                client_impact="sessions with a prepared SELECT * on {0} directly fail once with 0A000 'cached plan "
                              "must not change result type' (in autocommit psycopg 3 keeps failing until DEALLOCATE "
                              "ALL or a reconnect); explicit column lists and version schemas are unaffected".format(
                                  self.table))]
            if self.up is not None or self._volatile_warning(ctx):
                steps.append(p.step("start", name, "trigger fills {0} for rows the application writes".format(
                    self.column), p.SHARE_ROW_EXCLUSIVE))
                steps.append(p.step("start", name, "backfill existing rows in batches", p.ROW_EXCLUSIVE,
                                    held="batches", rows=rows))
            if self.not_null:
                steps.append(p.step("start", name, "CHECK ({0} IS NOT NULL) NOT VALID, then VALIDATE".format(
                    self.column), p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows))
            if self.check:
                steps.append(p.step("start", name, "CHECK ({0}) NOT VALID, then VALIDATE".format(self.check),
                                    p.SHARE_UPDATE_EXCLUSIVE, held="scan", scans=True, rows=rows))
            if self.references:
                steps.append(p.step("start", name, "FOREIGN KEY NOT VALID, then VALIDATE",
                                    p.SHARE_ROW_EXCLUSIVE, scans=True, rows=rows))
            return steps
        if phase == "complete":
            if not self.not_null:
                return []
            return [p.step("complete", name, "SET NOT NULL using the validated check (no scan); drop helpers",
                           p.ACCESS_EXCLUSIVE)]
        if phase in ("rollback", "revert"):
            return [p.step(phase, name, "DROP COLUMN {0} (metadata only)".format(self.column), p.ACCESS_EXCLUSIVE)]
        return []

    def _volatile_warning(self, ctx: MigrationContext) -> Optional[str]:
        if self.default is not None and not self._default_is_fast(ctx):
            return "the default is volatile: it is set after the column is added and existing rows are backfilled"
        return None

    def _default_is_fast(self, ctx: MigrationContext) -> bool:
        """Whether PostgreSQL can add the default without rewriting (a non-volatile default).

        Asked of the server itself: add the column to a one-row temporary table
        in a transaction that is rolled back, and see if it stored a "missing" value.
        """
        if self.default is None:
            return True
        probe = sql.SQL("ALTER TABLE pg_temp._keel_probe ADD COLUMN probe {type} DEFAULT {default}").format(
            type=sql.SQL(self.type), default=expression_sql(self.default))
        try:
            with ctx.conn.transaction(force_rollback=True):
                ctx.conn.execute("CREATE TEMP TABLE _keel_probe (x int) ON COMMIT DROP")
                ctx.conn.execute("INSERT INTO pg_temp._keel_probe VALUES (1)")
                ctx.conn.execute(probe)
                return ctx.conn.execute(
                    "SELECT atthasmissing FROM pg_attribute WHERE attrelid = 'pg_temp._keel_probe'::regclass"
                    " AND attname = 'probe'").fetchone()[0]
        except Exception:
            return False

    def start(self, ctx: MigrationContext) -> None:
        info = ctx.table(self.table)
        fast_default = self._default_is_fast(ctx)
        if self.column not in info.columns:
            statement = sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {type}").format(
                table=table_identifier(info), column=sql.Identifier(self.column), type=sql.SQL(self.type))
            if self.default is not None and fast_default:
                statement = sql.SQL("{0} DEFAULT {1}").format(statement, expression_sql(self.default))
            ctx.guarded("add column {0} to {1}".format(self.column, info.qualified), [info.qualified],
                        lambda conn: conn.execute(statement))
        if self.default is not None and not fast_default:
            set_default = sql.SQL("ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {default}").format(
                table=table_identifier(info), column=sql.Identifier(self.column),
                default=expression_sql(self.default))
            ctx.guarded("set default of {0}".format(self.column), [info.qualified],
                        lambda conn: conn.execute(set_default))
        info = ctx.table(self.table)
        fill = self._fill_expression() or (self.default if not fast_default else None)
        if fill is not None:
            install_fill_trigger(ctx, info, self._trigger(ctx), self.column, fill, only_when_null=True)
            assignment = sql.SQL("{column} = coalesce({column}, {fill})").format(
                column=sql.Identifier(self.column), fill=expression_sql(fill))
            run_backfill(ctx, "{0}:{1}".format(self.index, self.column), info, assignment, self.sub("table"))
        if self.not_null:
            add_validated_constraint(ctx, info, self._not_null_check(ctx), sql.SQL("CHECK ({0} IS NOT NULL)").format(
                sql.Identifier(self.column)), [], meaning="NOT NULL on column {0}".format(self.column))
        if self.check:
            add_validated_constraint(ctx, info, self._check_name(), sql.SQL("CHECK {0}").format(
                expression_sql(self.check)), [], meaning="CHECK ({0})".format(self.check))
        if self.references:
            target = ctx.table(self.references["table"])
            definition = sql.SQL("FOREIGN KEY ({column}) REFERENCES {target} ({target_column}) ON DELETE {action}").format(
                column=sql.Identifier(self.column), target=table_identifier(target),
                target_column=sql.Identifier(self.references["column"]), action=sql.SQL(self.references["on_delete"].upper()))
            add_validated_constraint(ctx, info, self._fk_name(), definition, [target.qualified])

    def complete(self, ctx: MigrationContext) -> None:
        # The fill trigger stays until finalize: clients of the old version still insert without the column.
        info = ctx.table(self.table)
        statements: List[Any] = []
        if self.not_null and not info.columns[self.column].not_null:
            statements.append(sql.SQL("ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL").format(
                table=table_identifier(info), column=sql.Identifier(self.column)))
        statements.append(sql.SQL("ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}").format(
            table=table_identifier(info), check=sql.Identifier(self._not_null_check(ctx))))
        ctx.guarded("complete {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])

    def rollback(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statements = drop_fill_trigger_statements(info, self._trigger(ctx))
        statements.append(sql.SQL("ALTER TABLE {table} DROP COLUMN IF EXISTS {column}").format(
            table=table_identifier(info), column=sql.Identifier(self.column)))
        ctx.guarded("roll back {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
        drop_constraint(ctx, info, self._not_null_check(ctx))

    def finalize(self, ctx: MigrationContext) -> None:
        info = ctx.maybe_table(self.table)
        if info is None:
            return
        statements = drop_fill_trigger_statements(info, self._trigger(ctx))
        ctx.guarded("finalize {0}".format(self.describe()), [info.qualified],
                    lambda conn: [conn.execute(s) for s in statements])
