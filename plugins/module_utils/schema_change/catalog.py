# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration catalog: schema ``keel`` in the migrated database.

It records each migration's operations, phase, timings and backfill cursors,
so a killed run resumes where it stopped, a repeated run is a no-op, and
``migration_info`` can report progress and rollback times. Every write is its
own short transaction (or shares one with the backfill batch it describes),
so the catalog never holds locks on application tables.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, NamedTuple, Optional

CATALOG_SCHEMA = "keel"
CATALOG_VERSION = 2

# Phases a migration moves through; the *-ing ones mean a run was interrupted there.
STARTING, STARTED, COMPLETING, COMPLETED, ROLLING_BACK, ROLLED_BACK = (
    "starting", "started", "completing", "completed", "rolling_back", "rolled_back")
REVERTING, REVERTED, FINALIZING, FINALIZED = "reverting", "reverted", "finalizing", "finalized"
# A completed migration still keeps its old shape (it can be reverted), so it holds its tables too.
IN_FLIGHT = (STARTING, STARTED, COMPLETING, COMPLETED, REVERTING, FINALIZING, ROLLING_BACK)
# Phases after which the migration left nothing behind: it may start again from scratch.
UNDONE = (ROLLED_BACK, REVERTED)

_DDL = """
CREATE SCHEMA IF NOT EXISTS keel;
COMMENT ON SCHEMA keel IS 'keel.postgres migration catalog; do not edit by hand';
CREATE TABLE IF NOT EXISTS keel.catalog_version (version int NOT NULL);
CREATE TABLE IF NOT EXISTS keel.migrations (
    name text PRIMARY KEY,
    operations jsonb NOT NULL,
    tables text[] NOT NULL,
    phase text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    phase_seconds jsonb NOT NULL DEFAULT '{}',
    rollback_seconds float8,
    operation_state jsonb NOT NULL DEFAULT '{}',
    last_error text
);
CREATE TABLE IF NOT EXISTS keel.backfills (
    migration text NOT NULL,  -- the owner: a migration's name, or a shadow write's
    step text NOT NULL,
    table_name text NOT NULL,
    cursor jsonb,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_estimated bigint,
    batches bigint NOT NULL DEFAULT 0,
    done boolean NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, step)
);
"""

# Version 2: revert after completion, and the version schemas clients read through.
_DDL_V2 = """
ALTER TABLE keel.migrations
    ADD COLUMN IF NOT EXISTS completed_at timestamptz,
    ADD COLUMN IF NOT EXISTS finalized_at timestamptz,
    ADD COLUMN IF NOT EXISTS revert_window_seconds float8,
    ADD COLUMN IF NOT EXISTS revert_seconds float8,
    ADD COLUMN IF NOT EXISTS version_schema text,
    ADD COLUMN IF NOT EXISTS base_schema text;
CREATE TABLE IF NOT EXISTS keel.version_schemas (
    name text PRIMARY KEY,
    migration text NOT NULL,
    base_schema text NOT NULL,
    state text NOT NULL,  -- published | dropped
    shape jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    dropped_at timestamptz
);
CREATE TABLE IF NOT EXISTS keel.read_verifications (
    migration text NOT NULL,
    query_name text NOT NULL,
    ran_at timestamptz NOT NULL DEFAULT now(),
    ok boolean NOT NULL,
    outcome jsonb NOT NULL
);
"""

# Serializes catalog creation and the in-flight check between concurrent runs.
_CATALOG_LOCK_KEY = 0x6B65656C  # "keel"


class MigrationRecord(NamedTuple):
    name: str
    operations: List[Dict[str, Any]]
    tables: List[str]
    phase: str
    phase_seconds: Dict[str, float]
    rollback_seconds: Optional[float]
    operation_state: Dict[str, Any]
    last_error: Optional[str]
    created_at: Any
    updated_at: Any
    completed_at: Any = None
    finalized_at: Any = None
    revert_window_seconds: Optional[float] = None
    revert_seconds: Optional[float] = None
    version_schema: Optional[str] = None
    base_schema: Optional[str] = None

    def revertible_until(self) -> Any:
        """When an unfinalized completed migration gets finalized by the next run; None: only on request."""
        if self.phase != COMPLETED or self.completed_at is None or self.revert_window_seconds is None:
            return None
        return self.completed_at + datetime.timedelta(seconds=self.revert_window_seconds)


_RECORD_COLUMNS = ("name, operations, tables, phase, phase_seconds, rollback_seconds, operation_state, last_error,"
                   " created_at, updated_at, completed_at, finalized_at, revert_window_seconds, revert_seconds,"
                   " version_schema, base_schema")


def catalog_exists(conn: Any) -> bool:
    return conn.execute("SELECT to_regclass('keel.migrations') IS NOT NULL").fetchone()[0]


def catalog_version(conn: Any) -> int:
    if not catalog_exists(conn):
        return 0
    return conn.execute("SELECT coalesce(max(version), 1) FROM keel.catalog_version").fetchone()[0]


def ensure_catalog(conn: Any) -> None:
    if catalog_version(conn) >= CATALOG_VERSION:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CATALOG_LOCK_KEY,))
        conn.execute(_DDL)
        if conn.execute("SELECT coalesce(max(version), 0) FROM keel.catalog_version").fetchone()[0] < 2:
            conn.execute(_DDL_V2)
            # Before version 2, completing dropped the old shape: those migrations are final.
            conn.execute("UPDATE keel.migrations SET phase = %s, finalized_at = updated_at WHERE phase = %s",
                         (FINALIZED, COMPLETED))
        conn.execute("DELETE FROM keel.catalog_version")
        conn.execute("INSERT INTO keel.catalog_version VALUES (%s)", (CATALOG_VERSION,))


def _readable(conn: Any) -> bool:
    """Whether there is a catalog to read; one of an older version is upgraded first (reading it needs the new
    columns, and the upgrade only adds columns and tables)."""
    version = catalog_version(conn)
    if version and version < CATALOG_VERSION:
        ensure_catalog(conn)
    return bool(version)


def load(conn: Any, name: str) -> Optional[MigrationRecord]:
    if not _readable(conn):
        return None
    row = conn.execute("SELECT " + _RECORD_COLUMNS + " FROM keel.migrations WHERE name = %s", (name,)).fetchone()
    return None if row is None else MigrationRecord(*row)


def list_migrations(conn: Any, name: Optional[str] = None) -> List[MigrationRecord]:
    if not _readable(conn):
        return []
    rows = conn.execute(
        "SELECT " + _RECORD_COLUMNS + " FROM keel.migrations WHERE %s::text IS NULL OR name = %s"
        " ORDER BY created_at, name",
        (name, name),
    ).fetchall()
    return [MigrationRecord(*row) for row in rows]


def in_flight_on_tables(conn: Any, tables: List[str], except_name: str) -> List[MigrationRecord]:
    """Other unfinished migrations touching any of ``tables``."""
    return [
        record for record in list_migrations(conn)
        if record.name != except_name and record.phase in IN_FLIGHT and set(record.tables) & set(tables)
    ]


def create(conn: Any, name: str, operations: List[Dict[str, Any]], tables: List[str],
           version_schema: Optional[str] = None, base_schema: Optional[str] = None) -> None:
    conn.execute(
        "INSERT INTO keel.migrations (name, operations, tables, phase, version_schema, base_schema)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET operations = EXCLUDED.operations, tables = EXCLUDED.tables,"
        " phase = EXCLUDED.phase, updated_at = now(), last_error = NULL, phase_seconds = '{}',"
        " operation_state = '{}', rollback_seconds = NULL, revert_seconds = NULL, completed_at = NULL,"
        " finalized_at = NULL, version_schema = EXCLUDED.version_schema, base_schema = EXCLUDED.base_schema",
        (name, json.dumps(operations), tables, STARTING, version_schema, base_schema),
    )
    conn.execute("DELETE FROM keel.backfills WHERE migration = %s", (name,))


def set_phase(conn: Any, name: str, phase: str) -> None:
    conn.execute("UPDATE keel.migrations SET phase = %s, updated_at = now(), last_error = NULL WHERE name = %s",
                 (phase, name))


def add_phase_seconds(conn: Any, name: str, phase: str, seconds: float) -> None:
    """Accumulate wall time per phase across runs (an interrupted phase adds up)."""
    conn.execute(
        "UPDATE keel.migrations SET phase_seconds = jsonb_set(phase_seconds, ARRAY[%s],"
        " to_jsonb(coalesce((phase_seconds->>%s)::float8, 0) + %s)) WHERE name = %s",
        (phase, phase, seconds, name),
    )


def record_rollback_seconds(conn: Any, name: str, seconds: float) -> None:
    conn.execute("UPDATE keel.migrations SET rollback_seconds = %s WHERE name = %s", (seconds, name))


def record_revert_seconds(conn: Any, name: str, seconds: float) -> None:
    conn.execute("UPDATE keel.migrations SET revert_seconds = %s WHERE name = %s", (seconds, name))


def record_completed(conn: Any, name: str, revert_window_seconds: Optional[float]) -> None:
    conn.execute("UPDATE keel.migrations SET completed_at = now(), revert_window_seconds = %s WHERE name = %s",
                 (revert_window_seconds, name))


def record_finalized(conn: Any, name: str) -> None:
    conn.execute("UPDATE keel.migrations SET finalized_at = now() WHERE name = %s", (name,))


def expired_completions(conn: Any, tables: List[str], base_schemas: List[str]) -> List[MigrationRecord]:
    """Completed migrations on these tables (or version schemas on these base schemas) past their revert window."""
    return [
        record for record in list_migrations(conn)
        if (set(record.tables) & set(tables) or (record.version_schema and record.base_schema in base_schemas))
        and window_ended(conn, record)
    ]


def window_ended(conn: Any, record: MigrationRecord) -> bool:
    """A completed migration's revert window has passed (by the server's clock, which stamped completed_at)."""
    until = record.revertible_until()
    return until is not None and conn.execute("SELECT now() >= %s", (until,)).fetchone()[0]


def record_read_verification(conn: Any, name: str, query_name: str, ok: bool, outcome: Dict[str, Any]) -> None:
    conn.execute("INSERT INTO keel.read_verifications (migration, query_name, ok, outcome) VALUES (%s, %s, %s, %s)",
                 (name, query_name, ok, json.dumps(outcome)))


def latest_read_verifications(conn: Any, name: str) -> List[Dict[str, Any]]:
    """The newest outcome per read query of a migration."""
    rows = conn.execute(
        "SELECT DISTINCT ON (query_name) query_name, ran_at, ok, outcome FROM keel.read_verifications"
        " WHERE migration = %s ORDER BY query_name, ran_at DESC",
        (name,),
    ).fetchall()
    return [{"query": r[0], "ran_at": r[1].isoformat(), "ok": r[2], "outcome": r[3]} for r in rows]


def record_error(conn: Any, name: str, message: str) -> None:
    conn.execute("UPDATE keel.migrations SET last_error = %s, updated_at = now() WHERE name = %s", (message, name))


def save_operation_state(conn: Any, name: str, key: str, state: Dict[str, Any]) -> None:
    """Facts an operation must remember between phases (e.g. the default it replaced)."""
    conn.execute(
        "UPDATE keel.migrations SET operation_state = jsonb_set(operation_state, ARRAY[%s], %s::jsonb)"
        " WHERE name = %s",
        (key, json.dumps(state), name),
    )


def load_operation_state(conn: Any, name: str, key: str) -> Dict[str, Any]:
    row = conn.execute("SELECT operation_state->%s FROM keel.migrations WHERE name = %s", (key, name)).fetchone()
    return (row[0] if row else None) or {}


class BackfillProgress(NamedTuple):
    cursor: Optional[List[Any]]
    rows_done: int
    rows_estimated: Optional[int]
    batches: int
    done: bool


def forget_backfills(conn: Any, name: str) -> None:
    conn.execute("DELETE FROM keel.backfills WHERE migration = %s", (name,))


def backfill_progress(conn: Any, name: str, step: str) -> Optional[BackfillProgress]:
    row = conn.execute(
        "SELECT cursor, rows_done, rows_estimated, batches, done FROM keel.backfills WHERE migration = %s AND step = %s",
        (name, step),
    ).fetchone()
    return None if row is None else BackfillProgress(*row)


def begin_backfill(conn: Any, name: str, step: str, table: str, rows_estimated: Optional[int]) -> None:
    conn.execute(
        "INSERT INTO keel.backfills (migration, step, table_name, rows_estimated) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (migration, step) DO NOTHING",
        (name, step, table, rows_estimated),
    )


def advance_backfill(conn: Any, name: str, step: str, cursor: List[Any], rows: int) -> None:
    """Called inside the batch's own transaction, so data and cursor commit together."""
    conn.execute(
        "UPDATE keel.backfills SET cursor = %s, rows_done = rows_done + %s, batches = batches + 1, updated_at = now()"
        " WHERE migration = %s AND step = %s",
        (json.dumps(cursor), rows, name, step),
    )


def finish_backfill(conn: Any, name: str, step: str) -> None:
    conn.execute("UPDATE keel.backfills SET done = true, updated_at = now() WHERE migration = %s AND step = %s",
                 (name, step))


def backfills_of(conn: Any, name: str) -> List[Dict[str, Any]]:
    if not catalog_exists(conn):
        return []
    rows = conn.execute(
        "SELECT step, table_name, rows_done, rows_estimated, batches, done, started_at, updated_at"
        " FROM keel.backfills WHERE migration = %s ORDER BY started_at, step",
        (name,),
    ).fetchall()
    return [{"step": r[0], "table": r[1], "rows_done": r[2], "rows_estimated": r[3], "batches": r[4], "done": r[5],
             "started_at": r[6].isoformat(), "updated_at": r[7].isoformat()} for r in rows]
