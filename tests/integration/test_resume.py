"""A schema_change run killed in the middle of its backfill resumes where it stopped.

The whole ansible-playbook process group (the module's Python included) gets
SIGKILL while the backfill is half done: no cleanup code runs, the module's
connection just drops. The table must stay usable, the catalog must say the
start phase was interrupted, and the same task run again must finish the
migration from the persisted cursor: every row converted exactly once, no
value changed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.harness.processes import command_line, is_alive, wait_until_gone
from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

pytestmark = pytest.mark.integration

PLAYBOOK = SCHEMA_CHANGE_PLAYBOOK

TASK = "schema change"
ROWS = 50_000
MIGRATION = "2026_11_orders_amount_bigint"
MODULE_APPLICATION_NAME = "keel.postgres/schema_change"
# Put in the playbook's environment, so every process of this run (and only those) can be found in /proc.
MARKER_VARIABLE = "KEEL_TEST_RUN_MARKER"


@pytest.fixture
def orders(pg_cluster, pg_db) -> dict[int, tuple[int, str | None]]:
    """orders with ROWS rows; returns them as id -> (amount, note)."""
    pg_cluster.execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 0, note text);"
        f"INSERT INTO orders (amount, note) SELECT (g * 7919) % 1000003 - 500000,"
        f" CASE WHEN g % 10 = 0 THEN NULL ELSE 'order ' || g END FROM generate_series(1, {ROWS}) AS g;"
        "ANALYZE orders",
        dbname=pg_db,
    )
    return table_rows(pg_cluster, pg_db)


def table_rows(pg_cluster, dbname: str) -> dict[int, tuple[Any, str | None]]:
    return {row[0]: (row[1], row[2]) for row in pg_cluster.execute("SELECT id, amount, note FROM orders", dbname=dbname)}


def processes_marked(marker: str) -> list[int]:
    """Live processes whose environment carries MARKER_VARIABLE=marker."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environment.split(b"\0") and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def backfill_progress(pg_cluster, dbname: str) -> tuple[int, bool, Any] | None:
    """(rows_done, done, cursor) of the migration's only backfill, or None before it began."""
    rows = pg_cluster.execute(
        "SELECT rows_done, done, cursor FROM keel.backfills WHERE migration = %s", (MIGRATION,), dbname=dbname)
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def wait_for_half_done_backfill(pg_cluster, dbname: str, run, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not run.done(), f"the run ended before it was killed:\n{run.result().output_tail()}"
        catalog_ready = pg_cluster.execute("SELECT to_regclass('keel.backfills') IS NOT NULL", dbname=dbname)[0][0]
        progress = backfill_progress(pg_cluster, dbname) if catalog_ready else None
        # Well into the backfill (not just its first batch), and far from its end.
        if progress is not None and progress[0] >= ROWS // 5:
            assert progress[0] < ROWS and not progress[1], f"backfill finished before the kill: {progress}"
            return progress[0]
        time.sleep(0.02)
    raise AssertionError(f"the backfill did not start within {timeout} s")


def module_sessions(pg_cluster, dbname: str) -> list[int]:
    rows = pg_cluster.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                              (dbname, MODULE_APPLICATION_NAME))
    return [row[0] for row in rows]


def helper_columns(pg_cluster, dbname: str) -> list[str]:
    """Columns of orders the migration added beside the application's own."""
    rows = pg_cluster.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                              " AND table_name = 'orders' AND column_name NOT IN ('id', 'amount', 'note')",
                              dbname=dbname)
    return [row[0] for row in rows]


def test_killed_run_resumes_from_its_cursor_and_converts_every_row_once(pg_cluster, pg_db, orders, run_playbook):
    args = {
        "login_host": pg_cluster.host,
        "port": pg_cluster.port,
        "login_user": pg_cluster.user,
        "db": pg_db,
        "name": MIGRATION,
        "operations": [{"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}}],
        "state": "completed",
        # The old column goes at once: these tests are about the way there, not the revert window.
        "revert_window": 0,
        "batch_size": 500,
        # Pause 8x each batch's time: the backfill of ROWS rows takes seconds, so the kill lands inside it.
        "backfill_pause_ratio": 8,
    }
    expected = dict(orders)
    marker = uuid.uuid4().hex

    with ThreadPoolExecutor(max_workers=1) as pool:
        run = pool.submit(run_playbook, PLAYBOOK, extra_vars={"module_args": args}, env={MARKER_VARIABLE: marker}, timeout=300)
        wait_for_half_done_backfill(pg_cluster, pg_db, run)
        marked = processes_marked(marker)
        modules = [pid for pid in marked if any("AnsiballZ_schema_change" in part for part in command_line(pid))]
        assert modules, f"no module process among {[command_line(pid) for pid in marked]}"
        # The module runs in the process group its ansible worker made with setsid(), not in ansible-playbook's:
        # kill that one first, so the module does no more work, then ansible-playbook's own.
        module_groups = {os.getpgid(pid) for pid in modules}
        groups = [*module_groups, *({os.getpgid(pid) for pid in marked} - module_groups)]
        assert os.getpgrp() not in groups
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        killed = run.result(timeout=60)

    assert killed.rc == -signal.SIGKILL
    survivors = [pid for pid in marked if not wait_until_gone(pid, 10)]
    assert survivors == [], {pid: command_line(pid) for pid in survivors}
    # The server notices the dropped connection; its advisory lock and any open batch go with it.
    deadline = time.monotonic() + 30
    while module_sessions(pg_cluster, pg_db) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert module_sessions(pg_cluster, pg_db) == []

    phase = pg_cluster.execute("SELECT phase FROM keel.migrations WHERE name = %s", (MIGRATION,), dbname=pg_db)
    assert phase == [("starting",)]
    rows_done, done, cursor = backfill_progress(pg_cluster, pg_db)
    assert 0 < rows_done < ROWS and not done
    # Data and cursor committed together: exactly the rows up to the cursor are converted, none beyond it.
    (new_column,) = helper_columns(pg_cluster, pg_db)
    (last_id,) = cursor
    converted = pg_cluster.execute(
        sql.SQL("SELECT count(*) FILTER (WHERE id <= %s), count(*) FILTER (WHERE id <= %s AND {new} = amount),"
                " count({new}) FILTER (WHERE id > %s) FROM orders").format(new=sql.Identifier(new_column)),
        (int(last_id), int(last_id), int(last_id)), dbname=pg_db)[0]
    assert converted == (rows_done, rows_done, 0), (converted, rows_done, cursor)

    # The table is usable at once: nothing the killed run did holds a lock on it.
    with psycopg.connect(pg_cluster.dsn(pg_db), autocommit=True, options="-c lock_timeout=2s -c statement_timeout=5s") as conn:
        before_cursor, beyond_cursor = 7, ROWS - 7
        assert before_cursor <= int(last_id) < beyond_cursor
        for order_id, amount in ((before_cursor, 2**31 - 1), (beyond_cursor, -(2**31))):
            conn.execute("UPDATE orders SET amount = %s, note = 'after the crash' WHERE id = %s", (amount, order_id))
            expected[order_id] = (amount, "after the crash")
        inserted = conn.execute("INSERT INTO orders (amount, note) VALUES (123456789, 'after the crash') RETURNING id"
                                ).fetchone()[0]
        expected[inserted] = (123456789, "after the crash")
        # The sync trigger the killed run installed still converts what the application writes.
        synced = conn.execute(sql.SQL("SELECT id FROM orders WHERE id = ANY(%s) AND {new} = amount ORDER BY id").format(
            new=sql.Identifier(new_column)), ([before_cursor, beyond_cursor, inserted],)).fetchall()
        assert synced == [(before_cursor,), (beyond_cursor,), (inserted,)]

    resumed = run_playbook(PLAYBOOK, extra_vars={"module_args": args}, timeout=300)

    resumed.assert_ok()
    task = resumed.task(TASK)
    assert task["status"] == "changed"
    outcome = task["result"]
    assert outcome["previous_phase"] == "starting"
    assert outcome["phases"] == ["start", "complete", "finalize"]
    assert outcome["phase"] == "finalized"
    total = ROWS + 1
    # It went on from the cursor instead of starting over.
    assert outcome["metrics"]["counters"]["rows_backfilled"] == total - rows_done, outcome["metrics"]

    column = pg_cluster.execute("SELECT data_type, is_nullable, column_default FROM information_schema.columns"
                                " WHERE table_schema = 'public' AND table_name = 'orders' AND column_name = 'amount'",
                                dbname=pg_db)
    assert column == [("bigint", "NO", "0")]
    assert helper_columns(pg_cluster, pg_db) == []
    actual = table_rows(pg_cluster, pg_db)
    assert sorted(actual) == sorted(expected)
    altered = [(order_id, actual[order_id], expected[order_id]) for order_id in sorted(expected)
               if actual[order_id] != expected[order_id]]
    assert altered == [], f"{len(altered)} rows changed (id, actual, expected): {altered[:10]}"
    # Each row was backfilled exactly once across both runs.
    assert backfill_progress(pg_cluster, pg_db)[:2] == (total, True)
    assert pg_cluster.execute("SELECT count(*) FROM orders", dbname=pg_db) == [(total,)]
