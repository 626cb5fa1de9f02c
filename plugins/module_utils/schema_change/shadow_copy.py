# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keeping a second table equal to a live one: a mirror trigger plus a batched, resumable copy.

Shared by ``rewrite_table`` (a plain copy, to reclaim bloat) and ``partition_table``
with ``method: copy`` (a partitioned copy). A row trigger mirrors every
INSERT/UPDATE/DELETE into the copy; the copy walks the table in keyset batches,
each locking its source rows FOR SHARE so a concurrent delete can never be
resurrected by a batch that read the row just before. At the swap, the tables
trade names in one short transaction; sequences and grants follow the name.
"""

from __future__ import annotations

from typing import Any, List

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import run_batches
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import DOLLAR_TAG
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


def copyable_columns(conn: Any, oid: int) -> List[str]:
    """Every column a copy writes: generated columns are computed by the copy itself."""
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0"
                        " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (oid,)).fetchall()
    return [row[0] for row in rows]


def mirror_statements(name: str, source: Any, target: Any, key: List[str], columns: List[str]) -> List[Any]:
    """Statements (for a guarded transaction) installing trigger ``name`` on ``source`` that repeats every
    row change on ``target``; ``key`` must be unique on ``target`` (ON CONFLICT target)."""
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
        "   DELETE FROM {target} WHERE {match_old};"
        " END IF;"
        " IF TG_OP IN ('INSERT', 'UPDATE') THEN"
        "   INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({new_values})"
        "   ON CONFLICT ({key_cols}) DO UPDATE SET {updates};"
        " END IF;"
        " RETURN NULL;"
        " END").format(key_changed=key_changed, target=target, match_old=match_old, cols=cols,
                       new_values=new_values, key_cols=key_cols, updates=updates)
    return [
        sql.SQL("CREATE OR REPLACE FUNCTION keel.{name}() RETURNS trigger LANGUAGE plpgsql AS {tag}{body}{tag}").format(
            name=sql.Identifier(name), tag=sql.SQL(DOLLAR_TAG), body=body),
        sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(name=sql.Identifier(name), table=source),
        sql.SQL("CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION keel.{name}()").format(name=sql.Identifier(name), table=source),
    ]


def drop_mirror_statements(name: str, source: Any) -> List[Any]:
    return [sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(name), source),
            sql.SQL("DROP FUNCTION IF EXISTS keel.{0}()").format(sql.Identifier(name))]


def install_mirror(ctx: MigrationContext, info: TableInfo, name: str, target: Any, key: List[str],
                   columns: List[str]) -> None:
    statements = mirror_statements(name, table_identifier(info), target, key, columns)
    ctx.guarded("install mirror trigger on {0}".format(info.qualified), [info.qualified],
                lambda conn: [conn.execute(s) for s in statements])


def copy_rows(ctx: MigrationContext, step: str, info: TableInfo, target: Any, columns: List[str], field: str) -> None:
    """Copy every row of ``info`` into ``target`` in resumable keyset batches (rows the trigger already
    mirrored are left as the trigger wrote them)."""
    column_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)

    def copy(key_range: Any) -> Any:
        return sql.SQL("INSERT INTO {target} ({columns}) OVERRIDING SYSTEM VALUE"
                       " (SELECT {columns} FROM {table} WHERE {key_range} FOR SHARE)"
                       " ON CONFLICT DO NOTHING").format(target=target, columns=column_list,
                                                         table=table_identifier(info), key_range=key_range)

    run_batches(ctx, step, info, copy, field)


def carry_sequences(ctx: MigrationContext, info: TableInfo, from_table: Any, to_table: Any) -> List[Any]:
    """Statements moving the table's sequences from ``from_table`` to ``to_table`` (same column names).

    Serial sequences are owned by a column and would be dropped with its table: ownership moves.
    Identity sequences belong to each table: the receiving one continues where the other stopped.
    Run after the renames, in the swap transaction, while the table is locked.
    """
    statements = []
    for column in info.columns:
        row = ctx.conn.execute("SELECT pg_get_serial_sequence(%s, %s), attidentity FROM pg_attribute"
                               " WHERE attrelid = %s AND attname = %s",
                               (info.qualified, column, info.oid, column)).fetchone()
        if row is None or row[0] is None:
            continue
        if row[1]:
            statements.append(_identity_setval(ctx, from_table, to_table, column))
        else:
            statements.append(sql.SQL("ALTER SEQUENCE {0} OWNED BY {1}.{2}").format(
                sql.SQL(row[0]), to_table, sql.Identifier(column)))
    return statements


def _identity_setval(ctx: MigrationContext, from_table: Any, to_table: Any, column: str) -> Any:
    """setval on ``to_table``'s identity sequence from ``from_table``'s, both looked up by name at run time
    (the swap renamed the tables a moment before)."""
    return sql.SQL(
        "DO {tag}DECLARE src text := pg_get_serial_sequence({source}, {column});"
        " dst text := pg_get_serial_sequence({dest}, {column}); v bigint; called boolean;"
        " BEGIN EXECUTE format('SELECT last_value, is_called FROM %s', src) INTO v, called;"
        " PERFORM setval(dst, v, called); END{tag}").format(
        tag=sql.SQL(DOLLAR_TAG), source=sql.Literal(from_table.as_string(ctx.conn)),
        dest=sql.Literal(to_table.as_string(ctx.conn)), column=sql.Literal(column))


def carry_grants(ctx: MigrationContext, info: TableInfo, to_table: Any) -> List[Any]:
    rows = ctx.conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type,"
        " a.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        " LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = %s AND a.grantee <> c.relowner",
        (info.oid,)).fetchall()
    return [sql.SQL("GRANT {0} ON {1} TO {2}{3}").format(
        sql.SQL(privilege), to_table, sql.SQL(grantee), sql.SQL(" WITH GRANT OPTION" if grantable else ""))
        for grantee, privilege, grantable in rows]


def snapshot_counts(conn: Any, left: Any, right: Any) -> List[int]:
    """Row counts of both tables in one snapshot: with a mirror trigger between them they must agree."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return [conn.execute(sql.SQL("SELECT count(*) FROM {0}").format(table)).fetchone()[0]
                for table in (left, right)]


def lock_for_swap(conn: Any, oid: int, table: Any) -> None:
    """Take the swap's locks in one order, everywhere: the views reading the table, the table, then the
    tables its foreign keys point at. A fixed order means two swaps can wait on each other but never
    deadlock halfway (and lock_timeout, below deadlock_timeout, gives up first)."""
    views = conn.execute(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        " JOIN pg_class v ON v.oid = r.ev_class WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s"
        "   AND v.oid <> %s ORDER BY 1", (oid, oid)).fetchall()
    for (view,) in views:
        conn.execute(sql.SQL("LOCK TABLE {0} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(view)))
    conn.execute(sql.SQL("LOCK TABLE {0} IN ACCESS EXCLUSIVE MODE").format(table))
    referenced = conn.execute("SELECT DISTINCT confrelid::regclass::text FROM pg_constraint WHERE conrelid = %s"
                              " AND contype = 'f' AND confrelid <> %s ORDER BY 1", (oid, oid)).fetchall()
    for (other,) in referenced:
        conn.execute(sql.SQL("LOCK TABLE {0} IN SHARE ROW EXCLUSIVE MODE").format(sql.SQL(other)))
