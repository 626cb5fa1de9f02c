"""preflight against a real streaming standby: lag per standby, and the standby's own view."""

from __future__ import annotations

import time

import pytest

from tests.harness.postgres_cluster import PostgresCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def standby(pg_cluster, cleanup_server):
    replica = cleanup_server(PostgresCluster())
    replica.clone_as_standby_of(pg_cluster)
    replica.start()
    _wait_for(lambda: pg_cluster.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0][0] == 1,
              "the standby never started streaming")
    return replica


def _wait_for(condition, failure, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(failure)


def _replay_gap_bytes(pg_cluster):
    return pg_cluster.execute("SELECT pg_wal_lsn_diff(sent_lsn, replay_lsn)::int8 FROM pg_stat_replication")[0][0]


def test_standby_lag_is_reported_and_gated(run_preflight, pg_cluster, standby):
    primary = {"login_host": pg_cluster.host, "port": pg_cluster.port, "db": "postgres"}
    healthy_run, healthy = run_preflight(fail_on={"max_replication_lag_bytes": "64kB"}, **primary)
    healthy_run.assert_ok()
    (entry,) = healthy["result"]["replication"]["standbys"]
    assert entry["state"] == "streaming" and entry["client_addr"] == "127.0.0.1"

    # Stop replay on the standby and write on the primary: WAL arrives but is not applied.
    standby.execute("SELECT pg_wal_replay_pause()")
    pg_cluster.execute("CREATE TABLE lag_maker AS SELECT g, repeat('x', 200) AS filler FROM generate_series(1, 20000) g")
    _wait_for(lambda: _replay_gap_bytes(pg_cluster) > 1024 * 1024, "WAL never piled up behind the paused standby")
    try:
        lagging_run, lagging = run_preflight(fail_on={"max_replication_lag_bytes": "64kB"}, **primary)
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
        pg_cluster.execute("DROP TABLE lag_maker")
    assert lagging_run.rc != 0
    (entry,) = lagging["result"]["replication"]["standbys"]
    assert entry["lag_bytes"] > 1024 * 1024
    name = entry["application_name"]
    assert "max_replication_lag_bytes: replication lag of {0} is ".format(name) in lagging["result"]["msg"]
    assert "threshold 64.0 kB" in lagging["result"]["msg"]


def test_standby_reports_its_own_lag_and_fails_require_primary(run_preflight, standby):
    on_standby = {"login_host": standby.host, "port": standby.port, "db": "postgres"}
    result, task = run_preflight(fail_on={"require_primary": True}, **on_standby)
    assert result.rc != 0
    report = task["result"]
    assert report["server"]["in_recovery"] is True
    assert report["replication"]["role"] == "standby"
    assert report["replication"]["self"]["lag_bytes"] >= 0
    assert report["msg"] == (
        "preflight failed 1 check(s): require_primary: the server is a standby (in recovery); run against the primary"
    )


def test_backfill_waits_for_a_lagging_standby_and_gives_up_resumably(run_playbook, pg_cluster, standby):
    from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

    pg_cluster.execute("DROP TABLE IF EXISTS lagged; CREATE TABLE lagged (id int PRIMARY KEY, v int NOT NULL);"
                       "INSERT INTO lagged SELECT g, g FROM generate_series(1, 5000) g")
    _wait_for(lambda: _replay_gap_bytes(pg_cluster) == 0, "the standby never caught up")
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        # WAL the standby receives but does not replay: replay_lag grows from here on.
        pg_cluster.execute("CREATE TABLE lag_maker AS SELECT g FROM generate_series(1, 50000) g")
        _wait_for(lambda: (pg_cluster.execute("SELECT coalesce(extract(epoch FROM replay_lag), 0)"
                                              " FROM pg_stat_replication")[0][0] or 0) > 1.0,
                  "replay_lag never grew past 1 s")
        args = {"login_host": pg_cluster.host, "port": pg_cluster.port, "db": "postgres", "name": "lagged_bigint",
                "operations": [{"alter_column": {"table": "lagged", "column": "v", "type": "bigint"}}],
                "state": "completed", "max_replication_lag": "1s", "replication_lag_timeout": "3s"}
        result = run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args})
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
        pg_cluster.execute("DROP TABLE IF EXISTS lag_maker")
    assert result.rc != 0
    failed = result.task("schema change")["result"]
    assert "backfill paused: replication lag" in failed["msg"] and "the migration is resumable" in failed["msg"]
    assert failed["metrics"]["counters"]["replication_lag_waits"] > 0
    assert pg_cluster.execute("SELECT phase FROM keel.migrations WHERE name = 'lagged_bigint'") == [("starting",)]
    _wait_for(lambda: _replay_gap_bytes(pg_cluster) == 0, "the standby never caught up after resuming replay")
    args["replication_lag_timeout"] = "60s"
    resumed = run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args})
    resumed.assert_ok()
    assert pg_cluster.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                              " WHERE attrelid = 'lagged'::regclass AND attname = 'v'") == [("bigint",)]
    # The shared database must not keep this migration: its version schema, table and catalog go.
    pg_cluster.execute("DROP SCHEMA public_lagged_bigint CASCADE; DROP TABLE lagged; DROP SCHEMA keel CASCADE")
