"""Fixtures shared by the integration tests of keel.postgres modules."""

from __future__ import annotations

import pytest

from tests.harness.collection_path import ensure_collection_importable

ensure_collection_importable()

# The module's options come in as one variable so each test states only what it varies.
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: preflight
      keel.postgres.preflight: "{{ preflight_args }}"
      register: preflight_result
"""


SCHEMA_CHANGE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: schema change
      keel.postgres.schema_change: "{{ module_args }}"
"""

MIGRATION_INFO_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: migration_info
      keel.postgres.migration_info: "{{ module_args }}"
"""


@pytest.fixture
def connection(pg_cluster, pg_db):
    """Connection options for the test's own database on the session cluster."""
    return {"login_host": pg_cluster.host, "port": pg_cluster.port, "login_user": pg_cluster.user, "db": pg_db}


@pytest.fixture
def run_preflight(run_playbook):
    """Run keel.postgres.preflight with the given options; returns (playbook result, task record)."""

    def run(check=False, **args):
        result = run_playbook(PLAYBOOK, extra_vars={"preflight_args": args}, check=check)
        return result, result.task("preflight")

    return run


@pytest.fixture
def items(pg_cluster, pg_db):
    """A 200k-row table ``items`` (id, code, payload) with an index on ``code``, and a 100-row table ``small``, for
    latency measurements: vacuumed, frozen and checkpointed, so no background work left from the load (autovacuum,
    hint bits, dirty buffers) lands in one measurement and not the next."""
    pg_cluster.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, code integer NOT NULL, payload text NOT NULL);"
        "INSERT INTO items SELECT g, g, md5(g::text) FROM generate_series(1, 200000) g;"
        "CREATE INDEX items_code ON items (code);"
        "CREATE TABLE small (id integer PRIMARY KEY, v integer NOT NULL);"
        "INSERT INTO small SELECT g, g FROM generate_series(1, 100) g",
        dbname=pg_db,
    )
    for statement in ("VACUUM (ANALYZE, FREEZE) items", "VACUUM (ANALYZE, FREEZE) small", "CHECKPOINT"):
        pg_cluster.execute(statement, dbname=pg_db)


@pytest.fixture
def migration_info(run_playbook, connection):
    """keel.postgres.migration_info on the test's database; its whole result."""

    def run(**options):
        result = run_playbook(MIGRATION_INFO_PLAYBOOK, extra_vars={"module_args": dict(connection, **options)})
        result.assert_ok()
        return result.task("migration_info")["result"]

    return run
