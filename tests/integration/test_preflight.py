"""keel.postgres.preflight through real ansible-playbook runs against a real PostgreSQL."""

from __future__ import annotations

import json
import stat
import time

import psycopg
import pytest

from tests.integration.conftest import PLAYBOOK

pytestmark = pytest.mark.integration

# Module options given one by one (not as a templated dict) for the ssl_mode
# case, to prove the module's own argument validation names the field.
SSL_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: preflight
      keel.postgres.preflight:
        login_host: "{{ host }}"
        port: "{{ port }}"
        ssl_mode: "{{ ssl_mode }}"
"""


@pytest.fixture
def orders_table(pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount numeric);"
        "INSERT INTO orders (amount) SELECT g FROM generate_series(1, 5000) g;"
        "CREATE TABLE order_notes (order_id bigint, note text);"
        "ANALYZE",
        dbname=pg_db,
    )
    return "public.orders"


@pytest.fixture
def idle_transaction(pg_cluster, pg_db, orders_table):
    """A session that read orders in a transaction and went idle, as a forgotten psql would."""
    conn = psycopg.connect(pg_cluster.dsn(pg_db), application_name="forgotten-psql")
    conn.execute("SELECT count(*) FROM orders").fetchone()
    pid = conn.info.backend_pid
    time.sleep(1.2)  # old enough for the 1 s threshold used below
    yield pid
    conn.close()


def test_idle_transaction_is_reported_with_its_lock(run_preflight, connection, idle_transaction):
    result, task = run_preflight(tables=["orders"], transaction_age_threshold="1s", **connection)
    result.assert_ok()
    report = task["result"]
    assert task["status"] == "ok" and report["passed"] is True
    reported = [tx for tx in report["transactions"] if tx["pid"] == idle_transaction]
    assert len(reported) == 1
    assert reported[0]["state"] == "idle in transaction"
    assert reported[0]["application_name"] == "forgotten-psql"
    assert reported[0]["age_seconds"] >= 1.0
    assert reported[0]["query"] == "SELECT count(*) FROM orders"
    locks = report["tables"][0]["lock_sessions"]
    assert [(lock["pid"], lock["mode"], lock["granted"]) for lock in locks] == [
        (idle_transaction, "AccessShareLock", True)
    ]


def test_gate_fails_the_play_naming_check_value_and_threshold(run_preflight, connection, idle_transaction):
    result, task = run_preflight(tables=["orders"], fail_on={"max_transaction_age": "1s", "forbid_table_locks": True},
                                 **connection)
    assert result.rc != 0
    assert task["status"] == "failed"
    message = task["result"]["msg"]
    assert message.startswith("preflight failed 2 check(s): ")
    assert "max_transaction_age: transaction of pid {0} (forgotten-psql, state 'idle in transaction')".format(
        idle_transaction) in message
    assert "threshold 1.0 s" in message
    assert "forbid_table_locks: 1 other session(s) hold or wait for locks on public.orders (pids {0})".format(
        idle_transaction) in message
    checks = {item["check"]: item for item in task["result"]["failed_checks"]}
    assert checks["max_transaction_age"]["threshold"] == 1.0
    assert checks["max_transaction_age"]["value"] >= 1.0
    assert task["result"]["passed"] is False
    assert task["result"]["error"] == "gate_failed"


def test_waiting_session_is_reported_with_its_blocker(run_preflight, connection, pg_cluster, pg_db, orders_table):
    holder = psycopg.connect(pg_cluster.dsn(pg_db))
    waiter = psycopg.connect(pg_cluster.dsn(pg_db), autocommit=True)
    try:
        holder.execute("LOCK TABLE orders IN SHARE MODE")
        waiter.execute("SET lock_timeout = '20s'")
        # The waiter's UPDATE queues behind the SHARE lock; run it without waiting for the result.
        waiter.pgconn.send_query(b"UPDATE orders SET amount = amount WHERE id = 1")
        _wait_until_waiting(pg_cluster, pg_db, waiter.info.backend_pid)
        result, task = run_preflight(tables=["orders"], transaction_age_threshold="1h", query_max_length=0,
                                     **connection)
        result.assert_ok()
        sessions = {lock["pid"]: lock for lock in task["result"]["tables"][0]["lock_sessions"]}
        assert sessions[holder.info.backend_pid]["granted"] is True
        assert sessions[waiter.info.backend_pid]["granted"] is False
        assert sessions[waiter.info.backend_pid]["blocked_by"] == [holder.info.backend_pid]
        assert all(lock["query"] is None for lock in sessions.values())  # query_max_length: 0 hides text
    finally:
        holder.close()
        waiter.cancel_safe()
        waiter.close()


def _wait_until_waiting(pg_cluster, pg_db, pid):
    for _attempt in range(100):
        rows = pg_cluster.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,), dbname=pg_db)
        if rows and rows[0][0] == "Lock":
            return
        time.sleep(0.05)
    raise AssertionError("the UPDATE never started waiting for its lock")


def test_table_facts_and_primary_key_gate(run_preflight, connection, orders_table):
    result, task = run_preflight(tables=["orders", "public.order_notes"], fail_on={"require_primary_key": True},
                                 **connection)
    assert result.rc != 0
    tables = {table["name"]: table for table in task["result"]["tables"]}
    assert tables["public.orders"]["has_primary_key"] is True
    assert tables["public.orders"]["rows_estimate"] == 5000
    assert tables["public.orders"]["total_bytes"] > tables["public.orders"]["table_bytes"] > 0
    assert tables["public.order_notes"]["has_primary_key"] is False
    assert task["result"]["msg"] == (
        "preflight failed 1 check(s): require_primary_key: table public.order_notes has no primary key"
    )


def test_partitioned_table_sums_its_partitions(run_preflight, connection, pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE events (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "INSERT INTO events SELECT g, date '2025-06-01' + (g % 400) FROM generate_series(1, 4000) g;"
        "ANALYZE events",
        dbname=pg_db,
    )
    result, task = run_preflight(tables=["events"], **connection)
    result.assert_ok()
    events = task["result"]["tables"][0]
    assert events["partitioned"] is True
    assert events["rows_estimate"] == 4000
    assert events["table_bytes"] > 0
    assert events["has_primary_key"] is True


def test_pg_stat_statements_usable_once_created(run_preflight, connection, pg_cluster, pg_db):
    before_run, before = run_preflight(**connection)
    before_run.assert_ok()
    assert before["result"]["pg_stat_statements"]["usable"] is False
    assert "CREATE EXTENSION" in before["result"]["pg_stat_statements"]["problem"]
    pg_cluster.execute("CREATE EXTENSION pg_stat_statements", dbname=pg_db)
    result, after = run_preflight(fail_on={"require_pg_stat_statements": True}, **connection)
    result.assert_ok()
    assert after["result"]["pg_stat_statements"]["usable"] is True


def test_check_mode_reports_the_same_and_changes_nothing(run_preflight, connection, orders_table):
    first, normal = run_preflight(tables=["orders"], **connection)
    second, checked = run_preflight(check=True, tables=["orders"], **connection)
    first.assert_ok()
    second.assert_ok()
    for task in (normal, checked):
        assert task["status"] == "ok"
        assert task["result"]["changed"] is False
    assert checked["result"]["tables"][0]["name"] == normal["result"]["tables"][0]["name"] == "public.orders"
    assert "metrics" in checked["result"] and checked["result"]["metrics"]["duration_ms"] > 0


def test_client_tools_match_the_server(run_preflight, connection):
    result, task = run_preflight(**connection)
    result.assert_ok()
    tools = {tool["name"]: tool for tool in task["result"]["client_tools"]}
    assert set(tools) == {"pg_dump", "pg_restore"}
    for tool in tools.values():
        assert tool["compatible"] is True
        assert tool["version_num"] // 10000 >= task["result"]["server"]["version_num"] // 10000


def test_older_client_tools_fail_with_a_clear_message(run_preflight, connection, tmp_path):
    # An older PostgreSQL client cannot be installed on this machine, so stand-in
    # binaries print an old version; the module runs them exactly as it would the real ones.
    for tool in ("pg_dump", "pg_restore"):
        path = tmp_path / tool
        path.write_text("#!/bin/sh\necho '{0} (PostgreSQL) 12.9'\n".format(tool))
        path.chmod(stat.S_IRWXU)
    result, task = run_preflight(client_bin_dir=str(tmp_path), **connection)
    assert result.rc != 0
    message = task["result"]["msg"]
    assert "client_tools: pg_dump 12.9 at {0} is older than the server".format(tmp_path / "pg_dump") in message
    assert "cannot dump or restore a newer major version" in message
    reported, task = run_preflight(client_bin_dir=str(tmp_path), client_tools="report", **connection)
    reported.assert_ok()
    assert task["result"]["client_tools"][0]["compatible"] is False


def test_wrong_port_is_a_clear_connection_error(run_preflight, connection, pg_cluster):
    from tests.harness.ports import free_port

    port = free_port()
    result, task = run_preflight(**dict(connection, port=port, login_password="not-shown-anywhere"))
    assert result.rc != 0
    message = task["result"]["msg"]
    assert message.startswith("could not connect to database '{0}' on {1} port {2}".format(
        connection["db"], pg_cluster.host, port))
    assert "Connection refused" in message
    assert task["result"]["error"] == "connection_failed"
    assert "not-shown-anywhere" not in json.dumps(task["result"])
    assert "not-shown-anywhere" not in result.stdout + result.stderr


def test_unknown_database_is_named(run_preflight, connection):
    result, task = run_preflight(**dict(connection, db="no_such_db"))
    assert result.rc != 0
    assert 'database "no_such_db" does not exist' in task["result"]["msg"]


def test_bad_ssl_mode_names_the_field(run_playbook, pg_cluster):
    result = run_playbook(SSL_PLAYBOOK, extra_vars={"host": pg_cluster.host, "port": pg_cluster.port,
                                                    "ssl_mode": "sometimes"})
    assert result.rc != 0
    assert result.task("preflight")["result"]["msg"] == (
        "value of ssl_mode must be one of: disable, allow, prefer, require, verify-ca, verify-full, got: sometimes"
    )


@pytest.mark.parametrize(
    ("args", "field", "text"),
    [
        ({"tables": ["no_such_table"]}, "tables", "relation 'no_such_table' does not exist"),
        ({"fail_on": {"max_transaction_age": "5 fortnights"}}, "fail_on.max_transaction_age", "unknown time unit"),
        ({"transaction_age_threshold": "soon"}, "transaction_age_threshold", "expected a duration"),
        ({"connect_params": {"password": "x"}}, "connect_params", "use login_password"),
        ({"query_max_length": -1}, "query_max_length", "must be 0"),
    ],
)
def test_bad_input_names_the_field(run_preflight, connection, args, field, text):
    result, task = run_preflight(**dict(connection, **args))
    assert result.rc != 0
    assert task["result"]["field"] == field
    assert task["result"]["msg"].startswith(field + ": ")
    assert text in task["result"]["msg"]


def test_password_never_appears_in_results_or_output(run_preflight, connection):
    result, task = run_preflight(**dict(connection, login_password="pw-canary-4711"))
    result.assert_ok()  # trust auth accepts any password
    assert "pw-canary-4711" not in json.dumps(task["result"])
    assert "pw-canary-4711" not in result.stdout + result.stderr


def test_connection_falls_back_to_libpq_environment(run_playbook, pg_cluster, pg_db):
    env = {"PGHOST": pg_cluster.host, "PGPORT": str(pg_cluster.port), "PGDATABASE": pg_db,
           "PGUSER": pg_cluster.user}
    result = run_playbook(PLAYBOOK, extra_vars={"preflight_args": {}}, env=env)
    result.assert_ok()
    assert result.task("preflight")["result"]["server"]["database"] == pg_db


def test_module_sessions_are_named_and_left_out(run_preflight, connection, idle_transaction):
    result, task = run_preflight(transaction_age_threshold=0, **connection)
    result.assert_ok()
    names = [tx["application_name"] for tx in task["result"]["transactions"]]
    assert "forgotten-psql" in names
    assert "keel.postgres/preflight" not in names


def test_missing_psycopg_on_the_module_host_is_a_clear_failure(run_playbook, pg_cluster, tmp_path):
    import subprocess
    import sys

    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    result = run_playbook(PLAYBOOK, extra_vars={
        "ansible_python_interpreter": str(bare / "bin" / "python"),
        "preflight_args": {"login_host": pg_cluster.host, "port": pg_cluster.port},
    })
    assert result.rc != 0
    message = result.task("preflight")["result"]["msg"]
    assert "Failed to import the required Python library (psycopg (version 3" in message
    assert "pip install 'psycopg[binary]'" in message
