# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Version schemas: one schema of views per migration, so clients never see a result shape change.

A client whose ``search_path`` starts with a version schema reads and writes
the tables through plain, auto-updatable views with explicit column lists.
A view binds to its table by OID and to columns by attribute number, so the
renames keel does when a migration completes (column swaps, table swaps) do
not change what an old version's view returns, and statements prepared on it
keep their result type. A published view is never replaced by one of another
shape: a new shape is a new version schema. The only in-place change is a
same-shape ``CREATE OR REPLACE VIEW`` that points the view at a table that
replaced its own (``repoint_views``), which prepared statements survive.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import MAX_IDENTIFIER_BYTES

try:
    from psycopg import sql
except ImportError:
    sql = None

# Marks a schema as keel's in pg_description, so checks for user views can leave ours out
# even where the catalog is not readable.
MARKER = "keel.postgres version schema"
PUBLISHED, DROPPED = "published", "dropped"
# Helper columns and tables keel adds while migrating are never part of a version.
HIDDEN_PREFIX = "_keel_"


class ViewColumn(NamedTuple):
    name: str  # what clients of this version see
    physical: str  # the table column it reads
    default: Optional[str]  # applied on writes through the view (views do not inherit table defaults)


class ViewShape(NamedTuple):
    name: str  # the view's name in the version schema
    table_schema: str
    table: str
    columns: List[ViewColumn]


def is_version_schema_sql(namespace_oid: str) -> str:
    """A SQL predicate, true when the schema with that OID is a keel version schema."""
    # No LIKE: the predicate goes into queries with parameters, where % is a placeholder.
    return "coalesce(left(obj_description({0}, 'pg_namespace'), {1}) = '{2}', false)".format(
        namespace_oid, len(MARKER), MARKER)


def version_schema_name(base_schema: str, migration: str, override: Optional[str], field: str) -> str:
    """``<base schema>_<migration name>``, lower-cased, anything but letters, digits and _ turned into _.

    Refused rather than truncated when too long: two migrations must never share a version.
    """
    if override:
        name = override
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise InvalidOption(field, "{0!r} must be a lower-case plain identifier (letters, digits, _), so "
                                       "clients can put it in search_path unquoted".format(name))
    else:
        name = re.sub(r"[^a-z0-9_]", "_", "{0}_{1}".format(base_schema, migration).lower())
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise InvalidOption(field, "version schema name {0!r} is longer than {1} bytes; give a shorter "
                                   "version_schema".format(name, MAX_IDENTIFIER_BYTES))
    return name


# -- reading --------------------------------------------------------------------------------


def current_shapes(conn: Any, base_schema: str) -> List[ViewShape]:
    """Every table of the base schema as clients of a new version would see it today, before operations adjust it."""
    rows = conn.execute(
        # A generated column's expression lives in pg_attrdef too, but it is no default: a view cannot have it.
        "SELECT c.relname, a.attname, CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        "   AND left(c.relname, length(%s)) <> %s"
        " ORDER BY c.relname, a.attnum",
        (base_schema, HIDDEN_PREFIX, HIDDEN_PREFIX),
    ).fetchall()
    shapes: Dict[str, ViewShape] = {}
    for table, column, default in rows:
        shape = shapes.setdefault(table, ViewShape(table, base_schema, table, []))
        if not column.startswith(HIDDEN_PREFIX):
            shape.columns.append(ViewColumn(column, column, default))
    return list(shapes.values())


def published_versions(conn: Any, base_schema: str) -> List[Dict[str, Any]]:
    """Version schemas of a base schema still in the database, oldest first."""
    if conn.execute("SELECT to_regclass('keel.version_schemas') IS NULL").fetchone()[0]:
        return []
    rows = conn.execute(
        "SELECT name, migration, created_at FROM keel.version_schemas WHERE base_schema = %s AND state = %s"
        " ORDER BY created_at, name",
        (base_schema, PUBLISHED),
    ).fetchall()
    return [{"name": r[0], "migration": r[1], "created_at": r[2]} for r in rows]


def schema_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT to_regnamespace(quote_ident(%s)) IS NOT NULL", (name,)).fetchone()[0]


# -- publishing -----------------------------------------------------------------------------


def publish_statements(conn: Any, schema: str, migration: str, base_schema: str,
                       shapes: List[ViewShape]) -> List[Any]:
    """Statements (one transaction) that create the version schema, its views, their defaults and grants."""
    statements: List[Any] = [
        sql.SQL("CREATE SCHEMA {0}").format(sql.Identifier(schema)),
        sql.SQL("COMMENT ON SCHEMA {0} IS {1}").format(
            sql.Identifier(schema), sql.Literal("{0} of migration {1}; do not edit by hand".format(MARKER, migration))),
    ]
    statements += _schema_grants(conn, schema, base_schema)
    for shape in shapes:
        statements += _view_statements(conn, schema, shape)
    return statements


def _view_statements(conn: Any, schema: str, shape: ViewShape) -> List[Any]:
    view = sql.Identifier(schema, shape.name)
    statements = [sql.SQL("CREATE VIEW {view} WITH (security_invoker = true) AS SELECT {columns} FROM {table}").format(
        view=view, table=sql.Identifier(shape.table_schema, shape.table),
        columns=sql.SQL(", ").join(
            sql.SQL("{0} AS {1}").format(sql.Identifier(c.physical), sql.Identifier(c.name)) for c in shape.columns)
        if shape.columns else sql.SQL("NULL::int AS _keel_no_columns"))]
    for column in shape.columns:
        if column.default is not None:
            # Without it, UPDATE ... SET c = DEFAULT through the view writes NULL.
            statements.append(sql.SQL("ALTER VIEW {0} ALTER COLUMN {1} SET DEFAULT {2}").format(
                view, sql.Identifier(column.name), sql.SQL(column.default)))
    statements += _table_grants(conn, view, shape)
    return statements


def _table_grants(conn: Any, view: Any, shape: ViewShape) -> List[Any]:
    """The table's privileges on the view: the view runs as its caller (security_invoker) but is owned by keel."""
    rows = conn.execute(
        "SELECT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee) END, acl.privilege_type"
        " FROM pg_class c, aclexplode(c.relacl) acl"
        " WHERE c.oid = to_regclass(format('%%I.%%I', %s::text, %s::text))"
        "   AND acl.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')"
        " ORDER BY 1, 2",
        (shape.table_schema, shape.table),
    ).fetchall()
    return [sql.SQL("GRANT {0} ON {1} TO {2}").format(
        sql.SQL(privilege), view, sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee))
        for grantee, privilege in rows]


def _schema_grants(conn: Any, schema: str, base_schema: str) -> List[Any]:
    rows = conn.execute(
        "SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee) END"
        " FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) acl"
        " WHERE n.nspname = %s AND acl.privilege_type = 'USAGE' ORDER BY 1",
        (base_schema,),
    ).fetchall()
    return [sql.SQL("GRANT USAGE ON SCHEMA {0} TO {1}").format(
        sql.Identifier(schema), sql.SQL("PUBLIC") if row[0] == "PUBLIC" else sql.Identifier(row[0])) for row in rows]


def record_published(conn: Any, schema: str, migration: str, base_schema: str, shapes: List[ViewShape]) -> None:
    conn.execute(
        "INSERT INTO keel.version_schemas (name, migration, base_schema, state, shape) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, shape = EXCLUDED.shape, created_at = now(),"
        " dropped_at = NULL",
        (schema, migration, base_schema, PUBLISHED, json.dumps(_shape_record(conn, schema))),
    )


def _shape_record(conn: Any, schema: str) -> Dict[str, List[List[str]]]:
    """view -> [[column, type]] as the server sees it: what clients of this version were promised."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
        " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
        " WHERE c.relnamespace = to_regnamespace(%s) AND c.relkind = 'v' ORDER BY c.relname, a.attnum",
        (schema,),
    ).fetchall()
    shape: Dict[str, List[List[str]]] = {}
    for view, column, type_name in rows:
        shape.setdefault(view, []).append([column, type_name])
    return shape


def drop_statements(schema: str) -> List[Any]:
    return [sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(sql.Identifier(schema))]


def record_dropped(conn: Any, schema: str) -> None:
    conn.execute("UPDATE keel.version_schemas SET state = %s, dropped_at = now() WHERE name = %s", (DROPPED, schema))


def shape_drift(conn: Any, schema: str) -> List[str]:
    """Views of a published version whose columns no longer match what was published (someone edited them)."""
    row = conn.execute("SELECT shape FROM keel.version_schemas WHERE name = %s", (schema,)).fetchone()
    if row is None:
        return []
    now = _shape_record(conn, schema)
    return sorted(view for view in set(row[0]) | set(now) if row[0].get(view) != now.get(view))


# -- repointing after a table swap --------------------------------------------------------


def repoint_views(conn: Any, from_oid: int, to_table: str) -> List[str]:
    """Point every keel version view reading table ``from_oid`` at ``to_table``, keeping its shape.

    Each view column is mapped through the column name it reads today (attribute
    numbers differ between the two tables); run inside the swap's transaction.
    """
    schema, _dot, table = to_table.partition(".")
    views = conn.execute(
        "SELECT DISTINCT v.oid, n.nspname, v.relname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        " JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace n ON n.oid = v.relnamespace"
        " WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s AND v.oid <> %s"
        "   AND " + is_version_schema_sql("n.oid") + " ORDER BY 2, 3",
        (from_oid, from_oid),
    ).fetchall()
    changed = []
    for view_oid, view_schema, view_name in views:
        columns = _view_column_sources(conn, view_oid, from_oid)
        conn.execute(sql.SQL("CREATE OR REPLACE VIEW {view} WITH (security_invoker = true) AS SELECT {columns}"
                             " FROM {table}").format(
            view=sql.Identifier(view_schema, view_name), table=sql.Identifier(schema, table),
            columns=sql.SQL(", ").join(sql.SQL("{0} AS {1}").format(sql.Identifier(physical), sql.Identifier(name))
                                       for name, physical in columns)))
        changed.append("{0}.{1}".format(view_schema, view_name))
    return changed


def _view_column_sources(conn: Any, view_oid: int, table_oid: int) -> List[tuple]:
    """(view column, table column) pairs of a keel view, in view column order.

    Keel views are plain ``SELECT col AS name`` lists: the stored rule's target
    list names one table attribute per view column, in order.
    """
    names = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 ORDER BY attnum", (view_oid,)).fetchall()]
    sources = _target_list_attnums(conn, view_oid)
    if len(sources) != len(names):
        raise KeelError("view {0} is not a plain column list any more (edited by hand?); keel cannot point it at "
                        "the new table".format(view_oid))
    table_columns = dict(conn.execute(
        "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
        (table_oid,)).fetchall())
    return [(name, table_columns[attnum]) for name, attnum in zip(names, sources)]


def _target_list_attnums(conn: Any, view_oid: int) -> List[int]:
    """Table attribute numbers of the view's select list, from the stored rule tree (``:varattno`` of each Var)."""
    tree = conn.execute("SELECT ev_action::text FROM pg_rewrite WHERE ev_class = %s AND rulename = '_RETURN'",
                        (view_oid,)).fetchone()[0]
    target_list = tree.split(":targetList", 1)[1].split(":override", 1)[0]
    # A stored view rule keeps OLD and NEW in its range table, so the table's range index is not 1.
    return [int(match) for match in re.findall(r"\{VAR :varno \d+ :varattno (\d+)", target_list)]
