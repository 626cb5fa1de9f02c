# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building an index CONCURRENTLY so that an interrupted build can simply be run again."""

from __future__ import annotations

from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext

try:
    from psycopg import sql
except ImportError:
    sql = None


def index_validity(conn: Any, schema: str, name: str) -> Optional[bool]:
    """None when the index does not exist, else whether it is valid."""
    row = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                       " WHERE c.relname = %s AND c.relnamespace = %s::regnamespace", (name, schema)).fetchone()
    return None if row is None else row[0]


def drop_index_statement(schema: str, name: str) -> Any:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {0}").format(sql.Identifier(schema, name))


def build_index_concurrently(ctx: MigrationContext, schema: str, name: str, create: Any, tables: List[str]) -> None:
    """Run ``create`` (a CREATE INDEX CONCURRENTLY) unless a valid index of that name exists.

    A failed or timed-out concurrent build leaves an INVALID index behind; it is dropped
    before the build and after each lock timeout, so retries and resumed runs start clean.
    """
    validity = index_validity(ctx.conn, schema, name)
    if validity:
        return
    drop = drop_index_statement(schema, name)
    if validity is not None:
        ctx.conn.execute(drop)
    ctx.concurrently("build index {0}".format(name), tables, create, on_lock_timeout=lambda: ctx.conn.execute(drop))
