# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Two-way sync between the old and the new physical column of a type change.

While a type change is in flight, two kinds of writers share the table: the
old application writes the old column (directly, or through the old version's
view) and the new application writes the new one (through the new version's
view). A BEFORE trigger keeps both filled, row by row:

* a write that leaves the new column empty, or does not change it, came from
  an old writer: new = up(old row);
* a write that sets the new column to something other than up(old row) came
  from a new writer: old = down(new row).

Comparing with ``up`` rather than guessing from ``search_path`` means a
client's path never decides which value wins, and the backfill (which sets
new = up(old)) never rewrites old values. The same trigger serves before and
after the column swap at completion: only the physical names change, and the
expressions still see the column under its own name through a projection.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import DOLLAR_TAG
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo

try:
    from psycopg import sql
except ImportError:
    sql = None


class SyncColumns:
    """Physical names of the two columns, and what the expressions call the column."""

    def __init__(self, column: str, old_physical: str, new_physical: str, new_type: str) -> None:
        self.column = column
        self.old = old_physical
        self.new = new_physical
        self.new_type = new_type


def _row_as(info: TableInfo, names: SyncColumns, physical: str) -> Any:
    """The row as a subquery where ``names.column`` reads ``physical``, hiding keel's helper columns."""
    columns = [c for c in info.columns if not c.startswith("_keel_") and c not in (names.column, names.old, names.new)]
    items = [sql.SQL("NEW.{0} AS {0}").format(sql.Identifier(c)) for c in columns]
    items.append(sql.SQL("NEW.{0} AS {1}").format(sql.Identifier(physical), sql.Identifier(names.column)))
    return sql.SQL("(SELECT {0}) AS src").format(sql.SQL(", ").join(items))


class Guard:
    """A revert guard: CHECK ``expression`` (over the new physical column) named ``constraint``."""

    def __init__(self, constraint: str, expression: str) -> None:
        self.constraint = constraint
        self.expression = expression


def _guard_check(info: TableInfo, guard: Optional[Guard]) -> Any:
    """BEFORE triggers run before CHECK constraints: without this, a value the old type cannot hold would fail in
    the down conversion with a bare 'out of range' instead of naming the guard."""
    if guard is None:
        return sql.SQL("")
    return sql.SQL(
        "IF NOT ({check}) THEN RAISE EXCEPTION USING ERRCODE = 'check_violation', CONSTRAINT = {name}, "
        "TABLE = {table}, MESSAGE = {message}; END IF; ").format(
        check=sql.SQL(guard.expression), name=sql.Literal(guard.constraint), table=sql.Literal(info.name),
        message=sql.Literal('new row for relation "{0}" violates check constraint "{1}": the value cannot be '
                            'reverted to the old type while the migration is revertible'.format(
                                info.name, guard.constraint)))


def sync_function_statement(info: TableInfo, function: str, names: SyncColumns, up: str, down: str,
                            guard: Optional[Guard] = None) -> Any:
    """``CREATE OR REPLACE FUNCTION`` of the trigger body for the current physical names."""
    old_row, new_row = _row_as(info, names, names.old), _row_as(info, names, names.new)
    fill_new = sql.SQL("SELECT ({up}) INTO NEW.{new} FROM {old_row};").format(
        up=sql.SQL(up), new=sql.Identifier(names.new), old_row=old_row)
    from_new = sql.SQL(
        "SELECT ({up}) INTO expected FROM {old_row}; "
        "IF NEW.{new} IS DISTINCT FROM expected THEN {guard}SELECT ({down}) INTO NEW.{old} FROM {new_row}; "
        "END IF;").format(
        up=sql.SQL(up), down=sql.SQL(down), new=sql.Identifier(names.new), old=sql.Identifier(names.old),
        old_row=old_row, new_row=new_row, guard=_guard_check(info, guard))
    body = sql.SQL(
        "DECLARE expected {type}; BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        "  IF NEW.{new} IS NULL THEN {fill_new} ELSE {from_new} END IF; "
        "ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} THEN {from_new} "
        "ELSE {fill_new} END IF; "
        "RETURN NEW; END").format(type=sql.SQL(names.new_type), new=sql.Identifier(names.new), fill_new=fill_new,
                                  from_new=from_new)
    return sql.SQL("CREATE OR REPLACE FUNCTION keel.{name}() RETURNS trigger LANGUAGE plpgsql AS {tag}{body}{tag}").format(
        name=sql.Identifier(function), tag=sql.SQL(DOLLAR_TAG), body=body)


def sync_trigger_statements(info: TableInfo, name: str, names: SyncColumns, up: str, down: str,
                            update_of: List[str], guard: Optional[Guard] = None) -> List[Any]:
    """Function, then the trigger; ``update_of`` empty means every UPDATE fires it (``up`` reads other columns)."""
    events = sql.SQL("INSERT OR UPDATE")
    if update_of:
        events = sql.SQL("INSERT OR UPDATE OF {0}").format(sql.SQL(", ").join(sql.Identifier(c) for c in update_of))
    table = sql.Identifier(info.schema, info.name)
    return [
        sync_function_statement(info, name, names, up, down, guard),
        sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(name), table),
        sql.SQL("CREATE TRIGGER {name} BEFORE {events} ON {table} FOR EACH ROW EXECUTE FUNCTION keel.{name}()").format(
            name=sql.Identifier(name), events=events, table=table),
    ]
