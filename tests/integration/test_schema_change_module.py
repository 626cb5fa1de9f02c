"""keel.postgres.schema_change and migration_info through real ansible-playbook runs."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

pytestmark = pytest.mark.integration


WIDEN = [{"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}}]


@pytest.fixture
def orders(pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 0, note text);"
        "INSERT INTO orders (amount, note) SELECT g, 'n' || g FROM generate_series(1, 3000) g; ANALYZE orders",
        dbname=pg_db)
    return "orders"


@pytest.fixture
def migrate(run_playbook, connection):
    def run(name, operations, state="completed", check=False, diff=False, **options):
        args = dict(connection, name=name, operations=operations, state=state, batch_size=500, **options)
        result = run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args}, check=check, diff=diff)
        return result, result.task("schema change")["result"]

    return run


@pytest.fixture
def migrations(migration_info):
    def run(**options):
        return migration_info(**options)["migrations"]

    return run


def column_type(pg_cluster, pg_db, column):
    return pg_cluster.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                              " WHERE attrelid = 'orders'::regclass AND attname = %s", (column,), dbname=pg_db)[0][0]


def test_completed_migration_is_idempotent(migrate, pg_cluster, pg_db, orders):
    first, result = migrate("widen_amount", WIDEN)
    first.assert_ok()
    assert result["changed"] is True
    assert result["phases"] == ["start", "complete"] and result["phase"] == "completed"
    assert result["metrics"]["counters"]["rows_backfilled"] == 3000
    assert column_type(pg_cluster, pg_db, "amount") == "bigint"
    second, again = migrate("widen_amount", WIDEN)
    second.assert_ok()
    assert again["changed"] is False and again["phase"] == "completed" and again["phases"] == []


def test_check_mode_returns_the_plan_and_changes_nothing(migrate, pg_cluster, pg_db, orders):
    result, plan = migrate("widen_amount", WIDEN, check=True)
    result.assert_ok()
    assert plan["changed"] is True
    actions = [(step["phase"], step["lock"], step["lock_held"]) for step in plan["plan"]]
    assert ("start", "ROW EXCLUSIVE", "batches") in actions
    assert ("complete", "ACCESS EXCLUSIVE", "brief") in actions
    assert all(step["rows_estimate"] == 3000 for step in plan["plan"] if step["lock_held"] == "batches")
    assert column_type(pg_cluster, pg_db, "amount") == "integer"
    assert pg_cluster.execute("SELECT to_regnamespace('keel')", dbname=pg_db)[0][0] is None


def test_diff_shows_table_definition_before_and_after(migrate, orders):
    result, changed = migrate("widen_amount", WIDEN, state="finalized", diff=True)
    result.assert_ok()
    (table_diff,) = changed["diff"]
    assert table_diff["before_header"] == "public.orders"
    assert "  amount integer NOT NULL DEFAULT 0" in table_diff["before"]
    assert "  amount bigint NOT NULL DEFAULT 0" in table_diff["after"]


def test_migration_info_reports_phases_progress_and_rollback_time(migrate, migrations, orders):
    migrate("widen_amount", WIDEN, state="started")[0].assert_ok()
    (started,) = migrations(name="widen_amount")
    assert started["phase"] == "started" and started["in_flight"] is True
    assert started["tables"] == ["public.orders"]
    assert started["progress"]["rows_backfilled"] == 3000
    assert started["progress"]["percent"] == 100.0
    assert started["phase_seconds"]["start"] > 0
    migrate("widen_amount", WIDEN, state="rolled_back")[0].assert_ok()
    (rolled_back,) = migrations(name="widen_amount")
    assert rolled_back["phase"] == "rolled_back" and rolled_back["in_flight"] is False
    assert rolled_back["rollback_seconds"] is not None and rolled_back["rollback_seconds"] > 0
    assert migrations(name="no_such_migration") == []


def test_migration_info_on_a_database_without_catalog_is_empty(migrations):
    assert migrations() == []


@pytest.mark.parametrize(
    ("operations", "options", "field"),
    [
        ([{"add_column": {"table": "orders", "column": 'x"; DROP TABLE orders; --', "type": "int"}}], {},
         "operations[0].add_column.column"),
        ([{"add_column": {"table": "orders", "column": "x", "type": "bigintt"}}], {}, "operations[0].add_column.type"),
        ([{"alter_column": {"table": "orders", "column": "nope", "type": "bigint"}}], {},
         "operations[0].alter_column.column"),
        (WIDEN, {"lock_timeout": "forever"}, "lock_timeout"),
        (WIDEN, {"lock_timeout": "5min"}, "lock_timeout"),
        (WIDEN, {"revert_window": "soon"}, "revert_window"),
        (WIDEN, {"version_schema": "Public-V2"}, "version_schema"),
        (WIDEN, {"verify_reads": [{"name": "x", "query": "DELETE FROM orders"}]}, "verify_reads[0].query"),
        ([{"alter_column": {"table": "orders", "column": "amount", "type": "bigint", "down": "amount::nonsense"}}],
         {}, "operations[0].alter_column.down"),
    ],
)
def test_bad_input_fails_naming_the_field_before_any_change(migrate, pg_cluster, pg_db, orders, operations, options,
                                                            field):
    result, failed = migrate("bad_input", operations, **options)
    assert result.rc != 0
    assert failed["field"] == field
    assert failed["msg"].startswith(field + ": ")
    assert column_type(pg_cluster, pg_db, "amount") == "integer"
    assert pg_cluster.execute("SELECT count(*) FROM orders", dbname=pg_db)[0][0] == 3000


def test_a_concurrent_run_on_the_same_table_is_refused(migrate, pg_cluster, pg_db, orders):
    with psycopg.connect(pg_cluster.dsn(pg_db), autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(hashtext('keel.table:public.orders'))")
        result, refused = migrate("widen_amount", WIDEN)
    assert result.rc != 0
    assert refused["error"] == "migration_busy"
    assert "another keel.postgres run is migrating public.orders right now" in refused["msg"]
    assert column_type(pg_cluster, pg_db, "amount") == "integer"


def test_check_mode_lists_sessions_that_would_block_the_first_strong_lock(migrate, pg_cluster, pg_db, orders):
    with psycopg.connect(pg_cluster.dsn(pg_db), application_name="report-job") as reader:
        reader.execute("SELECT count(*) FROM orders").fetchone()  # stays in its transaction
        result, plan = migrate("widen_amount", WIDEN, check=True)
    result.assert_ok()
    holders = plan["sessions_holding_locks"]
    assert [(h["application_name"], h["mode"], h["table"]) for h in holders] == [
        ("report-job", "AccessShareLock", "public.orders")]


READS = [{"name": "amounts", "query": "SELECT id, amount FROM orders", "key": ["id"]}]


def test_through_ansible_verified_completion_then_revert_then_complete_again(
        migrate, migrations, pg_cluster, pg_db, orders):
    planned, plan = migrate("widen_amount", WIDEN, state="completed", check=True)
    planned.assert_ok()
    impacts = {(step["phase"], step["operation"]): step["client_impact"] for step in plan["plan"]}
    assert "cached plan must not change result type" in impacts[("complete", "alter_column orders.amount")]
    assert impacts[("start", "version schema")] is None

    result, completed = migrate("widen_amount", WIDEN, state="completed", verify_reads=READS, revert_window="2h")
    result.assert_ok()
    assert completed["phase"] == "completed" and completed["version_schema"] == "public_widen_amount"
    assert [entry["ok"] for entry in completed["read_verification"]] == [True]
    assert column_type(pg_cluster, pg_db, "amount") == "bigint"
    # A client of the new version sees bigint; the table keeps its old column until finalize.
    assert pg_cluster.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
                              " 'public_widen_amount.orders'::regclass AND attname = 'amount'", dbname=pg_db) == [
        ("bigint",)]

    result, reverted = migrate("widen_amount", WIDEN, state="reverted")
    result.assert_ok()
    assert (reverted["changed"], reverted["phase"]) == (True, "reverted")
    assert column_type(pg_cluster, pg_db, "amount") == "integer"
    (info,) = migrations(name="widen_amount")
    assert info["phase"] == "reverted" and info["revert_seconds"] > 0 and info["version_schema"] is not None
    assert info["read_verification"][0]["ok"] is True
    again, repeated = migrate("widen_amount", WIDEN, state="reverted")
    again.assert_ok()
    assert repeated["changed"] is False

    result, finalized = migrate("widen_amount", WIDEN, state="finalized")
    result.assert_ok()
    assert finalized["phases"] == ["start", "complete", "finalize"]
    assert column_type(pg_cluster, pg_db, "amount") == "bigint"
