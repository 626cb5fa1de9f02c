"""schema_change's metrics and cost signals, and migration_info's progress, through real ansible-playbook runs.

Sizes are compared with what the test reads from the server itself
(pg_total_relation_size), on tables whose autovacuum is off and which were
vacuumed before, so nothing but the migration changes them in between.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg import sql

from tests.harness.postgres_cluster import PostgresCluster
from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

pytestmark = pytest.mark.integration


def widen(table):
    return [{"alter_column": {"table": table, "column": "amount", "type": "bigint"}}]


def make_table(pg_cluster, pg_db, table, rows):
    pg_cluster.execute(
        sql.SQL("CREATE TABLE {t} (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 0, note text)"
                " WITH (autovacuum_enabled = false);"
                "INSERT INTO {t} (amount, note) SELECT g, 'note ' || g FROM generate_series(1, {n}) g;"
                "CREATE INDEX ON {t} (note)").format(t=sql.Identifier(table), n=sql.Literal(rows)),
        dbname=pg_db)
    pg_cluster.execute(sql.SQL("VACUUM ANALYZE {0}").format(sql.Identifier(table)), dbname=pg_db)


def total_size(pg_cluster, pg_db, table):
    return pg_cluster.execute("SELECT pg_total_relation_size(%s::regclass)", (table,), dbname=pg_db)[0][0]


@pytest.fixture
def migrate(run_playbook, connection):
    def run(name, operations, **options):
        args = dict(connection, name=name, operations=operations, state="completed", revert_window=0,
                    batch_size=500, backfill_pause_ratio=0)
        args.update(options)
        result = run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args})
        return result, result.task("schema change")["result"]

    return run


def test_phases_rows_wal_and_sizes_are_measured(migrate, pg_cluster, pg_db):
    make_table(pg_cluster, pg_db, "small_orders", 2000)
    make_table(pg_cluster, pg_db, "big_orders", 20000)
    before = total_size(pg_cluster, pg_db, "small_orders")

    run, result = migrate("widen_small", widen("small_orders"))
    run.assert_ok()
    metrics = result["metrics"]
    counters, gauges, phases = metrics["counters"], metrics["gauges"], metrics["phases"]
    assert result["phases"] == ["start", "complete", "finalize"]
    for phase in ("start", "complete", "finalize", "backfill", "batch"):
        assert phase in phases and phases[phase]["duration_ms"] > 0, (phase, phases)
    # Batches are one aggregated phase, not one per batch; the last, empty one finds the end.
    assert phases["batch"]["repetitions"] == counters["backfill_batches"] + 1
    assert counters["rows_backfilled"] == 2000 and counters["backfill_batches"] == 4
    assert phases["backfill"]["counters"]["rows_backfilled"] == 2000
    assert phases["backfill"]["rates"]["rows_backfilled_per_second"] > 0
    assert counters["lock_attempts"] > 0 and "longest_lock_attempt_ms" in counters

    assert counters["wal_bytes"] > 0 and phases["start"]["counters"]["wal_bytes"] > 0
    assert counters["wal_bytes"] == sum(phases[p]["counters"].get("wal_bytes", 0)
                                        for p in ("start", "complete", "finalize"))
    assert "temp_bytes" in counters

    after = total_size(pg_cluster, pg_db, "small_orders")
    assert gauges["table_bytes_before"] + gauges["index_bytes_before"] == before
    assert gauges["table_bytes_after"] + gauges["index_bytes_after"] == after
    sizes = result["table_sizes"]["public.small_orders"]
    assert sizes["table_bytes_before"] + sizes["index_bytes_before"] == before
    assert sizes["table_bytes_after"] + sizes["index_bytes_after"] == after
    # Every row was rewritten by the backfill: the heap holds old and new versions until a vacuum.
    assert sizes["table_bytes_after"] > sizes["table_bytes_before"]
    assert {"name": "table_bytes_after", "labels": {"table": "public.small_orders"},
            "value": sizes["table_bytes_after"]} in metrics["series"]

    cost = result["cost_signals"]
    assert cost["wal_bytes"] == counters["wal_bytes"]
    assert cost["size_before_bytes"] == before and cost["size_after_bytes"] == after
    assert cost["extra_bytes_held"] == after - before == gauges["extra_bytes_held"]
    assert cost["peak_extra_bytes_held"] >= cost["extra_bytes_held"]
    assert cost["migration_seconds"] > 0 and cost["run_seconds"] > 0
    assert metrics["labels"] == {"db": pg_db, "schema": "public", "table": "public.small_orders",
                                 "migration": "widen_small"}

    big_run, big = migrate("widen_big", widen("big_orders"))
    big_run.assert_ok()
    assert big["metrics"]["counters"]["rows_backfilled"] == 20000
    assert big["metrics"]["counters"]["wal_bytes"] > counters["wal_bytes"]


def test_shadow_copy_is_extra_storage_held_until_finalized(migrate, pg_cluster, pg_db):
    make_table(pg_cluster, pg_db, "bloated", 5000)
    before = total_size(pg_cluster, pg_db, "bloated")
    rewrite = [{"rewrite_table": {"table": "bloated"}}]
    run, started = migrate("rewrite_bloated", rewrite, state="started", revert_window="1h")
    run.assert_ok()
    # The copy beside the table holds about the table's size again while the migration is started.
    assert started["cost_signals"]["extra_bytes_held"] >= before // 2
    assert started["metrics"]["counters"]["rows_backfilled"] == 5000
    run, finalized = migrate("rewrite_bloated", rewrite, state="finalized", revert_window="1h")
    run.assert_ok()
    cost = finalized["cost_signals"]
    assert cost["extra_bytes_held"] < started["cost_signals"]["extra_bytes_held"]
    assert cost["peak_extra_bytes_held"] >= started["cost_signals"]["extra_bytes_held"]


def test_probe_query_latency_is_sampled(migrate, pg_cluster, pg_db):
    make_table(pg_cluster, pg_db, "probed", 5000)
    run, result = migrate("widen_probed", widen("probed"), probe_query="SELECT count(*) FROM probed WHERE id < 100",
                          probe_interval="50ms", backfill_pause_ratio=1)
    run.assert_ok()
    probe = result["probe"]
    assert probe["samples"] > 0 and probe["errors"] == 0 and probe["first_error"] is None
    assert 0 < probe["p50_ms"] <= probe["p99_ms"] <= probe["max_ms"]
    gauges, counters = result["metrics"]["gauges"], result["metrics"]["counters"]
    assert counters["probe_samples"] == probe["samples"] and counters["probe_errors"] == 0
    assert gauges["probe_latency_p99_ms"] == probe["p99_ms"] and gauges["probe_latency_max_ms"] == probe["max_ms"]


@pytest.mark.parametrize("query", ["SELECT * FROM no_such_table", "UPDATE failing_probe SET note = 'probe'"])
def test_failing_probe_never_fails_the_migration(migrate, pg_cluster, pg_db, query):
    make_table(pg_cluster, pg_db, "failing_probe", 2000)
    run, result = migrate("widen_failing_probe", widen("failing_probe"), probe_query=query, probe_interval="50ms")
    run.assert_ok()
    assert result["phase"] == "finalized"
    assert result["probe"]["samples"] == 0 and result["probe"]["errors"] > 0
    assert result["probe"]["first_error"]
    assert result["metrics"]["counters"]["probe_errors"] == result["probe"]["errors"]
    # The probe's transactions are read only: the write was refused, not done.
    assert pg_cluster.execute("SELECT count(*) FROM failing_probe WHERE note = 'probe'", dbname=pg_db)[0][0] == 0


def wait_for_backfill(pg_cluster, pg_db, name, run, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not run.done(), run.result()[0].output_tail()
        if pg_cluster.execute("SELECT to_regclass('keel.backfills') IS NOT NULL", dbname=pg_db)[0][0] and \
                pg_cluster.execute("SELECT count(*) FROM keel.backfills WHERE migration = %s", (name,), dbname=pg_db)[0][0]:
            return
        time.sleep(0.01)
    raise AssertionError("the backfill did not start")


def test_migration_info_reports_progress_of_a_stopped_backfill(migrate, migration_info, pg_cluster, pg_db):
    make_table(pg_cluster, pg_db, "stopped", 20000)
    # Once the backfill runs (slowly: it pauses 10x each batch's time), a session takes row 16000: the batch that
    # reaches it times out (no retry) and the run stops there, resumable, with 15500 rows done.
    with ThreadPoolExecutor(max_workers=1) as pool, pg_cluster.connect(pg_db) as holder:
        run = pool.submit(migrate, "widen_stopped", widen("stopped"), lock_timeout="200ms", lock_retries=0,
                          backfill_pause_ratio=10)
        wait_for_backfill(pg_cluster, pg_db, "widen_stopped", run)
        with holder.transaction():
            holder.execute("SELECT * FROM stopped WHERE id = 16000 FOR UPDATE")
            assert pg_cluster.execute("SELECT rows_done FROM keel.backfills", dbname=pg_db)[0][0] < 15500
            failed_run, failed = run.result(timeout=300)
    assert failed_run.rc != 0 and failed["error"] == "lock_timeout"
    assert failed["metrics"]["counters"]["rows_backfilled"] == 15500
    assert failed["metrics"]["counters"]["lock_timeouts"] == 1

    info = migration_info(name="widen_stopped")
    (report,) = info["migrations"]
    progress = report["progress"]
    assert report["phase"] == "starting"
    assert progress["rows_done"] == 15500 and progress["rows_total_estimate"] == 20000
    assert progress["percent"] == 77.5
    assert progress["rate_rows_per_second"] > 0
    assert progress["eta_seconds"] == pytest.approx(4500 / progress["rate_rows_per_second"], rel=0.01, abs=0.1)
    metrics = info["metrics"]
    assert metrics["labels"]["migration"] == "widen_stopped" and metrics["labels"]["db"] == pg_db
    assert {"name": "migration_progress_percent", "labels": {"migration": "widen_stopped"},
            "value": 77.5} in metrics["series"]

    resumed_run, resumed = migrate("widen_stopped", widen("stopped"))
    resumed_run.assert_ok()
    assert resumed["metrics"]["counters"]["rows_backfilled"] == 4500
    # The baseline is the table before the first run, not before this one.
    assert resumed["cost_signals"]["peak_extra_bytes_held"] >= resumed["cost_signals"]["extra_bytes_held"] > 0
    (done,) = migration_info(name="widen_stopped")["migrations"]
    assert done["progress"]["percent"] == 100.0 and done["progress"]["eta_seconds"] == 0.0
    assert done["progress"]["rows_done"] == 20000


def test_peak_replication_lag_is_measured_when_a_standby_exists(migrate, pg_cluster, pg_db, cleanup_server):
    replica = cleanup_server(PostgresCluster())
    replica.clone_as_standby_of(pg_cluster)
    replica.start()
    deadline = time.monotonic() + 30
    while pg_cluster.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0][0] == 0:
        assert time.monotonic() < deadline, "the standby never started streaming"
        time.sleep(0.1)
    make_table(pg_cluster, pg_db, "replicated", 2000)
    # No max_replication_lag: the backfill does not wait for the standby, but it measures its lag.
    run, result = migrate("widen_replicated", widen("replicated"))
    run.assert_ok()
    counters = result["metrics"]["counters"]
    assert counters["peak_replication_lag_seconds"] >= 0
    assert result["metrics"]["phases"]["backfill"]["counters"]["peak_replication_lag_seconds"] >= 0
    assert "replication_lag_waits" not in counters
