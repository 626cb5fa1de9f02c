# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database a backup is restored into: does it exist, is it empty, create it, drop it."""

from __future__ import annotations

from typing import Any, List, Sequence

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule through missing_required_lib
    sql = None

# What a restore would collide with: relations, functions and types in user schemas (or the schemas themselves).
_USER_OBJECTS = """
SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace WHERE %(schemas)s::text[] IS NOT NULL AND nspname = ANY(%(schemas)s::text[])
ORDER BY 1
LIMIT 20
"""


def database_exists(conn: Any, name: str) -> bool:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None


def create_database(conn: Any, name: str) -> None:
    """CREATE DATABASE from template0, so the restore starts from nothing (conn must be autocommit)."""
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {0} TEMPLATE template0").format(sql.Identifier(name)))


def make_room_for_schemas(conn: Any, schemas: Sequence[str]) -> None:
    """Drop the empty ``public`` schema of a database just made from template0 when the backup brings its own.

    A dump scoped to ``public`` (``pg_dump -n public``) creates that schema, and the restore would stop at
    "schema public already exists". RESTRICT: a ``public`` that holds anything is left alone and the restore says so.
    """
    if "public" in schemas:
        with conn.cursor() as cursor:
            cursor.execute("DROP SCHEMA IF EXISTS public RESTRICT")


def drop_database(conn: Any, name: str) -> None:
    """DROP DATABASE IF EXISTS ... WITH (FORCE): ends sessions left behind by a failed restore."""
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {0} WITH (FORCE)").format(sql.Identifier(name)))


def colliding_objects(target_conn: Any, schemas: Sequence[str]) -> List[str]:
    """Up to 20 objects in the target that a restore of ``schemas`` (all user schemas when empty) would meet."""
    with target_conn.cursor() as cursor:
        cursor.execute(_USER_OBJECTS, {"schemas": list(schemas) if schemas else None})
        return [row[0] for row in cursor.fetchall()]
