"""keel.postgres.shadow_write through ansible-playbook, with the application writing throughout."""

from __future__ import annotations

import random
import threading
from typing import Dict, Optional

import psycopg
import pytest

pytestmark = pytest.mark.integration

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: shadow write
      keel.postgres.shadow_write: "{{ module_args }}"
"""

ROWS = 5000
MAPPING = {"id": "id", "amount_cents": "(amount * 100)::bigint", "customer_id": "customer_id"}
REVERSE = {"amount": "amount_cents / 100.0", "customer_id": "customer_id"}
TARGET_DEFINITION = "id bigint PRIMARY KEY, amount_cents bigint NOT NULL DEFAULT 0, customer_id bigint"


@pytest.fixture
def orders(pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, amount numeric(10,2) NOT NULL DEFAULT 0, customer_id bigint);"
        "INSERT INTO orders (amount, customer_id) SELECT g * 1.25, g % 97 FROM generate_series(1, {0}) g;"
        "ANALYZE orders".format(ROWS), dbname=pg_db)


@pytest.fixture
def shadow(run_playbook, connection):
    def run(state, check=False, **options):
        args = dict(connection, source="orders", target="orders_v2", target_definition=TARGET_DEFINITION,
                    mapping=MAPPING, reverse_mapping=REVERSE, state=state, batch_size=500, **options)
        result = run_playbook(PLAYBOOK, extra_vars={"module_args": args}, check=check)
        return result, result.task("shadow write")["result"]

    return run


class Application:
    """Writes that mean the same on the old and the new shape: customer updates, deletes, inserts.

    Each writer owns the ids congruent to its number, so the final state is known exactly.
    """

    def __init__(self, dsn: str, writers: int = 2) -> None:
        self.dsn = dsn
        self.errors: list = []
        self.expected: Dict[int, Optional[int]] = {}  # id -> customer_id, None = deleted
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n, writers)) for n in range(writers)]

    def __enter__(self) -> "Application":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _write(self, number: int, writers: int) -> None:
        rng = random.Random(number)
        # The table behind the name changes shape at cutover: no server-side prepared plans.
        with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None) as conn:
            while not self._stop.is_set():
                target = rng.randrange(number + writers, ROWS, writers)
                choice = rng.random()
                try:
                    if choice < 0.6:
                        customer = rng.randint(1, 1000)
                        conn.execute("UPDATE orders SET customer_id = %s WHERE id = %s", (customer, target))
                        self._record(target, customer, only_if_present=True)
                    elif choice < 0.8:
                        conn.execute("DELETE FROM orders WHERE id = %s", (target,))
                        self._record(target, None)
                    else:
                        customer = rng.randint(1, 1000)
                        new_id = conn.execute("INSERT INTO orders (customer_id) VALUES (%s) RETURNING id",
                                              (customer,)).fetchone()[0]
                        self._record(new_id, customer)
                except psycopg.Error as exc:
                    self.errors.append(str(exc))

    def _record(self, row_id: int, customer: Optional[int], only_if_present: bool = False) -> None:
        with self._lock:
            if only_if_present and self.expected.get(row_id, 0) is None:
                return  # an update of a row this writer deleted touches nothing
            self.expected[row_id] = customer


def test_writes_survive_enable_pause_resume_cutover_and_revert(shadow, pg_cluster, pg_db, orders):
    original = {row[0]: (row[1], row[2]) for row in pg_cluster.execute("SELECT id, amount, customer_id FROM orders",
                                                                       dbname=pg_db)}
    with Application(pg_cluster.dsn(pg_db)) as app:
        enabled_run, enabled = shadow("enabled", drift_check="none")
        enabled_run.assert_ok()
        assert enabled["state"] == "enabled" and enabled["trigger"] == "apply"
        assert enabled["metrics"]["counters"]["rows_backfilled"] > 0

        paused_run, paused = shadow("paused", drift_check="none")
        paused_run.assert_ok()
        assert paused["trigger"] == "log"
        resumed_run, resumed = shadow("enabled", drift_check="full")
        resumed_run.assert_ok()
        assert resumed["previous_state"] == "paused" and resumed["pending_changes"] == 0
        # Source and target are read in one snapshot, so writes in flight never show as drift.
        assert resumed["drift"]["drift"] == 0 and resumed["drift"]["rows_checked"] > ROWS / 2

        cutover_run, cut_over = shadow("cutover")
        cutover_run.assert_ok()
        assert cut_over["state"] == "cutover" and cut_over["trigger"] == "reverse"
        new_columns = {row[0] for row in pg_cluster.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0", dbname=pg_db)}
        assert "amount_cents" in new_columns  # the application's table name now has the new shape

        reverted_run, reverted = shadow("reverted")
        reverted_run.assert_ok()
        assert reverted["state"] == "reverted" and reverted["trigger"] == "apply"
    assert app.errors == []
    assert len(app.expected) > 50

    # After the revert the old table holds what it held before plus every write made since.
    rows = {row[0]: (row[1], row[2]) for row in pg_cluster.execute("SELECT id, amount, customer_id FROM orders",
                                                                   dbname=pg_db)}
    for row_id, customer in app.expected.items():
        if customer is None:
            assert row_id not in rows, "row {0} was deleted by the application".format(row_id)
        else:
            assert rows[row_id][1] == customer, "row {0}".format(row_id)
    untouched = set(original) - set(app.expected)
    assert all(rows[row_id] == original[row_id] for row_id in untouched)
    inserted = set(app.expected) - set(original)
    assert all(float(rows[row_id][0]) == 0.0 for row_id in inserted if app.expected[row_id] is not None)

    final_run, final = shadow("enabled", drift_check="full")
    final_run.assert_ok()
    assert final["drift"]["drift"] == 0
    disabled_run, disabled = shadow("disabled")
    disabled_run.assert_ok()
    assert disabled["trigger"] == "absent"
    again_run, again = shadow("disabled")
    again_run.assert_ok()
    assert again["changed"] is False


def test_a_bad_mapping_fails_before_any_trigger_exists(run_playbook, connection, pg_cluster, pg_db, orders):
    for mapping, field in (
        (dict(MAPPING, nope="id"), "mapping.nope"),
        (dict(MAPPING, amount_cents="amount * "), "mapping.amount_cents"),
        (dict(MAPPING, amount_cents="'abc'::text || amount"), "mapping.amount_cents"),
        ({"amount_cents": "1", "customer_id": "customer_id", "id": "customer_id"}, "mapping.id"),
    ):
        args = dict(connection, source="orders", target="orders_v2", target_definition=TARGET_DEFINITION,
                    mapping=mapping)
        result = run_playbook(PLAYBOOK, extra_vars={"module_args": args})
        failed = result.task("shadow write")["result"]
        assert result.rc != 0
        assert failed.get("field") == field, failed
    assert pg_cluster.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass", dbname=pg_db) == [(0,)]
    assert pg_cluster.execute("SELECT to_regclass('orders_v2')", dbname=pg_db) == [(None,)]


def test_check_mode_changes_nothing_and_enable_is_idempotent(shadow, pg_cluster, pg_db, orders):
    checked_run, checked = shadow("enabled", check=True)
    checked_run.assert_ok()
    assert checked["changed"] is True and checked["state"] == "disabled"
    assert pg_cluster.execute("SELECT to_regclass('orders_v2')", dbname=pg_db) == [(None,)]
    shadow("enabled")[0].assert_ok()
    second_run, second = shadow("enabled", drift_check="full")
    second_run.assert_ok()
    assert second["changed"] is False and second["drift"]["drift"] == 0


def test_a_source_without_primary_key_is_refused(run_playbook, connection, pg_cluster, pg_db):
    pg_cluster.execute("CREATE TABLE events (at timestamptz, what text)", dbname=pg_db)
    args = dict(connection, source="events", target="events_v2", target_definition="at timestamptz primary key",
                mapping={"at": "at"})
    result = run_playbook(PLAYBOOK, extra_vars={"module_args": args})
    failed = result.task("shadow write")["result"]
    assert result.rc != 0
    assert failed["field"] == "source"
    assert "has no primary key; shadow writes match rows by primary key" in failed["msg"]
    assert pg_cluster.execute("SELECT to_regclass('events_v2')", dbname=pg_db) == [(None,)]


def test_composite_keys_in_another_order_resume_and_show_no_drift(run_playbook, connection, pg_cluster, pg_db):
    pg_cluster.execute("CREATE TABLE items (tenant_id bigint, id bigint, v text, PRIMARY KEY (tenant_id, id));"
                       "INSERT INTO items SELECT g % 7, g, 'v' || g FROM generate_series(1, 3000) g", dbname=pg_db)
    base = dict(connection, source="items", target="items_v2", mapping={"tenant_id": "tenant_id", "id": "id", "v": "v"},
                target_definition="id bigint, tenant_id bigint, v text, PRIMARY KEY (id, tenant_id)")

    def run(state):
        result = run_playbook(PLAYBOOK, extra_vars={"module_args": dict(base, state=state, drift_check="full")})
        result.assert_ok()
        return result.task("shadow write")["result"]

    assert run("enabled")["drift"]["drift"] == 0
    run("paused")
    pg_cluster.execute("DELETE FROM items WHERE id <= 10; UPDATE items SET v = 'changed' WHERE id BETWEEN 11 AND 20",
                       dbname=pg_db)
    resumed = run("enabled")
    assert resumed["pending_changes"] == 0
    assert resumed["drift"]["drift"] == 0 and resumed["rows"] == {"source": 2990, "target": 2990}
