# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the server says about a table, read before planning or changing it."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, regclass_text
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import is_version_schema_sql


class Column(NamedTuple):
    name: str
    type: str
    not_null: bool
    default: Optional[str]
    attnum: int


class Index(NamedTuple):
    name: str
    definition: str
    columns: List[str]
    unique: bool
    primary: bool
    valid: bool
    method: str
    simple: bool  # plain key columns only: no expression, predicate or INCLUDE


class TableInfo(NamedTuple):
    oid: int
    schema: str
    name: str
    partitioned: bool
    columns: Dict[str, Column]
    primary_key: List[str]
    rows_estimate: Optional[int]
    total_bytes: int
    indexes: List[Index]
    constraints: Dict[str, str]  # name -> definition
    dependent_views: List[str]

    @property
    def qualified(self) -> str:
        return "{0}.{1}".format(self.schema, self.name)


def resolve_table(conn: Any, table: TableName) -> Optional[TableInfo]:
    row = conn.execute(
        "SELECT c.oid::int8, n.nspname, c.relname, c.relkind, c.reltuples::int8, pg_total_relation_size(c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
        (regclass_text(table.schema, table.name),),
    ).fetchone()
    if row is None:
        return None
    oid = row[0]
    return TableInfo(
        oid=oid,
        schema=row[1],
        name=row[2],
        partitioned=row[3] == "p",
        columns=_columns(conn, oid),
        primary_key=_primary_key(conn, oid),
        rows_estimate=None if row[4] < 0 else row[4],
        total_bytes=row[5],
        indexes=_indexes(conn, oid),
        constraints=_constraints(conn, oid),
        dependent_views=_dependent_views(conn, oid),
    )


def require_table(conn: Any, table: TableName, field: str) -> TableInfo:
    info = resolve_table(conn, table)
    if info is None:
        raise InvalidOption(field, "table {0!r} does not exist".format(str(table)))
    return info


def require_column(info: TableInfo, column: str, field: str) -> Column:
    if column not in info.columns:
        raise InvalidOption(field, "table {0} has no column {1!r}".format(info.qualified, column))
    return info.columns[column]


def canonical_type(conn: Any, type_text: str, field: str) -> str:
    """Let the server parse a type, modifiers included (``numeric(10,2)``, ``varchar(20)``).

    The type is cast to in a query that carries a parameter, so the extended
    protocol refuses anything but a single statement; the result column's
    type and modifier are then spelled back by ``format_type``.
    """
    from psycopg import sql  # imported here: this module is also used for pure planning

    try:
        with conn.transaction():
            cursor = conn.execute(sql.SQL("SELECT NULL::{0} WHERE %s").format(
                sql.SQL(type_text.replace("%", "%%"))), (False,))
            oid, modifier = cursor.pgresult.ftype(0), cursor.pgresult.fmod(0)
            return conn.execute("SELECT format_type(%s, %s)", (oid, None if modifier < 0 else modifier)).fetchone()[0]
    except Exception as exc:
        raise InvalidOption(field, "{0!r} is not a type known to the server: {1}".format(
            type_text, str(exc).strip().splitlines()[0])) from None


def describe(info: Optional[TableInfo]) -> str:
    """A stable text definition of a table, for diff mode."""
    if info is None:
        return ""
    lines = ["TABLE {0}".format(info.qualified)]
    for column in sorted(info.columns.values(), key=lambda c: c.attnum):
        text = "  {0} {1}".format(column.name, column.type)
        if column.not_null:
            text += " NOT NULL"
        if column.default is not None:
            text += " DEFAULT {0}".format(column.default)
        lines.append(text)
    for name, definition in sorted(info.constraints.items()):
        lines.append("  CONSTRAINT {0} {1}".format(name, definition))
    for index in sorted(info.indexes, key=lambda i: i.name):
        lines.append("  {0}{1}".format(index.definition, "" if index.valid else " -- INVALID"))
    return "\n".join(lines) + "\n"


def _columns(conn: Any, oid: int) -> Dict[str, Column]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attnum"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (oid,),
    ).fetchall()
    return {row[0]: Column(*row) for row in rows}


def _primary_key(conn: Any, oid: int) -> List[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.position",
        (oid,),
    ).fetchall()
    return [row[0] for row in rows]


def _indexes(conn: Any, oid: int) -> List[Index]:
    rows = conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary, i.indisvalid,"
        " ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)"
        "       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.position),"
        " am.amname, i.indexprs IS NULL AND i.indpred IS NULL AND i.indnatts = i.indnkeyatts"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
        " WHERE i.indrelid = %s ORDER BY c.relname",
        (oid,),
    ).fetchall()
    return [Index(name=r[0], definition=r[1], unique=r[2], primary=r[3], valid=r[4], columns=list(r[5]), method=r[6],
                  simple=r[7]) for r in rows]


def _constraints(conn: Any, oid: int) -> Dict[str, str]:
    rows = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) || CASE WHEN convalidated THEN '' ELSE ' (not validated)' END"
        " FROM pg_constraint WHERE conrelid = %s ORDER BY conname",
        (oid,),
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def _dependent_views(conn: Any, oid: int) -> List[str]:
    rows = conn.execute(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        " JOIN pg_class v ON v.oid = r.ev_class"
        " WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s AND v.oid <> %s"
        "   AND NOT " + is_version_schema_sql("v.relnamespace") + " ORDER BY 1",
        (oid, oid),
    ).fetchall()
    return [row[0] for row in rows]


def views_using_column(conn: Any, oid: int, attnum: int) -> List[str]:
    rows = conn.execute(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        " JOIN pg_class v ON v.oid = r.ev_class"
        " WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s AND d.refobjsubid = %s AND v.oid <> %s"
        "   AND NOT " + is_version_schema_sql("v.relnamespace") + " ORDER BY 1",
        (oid, attnum, oid),
    ).fetchall()
    return [row[0] for row in rows]


def table_identifier(info: TableInfo) -> Any:
    from psycopg import sql  # imported here: this module is also used for pure planning

    return sql.Identifier(info.schema, info.name)


def constraint_validated(conn: Any, oid: int, name: str) -> Optional[bool]:
    """None when the constraint does not exist, else whether it is validated."""
    row = conn.execute("SELECT convalidated FROM pg_constraint WHERE conrelid = %s AND conname = %s",
                       (oid, name)).fetchone()
    return None if row is None else row[0]
