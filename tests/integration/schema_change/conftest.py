"""Fixtures for the schema_change engine tests: run migrations against the test's own database.

Tests drive ``MigrationRun`` directly (no ansible-playbook), each run on a new
connection as the module would open it, and compare ``pg_dump --schema-only``
output to prove what a phase changed, or that nothing changed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any, Dict, List, Optional, Tuple

import psycopg
import pytest
from psycopg import sql

from tests.harness.collection_path import ensure_collection_importable

ensure_collection_importable()

# Imported after the collection is importable.
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import (  # noqa: E402
    MigrationRequest,
    MigrationRun,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy  # noqa: E402

# Short lock waits and small batches: 1000-row tables are backfilled in several batches.
POLICY = LockPolicy(lock_timeout=0.5, retries=5, statement_timeout=30)
BACKFILL = BackfillSettings(batch_size=300, pause_ratio=0.0, max_replication_lag=None, lag_wait_timeout=60)


class Db:
    """Reads and writes on the test database, each on its own autocommit connection (like an application)."""

    def __init__(self, cluster: Any, dbname: str) -> None:
        self.cluster = cluster
        self.dbname = dbname

    def connect(self) -> psycopg.Connection:
        return self.cluster.connect(self.dbname)

    def execute(self, query: Any, params: Any = None) -> List[Tuple[Any, ...]]:
        return self.cluster.execute(query, params, dbname=self.dbname)

    def rolled_back(self, query: Any, params: Any = None) -> List[Tuple[Any, ...]]:
        """Write as the application would and see the outcome, then undo it, so a check leaves no data behind."""
        with self.connect() as conn, conn.transaction(force_rollback=True):
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def value(self, query: Any, params: Any = None) -> Any:
        rows = self.execute(query, params)
        assert len(rows) == 1, "expected one row from {0!r}, got {1!r}".format(query, rows)
        return rows[0][0]

    def column_values(self, query: Any, params: Any = None) -> List[Any]:
        return [row[0] for row in self.execute(query, params)]

    # -- catalog facts -----------------------------------------------------------------

    def table_exists(self, table: str) -> bool:
        return self.value("SELECT to_regclass(%s) IS NOT NULL", (table,))

    def columns(self, table: str) -> Dict[str, Tuple[str, bool, Optional[str]]]:
        """name -> (type with modifiers, NOT NULL, default expression)."""
        rows = self.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (table,))
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def indexes(self, table: str) -> Dict[str, Tuple[str, bool]]:
        """name -> (definition, valid)."""
        rows = self.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass", (table,))
        return {row[0]: (row[1], row[2]) for row in rows}

    def constraints(self, table: str) -> Dict[str, Tuple[str, bool]]:
        """name -> (definition, validated)."""
        rows = self.execute(
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conrelid = %s::regclass",
            (table,))
        return {row[0]: (row[1], row[2]) for row in rows}

    def triggers(self, table: str) -> List[str]:
        return self.column_values(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY 1", (table,))

    def keel_helpers(self) -> List[str]:
        """Everything named like a migration helper (_keel_...) outside schema keel, plus keel's functions."""
        return self.column_values(
            "SELECT 'relation ' || c.oid::regclass::text FROM pg_class c"
            "  WHERE c.relname LIKE '\\_keel\\_%%' AND c.relnamespace <> 'keel'::regnamespace"
            "    AND c.relpersistence <> 't'"
            " UNION ALL SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname FROM pg_attribute a"
            "  JOIN pg_class c ON c.oid = a.attrelid"
            "  WHERE a.attname LIKE '\\_keel\\_%%' AND NOT a.attisdropped AND c.relkind IN ('r', 'p')"
            "    AND c.relpersistence <> 't'"
            " UNION ALL SELECT 'constraint ' || conname FROM pg_constraint WHERE conname LIKE '\\_keel\\_%%'"
            " UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE '\\_keel\\_%%'"
            " UNION ALL SELECT 'function keel.' || proname FROM pg_proc WHERE pronamespace = 'keel'::regnamespace"
            " ORDER BY 1") if self.value("SELECT to_regnamespace('keel') IS NOT NULL") else []

    def invalid_indexes(self) -> List[str]:
        return self.column_values("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1")

    def migration_rows(self) -> List[Tuple[Any, ...]]:
        """(name, phase, rollback_seconds, last_error) of every recorded migration; [] without a catalog."""
        if not self.value("SELECT to_regclass('keel.migrations') IS NOT NULL"):
            return []
        return self.execute("SELECT name, phase, rollback_seconds, last_error FROM keel.migrations ORDER BY name")

    def data(self) -> Dict[str, str]:
        """Every user table's rows, as text sorted independently of physical order, for equality checks."""
        tables = self.column_values(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'keel')"
            "   AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1")
        result = {}
        for table in tables:
            query = sql.SQL("SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '')"
                            " FROM {0} AS r").format(sql.SQL(table))
            result[table] = self.value(query)
        return result


@pytest.fixture
def db(pg_cluster: Any, pg_db: str) -> Db:
    return Db(pg_cluster, pg_db)


@pytest.fixture
def migrate(pg_cluster: Any, pg_db: str) -> Callable[..., Dict[str, Any]]:
    """``migrate(name, operations, state, check=False, **request_fields)``: one engine run on a new connection;
    the result dict. ``request_fields`` set other MigrationRequest fields (``publish_views``, ``revert_window``)."""

    def run(name: str, operations: List[Dict[str, Any]], state: str, check: bool = False,
            backfill: BackfillSettings = BACKFILL, **request_fields: Any) -> Dict[str, Any]:
        request = MigrationRequest(name, operations, state, POLICY, backfill)._replace(**request_fields)
        with pg_cluster.connect(pg_db) as conn:
            return MigrationRun(conn, request, RunMetrics()).run(check_mode=check)

    return run


def _dump_environment(pg_cluster: Any) -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(PGHOST=pg_cluster.host, PGPORT=str(pg_cluster.port), PGUSER=pg_cluster.user)
    return env


@pytest.fixture
def schema_dump(pg_cluster: Any, pg_db: str) -> Callable[[], str]:
    """``schema_dump()``: the database's schema without the keel catalog, as pg_dump prints it.

    pg_dump 15.14+ frames its output with ``\\restrict <random key>``; those two lines differ on
    every run and are left out.
    """

    def dump() -> str:
        completed = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--exclude-schema=keel", pg_db],
            env=_dump_environment(pg_cluster), capture_output=True, text=True, timeout=120, check=False)
        assert completed.returncode == 0, "pg_dump failed: {0}".format(completed.stderr)
        lines = [line for line in completed.stdout.splitlines()
                 if not line.startswith(("\\restrict ", "\\unrestrict "))]
        return "\n".join(lines) + "\n"

    return dump
