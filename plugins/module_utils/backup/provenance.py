# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup provenance: the schema state a backup holds, recorded in its manifest at dump time.

Read on the connection that exported the dump's snapshot, inside that
REPEATABLE READ transaction, so it describes what pg_dump reads: the position
(``snapshot_position``) right after the export, the schema state
(``schema_state``) while pg_dump streams, since its catalog functions take
ACCESS SHARE locks and may wait like pg_dump does:

- ``server_version`` / ``server_version_num``;
- ``snapshot_lsn``: the WAL insert position read right after the snapshot was
  exported (on a standby, the last replayed position). Every change the dump
  holds was committed at or before it: it is an upper bound, not the exact
  position of the snapshot, which PostgreSQL does not expose;
- ``snapshot_at``: the server's clock at the same moment (``clock_timestamp()``);
- ``schema_fingerprint``: SHA-256 over a canonical, sorted description of the
  dumped schemas (see ``describe_schema``), never over data;
- ``migrations``: the keel migrations in the database's catalog (schema
  ``keel``) as the snapshot sees them, with their phase and timestamps; an
  empty list when there is no catalog.

The manifest's MAC covers the whole document, this part included.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog as migrations_catalog

PROVENANCE_VERSION = 1
FINGERPRINT_METHOD = "keel-schema-v1"
# Bookkeeping of keel itself: its tables change with keel versions, not with the application's schema.
EXCLUDED_SCHEMAS = ("keel",)

# The schema_change catalog's phases (migrations_catalog): applied = the migration changed the schema and is not undone.
APPLIED_STATES = (migrations_catalog.STARTED, migrations_catalog.COMPLETING, migrations_catalog.COMPLETED,
                  migrations_catalog.FINALIZING, migrations_catalog.FINALIZED, migrations_catalog.REVERTING)
COMPLETED_STATES = (migrations_catalog.COMPLETED, migrations_catalog.FINALIZING, migrations_catalog.FINALIZED)
EXPECT_STATES = ("completed", "finalized", "any-applied")

# Which schemas are described: the dumped ones (all user schemas when the scope names none).
_SCHEMAS = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname <> ALL(%(excluded)s::text[])
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY 1
"""

# Relations not owned by an extension (pg_dump recreates those with CREATE EXTENSION).
_NOT_EXTENSION = """NOT EXISTS (SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"""

# Column positions are ranks among live columns: a restore renumbers attnum when columns were dropped.
_COLUMNS = """
SELECT n.nspname, c.relname, c.relkind::text, a.attname,
       rank() OVER (PARTITION BY c.oid ORDER BY a.attnum)::int,
       format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
       a.attidentity::text, a.attgenerated::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
WHERE c.relkind IN ('r', 'p', 'f') AND c.relpersistence <> 't' AND n.nspname = ANY(%(schemas)s::text[]) AND """ + _NOT_EXTENSION

_CONSTRAINTS = """
SELECT n.nspname, c.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND """ + _NOT_EXTENSION

_INDEXES = """
SELECT n.nspname, c.relname, i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND """ + _NOT_EXTENSION

_VIEWS = """
SELECT n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY(%(schemas)s::text[]) AND """ + _NOT_EXTENSION

_TRIGGERS = """
SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND n.nspname = ANY(%(schemas)s::text[]) AND """ + _NOT_EXTENSION

_MIGRATION_COLUMNS = ("name", "phase", "tables", "created_at", "updated_at", "completed_at", "finalized_at", "version_schema", "base_schema")


# -- pure rules ----------------------------------------------------------------------------------------------------


def fingerprint_of(description: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a schema description (keys sorted, lists sorted by the caller)."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_description(rows: Mapping[str, Iterable[Sequence[Any]]]) -> Dict[str, List[List[Any]]]:
    """Each kind's rows as lists, sorted, so the order the server returns them in does not matter."""
    return {kind: sorted(([_plain(value) for value in row] for row in kind_rows), key=_sort_key) for kind, kind_rows in rows.items()}


def migration_entry(row: Mapping[str, Any]) -> Dict[str, Any]:
    """One catalog row as the manifest records it: ``state`` is the catalog's phase, timestamps as ISO text."""
    return {
        "name": row["name"],
        "state": row["phase"],
        "schema": row.get("base_schema") or _only_schema(row.get("tables") or []),
        "tables": sorted(row.get("tables") or []),
        "version_schema": row.get("version_schema"),
        # The catalog row is created when the migration starts (phase "starting").
        "started_at": _iso(row.get("created_at")),
        "updated_at": _iso(row.get("updated_at")),
        "completed_at": _iso(row.get("completed_at")),
        "finalized_at": _iso(row.get("finalized_at")),
    }


def state_matches(state: Optional[str], expected: str) -> bool:
    """Whether a migration in ``state`` satisfies ``expect_migration.state``.

    ``completed``: completed or finalized (a finalized migration was completed first);
    ``finalized``: finalized only; ``any-applied``: its schema change is in place (started and not undone).
    """
    if state is None:
        return False
    if expected == "finalized":
        return state == migrations_catalog.FINALIZED
    if expected == "completed":
        return state in COMPLETED_STATES
    return state in APPLIED_STATES


def find_migration(provenance: Optional[Mapping[str, Any]], name: str) -> Optional[Dict[str, Any]]:
    for entry in (provenance or {}).get("migrations") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def precedes_start(provenance: Optional[Mapping[str, Any]], name: str) -> bool:
    """The backup holds the schema from before migration ``name`` (re)started: absent from, or undone in, its catalog."""
    if not provenance:
        return False
    entry = find_migration(provenance, name)
    # Undone phases leave nothing in the schema: a snapshot showing one precedes a (re)start.
    return entry is None or entry.get("state") in migrations_catalog.UNDONE


def expected_migration_problem(provenance: Optional[Mapping[str, Any]], name: str, expected: str) -> Optional[str]:
    """Why a backup with ``provenance`` does not match ``expect_migration`` (None when it does)."""
    if not provenance:
        return "records no provenance (it was made before keel recorded the schema state at dump time)"
    entry = find_migration(provenance, name)
    if entry is None:
        listed = ", ".join(sorted(str(item.get("name")) for item in provenance.get("migrations") or [])) or "none"
        return "lists no migration {0!r} in its provenance (migrations at dump time: {1})".format(name, listed)
    if not state_matches(entry.get("state"), expected):
        return "holds migration {0!r} in state {1!r}, which is not {2}".format(name, entry.get("state"), expected)
    return None


def _only_schema(tables: Sequence[str]) -> Optional[str]:
    # The catalog stores schema-qualified table names; a migration on one schema is "in" it.
    schemas = {table.split(".", 1)[0] for table in tables if "." in table}
    return schemas.pop() if len(schemas) == 1 else None


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _sort_key(row: List[Any]) -> str:
    return json.dumps(row, default=str)


def _iso(value: Any) -> Optional[str]:
    return value.isoformat() if hasattr(value, "isoformat") else value


# -- reading the database ----------------------------------------------------------------------------------------


def describe_schema(cursor: Any, schemas: Sequence[str]) -> Dict[str, Any]:
    """The canonical description of ``schemas`` (all user schemas but keel's when empty) that the fingerprint hashes.

    Tables (ordinary, partitioned, foreign) with their columns (position among live columns, type, NOT NULL, default,
    identity, generated), constraints, indexes, views and materialized views, and triggers, by name and definition
    as the server prints them with an empty search_path (every name schema-qualified). Owners, privileges, comments,
    tablespaces, statistics and data are left out: a restore with --no-owner must give the same fingerprint.
    """
    cursor.execute("SELECT current_setting('search_path')")
    saved = cursor.fetchone()[0]
    cursor.execute("SELECT set_config('search_path', '', true)")
    try:
        cursor.execute(_SCHEMAS, {"schemas": list(schemas) if schemas else None, "excluded": list(EXCLUDED_SCHEMAS)})
        names = [row[0] for row in cursor.fetchall()]
        rows = {}
        for kind, query in (("columns", _COLUMNS), ("constraints", _CONSTRAINTS), ("indexes", _INDEXES), ("views", _VIEWS),
                            ("triggers", _TRIGGERS)):
            cursor.execute(query, {"schemas": names})
            rows[kind] = cursor.fetchall()
    finally:
        cursor.execute("SELECT set_config('search_path', %s, true)", (saved,))
    description = canonical_description(rows)
    description["schemas"] = [[name] for name in names]
    return description


def schema_fingerprint(cursor: Any, schemas: Sequence[str]) -> str:
    return fingerprint_of(describe_schema(cursor, schemas))


def catalog_migrations(cursor: Any) -> List[Dict[str, Any]]:
    """The keel catalog's migrations in this transaction's snapshot, oldest first; [] without a catalog.

    Only columns that exist are read, so a catalog of an older version (without completed_at) is read as it is.
    """
    cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('keel.migrations') AND attnum > 0 AND NOT attisdropped")
    present = {row[0] for row in cursor.fetchall()}
    if not present:
        return []
    columns = [name for name in _MIGRATION_COLUMNS if name in present]
    cursor.execute("SELECT " + ", ".join(columns) + " FROM keel.migrations ORDER BY created_at, name")
    return [migration_entry(dict(zip(columns, row))) for row in cursor.fetchall()]


def snapshot_position(cursor: Any) -> Dict[str, Any]:
    """Server version, LSN and clock: read right after the export. Takes no lock, so it never waits."""
    cursor.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, pg_is_in_recovery(),"
        " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END::text,"
        " clock_timestamp()")
    version, version_num, standby, lsn, at = cursor.fetchone()
    return {
        "version": PROVENANCE_VERSION,
        "server_version": version,
        "server_version_num": version_num,
        "from_standby": standby,
        "snapshot_lsn": lsn,
        "snapshot_at": _iso(at),
    }


def schema_state(cursor: Any, schemas: Sequence[str]) -> Dict[str, Any]:
    """Fingerprint and catalog in the snapshot. The pg_get_*def functions take ACCESS SHARE locks (as pg_dump does),
    so this can wait behind a lock: the backup reads it while pg_dump runs, not before starting it."""
    return {
        "schema_fingerprint": schema_fingerprint(cursor, schemas),
        "fingerprint_method": FINGERPRINT_METHOD,
        "schemas": list(schemas),
        "migrations": catalog_migrations(cursor),
    }


def restored_fingerprint(conn: Any, schemas: Sequence[str]) -> str:
    """The fingerprint of a restored database, computed like the dump's (in one transaction, for the search_path)."""
    with conn.transaction(), conn.cursor() as cursor:
        return schema_fingerprint(cursor, schemas)
