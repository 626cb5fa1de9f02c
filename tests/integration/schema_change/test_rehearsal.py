"""keel.postgres.schema_change with ``rehearse``, through ansible-playbook: a migration rehearsed on a restored backup.

Real PostgreSQL, a real backup in a real S3 store (SeaweedFS). Every test ends
with the promise that holds whatever the outcome: no scratch database is left.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.backup.world import MARKER, TENANT_SQL, BackupWorld, new_world
from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

pytestmark = pytest.mark.integration

WIDEN_AMOUNT = [{"alter_column": {"table": "orders", "column": "amount", "type": "numeric(14,2)"}}]
# Every amount is below 10000 (20000 * 0.37): validating this check fails on the restored rows.
IMPOSSIBLE_CHECK = [{"add_check": {"table": "orders", "name": "orders_amount_large", "check": "amount > 1000000"}}]
MASK_EMAIL = [{"table": "public.customers", "column": "email", "expression": "md5(email)"}]
QUERIES = [
    {"name": "order totals", "sql": "SELECT customer_id, sum(amount) FROM orders GROUP BY customer_id"},
    # Counts the customers whose e-mail address is readable: none once masking ran.
    {"name": "readable emails", "sql": "SELECT id FROM customers WHERE email LIKE '%@example.test'"},
]


@pytest.fixture
def world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook):
    world = new_world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook, TENANT_SQL.format(marker=MARKER))
    world.add_tenant("acme")
    world.backup("acme")
    yield world
    assert scratch_databases(pg_cluster) == [], "every scratch database is dropped"


def scratch_databases(pg_cluster) -> list:
    return pg_cluster.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'keel\_rehearse\_%'")


def schema_change(world: BackupWorld, operations: list, check: bool = False, **options: Any) -> tuple[Any, dict]:
    args = {**world.connection, "db": world.database, "name": "2026_11_rehearsed", "operations": operations, "state": "completed",
            "lock_timeout": "500ms", "batch_size": 5000, "backfill_pause_ratio": 0}
    args.update(options)
    result = world.run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args}, check=check)
    return result, result.task("schema change")["result"]


def rehearse_options(world: BackupWorld, **rehearse: Any) -> dict:
    settings = {"backup": "latest", "tenant": "acme", "masking": MASK_EMAIL, "queries": QUERIES, "runs": 5, "warmup": 1}
    settings.update(rehearse)
    return {"rehearse": settings, "store": world.s3_store(), "key_provider": world.key_provider}


def amount_type(world: BackupWorld) -> str:
    return world.pg_cluster.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'",
        dbname=world.database)[0][0]


def has_keel_catalog(world: BackupWorld) -> bool:
    return world.pg_cluster.execute("SELECT to_regnamespace('keel') IS NOT NULL", dbname=world.database)[0][0]


def test_rehearsal_restores_masks_migrates_and_predicts_without_touching_the_real_database(world):
    result, task = schema_change(world, WIDEN_AMOUNT, **rehearse_options(world))

    assert result.rc == 0, task
    assert task["changed"] is False
    rehearsal = task["rehearsal"]
    assert rehearsal["outcome"] == "passed", rehearsal
    assert rehearsal["tenant"] == "acme" and rehearsal["backup_id"]
    assert rehearsal["scratch_database"].startswith("keel_rehearse_acme_")
    assert rehearsal["scratch_dropped"] is True
    assert rehearsal["migration"]["phase"] == "completed"
    assert set(rehearsal["stages_ms"]) >= {"restore", "masking", "measure_before", "migrate", "measure_after", "drop_scratch"}

    predicted = rehearsal["predicted"]
    assert predicted["backup_id"] == rehearsal["backup_id"]
    assert set(predicted["phases_ms"]) >= {"validate", "start", "complete"}
    assert predicted["duration_ms"] > 0
    assert predicted["wal_bytes"] > 0, "a 20000-row backfill writes WAL"
    assert predicted["rows_backfilled"] == 20000
    assert predicted["lock_attempts"] >= 1
    assert predicted["lock_timeouts"] == 0
    assert "public.orders" in predicted["table_sizes"]
    assert isinstance(predicted["size_change_bytes"], int)

    latency = {query["name"]: query for query in rehearsal["latency"]["queries"]}
    assert set(latency) == {"order totals", "readable emails"}
    assert latency["order totals"]["samples_during"] >= 1
    assert latency["order totals"]["p99_ms_before"] > 0 and latency["order totals"]["p99_ms_after"] > 0
    assert "p99_delta_pct_during" in rehearsal["latency"] and "p99_delta_pct_during" in predicted

    # Masking ran before anything read the data: the replayed query finds no readable address in the scratch database,
    # while the real database holds 2001 of them.
    assert rehearsal["masking"] == [{"table": "public.customers", "column": "email", "rows": 2001}]
    assert latency["readable emails"]["rows_before"] == 0 and latency["readable emails"]["rows_after"] == 0
    assert world.pg_cluster.execute("SELECT count(*) FROM customers WHERE email LIKE '%%@example.test'", dbname=world.database)[0][0] == 2001
    assert MARKER not in json.dumps(task), "no row value comes back"

    # Nothing touched the real database: the old type, no catalog, no migration.
    assert amount_type(world) == "numeric(10,2)"
    assert not has_keel_catalog(world)


def test_a_migration_that_fails_in_rehearsal_is_reported_and_its_scratch_database_dropped(world):
    result, task = schema_change(world, IMPOSSIBLE_CHECK, **rehearse_options(world, queries=[], masking=[]))

    assert result.rc != 0
    assert task["error"] == "rehearsal_failed"
    rehearsal = task["rehearsal"]
    assert rehearsal["outcome"] == "failed"
    assert rehearsal["reason"] != "scratch_not_dropped"
    assert "orders_amount_large" in rehearsal["message"]
    assert rehearsal["scratch_dropped"] is True
    assert rehearsal["predicted"] is None
    assert scratch_databases(world.pg_cluster) == []
    assert not has_keel_catalog(world)
    assert world.pg_cluster.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'orders_amount_large'", dbname=world.database)[0][0] == 0


def test_the_real_run_sets_its_figures_beside_the_rehearsals_predictions(world):
    result, rehearsed = schema_change(world, WIDEN_AMOUNT, **rehearse_options(world, queries=[]))
    assert result.rc == 0, rehearsed
    predicted = rehearsed["rehearsal"]["predicted"]

    result, task = schema_change(world, WIDEN_AMOUNT, rehearsal_predictions=predicted)

    assert result.rc == 0, task
    assert task["changed"] is True and task["phase"] == "completed"
    assert amount_type(world) == "numeric(14,2)"
    compared = task["prediction_vs_actual"]
    assert compared["backup_id"] == predicted["backup_id"]
    for figure in ("duration_ms", "wal_bytes", "size_change_bytes", "peak_extra_bytes_held", "lock_attempts", "lock_timeouts",
                   "longest_lock_attempt_ms"):
        assert compared[figure]["predicted"] == predicted[figure], figure
        assert compared[figure]["actual"] is not None, figure
    assert compared["duration_ms"]["actual"] > 0
    assert compared["wal_bytes"]["actual"] > 0
    assert compared["lock_attempts"]["actual"] >= 1
    assert set(compared["phases_ms"]) >= {"start", "complete"}
    assert compared["phases_ms"]["complete"]["predicted"] == predicted["phases_ms"]["complete"]


def test_rehearse_needs_a_store_and_refuses_predictions_before_anything_runs(world):
    options = rehearse_options(world)
    del options["store"]
    result, task = schema_change(world, WIDEN_AMOUNT, **options)
    assert result.rc != 0 and task.get("field") == "store", task

    result, task = schema_change(world, WIDEN_AMOUNT, rehearsal_predictions={"duration_ms": 1}, **rehearse_options(world))
    assert result.rc != 0 and task.get("field") == "rehearsal_predictions", task
    assert not has_keel_catalog(world)


def test_check_mode_plans_the_rehearsal_and_creates_nothing(world):
    result, task = schema_change(world, WIDEN_AMOUNT, check=True, **rehearse_options(world))

    assert result.rc == 0, task
    assert task["changed"] is False
    assert task["rehearsal"]["outcome"] == "planned"
    assert task["rehearsal"]["backup_id"] and task["rehearsal"]["tables"] >= 2
    assert task["rehearsal"]["queries"] == ["order totals", "readable emails"]
    assert not has_keel_catalog(world)


ROLE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: run the role
      block:
        - name: online migration
          ansible.builtin.include_role:
            name: keel.postgres.online_migration
      rescue:
        - name: the role failed
          ansible.builtin.debug:
            msg: failed
    - name: report
      ansible.builtin.debug:
        var: online_migration_report
"""


def run_role(world: BackupWorld, tmp_path, operations: list) -> tuple[Any, dict]:
    role_vars = {
        "online_migration_name": "2026_11_role_rehearsed",
        "online_migration_db": world.database,
        "online_migration_connection": world.connection,
        "online_migration_operations": operations,
        "online_migration_work_dir": str(tmp_path / "work"),
        "online_migration_preflight_fail_on": {"require_primary_key": True},
        "online_migration_backup_tenants": ["acme"],
        "online_migration_tenants": world.tenants,
        "online_migration_store": world.s3_store(),
        "online_migration_key_provider": world.key_provider,
        "online_migration_require_rehearsal": True,
        "online_migration_rehearsal_masking": MASK_EMAIL,
        "online_migration_rehearsal_runs": 3,
        "online_migration_rehearsal_warmup": 0,
        "online_migration_revert_window": "0",
    }
    result = world.run_playbook(ROLE_PLAYBOOK, extra_vars=role_vars)
    return result, result.task("report")["result"]["online_migration_report"]


def test_the_role_refuses_to_migrate_when_the_rehearsal_fails(world, tmp_path):
    result, report = run_role(world, tmp_path, IMPOSSIBLE_CHECK)

    assert result.task("the role failed"), "the role fails the play"
    assert report["outcome"] == "stopped before any change", report
    assert report["rehearsal"]["outcome"] == "failed"
    assert report["rehearsal"]["scratch_dropped"] is True
    assert not has_keel_catalog(world), "the real database was never migrated"


def test_the_role_rehearses_then_migrates_and_reports_the_predictions(world, tmp_path):
    result, report = run_role(world, tmp_path, WIDEN_AMOUNT)

    assert result.rc == 0
    assert report["outcome"] == "finalized", report
    assert report["rehearsal"]["outcome"] == "passed"
    assert report["rehearsal"]["predicted"]["rows_backfilled"] == 20000
    assert "rehearsal" in [stage["stage"] for stage in report["stages"]]
    assert amount_type(world) == "numeric(14,2)"
