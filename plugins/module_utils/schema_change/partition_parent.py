# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The empty partitioned table that takes a live table's place: same columns, defaults, keys and indexes.

Not ``LIKE ... INCLUDING IDENTITY``: that makes a new sequence starting at 1.
Identity columns get their own sequence on the parent, started past the
table's current value (and set again under the swap's lock). Serial defaults
keep calling the table's own sequence. The primary key gains the partition
key when it lacks it (PostgreSQL demands it); every index of the table gets an
equivalent on the parent, so ATTACH adopts the table's index instead of
building one under its lock, and new partitions get them all.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple

from ansible_collections.keel.postgres.plugins.module_utils.schema_change import shadow_copy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import MAX_IDENTIFIER_BYTES
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.partition_bounds import Bound, literal
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo, table_identifier

try:
    from psycopg import sql
except ImportError:
    sql = None


class ParentIndex(NamedTuple):
    name: str  # on the parent
    original: str  # the table's index it mirrors (None for the primary key)
    statement: Any


def primary_key(info: TableInfo, key: str) -> List[str]:
    return info.primary_key + ([key] if info.primary_key and key not in info.primary_key else [])


def parent_name_for(original: str) -> str:
    suffix = "_part"
    return original.encode("utf-8")[:MAX_IDENTIFIER_BYTES - len(suffix)].decode("utf-8", "ignore") + suffix


def create_statements(ctx: Any, info: TableInfo, parent: Any, key: str, strategy: str) -> List[Any]:
    """Statements (one guarded transaction) creating ``parent`` empty, partitioned by ``key``."""
    statements = [sql.SQL(
        "CREATE TABLE {parent} (LIKE {table} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE"
        " INCLUDING COMMENTS INCLUDING COMPRESSION) PARTITION BY {strategy} ({key})").format(
        parent=parent, table=table_identifier(info), strategy=sql.SQL(strategy.upper()), key=sql.Identifier(key))]
    statements += _identity_statements(ctx, info, parent)
    statements += _check_statements(ctx, info, parent)
    statements += [index.statement for index in parent_indexes(ctx, info, parent, key)]
    statements += _foreign_key_statements(ctx, info, parent)
    statements += shadow_copy.carry_grants(ctx, info, parent)
    return statements


def identity_sequence(info: TableInfo, column: str) -> Any:
    """The parent's own identity sequence: a new one, continuing from the table's current value."""
    return sql.Identifier(info.schema, "{0}_{1}_part_seq".format(info.name, column)[:63])


def _identity_statements(ctx: Any, info: TableInfo, parent: Any) -> List[Any]:
    rows = ctx.conn.execute(
        "SELECT attname, attidentity, pg_get_serial_sequence(%s, attname) FROM pg_attribute"
        " WHERE attrelid = %s AND attidentity <> '' AND NOT attisdropped", (info.qualified, info.oid)).fetchall()
    statements = []
    for column, kind, sequence in rows:
        current = ctx.conn.execute(sql.SQL("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
                                           " FROM {0}").format(sql.SQL(sequence))).fetchone()[0]
        statements.append(sql.SQL(
            "ALTER TABLE {parent} ALTER COLUMN {column} ADD GENERATED {kind} AS IDENTITY"
            " (SEQUENCE NAME {sequence} START WITH {start})").format(
            parent=parent, column=sql.Identifier(column), sequence=identity_sequence(info, column),
            kind=sql.SQL("ALWAYS" if kind == "a" else "BY DEFAULT"), start=sql.Literal(current)))
    return statements


def _check_statements(ctx: Any, info: TableInfo, parent: Any) -> List[Any]:
    # Validated user checks only: ATTACH merges them with the table's by name and definition.
    rows = ctx.conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s"
                            " AND contype = 'c' AND convalidated AND conname NOT LIKE '\\_keel\\_%%' ORDER BY 1",
                            (info.oid,)).fetchall()
    return [sql.SQL("ALTER TABLE {0} ADD CONSTRAINT {1} {2}").format(parent, sql.Identifier(name), sql.SQL(definition))
            for name, definition in rows]


def _foreign_key_statements(ctx: Any, info: TableInfo, parent: Any) -> List[Any]:
    rows = ctx.conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s"
                            " AND contype = 'f' ORDER BY 1", (info.oid,)).fetchall()
    return [sql.SQL("ALTER TABLE {0} ADD CONSTRAINT {1} {2}").format(parent, sql.Identifier(name), sql.SQL(definition))
            for name, definition in rows]


def parent_indexes(ctx: Any, info: TableInfo, parent: Any, key: str) -> List[ParentIndex]:
    indexes = []
    pk = primary_key(info, key)
    if pk:
        name = parent_name_for("{0}_pkey".format(info.name))
        indexes.append(ParentIndex(name, None, sql.SQL("ALTER TABLE {0} ADD CONSTRAINT {1} PRIMARY KEY ({2})").format(
            parent, sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(c) for c in pk))))
    for index in info.indexes:
        if index.primary or not index.valid or index.name.startswith("_keel_") or (index.unique and index.columns == pk):
            # (a unique index over the parent's key columns is the one the parent's primary key adopts)
            continue
        name = parent_name_for(index.name)
        if _backs_constraint(ctx, info, index.name):
            statement = sql.SQL("ALTER TABLE {0} ADD CONSTRAINT {1} UNIQUE ({2})").format(
                parent, sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(c) for c in index.columns))
        else:
            unique = "UNIQUE " if index.unique else ""
            statement = sql.SQL("CREATE {unique}INDEX {name} ON {parent} USING {rest}").format(
                unique=sql.SQL(unique), name=sql.Identifier(name), parent=parent,
                rest=sql.SQL(index.definition.split(" USING ", 1)[1]))
        indexes.append(ParentIndex(name, index.name, statement))
    return indexes


def _backs_constraint(ctx: Any, info: TableInfo, index_name: str) -> bool:
    return bool(ctx.conn.execute("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = %s AND conindid ="
                                 " %s::regclass)", (info.oid, '"{0}"."{1}"'.format(info.schema, index_name))
                                 ).fetchone()[0])


def create_partition_statement(schema: str, parent: Any, bound: Bound, key_type: str) -> Any:
    return sql.SQL("CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent} FOR VALUES FROM ({lower}) TO ({upper})"
                   ).format(name=sql.Identifier(schema, bound.name), parent=parent,
                            lower=literal(bound.lower, key_type), upper=literal(bound.upper, key_type))


def create_list_partition_statement(schema: str, parent: Any, name: str, value: Any, key_type: str) -> Any:
    return sql.SQL("CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent} FOR VALUES IN ({value})").format(
        name=sql.Identifier(schema, name), parent=parent,
        value=sql.SQL("{0}::{1}").format(sql.Literal(str(value)), sql.SQL(key_type)))
