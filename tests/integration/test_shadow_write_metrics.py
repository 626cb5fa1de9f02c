"""shadow_write's metrics through real ansible-playbook runs: rows mirrored, drift found, trigger cost per write."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: shadow write
      keel.postgres.shadow_write: "{{ module_args }}"
"""

ROWS = 3000
MAPPING = {"id": "id", "amount_cents": "(amount * 100)::bigint", "customer_id": "customer_id"}
TARGET_DEFINITION = "id bigint PRIMARY KEY, amount_cents bigint NOT NULL DEFAULT 0, customer_id bigint"
SHADOW = "public.orders->public.orders_v2"


@pytest.fixture
def orders(pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, amount numeric(10,2) NOT NULL DEFAULT 0, customer_id bigint);"
        "INSERT INTO orders (amount, customer_id) SELECT g * 1.25, g % 97 FROM generate_series(1, {0}) g;"
        "ANALYZE orders".format(ROWS), dbname=pg_db)


@pytest.fixture
def shadow(run_playbook, connection):
    def run(state, **options):
        args = dict(connection, source="orders", target="orders_v2", target_definition=TARGET_DEFINITION,
                    mapping=MAPPING, state=state, batch_size=500, **options)
        result = run_playbook(PLAYBOOK, extra_vars={"module_args": args})
        result.assert_ok()
        return result.task("shadow write")["result"]

    return run


def test_enable_reports_rows_copied_drift_and_labels(shadow, orders, pg_db):
    enabled = shadow("enabled", drift_check="full")
    metrics = enabled["metrics"]
    assert metrics["counters"]["rows_backfilled"] == ROWS
    assert metrics["phases"]["backfill"]["rates"]["rows_backfilled_per_second"] > 0
    assert metrics["phases"]["batch"]["repetitions"] == metrics["counters"]["backfill_batches"] + 1
    assert metrics["counters"]["rows_checked"] == ROWS
    assert metrics["phases"]["drift_check"]["counters"]["rows_checked"] == ROWS
    gauges = metrics["gauges"]
    assert gauges["source_rows"] == gauges["target_rows"] == ROWS
    assert gauges["drift_rows"] == 0 and gauges["pending_changes"] == 0
    assert metrics["labels"] == {"db": pg_db, "schema": "public", "table": "public.orders", "migration": SHADOW}
    # track_functions is off by default: the trigger's cost was not measured, so it is not reported.
    assert enabled["trigger_cost"] is None and "trigger_ms_per_write" not in gauges


def test_drift_found_is_a_metric(shadow, orders, pg_cluster, pg_db):
    shadow("enabled", drift_check="none")
    # Writes behind the trigger's back: a missing row and a changed one.
    pg_cluster.execute("SET session_replication_role = replica;"
                       "DELETE FROM orders_v2 WHERE id = 10; UPDATE orders_v2 SET customer_id = -1 WHERE id = 20",
                       dbname=pg_db)
    checked = shadow("enabled", drift_check="full")
    gauges = checked["metrics"]["gauges"]
    assert checked["drift"]["drift"] == 2
    assert gauges["drift_rows"] == 2 and gauges["drift_missing_in_target"] == 1 and gauges["drift_different"] == 1
    assert gauges["drift_extra_in_target"] == 0


def test_trigger_cost_per_write_when_the_server_measures_it(shadow, orders, pg_cluster, pg_db):
    shadow("enabled", drift_check="none")
    pg_cluster.execute("ALTER DATABASE {0} SET track_functions = 'pl'".format(pg_db))
    # Each statement on a new session that picks up the setting; 200 rows written through the trigger.
    pg_cluster.execute("UPDATE orders SET customer_id = customer_id + 1 WHERE id <= 150", dbname=pg_db)
    pg_cluster.execute("INSERT INTO orders (amount, customer_id) SELECT 1, 1 FROM generate_series(1, 50)",
                       dbname=pg_db)
    # A session's statistics reach the shared counters when it ends; wait until both have.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = pg_cluster.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions"
                                   " WHERE schemaname = 'keel'", dbname=pg_db)[0][0]
        if calls >= 200:
            break
        time.sleep(0.1)
    measured = shadow("enabled", drift_check="sample")
    cost = measured["trigger_cost"]
    assert cost["calls"] == 200
    assert cost["total_ms"] > 0 and cost["ms_per_write"] == pytest.approx(cost["total_ms"] / 200, rel=1e-3)
    gauges = measured["metrics"]["gauges"]
    assert gauges["trigger_calls"] == 200 and gauges["trigger_ms_per_write"] == cost["ms_per_write"]
    assert gauges["target_rows"] == ROWS + 50
