"""The pagila sample database as a real workload for keel.postgres.schema_change.

The suite is opt-in: it needs the pagila SQL files, which live outside the
project (``../shared/data/pagila``) and are never copied into it. Point
``KEEL_PAGILA_DIR`` at that directory to enable it; without the variable the
test modules skip themselves, and with it nothing is skipped (a wrong path
fails loudly instead).

pagila is loaded once per session into a template database with ``psql -f``
(read-only from its directory) and analyzed; each test gets its own copy made
``WITH TEMPLATE``, which takes a fraction of a second.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

PAGILA_DIR_VARIABLE = "KEEL_PAGILA_DIR"
PAGILA_FILES = ("pagila-schema.sql", "pagila-data.sql")

# The module's options come in as one variable so each test states only what it varies.
SCHEMA_CHANGE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: schema_change
      keel.postgres.schema_change: "{{ module_args }}"
"""


def pagila_dir_or_skip() -> Path:
    """The directory named by KEEL_PAGILA_DIR; skips the calling module when the variable is unset."""
    value = os.environ.get(PAGILA_DIR_VARIABLE, "").strip()
    if not value:
        pytest.skip(f"set {PAGILA_DIR_VARIABLE} to the pagila directory (../shared/data/pagila) to run the real-workload suite",
                    allow_module_level=True)
    return Path(value)


def _client_environment(cluster: Any) -> dict[str, str]:
    """Our environment with the cluster's PGHOST/PGPORT/PGUSER instead of any PG* of the caller (no password: trust)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    environment.update(PGHOST=cluster.host, PGPORT=str(cluster.port), PGUSER=cluster.user)
    return environment


class Pagila:
    """One test's own copy of pagila, with the reads the tests compare before and after a migration."""

    def __init__(self, cluster: Any, name: str) -> None:
        self.cluster = cluster
        self.name = name

    # -- SQL --------------------------------------------------------------------------------

    def execute(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        return self.cluster.execute(query, params, dbname=self.name)

    def value(self, query: Any, params: Any = None) -> Any:
        rows = self.execute(query, params)
        assert len(rows) == 1, f"expected one row from {query!r}, got {rows!r}"
        return rows[0][0]

    def connect(self) -> Any:
        return self.cluster.connect(self.name)

    def rolled_back(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        """Write as the application would and return what came back, then undo it."""
        with self.connect() as conn, conn.transaction(force_rollback=True):
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    # -- facts ------------------------------------------------------------------------------

    def columns(self, table: str) -> dict[str, tuple[str, bool]]:
        """name -> (type with modifiers, NOT NULL), in column order."""
        rows = self.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))
        return {row[0]: (row[1], row[2]) for row in rows}

    def constraints(self, table: str) -> dict[str, tuple[str, bool]]:
        """name -> (definition, validated)."""
        rows = self.execute("SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
                            " WHERE conrelid = %s::regclass", (table,))
        return {row[0]: (row[1], row[2]) for row in rows}

    def fingerprint(self, relation: str, columns: list[str] | None = None) -> str:
        """Row count and a digest of the rows (or of the given columns), independent of physical order.

        Works for views too, so "the view returns the same rows" is one comparison.
        """
        selected = sql.SQL("r") if columns is None else sql.SQL("({0})").format(
            sql.SQL(", ").join(sql.Identifier(column) for column in columns))
        query = sql.SQL("SELECT count(*) || ':' || coalesce(md5(string_agg({0}::text, E'\\n' ORDER BY {0}::text)), '')"
                        " FROM {1} AS r").format(selected, sql.SQL(relation))
        return self.value(query)

    def keel_catalog_exists(self) -> bool:
        return self.value("SELECT to_regnamespace('keel') IS NOT NULL")

    def keel_helpers(self) -> list[str]:
        """Objects a migration adds for its own use (named _keel_...) outside schema keel."""
        return [row[0] for row in self.execute(
            "SELECT 'relation ' || oid::regclass::text FROM pg_class WHERE relname LIKE '\\_keel\\_%'"
            "  AND relnamespace <> coalesce(to_regnamespace('keel'), 0)"
            " UNION ALL SELECT 'column ' || attrelid::regclass::text || '.' || attname FROM pg_attribute"
            "  WHERE attname LIKE '\\_keel\\_%' AND NOT attisdropped"
            " UNION ALL SELECT 'constraint ' || conname FROM pg_constraint WHERE conname LIKE '\\_keel\\_%'"
            " UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE '\\_keel\\_%' ORDER BY 1")]

    def migration_phase(self, name: str) -> str | None:
        if not self.value("SELECT to_regclass('keel.migrations') IS NOT NULL"):
            return None
        rows = self.execute("SELECT phase FROM keel.migrations WHERE name = %s", (name,))
        return rows[0][0] if rows else None

    def schema_dump(self) -> str:
        """``pg_dump --schema-only`` without keel's own schemas (the catalog and the version schemas of views
        each migration publishes) and without pg_dump's random \\restrict framing."""
        versions = [row[0] for row in self.execute(
            "SELECT nspname FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE"
            " 'keel.postgres version schema%%'")]
        completed = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--exclude-schema=keel",
             *["--exclude-schema=" + name for name in versions], self.name],
            env=_client_environment(self.cluster), capture_output=True, text=True, timeout=120, check=False)
        assert completed.returncode == 0, f"pg_dump failed: {completed.stderr}"
        lines = [line for line in completed.stdout.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))]
        return "\n".join(lines) + "\n"

    # -- keel ------------------------------------------------------------------------------

    def connection_options(self) -> dict[str, Any]:
        return {"login_host": self.cluster.host, "port": self.cluster.port, "login_user": self.cluster.user, "db": self.name}


def load_pagila(cluster: Any, directory: Path, database: str) -> None:
    """psql -f each pagila file into `database`, stopping at the first error."""
    for file_name in PAGILA_FILES:
        completed = subprocess.run(
            ["psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", f"--dbname={database}", f"--file={directory / file_name}"],
            env=_client_environment(cluster), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
            check=False)
        assert completed.returncode == 0, f"loading {directory / file_name} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}"


@pytest.fixture(scope="session")
def pagila_template(pg_cluster: Any) -> Iterator[str]:
    """A database holding pagila, loaded once per session; only ever used as a template."""
    directory = pagila_dir_or_skip()
    missing = [name for name in PAGILA_FILES if not (directory / name).is_file()]
    if missing:
        pytest.fail(f"{PAGILA_DIR_VARIABLE}={directory} does not hold {', '.join(missing)}", pytrace=False)
    name = f"pagila_template_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    try:
        load_pagila(pg_cluster, directory, name)
        # pagila creates its materialized view WITH NO DATA; a live database would have it populated.
        pg_cluster.execute("REFRESH MATERIALIZED VIEW public.rental_by_category", dbname=name)
        # A production database has statistics; keel's plan reports the planner's row estimates.
        pg_cluster.execute("ANALYZE", dbname=name)
        yield name
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pagila(pg_cluster: Any, pagila_template: str) -> Iterator[Pagila]:
    """This test's own copy of pagila (CREATE DATABASE ... TEMPLATE), dropped afterwards."""
    name = f"pagila_{uuid.uuid4().hex[:12]}"
    pg_cluster.execute(sql.SQL("CREATE DATABASE {0} TEMPLATE {1}").format(sql.Identifier(name), sql.Identifier(pagila_template)))
    try:
        yield Pagila(pg_cluster, name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def migrate(run_playbook: Callable[..., Any], pagila: Pagila) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """``migrate(name, operations, state, check=False, **options)``: keel.postgres.schema_change through
    ansible-playbook on the test's pagila; returns (playbook result, the task's result)."""

    def run(name: str, operations: list[dict[str, Any]], state: str = "completed", check: bool = False,
            **options: Any) -> tuple[Any, dict[str, Any]]:
        args = dict(pagila.connection_options(), name=name, operations=operations, state=state, **options)
        result = run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args}, check=check)
        return result, result.task("schema_change")["result"]

    return run
