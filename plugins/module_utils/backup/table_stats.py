# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Row counts and content fingerprints of the tables a backup holds, taken at dump time.

They are computed inside the very snapshot pg_dump reads (the snapshot is
exported here and handed to ``pg_dump --snapshot``), so a restore can later be
compared with what was dumped, not with what the table holds by then.

Fingerprint method ``keel-rowhash-v1``: for each table, the sum over its rows
of ``hashtextextended(row::text, 0)`` (a 64-bit hash, summed exactly as a
decimal), with the output settings below fixed so the row text is the same
on the dump side and the restore side. A sum is order-independent and, unlike
XOR, duplicate rows do not cancel out. It detects changed, missing and extra
rows; it is a consistency check, not a cryptographic one (the stream's
AES-GCM tags and the manifest MAC are what detect tampering).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule through missing_required_lib
    sql = None

FINGERPRINT_METHOD = "keel-rowhash-v1"
STATS_MODES = ("fingerprints", "row_counts", "none")

# Everything record output depends on, fixed for both sides of the comparison.
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

    def as_dict(self) -> Dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "rows": self.rows, "fingerprint": self.fingerprint}


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


def collect_table_stats(cursor: Any, tables: Sequence[tuple], mode: str) -> List[TableStats]:
    """Count (and fingerprint) each table; the caller chose the snapshot and settings."""
    if mode == "none":
        return []
    results: List[TableStats] = []
    for schema, name in tables:
        cursor.execute(_stats_query(schema, name, mode))
        rows, fingerprint = cursor.fetchone()
        results.append(TableStats(schema=schema, name=name, rows=int(rows), fingerprint=None if fingerprint is None else str(fingerprint)))
    return results


def _stats_query(schema: str, name: str, mode: str) -> Any:
    table = sql.Identifier(schema, name)
    if mode == "row_counts":
        return sql.SQL("SELECT count(*), NULL::text FROM ONLY {0}").format(table)
    # sum(bigint) accumulates in 128 bits: exact and fast; coalesce keeps empty tables comparable.
    return sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM ONLY {0} AS t").format(table)
