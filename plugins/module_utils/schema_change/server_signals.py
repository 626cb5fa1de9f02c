# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Readings of what a migration costs the server: WAL position, temp file bytes, table and index sizes.

Every reading is best effort: it returns None when the server cannot answer
(a standby has no WAL insert position, a dropped connection answers nothing),
because a cost signal must never be the reason a migration fails or the error
it reports.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import regclass_text


class TableSize(NamedTuple):
    table_bytes: int  # heap + TOAST + free space and visibility maps (pg_table_size), summed over partitions
    index_bytes: int  # pg_indexes_size, summed over partitions


def wal_position(conn: Any) -> Optional[int]:
    """The WAL insert position in bytes; differences between two readings are the WAL written meanwhile
    (by every session of the server, not only this one)."""
    return _scalar(conn, "SELECT CASE WHEN pg_is_in_recovery() THEN NULL"
                         " ELSE pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint END")


def temp_bytes(conn: Any) -> Optional[int]:
    """Bytes written to temporary files in this database since the statistics were reset (updated by each
    session at its transaction ends, so a reading lags the running statement)."""
    return _scalar(conn, "SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()")


def table_sizes(conn: Any, tables: List[str]) -> Dict[str, TableSize]:
    """Size of each schema-qualified table (a partitioned one: all its partitions); 0 for one that does not exist."""
    sizes = {}
    for table in tables:
        schema, _sep, name = table.partition(".")
        # pg_partition_tree lists nothing for a table that is neither partitioned nor a partition: add it itself.
        row = _row(conn, "SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint,"
                         " coalesce(sum(pg_indexes_size(relid)), 0)::bigint FROM ("
                         " SELECT relid FROM pg_partition_tree(to_regclass(%s)) UNION SELECT to_regclass(%s)) AS rels"
                         " WHERE relid IS NOT NULL", (regclass_text(schema, name), regclass_text(schema, name)))
        sizes[table] = TableSize(int(row[0]), int(row[1])) if row else TableSize(0, 0)
    return sizes


def helper_bytes(conn: Any, schemas: List[str], prefixes: List[str], exclude: List[str]) -> Optional[int]:
    """Total size of the tables a migration added beside the application's (shadow copies, old tables kept
    for a revert), found by their helper-name ``prefixes`` in ``schemas``; ``exclude`` are counted elsewhere."""
    if not prefixes:
        return 0
    patterns = [_like_prefix(prefix) for prefix in prefixes]
    return _scalar(
        conn,
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM ("
        " SELECT DISTINCT t.relid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " CROSS JOIN LATERAL (SELECT relid FROM pg_partition_tree(c.oid) UNION SELECT c.oid) AS t"
        " WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname = ANY (%s) AND c.relname LIKE ANY (%s)"
        "   AND NOT (format('%%s.%%s', n.nspname, c.relname) = ANY (%s))) AS helpers",
        (schemas, patterns, exclude))


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"


def _scalar(conn: Any, query: str, params: Any = None) -> Optional[int]:
    row = _row(conn, query, params)
    return None if row is None or row[0] is None else int(row[0])


def _row(conn: Any, query: str, params: Any = None) -> Optional[Any]:
    try:
        return conn.execute(query, params).fetchone()
    except Exception:  # a reading is never worth failing a migration for; the caller reports it as unknown
        return None
