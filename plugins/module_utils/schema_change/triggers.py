# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Row triggers that keep a migration's new shape filled while the old application writes.

A BEFORE trigger computes the new column from the row being written, with
the same expression the backfill uses, so rows written during and after the
backfill agree. Trigger functions live in schema ``keel`` and are named per
migration, so a resumed run replaces them in place.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import DOLLAR_TAG
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo

try:
    from psycopg import sql
except ImportError:
    sql = None


def install_fill_trigger(ctx: MigrationContext, info: TableInfo, name: str, column: str, expression: str,
                         only_when_null: bool, update_of: Optional[List[str]] = None) -> None:
    """Before each INSERT/UPDATE set ``column`` from ``expression`` over the row's own columns.

    ``update_of``: the only columns the expression reads. Updates that set none of them (the
    backfill's own, among others) then skip the trigger altogether.
    """
    assign = sql.SQL("SELECT ({expr}) INTO NEW.{column} FROM (SELECT NEW.*) AS src;").format(
        expr=sql.SQL(expression), column=sql.Identifier(column))
    if only_when_null:
        # Fill rows the old application inserts without the column, and recompute on its updates,
        # which leave the column as it was (it does not know the column): a value derived from
        # other columns must follow them.
        assign = sql.SQL("IF (TG_OP = 'INSERT' AND NEW.{column} IS NULL) OR (TG_OP = 'UPDATE' AND NEW.{column}"
                         " IS NOT DISTINCT FROM OLD.{column}) THEN {assign} END IF;").format(
            column=sql.Identifier(column), assign=assign)
    body = sql.SQL("BEGIN {assign} RETURN NEW; END").format(assign=assign)
    function = sql.SQL(
        "CREATE OR REPLACE FUNCTION keel.{name}() RETURNS trigger LANGUAGE plpgsql AS {tag}{body}{tag}").format(
        name=sql.Identifier(name), tag=sql.SQL(DOLLAR_TAG), body=body)
    # DROP + CREATE rather than CREATE OR REPLACE TRIGGER, which needs PostgreSQL 14.
    drop = sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
        name=sql.Identifier(name), table=sql.Identifier(info.schema, info.name))
    events = sql.SQL("INSERT OR UPDATE")
    if update_of:
        events = sql.SQL("INSERT OR UPDATE OF {0}").format(sql.SQL(", ").join(sql.Identifier(c) for c in update_of))
    trigger = sql.SQL(
        "CREATE TRIGGER {name} BEFORE {events} ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION keel.{name}()").format(
        name=sql.Identifier(name), events=events, table=sql.Identifier(info.schema, info.name))

    def work(conn: Any) -> None:
        conn.execute(function)
        conn.execute(drop)
        conn.execute(trigger)

    ctx.guarded("install trigger {0} on {1}".format(name, info.qualified), [info.qualified], work)


def drop_fill_trigger_statements(info: TableInfo, name: str) -> list:
    """Statements (for a guarded transaction) that remove the trigger and its function."""
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
            name=sql.Identifier(name), table=sql.Identifier(info.schema, info.name)),
        sql.SQL("DROP FUNCTION IF EXISTS keel.{name}()").format(name=sql.Identifier(name)),
    ]
