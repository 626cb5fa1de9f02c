"""Partitioned tables: what works online, and what is refused with a clear message."""

from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationRequest, MigrationRun
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy

pytestmark = pytest.mark.integration


@pytest.fixture
def measurements(pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE sensors (id int PRIMARY KEY);"
        "INSERT INTO sensors SELECT generate_series(1, 10);"
        "CREATE TABLE measurements (id bigint, at date, sensor int, value float8, PRIMARY KEY (id, at))"
        " PARTITION BY RANGE (at);"
        "CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "INSERT INTO measurements SELECT g, date '2025-06-01' + (g % 400), 1 + g % 10, g * 0.5"
        " FROM generate_series(1, 8000) g; ANALYZE measurements",
        dbname=pg_db)


def migrate(pg_cluster, pg_db, name, operations, state):
    with pg_cluster.connect(pg_db) as conn:
        request = MigrationRequest(name, operations, state, LockPolicy(0.5, 10, 30), BackfillSettings(1000, 0.0, None, 60))
        return MigrationRun(conn, request, RunMetrics()).run(check_mode=False)


def index_validity(pg_cluster, pg_db, name):
    rows = pg_cluster.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                              " WHERE c.relname = %s", (name,), dbname=pg_db)
    return rows[0][0] if rows else None


def test_index_on_a_partitioned_table_is_built_per_partition_and_attached(pg_cluster, pg_db, measurements):
    operations = [{"create_index": {"table": "measurements", "name": "measurements_sensor", "columns": ["sensor"]}}]
    migrate(pg_cluster, pg_db, "idx", operations, "started")
    assert index_validity(pg_cluster, pg_db, "measurements_sensor") is True
    for partition in ("measurements_2025", "measurements_2026"):
        assert index_validity(pg_cluster, pg_db, "measurements_sensor_" + partition) is True
    attached = pg_cluster.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'measurements_sensor'::regclass",
                                  dbname=pg_db)[0][0]
    assert attached == 2
    migrate(pg_cluster, pg_db, "idx", operations, "rolled_back")
    assert index_validity(pg_cluster, pg_db, "measurements_sensor") is None
    assert index_validity(pg_cluster, pg_db, "measurements_sensor_measurements_2025") is None


def test_add_column_and_check_work_on_a_partitioned_table(pg_cluster, pg_db, measurements):
    operations = [
        {"add_column": {"table": "measurements", "column": "unit", "type": "text", "default": "'celsius'",
                        "not_null": True}},
        {"add_check": {"table": "measurements", "name": "measurements_value_positive", "check": "value >= 0"}},
    ]
    result = migrate(pg_cluster, pg_db, "unit", operations, "completed")
    assert result["phase"] == "completed"
    assert pg_cluster.execute("SELECT count(*) FROM measurements WHERE unit = 'celsius'", dbname=pg_db)[0][0] == 8000
    assert pg_cluster.execute("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'measurements_2026'::regclass"
                              " AND attname = 'unit'", dbname=pg_db)[0][0] is True


@pytest.mark.parametrize(
    ("operation", "text"),
    [
        ({"add_foreign_key": {"table": "measurements", "name": "fk", "columns": ["sensor"],
                              "references": {"table": "sensors", "columns": ["id"]}}},
         "cannot add a NOT VALID foreign key"),
        ({"alter_column": {"table": "measurements", "column": "value", "type": "numeric"}}, "is partitioned"),
        ({"rewrite_table": {"table": "measurements"}}, "neither it nor its partitions can be rewritten online yet"),
        ({"rewrite_table": {"table": "measurements_2025"}}, "it is a partition"),
    ],
)
def test_what_cannot_run_online_is_refused_clearly(pg_cluster, pg_db, measurements, operation, text):
    with pytest.raises(InvalidOption, match=text):
        migrate(pg_cluster, pg_db, "refused", [operation], "started")
    assert pg_cluster.execute("SELECT to_regnamespace('keel')", dbname=pg_db)[0][0] is None
