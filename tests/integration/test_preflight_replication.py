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
