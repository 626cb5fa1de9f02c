"""The application keeps working while keel.postgres.schema_change changes a column's type.

An application (readers and writers on their own connections) runs against
`orders` for the whole migration, and another session keeps a transaction
open on the table, the way a slow report or a forgotten psql does. The
migration must wait for that session by retrying its short lock attempts,
never by sitting in the lock queue where every application query would line
up behind it; and not one application write may be lost or altered by the
backfill, the sync trigger or the final swap.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

pytestmark = pytest.mark.integration

# The module's options travel as one variable, so each test states exactly what it passes.
PLAYBOOK = SCHEMA_CHANGE_PLAYBOOK

TASK = "schema change"
ROWS = 50_000
# The module's sessions carry this application_name (KeelModule.application_name).
MODULE_APPLICATION_NAME = "keel.postgres/schema_change"
# What the application may wait on top of the migration's lock_timeout. Generous on purpose: it tells
# "waited one lock_timeout behind an attempt that gave up" from "queued behind an ACCESS EXCLUSIVE request
# for the blocker's whole transaction" (BLOCKER_HOLD_SECONDS), it is not a performance target.
LATENCY_MARGIN_SECONDS = 1.5
BLOCKER_HOLD_SECONDS = 3.0
# Client-side bound on every application statement: a query stuck behind the migration fails instead of hanging.
APPLICATION_OPTIONS = "-c statement_timeout=5s"
# Writers change ids 1..UPDATED_IDS (and their own inserts); readers check ids above it, which nobody writes.
UPDATED_IDS = ROWS // 2
INT4_MAX = 2**31 - 1


@dataclass
class Latency:
    seconds: float
    who: str
    query: str
    at: float  # time.monotonic() when the query started


@dataclass
class Application:
    """Two readers (PK SELECTs) and two writers (UPDATE by PK, INSERT), each on its own connection.

    Every error, every statement's latency and every committed write is recorded, so the test can
    compare the table after the migration with what the application believes it wrote.
    """

    dsn: str
    initial: dict[int, tuple[int, str | None]]
    # No server-side prepared statements (psycopg's default prepares a query after 5 runs): a statement prepared
    # while `amount` is int fails with "cached plan must not change result type" on every later run once the
    # column has been swapped to bigint, whatever the migration does; so does plain ALTER COLUMN TYPE.
    prepare_threshold: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    slowest: list[Latency] = field(default_factory=list)
    statements: int = 0
    # Per writer: id -> (amount, note) of its last committed write; writers never touch each other's ids.
    writes: list[dict[int, tuple[int, str]]] = field(default_factory=lambda: [{}, {}])
    _lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(2):
            self.threads.append(threading.Thread(target=self._guard, args=(f"reader-{number}", self._read), daemon=True))
            self.threads.append(threading.Thread(target=self._guard, args=(f"writer-{number}", self._write), daemon=True))
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        alive = [thread.name for thread in self.threads if thread.is_alive()]
        assert not alive, f"application threads did not stop: {alive}"

    @property
    def max_latency(self) -> float:
        return max((latency.seconds for latency in self.slowest), default=0.0)

    def expected_rows(self) -> dict[int, tuple[int, str | None]]:
        """The initial rows with every recorded write applied on top."""
        expected = dict(self.initial)
        for writer in self.writes:
            expected.update(writer)
        return expected

    # -- the threads -------------------------------------------------------------------------

    def _connect(self, who: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, application_name=f"app-{who}", options=APPLICATION_OPTIONS,
                               prepare_threshold=self.prepare_threshold)

    def _guard(self, who: str, body: Any) -> None:
        try:
            with self._connect(who) as conn:
                body(who, conn, random.Random(who))
        except Exception as error:  # the thread must record, not die silently
            self._error(who, f"thread died: {type(error).__name__}: {error}")

    def _timed(self, who: str, conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        began = time.monotonic()
        try:
            row = conn.execute(query, params).fetchone()
        finally:
            seconds = time.monotonic() - began
            with self._lock:
                self.statements += 1
                self.slowest.append(Latency(seconds, who, query, began))
                self.slowest.sort(key=lambda latency: latency.seconds, reverse=True)
                del self.slowest[10:]
        return row

    def _error(self, who: str, message: str) -> None:
        with self._lock:
            self.errors.append(f"{who}: {message}")

    def _read(self, who: str, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        while not self.stop.is_set():
            order_id = rng.randint(UPDATED_IDS + 1, ROWS)
            try:
                row = self._timed(who, conn, "SELECT amount, note FROM orders WHERE id = %s", (order_id,))
            except psycopg.Error as error:
                self._error(who, f"SELECT id {order_id}: {type(error).__name__}: {error}")
                continue
            if row != self.initial[order_id]:
                self._error(who, f"id {order_id} read as {row!r}, expected {self.initial[order_id]!r}")
            time.sleep(0.002)

    def _write(self, who: str, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        writer = int(who.rsplit("-", 1)[1])
        mine = self.writes[writer]
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            amount = rng.randint(-INT4_MAX, INT4_MAX)
            note = f"{who} write {sequence}"
            try:
                if sequence % 2:
                    # Writer n owns the ids congruent to n modulo 2 among the updated ones.
                    order_id = rng.randrange(1 + writer, UPDATED_IDS + 1, 2)
                    row = self._timed(who, conn, "UPDATE orders SET amount = %s, note = %s WHERE id = %s RETURNING id",
                                      (amount, note, order_id))
                    if row is None:
                        self._error(who, f"UPDATE of id {order_id} found no row")
                        continue
                else:
                    row = self._timed(who, conn, "INSERT INTO orders (amount, note) VALUES (%s, %s) RETURNING id",
                                      (amount, note))
                    assert row is not None
                    order_id = row[0]
            except psycopg.Error as error:
                self._error(who, f"write {sequence}: {type(error).__name__}: {error}")
                continue
            mine[order_id] = (amount, note)
            time.sleep(0.002)


@dataclass
class Blocker:
    """A session whose open transaction read `orders` (so it holds ACCESS SHARE until it ends)."""

    dsn: str
    query: str = "SELECT id, amount FROM orders ORDER BY id LIMIT 1"
    conn: psycopg.Connection[Any] | None = None
    pid: int = 0
    saw_migration_waiting: bool = False
    ended_at: float | None = None
    problems: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _ending: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        self.conn = psycopg.connect(self.dsn, application_name="long-report")
        self.pid = self.conn.info.backend_pid
        self.conn.execute(self.query).fetchall()  # non-autocommit: the transaction stays open, idle

    def end(self) -> None:
        """Commit and disconnect; once, whichever of the test and the holding thread comes first."""
        with self._ending:
            if self.conn is not None and not self.conn.closed:
                self.conn.commit()
                self.conn.close()
                self.ended_at = time.monotonic()

    def hold_while_migration_waits(self, hold: float, give_up: float = 120.0) -> None:
        """In the background: once the migration is seen waiting for a lock, keep holding for `hold` s, then commit."""
        self._thread = threading.Thread(target=self._hold, args=(hold, give_up), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(60)

    def _hold(self, hold: float, give_up: float) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as monitor:
                deadline = time.monotonic() + give_up
                while time.monotonic() < deadline:
                    waiting = monitor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
                        " AND wait_event_type = 'Lock' AND wait_event = 'relation'", (MODULE_APPLICATION_NAME,)).fetchone()[0]
                    if waiting:
                        self.saw_migration_waiting = True
                        break
                    time.sleep(0.01)
            if not self.saw_migration_waiting:
                self.problems.append(f"the migration was not seen waiting for a lock within {give_up} s")
            time.sleep(hold)
        except Exception as error:
            self.problems.append(f"{type(error).__name__}: {error}")
        finally:
            self.end()


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


@pytest.fixture
def application(pg_cluster, pg_db, orders) -> Iterator[Application]:
    app = Application(pg_cluster.dsn(pg_db), orders)
    yield app
    app.stop.set()
    for thread in app.threads:
        thread.join(30)


@pytest.fixture
def blocker(pg_cluster, pg_db, orders) -> Iterator[Blocker]:
    session = Blocker(pg_cluster.dsn(pg_db))
    yield session
    session.end()
    session.join()


def table_rows(pg_cluster, dbname: str) -> dict[int, tuple[Any, str | None]]:
    return {row[0]: (row[1], row[2]) for row in pg_cluster.execute("SELECT id, amount, note FROM orders", dbname=dbname)}


def migration_args(pg_cluster, dbname: str, **options: Any) -> dict[str, Any]:
    return {
        "login_host": pg_cluster.host,
        "port": pg_cluster.port,
        "login_user": pg_cluster.user,
        "db": dbname,
        "name": "2026_11_orders_amount_bigint",
        "operations": [{"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}}],
        "state": "completed",
        # The old column goes at once: these tests are about the way there, not the revert window.
        "revert_window": 0,
        "batch_size": 2000,
        **options,
    }


def amount_column(pg_cluster, dbname: str) -> tuple[str, str, str | None]:
    """(data_type, is_nullable, column_default) of orders.amount."""
    rows = pg_cluster.execute("SELECT data_type, is_nullable, column_default FROM information_schema.columns"
                              " WHERE table_schema = 'public' AND table_name = 'orders' AND column_name = 'amount'",
                              dbname=dbname)
    assert len(rows) == 1, rows
    return rows[0]


def orders_columns(pg_cluster, dbname: str) -> set[str]:
    rows = pg_cluster.execute("SELECT column_name FROM information_schema.columns"
                              " WHERE table_schema = 'public' AND table_name = 'orders'", dbname=dbname)
    return {row[0] for row in rows}


def assert_application_unharmed(app: Application, lock_timeout: float) -> None:
    assert app.errors == [], "application errors during the migration:\n" + "\n".join(app.errors[:20])
    assert all(app.writes), "a writer committed nothing: the application did not really run"
    bound = lock_timeout + LATENCY_MARGIN_SECONDS
    assert app.max_latency <= bound, (
        f"an application query waited {app.max_latency:.3f} s (> lock_timeout {lock_timeout} s + {LATENCY_MARGIN_SECONDS} s): "
        "it queued behind the migration's lock request. Slowest:\n"
        + "\n".join(f"  {latency.seconds:.3f} s {latency.who}: {latency.query}" for latency in app.slowest)
    )


def assert_rows_as_written(pg_cluster, dbname: str, app: Application) -> None:
    """Row by row: exactly the initial rows plus the application's writes, nothing lost, added or altered."""
    actual = table_rows(pg_cluster, dbname)
    expected = app.expected_rows()
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    assert not missing, f"{len(missing)} rows lost, e.g. ids {missing[:10]}"
    assert not unexpected, f"{len(unexpected)} rows nobody wrote, e.g. ids {unexpected[:10]}"
    altered = [(order_id, actual[order_id], expected[order_id]) for order_id in sorted(expected)
               if actual[order_id] != expected[order_id]]
    assert not altered, f"{len(altered)} rows differ from what was written (id, actual, expected): {altered[:10]}"
    for order_id, (amount, _unused) in actual.items():
        assert isinstance(amount, int) and not isinstance(amount, bool), (order_id, amount)


def test_application_keeps_working_while_a_long_transaction_delays_the_migration(
    pg_cluster, pg_db, orders, application, blocker, run_playbook
):
    lock_timeout = 0.2
    application.start()
    time.sleep(0.5)  # the application is busy before the migration begins
    blocker.begin()
    blocker.hold_while_migration_waits(BLOCKER_HOLD_SECONDS)

    result = run_playbook(PLAYBOOK, extra_vars={"module_args": migration_args(
        pg_cluster, pg_db, lock_timeout="200ms", lock_retries=100)}, timeout=300)
    migration_ended = time.monotonic()
    time.sleep(0.5)  # and keeps working after it
    application.finish()
    blocker.join()

    result.assert_ok()
    task = result.task(TASK)
    assert task["status"] == "changed"
    outcome = task["result"]
    assert outcome["phase"] == "finalized"
    assert outcome["phases"] == ["start", "complete", "finalize"]
    assert blocker.problems == []
    assert blocker.saw_migration_waiting
    # The blocker committed while the migration was still running: the migration waited it out.
    assert blocker.ended_at is not None and blocker.ended_at < migration_ended
    counters = outcome["metrics"]["counters"]
    # It gave the lock queue back and retried, rather than queueing for the blocker's 3 s.
    assert counters.get("lock_timeouts", 0) > 0, counters
    assert counters["lock_attempts"] > counters.get("lock_timeouts", 0), counters
    assert counters["rows_backfilled"] >= ROWS, counters

    assert_application_unharmed(application, lock_timeout)
    assert amount_column(pg_cluster, pg_db) == ("bigint", "NO", "0")
    assert orders_columns(pg_cluster, pg_db) == {"id", "amount", "note"}
    assert_rows_as_written(pg_cluster, pg_db, application)


def test_exhausted_lock_retries_fail_naming_the_blocker_and_leave_the_migration_resumable(
    pg_cluster, pg_db, orders, application, blocker, run_playbook
):
    lock_timeout = 0.1
    args = migration_args(pg_cluster, pg_db, lock_timeout="100ms", lock_retries=2)
    application.start()
    time.sleep(0.5)
    blocker.begin()

    failed = run_playbook(PLAYBOOK, extra_vars={"module_args": args}, timeout=300)
    blocker_was_alive = not blocker.conn.closed
    blocker.end()

    assert blocker_was_alive
    assert failed.rc != 0
    task = failed.task(TASK)
    assert task["status"] == "failed"
    report = task["result"]
    assert report["error"] == "lock_timeout"
    message = report["msg"]
    assert f"pid {blocker.pid} " in message, message
    assert blocker.query in message, message
    assert "long-report" in message, message
    mine = [entry for entry in report["blockers"] if entry["pid"] == blocker.pid]
    assert len(mine) == 1, report["blockers"]
    assert mine[0]["query"] == blocker.query
    assert mine[0]["mode"] == "AccessShareLock"
    assert pg_cluster.execute("SELECT to_regclass(%s) = 'public.orders'::regclass", (mine[0]["table"],),
                              dbname=pg_db) == [(True,)], mine[0]
    assert mine[0]["state"] == "idle in transaction"
    assert mine[0]["application_name"] == "long-report"
    # One first attempt and lock_retries retries, every one of them timed out.
    assert report["metrics"]["counters"]["lock_timeouts"] == 3, report["metrics"]
    phase, last_error = pg_cluster.execute("SELECT phase, last_error FROM keel.migrations WHERE name = %s",
                                           (args["name"],), dbname=pg_db)[0]
    assert phase == "starting"
    assert f"pid {blocker.pid} " in last_error
    assert amount_column(pg_cluster, pg_db)[0] == "integer"

    # The blocker is gone: the very same task now completes the migration.
    resumed = run_playbook(PLAYBOOK, extra_vars={"module_args": args}, timeout=300)
    application.finish()

    resumed.assert_ok()
    outcome = resumed.task(TASK)["result"]
    assert outcome["previous_phase"] == "starting"
    assert outcome["phase"] == "finalized"
    assert_application_unharmed(application, lock_timeout)
    assert amount_column(pg_cluster, pg_db) == ("bigint", "NO", "0")
    assert orders_columns(pg_cluster, pg_db) == {"id", "amount", "note"}
    assert_rows_as_written(pg_cluster, pg_db, application)


def test_blockers_name_their_table_schema_qualified(pg_cluster, pg_db, orders, blocker, run_playbook):
    blocker.begin()
    failed = run_playbook(PLAYBOOK, extra_vars={"module_args": migration_args(
        pg_cluster, pg_db, lock_timeout="50ms", lock_retries=0)}, timeout=300)
    blocker.end()

    report = failed.task(TASK)["result"]
    assert report["error"] == "lock_timeout"
    assert [entry["table"] for entry in report["blockers"] if entry["pid"] == blocker.pid] == ["public.orders"]
