# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Row counts and content fingerprints of the tables a backup holds, taken at dump time.

They are computed inside the very snapshot pg_dump reads (the snapshot is
exported here and handed to ``pg_dump --snapshot``), so a restore can later be
compared with what was dumped, not with what the table holds by then.

Fingerprint method ``keel-rowhash-v2``: for each table, the exact sum (as a
decimal) over its rows of a 64-bit row hash. A sum is order-independent and,
unlike XOR, duplicate rows do not cancel out. The row hash is, per table:

- ``record``: ``hash_record_extended(row, 0)`` (PostgreSQL 14+), which hashes
  each column's binary value with its type's hash function. About four times
  cheaper than turning the row into text, and independent of output settings.
- ``text``: ``hashtextextended(row::text, 0)`` with the output settings below
  fixed, for tables with a column type that has no hash function (json, point,
  xml, ...) and for servers before 14.

The method used is recorded per table, and a restore is checked with the same
one. It detects changed, missing and extra rows; it is a consistency check,
not a cryptographic one (the stream's AES-GCM tags and the manifest MAC are
what detect tampering).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

try:
    from psycopg import Error as DatabaseError
    from psycopg import sql
except ImportError:  # reported by KeelModule through missing_required_lib
    sql = None

    class DatabaseError(Exception):  # type: ignore[no-redef]
        """Stands in for psycopg.Error; never raised."""

FINGERPRINT_METHOD = "keel-rowhash-v2"
ROW_HASH_RECORD = "record"
ROW_HASH_TEXT = "text"
STATS_MODES = ("fingerprints", "row_counts", "none")

# Everything record output depends on, fixed for both sides of the comparison (the ``text`` row hash).
ROW_TEXT_SETTINGS = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
)

# The tables pg_dump writes data for: ordinary tables (partitions included, partitioned parents hold no rows),
# not temporary ones, not those that belong to an extension.
_TABLES_IN_SCOPE = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY 1, 2
"""


@dataclass
class TableStats:
    schema: str
    name: str
    rows: int
    fingerprint: Optional[str]  # decimal text, None when only rows were counted
    row_hash: Optional[str] = None  # ROW_HASH_RECORD or ROW_HASH_TEXT, with the fingerprint

    def as_dict(self) -> Dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "rows": self.rows, "fingerprint": self.fingerprint, "row_hash": self.row_hash}


def check_stats_mode(mode: str, field: str = "table_stats") -> str:
    if mode not in STATS_MODES:
        raise InvalidOption(field, "must be one of {0}, not {1!r}".format(", ".join(STATS_MODES), mode))
    return mode


def apply_row_text_settings(cursor: Any) -> None:
    """SET LOCAL the output settings of the fingerprint method (inside a transaction)."""
    for name, value in ROW_TEXT_SETTINGS:
        cursor.execute("SELECT set_config(%s, %s, true)", (name, value))


def begin_exported_snapshot(conn: Any) -> str:
    """Start a read-only REPEATABLE READ transaction on ``conn`` and export its snapshot for pg_dump.

    The transaction must stay open until pg_dump has started (it imports the snapshot at start).
    """
    conn.autocommit = False
    with conn.cursor() as cursor:
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        apply_row_text_settings(cursor)
    return str(snapshot)


def tables_in_scope(cursor: Any, schemas: Sequence[str]) -> List[tuple]:
    cursor.execute(_TABLES_IN_SCOPE, {"schemas": list(schemas) if schemas else None})
    return [(row[0], row[1]) for row in cursor.fetchall()]


def missing_schemas(cursor: Any, schemas: Sequence[str]) -> List[str]:
    if not schemas:
        return []
    cursor.execute("SELECT s FROM unnest(%s::text[]) s WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s)", (list(schemas),))
    return [row[0] for row in cursor.fetchall()]


def collect_table_stats(cursor: Any, tables: Sequence[tuple], mode: str, row_hashes: Optional[Dict[tuple, str]] = None) -> List[TableStats]:
    """Count (and fingerprint) each table; the caller chose the snapshot and settings (inside a transaction).

    ``row_hashes`` pins the row hash per (schema, name), as a manifest recorded it, for the restore side;
    without it the cheaper ``record`` hash is tried first and ``text`` is the fallback.
    """
    if mode == "none":
        return []
    results: List[TableStats] = []
    for schema, name in tables:
        if mode == "row_counts":
            cursor.execute(sql.SQL("SELECT count(*) FROM ONLY {0}").format(sql.Identifier(schema, name)))
            results.append(TableStats(schema=schema, name=name, rows=int(cursor.fetchone()[0]), fingerprint=None))
            continue
        pinned = (row_hashes or {}).get((schema, name))
        row_hash, rows, fingerprint = _fingerprint(cursor, schema, name, pinned)
        results.append(TableStats(schema=schema, name=name, rows=rows, fingerprint=fingerprint, row_hash=row_hash))
    return results


def _fingerprint(cursor: Any, schema: str, name: str, pinned: Optional[str]) -> tuple:
    if pinned is not None:
        cursor.execute(_fingerprint_query(schema, name, pinned))
        rows, fingerprint = cursor.fetchone()
        return pinned, int(rows), str(fingerprint)
    cursor.execute("SAVEPOINT keel_row_hash")
    try:
        cursor.execute(_fingerprint_query(schema, name, ROW_HASH_RECORD))
        rows, fingerprint = cursor.fetchone()
        cursor.execute("RELEASE SAVEPOINT keel_row_hash")
        return ROW_HASH_RECORD, int(rows), str(fingerprint)
    except DatabaseError:  # a column type without a hash function, or a server before 14
        cursor.execute("ROLLBACK TO SAVEPOINT keel_row_hash")
    cursor.execute(_fingerprint_query(schema, name, ROW_HASH_TEXT))
    rows, fingerprint = cursor.fetchone()
    return ROW_HASH_TEXT, int(rows), str(fingerprint)


def _fingerprint_query(schema: str, name: str, row_hash: str) -> Any:
    table = sql.Identifier(schema, name)
    # sum(bigint) accumulates in 128 bits: exact and fast; coalesce keeps empty tables comparable.
    if row_hash == ROW_HASH_RECORD:
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended(t, 0)), 0)::text FROM ONLY {0} AS t").format(table)
    return sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM ONLY {0} AS t").format(table)
