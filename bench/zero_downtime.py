"""Zero-downtime benchmark: what the application sees while its schema changes.

For every table size and scenario this starts from a fresh copy of the same
``orders`` table (``customers`` beside it for the foreign key), runs a small
application against it (N client threads, each on its own connection, paced
to a fixed rate, doing primary-key reads, UPDATEs by primary key and INSERTs),
measures a baseline window, then runs one migration while the application
keeps going: first the naive DDL, then the same change through keel's engine
(and pg_repack for the table rewrite when it is installed). The conversion to a partitioned table
(partition_table, attach and copy) is compared with the hand-written INSERT ... SELECT under one lock, and
``revert`` measures the revert of a completed type change (its completion reported as a window of its own).
Every keel migration ends finalized or reverted. Every application
query's latency and error is recorded, and afterwards the table is compared
row by row with what the clients believe they wrote.

It starts its own throwaway PostgreSQL cluster (tests/harness) and removes it
at the end. Run it from anywhere:

    /path/to/venv/bin/python bench/zero_downtime.py --quick
    /path/to/venv/bin/python bench/zero_downtime.py                # 1M and 4M rows

See bench/README.md and docs/benchmarks/zero_downtime.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

CUSTOMERS = 10_000
# Fraction of each client's queries: the rest are PK reads.
UPDATE_SHARE = 0.30
INSERT_SHARE = 0.10
# Queries that start this long after the migration ended still count as "during": they were queued behind it.
TAIL_SECONDS = 1.0
# Client-side warm-up (connections, caches) excluded from the baseline window.
WARMUP_SECONDS = 0.5
# Scenario 5: how long the other session keeps its read transaction open.
BLOCKER_SECONDS = 5.0
# Targets stated in the report.
STALL_MARGIN_SECONDS = 0.100
BACKFILL_TARGET_SHARE = 0.40
# "Flat from the small to the big table": the big table's worst stall at most this times the small one's (+ 50 ms).
FLAT_FACTOR = 1.5
FLAT_SLACK_SECONDS = 0.050
# partition_table scenarios: range by id, the rows split into this many intervals, then this many empty
# partitions ahead (attach: the table becomes one partition + premake; copy and naive: 5 + premake).
PARTITION_SPLIT = 4
PARTITION_PREMAKE = 3
# Multi-step scenarios (revert): the application keeps writing this long between two steps, so the
# step after sees writes made in between (for revert: writes to the completed shape).
STEP_GAP_SECONDS = 2.0

# Server settings for the run (ALTER SYSTEM, then a restart for shared_buffers).
SERVER_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "256MB",
    "max_connections": "100",
}
REPORTED_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
                     "max_wal_size", "maintenance_work_mem", "work_mem", "autovacuum", "max_parallel_workers",
                     "max_parallel_maintenance_workers")


# -- the data --------------------------------------------------------------------------------

def initial_row(row_id: int) -> Tuple[int, int, str]:
    """(customer_id, amount, note) every row starts with; the same formulas as the SQL in build_template."""
    return row_id % CUSTOMERS + 1, (row_id * 37) % 100_000, "note {0}".format(row_id)


TEMPLATE_SQL = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, {customers}) AS g;
CREATE TABLE orders (id bigserial, customer_id int, amount int NOT NULL, note text, created_at timestamptz);
INSERT INTO orders (id, customer_id, amount, note, created_at)
  SELECT g, g % {customers} + 1, (g * 37) % 100000, 'note ' || g, timestamptz '2024-01-01 00:00+00' + g * interval '1 second'
  FROM generate_series(1, {rows}) AS g;
ALTER TABLE orders ADD PRIMARY KEY (id);
SELECT setval('orders_id_seq', {rows});
"""


# -- the application -------------------------------------------------------------------------

@dataclasses.dataclass
class ClientLog:
    # (perf_counter at start, seconds, kind, ok) for every query
    samples: List[Tuple[float, float, str, bool]] = dataclasses.field(default_factory=list)
    # id -> (amount, note) of this client's last committed UPDATE of a pre-existing row
    updates: Dict[int, Tuple[int, str]] = dataclasses.field(default_factory=dict)
    # id -> (customer_id, amount, note) of rows this client inserted
    inserts: Dict[int, Tuple[int, int, str]] = dataclasses.field(default_factory=dict)
    # rows whose last write failed: it may or may not have committed, so they are not checked
    uncertain: set = dataclasses.field(default_factory=set)
    uncertain_inserts: int = 0
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    bad_reads: List[str] = dataclasses.field(default_factory=list)


class AppClient(threading.Thread):
    """One application connection: reads and updates rows it owns ((id - 1) % clients == number), inserts new ones.

    Paced to ``rate`` queries per second; after a stall it does not burst to catch up (at most one query early),
    so a blocked client shows up as one long query and fewer queries, not as a thundering herd afterwards.
    Reads are checked against what this client last wrote (or the row's initial value).
    """

    def __init__(self, number: int, clients: int, dsn: str, rows: int, rate: float, stop: threading.Event,
                 prepared: bool) -> None:
        super().__init__(name="app-client-{0}".format(number), daemon=True)
        self.number = number
        self.clients = clients
        self.dsn = dsn
        self.rows = rows
        self.interval = 1.0 / rate
        self.stop = stop
        self.log = ClientLog()
        self.rng = random.Random(1000 + number)
        self.sequence = 0
        self.owned = (rows - 1 - number) // clients + 1  # how many of ids 1..rows this client owns
        self.prepare_threshold = 0 if prepared else None

    def _owned_id(self) -> int:
        return self.number + 1 + self.clients * self.rng.randrange(self.owned)

    def _connect(self) -> Optional[psycopg.Connection]:
        try:
            # By default no server-side prepared statements: see docs/benchmarks/zero_downtime.md (result type changes).
            return psycopg.connect(self.dsn, autocommit=True, prepare_threshold=self.prepare_threshold,
                                   application_name=self.name)
        except psycopg.Error as error:
            self.log.errors["connect: " + _first_line(error)] += 1
            return None

    def run(self) -> None:
        conn = None
        next_at = time.perf_counter()
        try:
            while not self.stop.is_set():
                delay = next_at - time.perf_counter()
                if delay > 0 and self.stop.wait(delay):
                    break
                next_at = max(next_at + self.interval, time.perf_counter() - self.interval)
                if conn is None or conn.closed or conn.broken:
                    conn = self._connect()
                    if conn is None:
                        self.stop.wait(0.1)
                        continue
                self._one_query(conn)
        finally:
            if conn is not None:
                conn.close()

    def _one_query(self, conn: psycopg.Connection) -> None:
        draw = self.rng.random()
        if draw < INSERT_SHARE:
            self._timed(conn, "insert", self._insert)
        elif draw < INSERT_SHARE + UPDATE_SHARE:
            self._timed(conn, "update", self._update)
        else:
            self._timed(conn, "read", self._read)

    def _timed(self, conn: psycopg.Connection, kind: str, query: Callable[[psycopg.Connection], Callable[[], None]]) -> None:
        began = time.perf_counter()
        ok = True
        try:
            on_success = query(conn)
        except psycopg.Error as error:
            ok = False
            self.log.errors["{0}: {1}".format(kind, _first_line(error))] += 1
        self.log.samples.append((began, time.perf_counter() - began, kind, ok))
        if ok:
            on_success()

    def _read(self, conn: psycopg.Connection) -> Callable[[], None]:
        row_id = self._owned_id()
        row = conn.execute("SELECT customer_id, amount, note FROM orders WHERE id = %s", (row_id,)).fetchone()

        def check() -> None:
            if row_id in self.log.uncertain:
                return
            customer_id, amount, note = initial_row(row_id)
            amount, note = self.log.updates.get(row_id, (amount, note))
            if row is None or tuple(row) != (customer_id, amount, note):
                self.log.bad_reads.append("id {0}: read {1}, expected {2}".format(row_id, row, (customer_id, amount, note)))
        return check

    def _update(self, conn: psycopg.Connection) -> Callable[[], None]:
        row_id = self._owned_id()
        self.sequence += 1
        amount, note = self.rng.randrange(1, 2**31 - 1), "c{0}-{1}".format(self.number, self.sequence)
        self.log.uncertain.add(row_id)  # until we know it committed
        updated = conn.execute("UPDATE orders SET amount = %s, note = %s WHERE id = %s", (amount, note, row_id)).rowcount

        def remember() -> None:
            self.log.uncertain.discard(row_id)
            if updated != 1:
                self.log.bad_reads.append("id {0}: UPDATE touched {1} rows".format(row_id, updated))
            self.log.updates[row_id] = (amount, note)
        return remember

    def _insert(self, conn: psycopg.Connection) -> Callable[[], None]:
        self.sequence += 1
        values = (self.rng.randint(1, CUSTOMERS), self.rng.randrange(1, 2**31 - 1), "i{0}-{1}".format(self.number, self.sequence))
        self.log.uncertain_inserts += 1
        row_id = conn.execute("INSERT INTO orders (customer_id, amount, note, created_at) VALUES (%s, %s, %s, now())"
                              " RETURNING id", values).fetchone()[0]

        def remember() -> None:
            self.log.uncertain_inserts -= 1
            self.log.inserts[row_id] = values
        return remember


class Application:
    def __init__(self, dsn: str, rows: int, clients: int, rate: float, prepared: bool) -> None:
        self.stop_event = threading.Event()
        self.clients = [AppClient(n, clients, dsn, rows, rate, self.stop_event, prepared) for n in range(clients)]

    def start(self) -> None:
        for client in self.clients:
            client.start()

    def stop(self) -> None:
        self.stop_event.set()
        for client in self.clients:
            client.join(timeout=120)

    def samples(self) -> List[Tuple[float, float, str, bool]]:
        return [s for client in self.clients for s in client.log.samples]

    def errors(self) -> Dict[str, int]:
        total: collections.Counter = collections.Counter()
        for client in self.clients:
            total.update(client.log.errors)
        return dict(total)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return "{0}: {1}".format(type(error).__name__, text[0] if text else "")


# -- statistics ------------------------------------------------------------------------------

def percentile(sorted_values: List[float], share: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(share * (len(sorted_values) - 1))))
    return sorted_values[index]


def window_stats(samples: List[Tuple[float, float, str, bool]], began: float, ended: float, overlap: bool) -> Dict[str, Any]:
    """Latency of the queries in [began, ended): started in it, or (overlap) running at any moment of it."""
    def selected(sample: Tuple[float, float, str, bool]) -> bool:
        if overlap:
            return sample[0] < ended and sample[0] + sample[1] > began
        return began <= sample[0] < ended

    chosen = [s for s in samples if selected(s)]
    latencies = sorted(s[1] for s in chosen)
    seconds = max(ended - began, 1e-9)
    slowest = sorted(chosen, key=lambda sample: sample[1], reverse=True)[:5]
    return {
        "queries": len(chosen),
        "queries_per_second": round(sum(1 for s in chosen if began <= s[0] < ended) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round((latencies[-1] if latencies else 0.0) * 1000, 2),
        "over_100ms": sum(1 for value in latencies if value > 0.1),
        "errors": sum(1 for s in chosen if not s[3]),
        # when (seconds after the window began) the slowest queries started, and what they were
        "slowest": [{"ms": round(sample[1] * 1000, 1), "kind": sample[2], "started_at_s": round(sample[0] - began, 3)}
                    for sample in slowest],
    }


# -- the server ------------------------------------------------------------------------------

def _bootstrap_imports() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.harness.collection_path import ensure_collection_importable

    ensure_collection_importable()


class Server:
    """The throwaway cluster, tuned for the benchmark; databases are cloned from per-size templates."""

    def __init__(self) -> None:
        from tests.harness.postgres_cluster import PostgresCluster

        self.cluster = PostgresCluster()

    def start(self) -> None:
        self.cluster.start()
        for name, value in SERVER_SETTINGS.items():
            self.cluster.execute(sql.SQL("ALTER SYSTEM SET {0} = {1}").format(sql.Identifier(name), sql.Literal(value)))
        # shared_buffers and max_connections only change at a restart.
        self.cluster.stop()
        self.cluster.start()

    def remove(self) -> None:
        self.cluster.remove()

    def dsn(self, dbname: str) -> str:
        return self.cluster.dsn(dbname)

    def connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def settings(self) -> Dict[str, str]:
        rows = self.cluster.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY (%s)",
                                    (list(REPORTED_SETTINGS),))
        return dict(sorted(rows))

    def build_template(self, rows: int) -> str:
        name = "tpl_{0}".format(rows)
        self.cluster.drop_database(name)
        self.cluster.create_database(name)
        with self.connect(name) as conn:
            for statement in TEMPLATE_SQL.format(rows=rows, customers=CUSTOMERS).split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("VACUUM (FREEZE, ANALYZE) orders, customers")
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('orders'))").fetchone()[0]
        self.cluster.execute("CHECKPOINT")
        log("template {0}: {1} rows, orders {2}".format(name, rows, size))
        return name

    def clone(self, template: str, name: str) -> None:
        self.cluster.drop_database(name)
        # FILE_COPY copies the files (fast); the default WAL_LOG would write the whole table to the WAL.
        self.cluster.execute(sql.SQL("CREATE DATABASE {0} TEMPLATE {1} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)))

    def drop(self, name: str) -> None:
        self.cluster.drop_database(name)


def pg_repack_binary(bindir: Path) -> Optional[str]:
    candidate = bindir / "pg_repack"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("pg_repack")


# -- the migrations --------------------------------------------------------------------------

# The naive migration: one statement, or a function of (connection, rows) giving units of statements,
# each unit one transaction.
NaiveSql = Union[str, Callable[[psycopg.Connection, int], List[List[str]]]]
KeelOperations = Union[List[Dict[str, Any]], Callable[[int], List[Dict[str, Any]]]]


@dataclasses.dataclass
class Scenario:
    key: str
    title: str
    naive_sql: NaiveSql
    keel_operations: KeelOperations
    outcome_sql: str  # one boolean: did the change happen?
    blocker: bool = False
    pg_repack: bool = False
    backfills: bool = False
    # Steps run under load before the measured one (each reported as its own window): a naive statement,
    # and the keel states the migration goes through; the last keel state is the measured window.
    naive_setup_sql: Optional[str] = None
    keel_states: Tuple[str, ...] = ("completed",)
    # 0: completion finalizes at once (the old shape is dropped in the same run, no revert guard).
    keel_revert_window: Optional[float] = 0.0
    keel_final_phase: str = "finalized"

    def operations(self, rows: int) -> List[Dict[str, Any]]:
        return self.keel_operations(rows) if callable(self.keel_operations) else self.keel_operations


def partition_interval(rows: int) -> int:
    return max(1, rows // PARTITION_SPLIT)


def partition_operations(method: str) -> Callable[[int], List[Dict[str, Any]]]:
    def operations(rows: int) -> List[Dict[str, Any]]:
        return [{"partition_table": {"table": "orders", "key": "id", "strategy": "range", "method": method,
                                     "interval": partition_interval(rows), "premake": PARTITION_PREMAKE}}]
    return operations


def naive_partitioning(conn: psycopg.Connection, rows: int) -> List[List[str]]:
    """The hand-written conversion: a partitioned copy with the same grid as keel's copy (made without locking
    orders), then ONE transaction that locks orders, copies every row, swaps the names and moves the sequence;
    then the old table is dropped. Writes wait for the whole copy; none is written meanwhile, so none is lost."""
    interval = partition_interval(rows)
    highest = conn.execute("SELECT coalesce(max(id), 0) FROM orders").fetchone()[0]
    stop = (highest // interval + 1 + PARTITION_PREMAKE) * interval
    create = ["CREATE TABLE orders_new (LIKE orders INCLUDING ALL) PARTITION BY RANGE (id)"]
    create += ["CREATE TABLE orders_new_p{0} PARTITION OF orders_new FOR VALUES FROM ({0}) TO ({1})".format(
        low, low + interval) for low in range(0, stop, interval)]
    swap = ["LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", "INSERT INTO orders_new SELECT * FROM orders",
            "ALTER TABLE orders RENAME TO orders_old", "ALTER TABLE orders_new RENAME TO orders",
            "ALTER SEQUENCE orders_id_seq OWNED BY orders.id"]
    return [create, swap, ["DROP TABLE orders_old"], ["ANALYZE orders"]]


PARTITIONED_SQL = ("SELECT c.relkind = 'p' AND (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) BETWEEN 4 AND 8"
                   " FROM pg_class c WHERE c.oid = 'orders'::regclass")


def amount_type_sql(type_name: str) -> str:
    return ("SELECT format_type(atttypid, atttypmod) = '{0}' AND attnotnull FROM pg_attribute"
            " WHERE attrelid = 'orders'::regclass AND attname = 'amount'".format(type_name))


AMOUNT_BIGINT = [{"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}}]


SCENARIOS = [
    Scenario("alter_type", "amount int -> bigint",
             "ALTER TABLE orders ALTER COLUMN amount TYPE bigint", AMOUNT_BIGINT,
             amount_type_sql("bigint"), backfills=True),
    Scenario("create_index", "index on customer_id",
             "CREATE INDEX orders_customer_id_idx ON orders (customer_id)",
             [{"create_index": {"table": "orders", "name": "orders_customer_id_idx", "columns": ["customer_id"]}}],
             "SELECT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('orders_customer_id_idx')),"
             " false)"),
    Scenario("foreign_key", "FK customer_id -> customers",
             "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)",
             [{"add_foreign_key": {"table": "orders", "name": "orders_customer_fk", "columns": ["customer_id"],
                                   "references": {"table": "customers", "columns": ["id"]}}}],
             "SELECT coalesce((SELECT convalidated FROM pg_constraint WHERE conrelid = 'orders'::regclass"
             " AND conname = 'orders_customer_fk'), false)"),
    Scenario("set_not_null", "note SET NOT NULL",
             "ALTER TABLE orders ALTER COLUMN note SET NOT NULL",
             [{"alter_column": {"table": "orders", "column": "note", "not_null": True}}],
             "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'note'"),
    Scenario("add_column_blocked", "ADD COLUMN behind a 5 s reader",
             "ALTER TABLE orders ADD COLUMN extra text",
             [{"add_column": {"table": "orders", "column": "extra", "type": "text"}}],
             "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'extra'"
             " AND NOT attisdropped)",
             blocker=True),
    Scenario("rewrite", "table rewrite",
             "VACUUM FULL orders",
             [{"rewrite_table": {"table": "orders"}}],
             "SELECT pg_relation_filenode('orders') <> %(filenode)s",
             pg_repack=True, backfills=True),
    Scenario("partition_attach", "range-partition by id (attach)", naive_partitioning, partition_operations("attach"),
             PARTITIONED_SQL),
    Scenario("partition_copy", "range-partition by id (copy)", naive_partitioning, partition_operations("copy"),
             PARTITIONED_SQL, backfills=True),
    # measured: the revert of a completed int -> bigint change; the completion before it is a setup window
    Scenario("revert", "revert amount bigint -> int after completion",
             "ALTER TABLE orders ALTER COLUMN amount TYPE integer", AMOUNT_BIGINT,
             amount_type_sql("integer"),
             naive_setup_sql="ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
             keel_states=("completed", "reverted"), keel_revert_window=24 * 3600.0, keel_final_phase="reverted"),
]


@dataclasses.dataclass
class Settings:
    rows: List[int]
    clients: int
    rate: float
    baseline: float
    lock_timeout: float
    lock_retries: int
    statement_timeout: float
    batch_size: int
    pause_ratio: float
    scenarios: List[str]
    prepared: bool


class Blocker(threading.Thread):
    """A session that reads orders in a transaction and keeps it open (a slow report, a forgotten psql)."""

    def __init__(self, dsn: str, seconds: float) -> None:
        super().__init__(name="blocker", daemon=True)
        self.dsn = dsn
        self.seconds = seconds
        self.ready = threading.Event()
        self.held = 0.0
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, application_name="bench-blocker") as conn:
                conn.execute("SELECT amount FROM orders WHERE id = 1").fetchall()  # opens the transaction
                began = time.perf_counter()
                self.ready.set()
                time.sleep(self.seconds)
                conn.commit()
                self.held = time.perf_counter() - began
        except psycopg.Error as error:
            self.error = _first_line(error)
        finally:
            self.ready.set()


def run_naive(dsn: str, naive: NaiveSql, rows: int, details: Dict[str, Any]) -> None:
    """Autocommit, no timeouts; a unit of several statements is one transaction (its time is in unit_seconds)."""
    with psycopg.connect(dsn, autocommit=True, application_name="bench-naive") as conn:
        units = naive(conn, rows) if callable(naive) else [[naive]]
        details["unit_seconds"] = []
        for unit in units:
            began = time.perf_counter()
            with conn.transaction() if len(unit) > 1 else contextlib.nullcontext():
                for statement in unit:
                    conn.execute(statement)
            details["unit_seconds"].append(round(time.perf_counter() - began, 3))


def run_keel(dsn: str, scenario: Scenario, state: str, rows: int, settings: Settings, details: Dict[str, Any]) -> None:
    from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
    from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
    from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationRequest, MigrationRun
    from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy

    metrics = RunMetrics()
    request = MigrationRequest(
        "bench_{0}".format(scenario.key), scenario.operations(rows), state,
        LockPolicy(settings.lock_timeout, settings.lock_retries, settings.statement_timeout),
        BackfillSettings(settings.batch_size, settings.pause_ratio, None, 600.0),
        revert_window=scenario.keel_revert_window)
    with psycopg.connect(dsn, autocommit=True, application_name="bench-keel") as conn:
        try:
            details["phase"] = MigrationRun(conn, request, metrics).run(check_mode=False).get("phase")
        finally:
            details["metrics"] = metrics.as_dict()
            details["backfills"] = backfills(conn)
            details["catalog"] = catalog_record(conn, request.name)


def catalog_record(conn: psycopg.Connection, name: str) -> Dict[str, Any]:
    """keel's own record: phase, seconds per phase, and the revert time (the rollback MTTR KPI reads it)."""
    if not conn.execute("SELECT to_regclass('keel.migrations') IS NOT NULL").fetchone()[0]:
        return {}
    row = conn.execute("SELECT phase, phase_seconds, revert_seconds FROM keel.migrations WHERE name = %s",
                       (name,)).fetchone()
    if row is None:
        return {}
    return {"phase": row[0], "phase_seconds": {k: round(v, 3) for k, v in row[1].items()},
            "revert_seconds": None if row[2] is None else round(row[2], 3)}


def backfills(conn: psycopg.Connection) -> List[Dict[str, Any]]:
    """keel's own record of each batched step: rows, batches, and the time from its start to its end."""
    if not conn.execute("SELECT to_regclass('keel.backfills') IS NOT NULL").fetchone()[0]:
        return []
    rows = conn.execute("SELECT step, rows_done, batches, extract(epoch FROM updated_at - started_at)::float8"
                        " FROM keel.backfills ORDER BY started_at").fetchall()
    return [{"step": step, "rows": done, "batches": batches, "seconds": round(seconds, 3),
             "rows_per_second": round(done / seconds) if seconds > 0 else None} for step, done, batches, seconds in rows]


def migration_steps(scenario: Scenario, variant: str, dsn: str, rows: int, settings: Settings,
                    repack: Optional[str]) -> List[Tuple[str, Callable[[Dict[str, Any]], None]]]:
    """(label, run) for each step of one variant, in order; the last one is the measured migration.
    A naive setup step is labelled like keel's first state, the step it stands for (revert: "completed")."""
    if variant == "naive":
        setup = [(scenario.keel_states[0], functools.partial(run_naive, dsn, scenario.naive_setup_sql, rows))] \
            if scenario.naive_setup_sql else []
        return [*setup, (scenario.keel_states[-1], functools.partial(run_naive, dsn, scenario.naive_sql, rows))]
    if variant == "keel":
        return [(state, functools.partial(run_keel, dsn, scenario, state, rows, settings))
                for state in scenario.keel_states]
    return [("pg_repack", functools.partial(run_pg_repack, dsn, repack or "pg_repack"))]


@dataclasses.dataclass
class StepWindow:
    label: str
    began: float
    ended: float
    details: Dict[str, Any]
    error: Optional[str]


def run_steps(steps: List[Tuple[str, Callable[[Dict[str, Any]], None]]]) -> List[StepWindow]:
    """Run the steps in order under the application's load; a failed step ends the sequence."""
    windows: List[StepWindow] = []
    for label, step in steps:
        if windows:
            time.sleep(STEP_GAP_SECONDS)
        details: Dict[str, Any] = {}
        began, error = time.perf_counter(), None
        try:
            step(details)
        except Exception as exc:  # the benchmark reports a failed migration and goes on
            error = _first_line(exc)
        windows.append(StepWindow(label, began, time.perf_counter(), details, error))
        if error:
            break
    return windows


def run_pg_repack(dsn: str, binary: str, details: Dict[str, Any]) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    completed = subprocess.run(
        [binary, "--host", str(info["host"]), "--port", str(info["port"]), "--username", str(info["user"]),
         "--dbname", str(info["dbname"]), "--table", "public.orders", "--no-order"],
        capture_output=True, text=True, check=False, timeout=3600)
    details["output"] = (completed.stdout + completed.stderr).strip()[-500:]
    if completed.returncode != 0:
        raise RuntimeError("pg_repack exited {0}: {1}".format(completed.returncode, details["output"]))


# -- one run ---------------------------------------------------------------------------------

def verify(conn: psycopg.Connection, app: Application, rows: int) -> Dict[str, Any]:
    """Compare the table with what the clients committed; every row, not a sample."""
    expected: Dict[int, Tuple[int, int, str]] = {}
    uncertain: set = set()
    uncertain_inserts = 0
    bad_reads: List[str] = []
    for client in app.clients:
        for row_id, (amount, note) in client.log.updates.items():
            expected[row_id] = (initial_row(row_id)[0], amount, note)
        expected.update(client.log.inserts)
        uncertain |= client.log.uncertain
        uncertain_inserts += client.log.uncertain_inserts
        bad_reads += client.log.bad_reads
    for row_id in uncertain:
        expected.pop(row_id, None)
    conn.execute("CREATE TEMP TABLE expected (id bigint PRIMARY KEY, customer_id int, amount bigint, note text)")
    conn.execute("CREATE TEMP TABLE uncertain (id bigint PRIMARY KEY)")
    with conn.cursor().copy("COPY expected FROM STDIN") as copy:
        for row_id, (customer_id, amount, note) in expected.items():
            copy.write_row((row_id, customer_id, amount, note))
    with conn.cursor().copy("COPY uncertain FROM STDIN") as copy:
        for row_id in uncertain:
            copy.write_row((row_id,))
    conn.execute("ANALYZE expected")
    conn.execute("ANALYZE uncertain")
    lost, altered = conn.execute(
        "SELECT count(*) FILTER (WHERE o.id IS NULL), count(*) FILTER (WHERE o.id IS NOT NULL AND"
        " (o.customer_id, o.amount::bigint, o.note) IS DISTINCT FROM (e.customer_id, e.amount, e.note))"
        " FROM expected e LEFT JOIN orders o ON o.id = e.id").fetchone()
    untouched, untouched_altered, unexpected = conn.execute(
        "SELECT count(*) FILTER (WHERE o.id <= %(rows)s),"
        " count(*) FILTER (WHERE o.id <= %(rows)s AND (o.customer_id, o.amount::bigint, o.note) IS DISTINCT FROM"
        "   (o.id %% %(customers)s + 1, (o.id * 37) %% 100000, 'note ' || o.id)),"
        " count(*) FILTER (WHERE o.id > %(rows)s)"
        " FROM orders o WHERE NOT EXISTS (SELECT 1 FROM expected e WHERE e.id = o.id)"
        " AND NOT EXISTS (SELECT 1 FROM uncertain u WHERE u.id = o.id)",
        {"rows": rows, "customers": CUSTOMERS}).fetchone()
    written_initial = sum(1 for row_id in expected if row_id <= rows)
    untouched_expected = rows - written_initial - sum(1 for row_id in uncertain if row_id <= rows)
    conn.execute("DROP TABLE expected, uncertain")
    return {
        "checked_writes": len(expected),
        "lost_writes": lost,
        "altered_writes": altered,
        "lost_initial_rows": untouched_expected - untouched,
        "altered_initial_rows": untouched_altered,
        # rows nobody is known to have inserted; up to uncertain_inserts of them may be failed-but-committed inserts
        "unexpected_rows": unexpected,
        "uncertain_writes": len(uncertain) + uncertain_inserts,
        "bad_reads": len(bad_reads),
        "bad_read_examples": bad_reads[:5],
    }


def table_size(conn: psycopg.Connection) -> Dict[str, float]:
    """Heap and index MB of orders and, when it is partitioned, of all its partitions; and their number."""
    heap, indexes, partitions = conn.execute(
        "SELECT sum(pg_table_size(relid)), sum(pg_indexes_size(relid)), count(*) FILTER (WHERE level > 0)"
        " FROM (SELECT 'orders'::regclass AS relid, 0 AS level UNION SELECT relid, level FROM pg_partition_tree('orders')) t"
    ).fetchone()
    return {"heap": round(float(heap) / 2**20, 1), "indexes": round(float(indexes) / 2**20, 1), "partitions": partitions}


def leftovers(conn: psycopg.Connection) -> Dict[str, Any]:
    """What a migration may leave behind on orders: triggers, invalid indexes, NOT VALID constraints, helper columns."""
    return {
        "triggers": [r[0] for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal").fetchall()],
        "invalid_indexes": [r[0] for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'orders'::regclass AND NOT indisvalid")],
        "unvalidated_constraints": [r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'orders'::regclass AND NOT convalidated")],
        "helper_tables_or_columns": [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE '\\_keel\\_%' AND relkind IN ('r', 'i')"
            " UNION ALL SELECT attname FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname LIKE '\\_keel\\_%'"
            " AND NOT attisdropped")],
    }


def run_one(server: Server, template: str, rows: int, scenario: Scenario, variant: str, settings: Settings,
            repack: Optional[str]) -> Dict[str, Any]:
    dbname = "run_{0}_{1}_{2}".format(rows, scenario.key, variant)
    server.clone(template, dbname)
    dsn = server.dsn(dbname)
    record: Dict[str, Any] = {"rows": rows, "scenario": scenario.key, "title": scenario.title, "variant": variant,
                              "loadavg_before": [round(value, 2) for value in os.getloadavg()]}
    try:
        with server.connect(dbname) as conn:
            if variant == "pg_repack":
                conn.execute("CREATE EXTENSION pg_repack")
            filenode = conn.execute("SELECT pg_relation_filenode('orders')").fetchone()[0]
            size_before = table_size(conn)
        app = Application(dsn, rows, settings.clients, settings.rate, settings.prepared)
        app.start()
        began = time.perf_counter()
        time.sleep(WARMUP_SECONDS + settings.baseline)
        blocker = None
        if scenario.blocker:
            blocker = Blocker(dsn, BLOCKER_SECONDS)
            blocker.start()
            blocker.ready.wait(30)
        windows = run_steps(migration_steps(scenario, variant, dsn, rows, settings, repack))
        measured = windows[-1]
        record["migration_error"] = next((w.error for w in windows if w.error), None)
        migration_began, migration_ended, details = measured.began, measured.ended, measured.details
        time.sleep(TAIL_SECONDS)
        app.stop()
        if blocker is not None:
            blocker.join(timeout=60)
            record["blocker"] = {"held_seconds": round(blocker.held, 3), "error": blocker.error}
        samples = app.samples()
        record["migration_seconds"] = round(migration_ended - migration_began, 3)
        record["baseline"] = window_stats(samples, began + WARMUP_SECONDS, windows[0].began, overlap=False)
        record["migration"] = window_stats(samples, migration_began, migration_ended, overlap=True)
        record["setup"] = [{"step": w.label, "seconds": round(w.ended - w.began, 3), "details": w.details,
                            "window": window_stats(samples, w.began, w.ended, overlap=True)} for w in windows[:-1]]
        record["steps"] = [w.label for w in windows]
        record["application_errors"] = app.errors()
        record["details"] = details
        with server.connect(dbname) as conn:
            record["outcome_ok"] = bool(conn.execute(scenario.outcome_sql, {"filenode": filenode}).fetchone()[0])
            if variant == "keel":  # each keel migration ends finalized (or reverted): nothing is left in flight
                record["final_phase"] = details.get("catalog", {}).get("phase")
                record["outcome_ok"] = record["outcome_ok"] and record["final_phase"] == scenario.keel_final_phase
            record["table_mb"] = {"before": size_before, "after": table_size(conn)}
            record["leftovers"] = leftovers(conn)
            record["writes"] = verify(conn, app, rows)
    finally:
        server.drop(dbname)
    return record


def bulk_update_rate(server: Server, template: str, rows: int) -> Dict[str, Any]:
    """One `UPDATE orders SET amount = amount` on an idle fresh copy: what a bulk rewrite of every row costs."""
    dbname = "run_{0}_bulk_update".format(rows)
    server.clone(template, dbname)
    try:
        with server.connect(dbname) as conn:
            began = time.perf_counter()
            updated = conn.execute("UPDATE orders SET amount = amount").rowcount
            seconds = time.perf_counter() - began
    finally:
        server.drop(dbname)
    return {"rows": updated, "seconds": round(seconds, 3), "rows_per_second": round(updated / seconds)}


# -- judging and reporting ------------------------------------------------------------------

def judge(record: Dict[str, Any], bulk: Dict[str, Any], settings: Settings) -> Dict[str, Any]:
    """Pass/fail of one keel run against the stated targets (naive and pg_repack runs get the data checks only)."""
    writes = record.get("writes", {})
    verdict: Dict[str, Any] = {
        "zero_errors": not record.get("application_errors") and not record.get("migration_error"),
        "zero_lost_writes": all(writes.get(k, 1) == 0 for k in ("lost_writes", "altered_writes", "lost_initial_rows",
                                                                "altered_initial_rows", "bad_reads"))
        and writes.get("unexpected_rows", 0) <= writes.get("uncertain_writes", 0),
        "outcome_ok": bool(record.get("outcome_ok")),
    }
    if record["variant"] == "keel":
        limit_ms = (settings.lock_timeout + STALL_MARGIN_SECONDS) * 1000
        verdict["stall_within_lock_timeout"] = record["migration"]["max_ms"] <= limit_ms
        if record.get("setup"):  # revert: the completion before it is held to the same target
            verdict["setup_stall_within_lock_timeout"] = all(w["window"]["max_ms"] <= limit_ms for w in record["setup"])
        rates = [b["rows_per_second"] for b in record.get("details", {}).get("backfills", []) if b["rows_per_second"]]
        if rates:
            share = min(rates) / bulk["rows_per_second"]
            record["backfill_share_of_bulk_update"] = round(share, 3)
            verdict["backfill_rate_vs_bulk_update"] = share >= BACKFILL_TARGET_SHARE
    return verdict


def flatness(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per scenario and variant: the worst stall at each size, and whether it stays flat from the smallest to the largest."""
    summary: Dict[str, Any] = {}
    by_key: Dict[Tuple[str, str], Dict[int, float]] = collections.defaultdict(dict)
    for record in records:
        by_key[(record["scenario"], record["variant"])][record["rows"]] = record["migration"]["max_ms"]
    for (scenario, variant), stalls in sorted(by_key.items()):
        sizes = sorted(stalls)
        entry: Dict[str, Any] = {"max_stall_ms": {str(size): stalls[size] for size in sizes}}
        if len(sizes) > 1:
            small, big = stalls[sizes[0]], stalls[sizes[-1]]
            entry["growth"] = round(big / small, 2) if small else None
            entry["flat"] = big <= small * FLAT_FACTOR + FLAT_SLACK_SECONDS * 1000
        summary["{0}/{1}".format(scenario, variant)] = entry
    return summary


def keel_vs_naive(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per size and scenario: keel's worst stall and wall time against the naive run's, and their ratio."""
    by_run = {(r["rows"], r["scenario"], r["variant"]): r for r in records}
    summary: Dict[str, Any] = {}
    for (rows, scenario, variant), keel in sorted(by_run.items()):
        naive = by_run.get((rows, scenario, "naive"))
        if variant != "keel" or naive is None:
            continue
        entry = {}
        for name, value in (("worst_stall_ms", lambda r: r["migration"]["max_ms"]), ("wall_s", lambda r: r["migration_seconds"])):
            mine, theirs = value(keel), value(naive)
            entry[name] = {"keel": mine, "naive": theirs, "keel_over_naive": round(mine / theirs, 3) if theirs else None}
        summary["{0}/{1}".format(_rows_label(rows), scenario)] = entry
    return summary


def revert_seconds(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per size: the revert time keel recorded in its catalog (keel.migrations.revert_seconds)."""
    return {_rows_label(r["rows"]): r["details"]["catalog"]["revert_seconds"] for r in records
            if r["variant"] == "keel" and r["details"].get("catalog", {}).get("revert_seconds") is not None}


def keel_targets(records: List[Dict[str, Any]], flat: Dict[str, Any]) -> Dict[str, Any]:
    """Per scenario: each of keel's targets met at every size (and the worst stall flat from the smallest to the largest)."""
    summary: Dict[str, Any] = {}
    for record in records:
        if record["variant"] != "keel":
            continue
        entry = summary.setdefault(record["scenario"], {})
        for key, met in record["verdict"].items():
            entry[key] = entry.get(key, True) and met
    for scenario, entry in summary.items():
        entry["flat"] = flat.get("{0}/keel".format(scenario), {}).get("flat")
    return summary


TARGET_LABELS = (("stall_within_lock_timeout", "stall"), ("setup_stall_within_lock_timeout", "setup stall"),
                 ("zero_errors", "err"), ("zero_lost_writes", "writes"), ("backfill_rate_vs_bulk_update", "rate"),
                 ("outcome_ok", "done"), ("flat", "flat"))
TABLE_HEADERS = ["rows", "scenario", "variant", "wall s", "base p50/p99/max ms", "during p50/p99/max ms", "p99 x",
                 "worst stall ms", "q/s base->during", "errors", "lost/altered", "backfill rows/s (% bulk)", "MB after",
                 "targets"]


def _marks(verdict: Dict[str, Any]) -> str:
    return ", ".join("{0} {1}".format(label, "ok" if verdict[key] else "MISS")
                     for key, label in TARGET_LABELS if verdict.get(key) is not None)


def _window_cells(seconds: float, base: Dict[str, Any], during: Dict[str, Any], errors: int) -> List[str]:
    """wall s .. errors: the columns a measured window and a setup window share."""
    ratio = during["p99_ms"] / base["p99_ms"] if base["p99_ms"] else 0.0
    return ["{0:.1f}".format(seconds), "{0:.1f}/{1:.1f}/{2:.0f}".format(base["p50_ms"], base["p99_ms"], base["max_ms"]),
            "{0:.1f}/{1:.1f}/{2:.0f}".format(during["p50_ms"], during["p99_ms"], during["max_ms"]),
            "{0:.1f}".format(ratio), "{0:.0f}".format(during["max_ms"]),
            "{0:.0f}->{1:.0f}".format(base["queries_per_second"], during["queries_per_second"]), str(errors)]


def _damage(writes: Dict[str, Any]) -> str:
    """lost/altered: rows lost, and rows altered (bad reads and rows nobody inserted included)."""
    unexpected = max(0, writes["unexpected_rows"] - writes["uncertain_writes"])
    lost = writes["lost_writes"] + writes["lost_initial_rows"]
    altered = writes["altered_writes"] + writes["altered_initial_rows"] + writes["bad_reads"] + unexpected
    return "{0}/{1}".format(lost, altered)


def _backfill_cell(record: Dict[str, Any]) -> str:
    rates = [b["rows_per_second"] for b in record["details"].get("backfills", []) if b["rows_per_second"]]
    if not rates:
        return ""
    share = record.get("backfill_share_of_bulk_update")
    return "{0:,}".format(min(rates)) + ("" if share is None else " ({0:.0f}%)".format(share * 100))


def _size_cell(size: Dict[str, Any]) -> str:
    parts = " ({0} parts)".format(size["partitions"]) if size.get("partitions") else ""
    return "{0:.0f}+{1:.0f}{2}".format(size["heap"], size["indexes"], parts)


def _record_lines(record: Dict[str, Any], limit_ms: float) -> List[List[str]]:
    """One line per run; a run with setup steps (revert) gets a line per step, labelled scenario [step]."""
    rows, variant = _rows_label(record["rows"]), record["variant"]
    if record.get("skipped"):
        return [[rows, record["scenario"], variant, "skipped: " + record["skipped"], *[""] * (len(TABLE_HEADERS) - 4)]]
    base = record["baseline"]
    lines = []
    for step in record.get("setup", []):
        stall = "stall {0}".format("ok" if step["window"]["max_ms"] <= limit_ms else "MISS") if variant == "keel" else ""
        lines.append([rows, "{0} [{1}]".format(record["scenario"], step["step"]), variant,
                      *_window_cells(step["seconds"], base, step["window"], step["window"]["errors"]), "", "", "", stall])
    label = "{0} [{1}]".format(record["scenario"], record["steps"][-1]) if lines else record["scenario"]
    errors = sum(record["application_errors"].values()) + (1 if record["migration_error"] else 0)
    lines.append([rows, label, variant, *_window_cells(record["migration_seconds"], base, record["migration"], errors),
                  _damage(record["writes"]), _backfill_cell(record), _size_cell(record["table_mb"]["after"]),
                  _marks(record["verdict"])])
    return lines


def text_table(report: Dict[str, Any], markdown: bool = False) -> str:
    limit_ms = (report["settings"]["lock_timeout"] + STALL_MARGIN_SECONDS) * 1000
    lines = [line for record in report["runs"] for line in _record_lines(record, limit_ms)]
    headers = TABLE_HEADERS
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for h in headers) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
    else:
        widths = [max(len(headers[i]), *(len(cells[i]) for cells in lines)) if lines else len(headers[i])
                  for i in range(len(headers))]
        out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
        out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    out.append("")
    out.append("bulk UPDATE orders SET amount = amount (idle): " + ", ".join(
        "{0}: {1:,} rows/s ({2} s)".format(_rows_label(int(rows)), b["rows_per_second"], b["seconds"])
        for rows, b in report["bulk_update"].items()))
    summary = report["summary"]
    flat = ["{0}: {1}{2}".format(key, " -> ".join("{0:.0f}".format(v) for v in entry["max_stall_ms"].values()),
                                 "" if "flat" not in entry else " ms ({0}, x{1})".format("flat" if entry["flat"] else "GROWS",
                                                                                         entry["growth"]))
            for key, entry in summary["worst_stall_by_size"].items()]
    out.append("worst stall by size (smallest -> largest): " + "; ".join(flat))
    out.append("keel/naive (worst stall, wall time): " + "; ".join(
        "{0}: x{1}, x{2}".format(key, entry["worst_stall_ms"]["keel_over_naive"], entry["wall_s"]["keel_over_naive"])
        for key, entry in summary.get("keel_vs_naive", {}).items()))
    if summary.get("revert_seconds"):
        out.append("keel revert_seconds (catalog): " + ", ".join(
            "{0}: {1}".format(rows, seconds) for rows, seconds in summary["revert_seconds"].items()))
    out.append("keel targets at every size: " + "; ".join(
        "{0}: {1}".format(scenario, _marks(entry)) for scenario, entry in summary.get("keel_targets", {}).items()))
    return "\n".join(out)


def _rows_label(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return "{0}M".format(rows // 1_000_000)
    if rows % 1000 == 0:
        return "{0}k".format(rows // 1000)
    return str(rows)


def git_commit() -> Optional[str]:
    completed = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return completed.stdout.strip() if completed.returncode == 0 else None


def machine_facts(server: Server) -> Dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    with contextlib.suppress(ValueError, OSError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": memory, "kernel": platform.release(),
            "python": platform.python_version(), "psycopg": psycopg.__version__, "postgres": server.settings()}


def log(message: str) -> None:
    print("[{0}] {1}".format(datetime.datetime.now().strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


# -- main ------------------------------------------------------------------------------------

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", default="1000000,4000000", help="comma-separated table sizes (default 1000000,4000000)")
    parser.add_argument("--clients", type=int, default=4, help="application client threads (default 4)")
    parser.add_argument("--rate", type=float, default=200.0, help="queries per second per client (default 200)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of baseline before each migration (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100k rows, 3 s baselines")
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                        help="comma-separated subset of: " + ", ".join(s.key for s in SCENARIOS))
    parser.add_argument("--lock-timeout", type=float, default=0.5, help="keel lock_timeout in seconds (default 0.5)")
    parser.add_argument("--prepared", action="store_true",
                        help="clients use server-side prepared statements (psycopg prepare_threshold=0)")
    parser.add_argument("--output", help="JSON report path (default bench/results/zero_downtime-<timestamp>.json)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--from-json", metavar="REPORT", help="only print the table of an earlier JSON report")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = "100000"
        args.baseline = min(args.baseline, 3.0)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(text_table(json.loads(Path(args.from_json).read_text()), markdown=args.markdown))
        return 0
    sizes = [int(value.replace("_", "")) for value in args.rows.split(",") if value.strip()]
    chosen = [value.strip() for value in args.scenarios.split(",") if value.strip()]
    unknown = sorted(set(chosen) - {s.key for s in SCENARIOS})
    if unknown:
        raise SystemExit("unknown scenario(s): {0}".format(", ".join(unknown)))
    settings = Settings(rows=sizes, clients=args.clients, rate=args.rate, baseline=args.baseline,
                        lock_timeout=args.lock_timeout, lock_retries=200, statement_timeout=30.0, batch_size=10_000,
                        pause_ratio=0.2, scenarios=chosen, prepared=args.prepared)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(args.output) if args.output else RESULTS_DIR / "zero_downtime-{0}.json".format(stamp)

    _bootstrap_imports()
    if os.getloadavg()[0] > 0.5:
        log("warning: load average {0:.2f} before we start; something else is using the CPUs and will "
            "show up in the latencies".format(os.getloadavg()[0]))
    started = time.perf_counter()
    server = Server()
    report: Dict[str, Any] = {"started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                              # the machine may be shared: a load above ~0 before we start means someone else is busy
                              "loadavg_at_start": [round(value, 2) for value in os.getloadavg()],
                              "settings": dataclasses.asdict(settings), "server_settings_applied": SERVER_SETTINGS,
                              "git_commit": git_commit(), "bulk_update": {}, "runs": []}
    try:
        server.start()
        log("cluster in {0} on port {1}".format(server.cluster.base_dir, server.cluster.port))
        report["machine"] = machine_facts(server)
        repack = pg_repack_binary(server.cluster.bindir)
        available = server.cluster.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_repack'")[0][0]
        repack_skip = None
        if repack is None:
            repack_skip = "pg_repack client binary not found (apt-get install postgresql-15-repack)"
        elif not available:
            repack_skip = "pg_repack extension not installed on the server (apt-get install postgresql-15-repack)"
        for rows in sizes:
            log("building the {0}-row template".format(rows))
            template = server.build_template(rows)
            bulk = bulk_update_rate(server, template, rows)
            report["bulk_update"][str(rows)] = bulk
            log("bulk UPDATE of {0} rows: {1} s, {2:,} rows/s".format(rows, bulk["seconds"], bulk["rows_per_second"]))
            for scenario in (s for s in SCENARIOS if s.key in chosen):
                variants = ["naive", "keel"] + (["pg_repack"] if scenario.pg_repack else [])
                for variant in variants:
                    if variant == "pg_repack" and repack_skip:
                        report["runs"].append({"rows": rows, "scenario": scenario.key, "variant": variant,
                                               "skipped": repack_skip})
                        log("{0} / {1} / {2}: skipped ({3})".format(rows, scenario.key, variant, repack_skip))
                        continue
                    log("{0} / {1} / {2} ...".format(rows, scenario.key, variant))
                    try:
                        record = run_one(server, template, rows, scenario, variant, settings, repack)
                    except Exception as error:  # a broken run is reported, the others still run
                        report["runs"].append({"rows": rows, "scenario": scenario.key, "variant": variant,
                                               "skipped": "benchmark failure: " + _first_line(error)})
                        log("  benchmark failure: {0}".format(_first_line(error)))
                        continue
                    record["verdict"] = judge(record, bulk, settings)
                    report["runs"].append(record)
                    log("  {0:.1f} s, worst stall {1:.0f} ms (baseline max {2:.0f} ms), errors {3}, {4}{5}".format(
                        record["migration_seconds"], record["migration"]["max_ms"], record["baseline"]["max_ms"],
                        sum(record["application_errors"].values()),
                        ", ".join("{0}={1}".format(k, v) for k, v in record["verdict"].items()),
                        " migration error: " + record["migration_error"] if record["migration_error"] else ""))
            server.drop(template)
    finally:
        server.remove()
    report["duration_seconds"] = round(time.perf_counter() - started, 1)
    report["loadavg_at_end"] = [round(value, 2) for value in os.getloadavg()]
    measured = [r for r in report["runs"] if not r.get("skipped")]
    flat = flatness(measured)
    report["summary"] = {"worst_stall_by_size": flat, "keel_vs_naive": keel_vs_naive(measured),
                         "keel_targets": keel_targets(measured, flat), "revert_seconds": revert_seconds(measured)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({"report": str(output), "duration_seconds": report["duration_seconds"],
                      "summary": report["summary"]}, indent=2))
    print()
    print(text_table(report, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
