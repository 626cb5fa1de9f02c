"""Shadow-write benchmark: what keel's dual-write trigger costs the application, and how long a cutover stalls it.

In a throwaway PostgreSQL cluster, on an ``orders`` table of ``--rows`` rows, it measures:

1. Write cost. Client threads (one connection each) write as fast as they can: single-row UPDATEs by primary key
   and INSERTs, 4:1. Each window writes either ``orders`` or ``orders_plain``, an identical table that never gets a
   trigger; the two alternate in rounds, so both see the same machine. Three modes: ``off`` (no trigger on either
   table yet: the A/A noise floor), ``enabled`` (shadow writes on ``orders``, after the backfill) and ``paused`` (the
   trigger only logs changed keys). With ``--clients`` clients and with one client alone: per-write latency p50/p99,
   throughput, the server's execution time per write (pg_stat_statements, AFTER trigger included) and the CPU time
   of the backends per write.
2. State changes under a paced application load (reads, UPDATEs and INSERTs by primary key, valid on both table
   shapes, connections with ``prepare_threshold=None``): enabling (the backfill), resuming after the pause (the
   replay of logged keys), cutover and reverted, and cutover and reverted again while another session's read
   transaction is in the way. For each: wall time, keel's lock timeouts, the application's worst latency and
   errors. Afterwards every acknowledged write is looked up in the table, and a full drift check compares it with
   orders_v2.
3. The backfill rate of enabling, and the rate of the full drift check.

Targets: enabled/plain at most 1.5x per write (p50 latency and throughput with the clients, p50 with one client);
cutover and revert stall the application at most lock_timeout + 100 ms, without errors; no drift, no lost write.
The exit status is 0 when every target is met, 1 when one is not.

It starts its own throwaway cluster (tests/harness) and removes it at the end. Run it from anywhere:

    /path/to/venv/bin/python bench/shadow_write.py --quick      # 100k rows, about a minute
    /path/to/venv/bin/python bench/shadow_write.py              # 1M rows, about 5.5 minutes on 2 cores

See bench/README.md and docs/benchmarks/shadow_write.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

CUSTOMERS = 10_000
# Closed-loop writers: every INSERT_EVERY-th write is an INSERT, the others UPDATE a random row by primary key.
INSERT_EVERY = 5
# Paced clients: share of each kind, the rest are reads by primary key.
PACED_UPDATE_SHARE = 0.40
PACED_INSERT_SHARE = 0.10
# Queries that start this long after an operation ended still count as "during" it: they queued behind it.
TAIL_SECONDS = 1.0
# Client-side warm-up (connections, plan caches) left out of each write window.
WARMUP_SECONDS = 0.5
# Targets.
WRITE_COST_TARGET = 1.5
STALL_MARGIN_SECONDS = 0.100
SLOW_QUERY_SECONDS = 0.100

# autovacuum off: every round of write windows starts from a VACUUM of all tables instead, so a vacuum of one table
# never lands in the middle of one side's window.
SERVER_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "256MB",
    "autovacuum": "off",
}
REPORTED_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
                     "max_wal_size", "work_mem", "autovacuum")

SOURCE = "orders"
TARGET = "orders_v2"
PLAIN = "orders_plain"
SHADOW_PARAMS = {
    "source": SOURCE,
    "target": TARGET,
    "target_definition": "id bigint primary key, amount_cents bigint not null default 0, customer_id bigint",
    "mapping": {"id": "id", "amount_cents": "(amount * 100)::bigint", "customer_id": "customer_id"},
    "reverse_mapping": {"amount": "amount_cents / 100.0", "customer_id": "customer_id"},
}
MODES = (("off", "off (A/A, no trigger yet)"), ("enabled", "enabled"), ("paused", "paused (log only)"))

TABLE_SQL = """
CREATE TABLE {table} (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount numeric(12,2) NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'new',
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
LOAD_SQL = """
INSERT INTO {table} (customer_id, amount, status, note, created_at)
SELECT g % {customers} + 1, (g % 100000) / 100.0, (ARRAY['new', 'paid', 'shipped', 'done'])[g % 4 + 1],
       md5(g::text), timestamptz '2026-01-01' - (g || ' seconds')::interval
FROM generate_series(1, {rows}) AS g"""


def log(message: str) -> None:
    print("[{0}] {1}".format(time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def _bootstrap_imports() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.harness.collection_path import ensure_collection_importable

    ensure_collection_importable()


# -- statistics ----------------------------------------------------------------------------------------------


def percentile(ordered: List[float], fraction: float) -> Optional[float]:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_stats(latencies: List[float], seconds: Optional[float] = None) -> Dict[str, Any]:
    ordered = sorted(latencies)

    def ms(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(value * 1000.0, 3)

    stats = {"count": len(ordered), "p50_ms": ms(percentile(ordered, 0.50)), "p95_ms": ms(percentile(ordered, 0.95)),
             "p99_ms": ms(percentile(ordered, 0.99)), "max_ms": ms(ordered[-1] if ordered else None),
             "mean_ms": ms(sum(ordered) / len(ordered) if ordered else None)}
    if seconds:
        stats["per_second"] = round(len(ordered) / seconds, 1)
    return stats


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


# -- the server ----------------------------------------------------------------------------------------------


class Server:
    """The throwaway cluster, tuned so checkpoints and autovacuum stay out of the measurement windows."""

    def __init__(self, fsync: bool) -> None:
        from tests.harness.postgres_cluster import PostgresCluster

        self.cluster = PostgresCluster()
        self.fsync = fsync

    def start(self) -> None:
        self.cluster.start()
        settings = dict(SERVER_SETTINGS)
        if self.fsync:
            settings["fsync"] = "on"  # postgresql.auto.conf wins over the harness's fsync = off
        for name, value in settings.items():
            self.cluster.execute(sql.SQL("ALTER SYSTEM SET {0} = {1}").format(sql.Identifier(name), sql.Literal(value)))
        self.cluster.stop()  # shared_buffers changes only at a restart
        self.cluster.start()

    def remove(self) -> None:
        self.cluster.remove()

    def dsn(self, dbname: str) -> str:
        return self.cluster.dsn(dbname)

    def settings(self) -> Dict[str, str]:
        rows = self.cluster.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY (%s)",
                                    (list(REPORTED_SETTINGS),))
        return dict(sorted(rows))


def load_tables(conn: psycopg.Connection, rows: int) -> Dict[str, Any]:
    """orders and orders_plain: the same rows, the same layout."""
    began = time.monotonic()
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    for table in (SOURCE, PLAIN):
        conn.execute(TABLE_SQL.format(table=table))
        conn.execute(LOAD_SQL.format(table=table, rows=int(rows), customers=CUSTOMERS))
    conn.execute("VACUUM (ANALYZE) orders, orders_plain")
    conn.execute("CHECKPOINT")
    size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('orders'))").fetchone()[0]
    return {"rows": rows, "size_each": size, "seconds": round(time.monotonic() - began, 1)}


def vacuum_all(conn: psycopg.Connection) -> None:
    tables = [t for t in (SOURCE, PLAIN, TARGET, "keel.shadow_changes")
              if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()[0]]
    conn.execute(sql.SQL("VACUUM (ANALYZE) {0}").format(sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in tables)))


# -- the engine ----------------------------------------------------------------------------------------------


def shadow(conn: psycopg.Connection, state: str, drift_check: str, lock_timeout: float) -> Dict[str, Any]:
    """One run of keel's shadow_write engine, as the module would do it; returns its result, metrics and wall time."""
    from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
    from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
    from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy
    from ansible_collections.keel.postgres.plugins.module_utils.shadow.engine import ShadowRequest, ShadowRun
    from ansible_collections.keel.postgres.plugins.module_utils.shadow.spec import parse_spec

    request = ShadowRequest(parse_spec(SHADOW_PARAMS), state, drift_check, LockPolicy(lock_timeout, 50, 0),
                            BackfillSettings(10000, 0.2, None, 600))
    metrics = RunMetrics()
    began = time.monotonic()
    result = ShadowRun(conn, request, metrics).run(False)
    wall = time.monotonic() - began
    result.pop("diff", None)
    return {"result": result, "metrics": metrics.as_dict(), "wall_seconds": round(wall, 3), "began": began,
            "ended": began + wall}


def backfill_record(conn: psycopg.Connection) -> Dict[str, Any]:
    row = conn.execute(
        "SELECT rows_done, batches, extract(epoch FROM updated_at - started_at)::float8 FROM keel.backfills"
        " WHERE migration LIKE 'shadow:%%' AND step = 'backfill'").fetchone()
    if row is None:
        return {"rows": 0, "batches": 0, "seconds": 0.0, "rows_per_second": None}
    return {"rows": row[0], "batches": row[1], "seconds": round(row[2], 3),
            "rows_per_second": round(row[0] / row[2]) if row[2] else None}


# -- closed-loop writers (write cost) ------------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes one table as fast as it can: UPDATE by primary key, every INSERT_EVERY-th write an INSERT."""

    def __init__(self, dsn: str, table: str, rows: int, seed: int, start_at: threading.Event, stop: threading.Event,
                 pin: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.start_at, self.stop, self.pin = dsn, rows, start_at, stop, pin
        # Constant table names from this file: the query text is what pg_stat_statements groups by.
        self.update_query = "UPDATE {0} SET amount = amount + 0.01, customer_id = %s WHERE id = %s".format(table)
        self.insert_query = "INSERT INTO {0} (customer_id, amount, note) VALUES (%s, %s, %s)".format(table)
        self.rng = random.Random(seed)
        self.samples: List[Tuple[float, float, str]] = []
        self.errors: collections.Counter = collections.Counter()
        self.conn: Optional[psycopg.Connection] = None
        self.pinned = False

    def connect(self) -> None:
        self.conn = psycopg.connect(self.dsn, autocommit=True)

    def run(self) -> None:
        assert self.conn is not None
        if self.pin is not None:
            self.pinned = pin_cpus(self.pin[0], self.conn.info.backend_pid, self.pin[1])
        self.start_at.wait()
        number = 0
        while not self.stop.is_set():
            number += 1
            customer = self.rng.randint(1, CUSTOMERS)
            if number % INSERT_EVERY == 0:
                kind, query = "insert", self.insert_query
                params: Tuple[Any, ...] = (customer, self.rng.randint(1, 100000) / 100.0, "bench")
            else:
                kind, query = "update", self.update_query
                params = (customer, self.rng.randint(1, self.rows))
            began = time.monotonic()
            try:
                self.conn.execute(query, params)
            except psycopg.Error as exc:
                self.errors[_first_line(exc)] += 1
                continue
            self.samples.append((began, time.monotonic() - began, kind))


def pin_cpus(client_cpu: int, backend_pid: int, backend_cpu: int) -> bool:
    """Pin the calling thread to one CPU and a server backend (a process on this host) to another."""
    try:
        os.sched_setaffinity(0, {client_cpu})
        os.sched_setaffinity(backend_pid, {backend_cpu})
    except (AttributeError, OSError):
        return False
    return True


def backend_cpu_seconds(writers: List[Writer]) -> Optional[float]:
    """User + system CPU time of the writers' server backends so far (from /proc: the server runs on this host)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        for writer in writers:
            assert writer.conn is not None
            stat = Path("/proc/{0}/stat".format(writer.conn.info.backend_pid)).read_text(encoding="ascii", errors="replace")
            # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return total / ticks


def write_window(server: Server, dbname: str, table: str, clients: int, rows: int, seconds: float,
                 seed: int) -> Dict[str, Any]:
    """One window of closed-loop writers on one table; raw numbers, pooled later by ``pooled``."""
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    start_at, stop = threading.Event(), threading.Event()
    # One client alone: its thread on one CPU and its backend on the other, in every window alike. Left to the
    # scheduler, the pair sometimes shares a core and sometimes not, and the round trip swings by ~1.5x with it.
    pin = (0, 1) if clients == 1 and (os.cpu_count() or 1) >= 2 else None
    writers = [Writer(server.dsn(dbname), table, rows, seed * 100 + i, start_at, stop, pin) for i in range(clients)]
    try:
        for writer in writers:
            writer.connect()
        cpu_before = backend_cpu_seconds(writers)
        for writer in writers:
            writer.start()
        began = time.monotonic()
        start_at.set()
        window_from = began + WARMUP_SECONDS
        window_to = window_from + seconds
        time.sleep(WARMUP_SECONDS + seconds)
        stop.set()
        for writer in writers:
            writer.join()
        cpu_after = backend_cpu_seconds(writers)
    finally:
        stop.set()
        start_at.set()
        for writer in writers:
            if writer.conn is not None:
                writer.conn.close()
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE ANY (%s)",
            (["UPDATE {0} SET amount %".format(table), "INSERT INTO {0} (customer_id, amount, note) %".format(table)],)).fetchone()
    errors: collections.Counter = collections.Counter()
    for writer in writers:
        errors.update(writer.errors)
    return {"table": table, "clients": clients, "seconds": seconds,
            "samples": [(s[1], s[2]) for w in writers for s in w.samples if window_from <= s[0] and s[0] + s[1] <= window_to],
            "all_writes": sum(len(w.samples) for w in writers), "exec_calls": row[0], "exec_ms": row[1],
            "cpu_seconds": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
            "errors": dict(errors), "pinned": bool(pin) and all(w.pinned for w in writers)}


def pooled(windows: List[Dict[str, Any]]) -> Dict[str, Any]:
    seconds = sum(w["seconds"] for w in windows)
    samples = [s for w in windows for s in w["samples"]]
    calls = sum(w["exec_calls"] for w in windows)
    cpu = [w["cpu_seconds"] for w in windows]
    writes = sum(w["all_writes"] for w in windows)
    errors: collections.Counter = collections.Counter()
    for window in windows:
        errors.update(window["errors"])
    return {"windows": len(windows), "seconds": seconds,
            "all": latency_stats([s[0] for s in samples], seconds),
            "update": latency_stats([s[0] for s in samples if s[1] == "update"], seconds),
            "insert": latency_stats([s[0] for s in samples if s[1] == "insert"], seconds),
            "server_exec_us_per_write": round(sum(w["exec_ms"] for w in windows) * 1000.0 / calls, 1) if calls else None,
            "backend_cpu_us_per_write": round(sum(cpu) * 1e6 / writes, 1) if None not in cpu and writes else None,
            "errors": dict(errors), "pinned": all(w["pinned"] for w in windows)}


def compare(plain: List[Dict[str, Any]], tested: List[Dict[str, Any]]) -> Dict[str, Any]:
    """orders against orders_plain, pooled over all rounds, and round by round (the spread)."""
    base, other = pooled(plain), pooled(tested)
    ratios = {
        "p50": ratio(other["all"]["p50_ms"], base["all"]["p50_ms"]),
        "p99": ratio(other["all"]["p99_ms"], base["all"]["p99_ms"]),
        "mean": ratio(other["all"]["mean_ms"], base["all"]["mean_ms"]),
        "throughput_plain_over_tested": ratio(base["all"]["per_second"], other["all"]["per_second"]),
        "server_exec": ratio(other["server_exec_us_per_write"], base["server_exec_us_per_write"]),
        "backend_cpu": ratio(other["backend_cpu_us_per_write"], base["backend_cpu_us_per_write"]),
    }
    rounds = []
    for one_plain, one_tested in zip(plain, tested):
        a, b = pooled([one_plain]), pooled([one_tested])
        rounds.append({"p50": ratio(b["all"]["p50_ms"], a["all"]["p50_ms"]),
                       "throughput_plain_over_tested": ratio(a["all"]["per_second"], b["all"]["per_second"])})
    return {"plain": base, "tested": other, "ratios": ratios, "rounds": rounds}


def measure_mode(server: Server, conn: psycopg.Connection, dbname: str, mode: str, args: argparse.Namespace,
                 seed: int) -> Dict[str, Any]:
    """Rounds of windows alternating orders_plain and orders (which goes first alternates too)."""
    windows: Dict[Tuple[str, int], List[Dict[str, Any]]] = collections.defaultdict(list)
    for number in range(args.rounds):
        vacuum_all(conn)
        order = (PLAIN, SOURCE) if number % 2 == 0 else (SOURCE, PLAIN)
        for clients, seconds in ((args.clients, args.window), (1, args.single_window)):
            for table in order:
                windows[(table, clients)].append(write_window(server, dbname, table, clients, args.rows, seconds,
                                                              seed * 1000 + number * 10 + clients))
    result = {"clients": compare(windows[(PLAIN, args.clients)], windows[(SOURCE, args.clients)]),
              "one_client": compare(windows[(PLAIN, 1)], windows[(SOURCE, 1)])}
    for key in ("clients", "one_client"):
        r = result[key]
        log("writes {0}, {1}: orders {2} writes/s p50 {3} ms, orders_plain {4} writes/s p50 {5} ms; p50 {6}x, "
            "throughput {7}x, server exec {8}x, backend CPU {9}x".format(
                mode, key, r["tested"]["all"]["per_second"], r["tested"]["all"]["p50_ms"], r["plain"]["all"]["per_second"],
                r["plain"]["all"]["p50_ms"], r["ratios"]["p50"], r["ratios"]["throughput_plain_over_tested"],
                r["ratios"]["server_exec"], r["ratios"]["backend_cpu"]))
    return result


# -- paced application (state changes) -----------------------------------------------------------------------


class PacedClient(threading.Thread):
    """A paced application session: reads by PK, UPDATE customer_id by PK, INSERT, valid on both table shapes.

    Updates touch only this client's own keys (id % clients == index), so the last acknowledged value of each key
    is known and can be checked in the table afterwards.
    """

    def __init__(self, dsn: str, index: int, clients: int, rows: int, rate: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.dsn, self.index, self.clients, self.rows, self.rate, self.stop = dsn, index, clients, rows, rate, stop
        self.rng = random.Random(1000 + index)
        self.samples: List[Tuple[float, float, str, Optional[str]]] = []
        self.expected: Dict[int, int] = {}  # id -> customer_id last acknowledged
        self.uncertain: set = set()  # ids whose last write failed: its outcome is unknown
        self.inserted: Dict[int, int] = {}
        self.conn: Optional[psycopg.Connection] = None

    def connect(self) -> None:
        # The table behind the name changes shape at cutover: no server-side prepared statements.
        self.conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None)

    def own_key(self) -> int:
        slots = (self.rows - self.index - 1) // self.clients + 1
        return self.index + 1 + self.clients * self.rng.randrange(slots)

    def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                # No catch-up burst after a stall: the stall shows as one slow query, not as a queue of them.
                next_at = max(next_at + interval, time.monotonic())
                self.one_query()
        finally:
            if self.conn is not None:
                self.conn.close()

    def one_query(self) -> None:
        draw = self.rng.random()
        key = self.own_key()
        customer = self.rng.randint(1, CUSTOMERS)
        if draw < PACED_UPDATE_SHARE:
            kind, query, params = "update", "UPDATE orders SET customer_id = %s WHERE id = %s", (customer, key)
        elif draw < PACED_UPDATE_SHARE + PACED_INSERT_SHARE:
            kind, query, params = "insert", "INSERT INTO orders (customer_id) VALUES (%s) RETURNING id", (customer,)
        else:
            kind, query, params = "read", "SELECT * FROM orders WHERE id = %s", (key,)
        began = time.monotonic()
        error = None
        try:
            if self.conn is None or self.conn.closed:
                self.connect()
            cursor = self.conn.execute(query, params)
            if kind == "insert":
                self.inserted[cursor.fetchone()[0]] = customer
            elif kind == "read":
                cursor.fetchall()
        except psycopg.Error as exc:
            error = _first_line(exc)
            if kind == "update":
                self.uncertain.add(key)
        else:
            if kind == "update":
                self.expected[key] = customer
                self.uncertain.discard(key)
        self.samples.append((began, time.monotonic() - began, kind, error))


class PacedLoad:
    def __init__(self, dsn: str, clients: int, rows: int, rate: float) -> None:
        self.stop = threading.Event()
        self.clients = [PacedClient(dsn, i, clients, rows, rate, self.stop) for i in range(clients)]
        self.started = 0.0

    def __enter__(self) -> "PacedLoad":
        for client in self.clients:
            client.connect()
        self.started = time.monotonic()
        for client in self.clients:
            client.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop.set()
        for client in self.clients:
            client.join()

    def samples(self) -> List[Tuple[float, float, str, Optional[str]]]:
        return [s for c in self.clients for s in c.samples]

    def window(self, began: float, ended: float, tail: float = TAIL_SECONDS) -> Dict[str, Any]:
        """The application's view of [began, ended + tail]: every query that overlapped it."""
        inside = [s for s in self.samples() if s[0] < ended + tail and s[0] + s[1] > began]
        ok = [s for s in inside if s[3] is None]
        errors = collections.Counter(s[3] for s in inside if s[3] is not None)
        worst = sorted(inside, key=lambda s: s[1], reverse=True)[:5]
        started = sum(1 for s in inside if began <= s[0] < ended + tail)
        return {"queries": len(inside), "latency": latency_stats([s[1] for s in ok]),
                "started_per_second": round(started / (ended + tail - began), 1) if ended + tail > began else None,
                "worst_ms": round(max((s[1] for s in inside), default=0.0) * 1000.0, 1),
                "slow_queries": sum(1 for s in inside if s[1] > SLOW_QUERY_SECONDS),
                "slowest": [{"kind": s[2], "ms": round(s[1] * 1000.0, 1), "started_s": round(s[0] - began, 3),
                             "error": s[3]} for s in worst],
                "errors": sum(errors.values()), "error_messages": dict(errors)}


class Blocker(threading.Thread):
    """Another session's open read transaction on orders, kept open until keel's session has queued behind it for
    ``hold`` seconds: keel's lock attempts must time out and retry, and the application must not stall longer than
    one lock_timeout meanwhile."""

    def __init__(self, dsn: str, waiter_pid: int, hold: float, give_up: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.dsn, self.waiter_pid, self.hold, self.give_up = dsn, waiter_pid, hold, give_up
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.outcome: Dict[str, Any] = {}

    def run(self) -> None:
        with psycopg.connect(self.dsn) as holder, psycopg.connect(self.dsn, autocommit=True) as watcher:
            holder.execute("SELECT id FROM orders WHERE id = 1").fetchall()  # opens a transaction holding ACCESS SHARE
            began = time.monotonic()
            self.ready.set()
            first_wait = None
            while time.monotonic() - began < self.give_up and not self.stop.is_set():
                waiting = watcher.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)",
                                          (self.waiter_pid,)).fetchone()[0]
                if waiting and first_wait is None:
                    first_wait = time.monotonic()
                if first_wait is not None and time.monotonic() - first_wait >= self.hold:
                    break
                time.sleep(0.01)
            holder.rollback()
            self.outcome = {"held_seconds": round(time.monotonic() - began, 3), "keel_waited": first_wait is not None,
                            "held_after_keel_queued_seconds": None if first_wait is None else round(time.monotonic() - first_wait, 3)}


def operation_under_load(load: PacedLoad, conn: psycopg.Connection, label: str, state: str, drift_check: str,
                         lock_timeout: float, blocker_hold: float = 0.0) -> Dict[str, Any]:
    log("{0}: state {1} under load{2}".format(label, state, ", a read transaction in the way" if blocker_hold else ""))
    blocker = None
    if blocker_hold:
        blocker = Blocker(conn.info.dsn, conn.info.backend_pid, blocker_hold)
        blocker.start()
        blocker.ready.wait()
    try:
        run = shadow(conn, state, drift_check, lock_timeout)
    finally:
        if blocker is not None:
            if sys.exc_info()[0] is not None:
                blocker.stop.set()
            blocker.join()
    time.sleep(TAIL_SECONDS + 0.2)
    app = load.window(run["began"], run["ended"])
    counters = run["metrics"]["counters"]
    entry = {"state": state, "wall_seconds": run["wall_seconds"],
             "lock_held_ms": counters.get("longest_lock_attempt_ms"), "lock_attempts": counters.get("lock_attempts"),
             "lock_timeouts": counters.get("lock_timeouts", 0), "app": app, "engine": run["result"],
             "metrics": run["metrics"], "blocker": blocker.outcome if blocker is not None else None}
    log("{0}: {1:.2f} s, {2} lock timeouts, longest lock attempt {3} ms, app worst {4} ms, {5} errors".format(
        label, run["wall_seconds"], entry["lock_timeouts"], entry["lock_held_ms"], app["worst_ms"], app["errors"]))
    return entry


def check_writes(conn: psycopg.Connection, load: PacedLoad) -> Dict[str, Any]:
    """Every acknowledged UPDATE's value and every acknowledged INSERT is in orders (and hence, drift-free, in orders_v2)."""
    expected: Dict[int, int] = {}
    uncertain = set()
    for client in load.clients:
        expected.update(client.expected)
        expected.update(client.inserted)
        uncertain |= client.uncertain
    for key in uncertain:
        expected.pop(key, None)
    keys = sorted(expected)
    found = dict(conn.execute("SELECT id, customer_id FROM orders WHERE id = ANY (%s)", (keys,)).fetchall())
    missing = [k for k in keys if k not in found]
    wrong = [k for k in keys if k in found and found[k] != expected[k]]
    return {"keys_checked": len(keys), "uncertain": len(uncertain), "missing": len(missing), "wrong": len(wrong),
            "examples": [{"id": k, "expected": expected[k], "found": found.get(k)} for k in (missing + wrong)[:5]],
            "ok": not missing and not wrong}


# -- the benchmark -------------------------------------------------------------------------------------------


def run_benchmark(server: Server, args: argparse.Namespace) -> Dict[str, Any]:
    dbname = "shadow_bench"
    server.cluster.create_database(dbname)
    dsn = server.dsn(dbname)
    conn = psycopg.connect(dsn, autocommit=True)
    report: Dict[str, Any] = {}
    writes: Dict[str, Any] = {}
    ops: Dict[str, Any] = {}
    report["writes"], report["operations"] = writes, ops
    try:
        log("loading {0:,} rows into orders and orders_plain".format(args.rows))
        report["tables"] = load_tables(conn, args.rows)
        log("tables: {0}".format(report["tables"]))
        writes["off"] = measure_mode(server, conn, dbname, "off", args, 1)

        with PacedLoad(dsn, args.clients, args.rows, args.rate) as load:
            time.sleep(args.baseline)
            report["paced_baseline"] = load.window(load.started + 0.5, time.monotonic(), tail=0.0)
            ops["enable"] = operation_under_load(load, conn, "enable", "enabled", "none", args.lock_timeout)
        report["backfill"] = backfill_record(conn)
        report["backfill"]["enable_wall_seconds"] = ops["enable"]["wall_seconds"]
        report["drift_after_enable"] = _drift_entry(shadow(conn, "enabled", "full", args.lock_timeout))
        log("backfill {0}; full drift check {1}".format(report["backfill"], report["drift_after_enable"]))

        writes["enabled"] = measure_mode(server, conn, dbname, "enabled", args, 2)
        ops["pause"] = _plain_operation(shadow(conn, "paused", "none", args.lock_timeout))
        writes["paused"] = measure_mode(server, conn, dbname, "paused", args, 3)

        with PacedLoad(dsn, args.clients, args.rows, args.rate) as load:
            time.sleep(1.0)
            ops["resume"] = operation_under_load(load, conn, "resume", "enabled", "none", args.lock_timeout)
        replayed = ops["resume"]["metrics"]["counters"].get("changes_replayed", 0)
        ops["resume"]["changes_replayed"] = replayed
        ops["resume"]["replay_changes_per_second"] = round(replayed / ops["resume"]["wall_seconds"]) if replayed else None

        with PacedLoad(dsn, args.clients, args.rows, args.rate) as load:
            time.sleep(args.baseline)
            report["paced_baseline_before_cutover"] = load.window(load.started + 0.5, time.monotonic(), tail=0.0)
            ops["cutover"] = operation_under_load(load, conn, "cutover", "cutover", "none", args.lock_timeout)
            cut_over_at = time.monotonic()
            time.sleep(args.baseline)
            report["paced_while_cut_over"] = load.window(cut_over_at, time.monotonic(), tail=0.0)
            ops["revert"] = operation_under_load(load, conn, "revert", "reverted", "none", args.lock_timeout)
            if args.blocker > 0:
                time.sleep(1.0)
                ops["cutover_blocked"] = operation_under_load(load, conn, "cutover, blocked", "cutover", "none",
                                                              args.lock_timeout, args.blocker)
                time.sleep(1.0)
                ops["revert_blocked"] = operation_under_load(load, conn, "revert, blocked", "reverted", "none",
                                                             args.lock_timeout, args.blocker)
            time.sleep(1.0)
        report["write_check"] = check_writes(conn, load)
        log("write check: {0}".format(report["write_check"]))
        report["drift_after_revert"] = _drift_entry(shadow(conn, "reverted", "full", args.lock_timeout))
        log("full drift check after revert: {0}".format(report["drift_after_revert"]))
        ops["disable"] = _plain_operation(shadow(conn, "disabled", "none", args.lock_timeout))
        report["final_rows"] = dict(zip(("orders", "orders_v2"), conn.execute(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM orders_v2)").fetchone()))
    finally:
        conn.close()
    return report


def _plain_operation(run: Dict[str, Any]) -> Dict[str, Any]:
    return {"wall_seconds": run["wall_seconds"], "engine": run["result"], "metrics": run["metrics"]}


def _drift_entry(run: Dict[str, Any]) -> Dict[str, Any]:
    drift = run["result"]["drift"] or {}
    seconds = run["metrics"]["phases_ms"].get("drift_check", 0.0) / 1000.0
    return {"drift": drift.get("drift"), "rows_checked": drift.get("rows_checked"), "seconds": round(seconds, 3),
            "rows_per_second": round(drift["rows_checked"] / seconds) if seconds and drift.get("rows_checked") else None,
            "detail": drift}


def verdicts(results: Dict[str, Any], lock_timeout: float) -> Dict[str, Any]:
    enabled = results["writes"]["enabled"]
    judged = {"p50_clients": enabled["clients"]["ratios"]["p50"],
              "throughput_clients": enabled["clients"]["ratios"]["throughput_plain_over_tested"],
              "p50_one_client": enabled["one_client"]["ratios"]["p50"]}
    write_cost_pass = all(value is not None and value <= WRITE_COST_TARGET for value in judged.values())
    stall_limit_ms = round((lock_timeout + STALL_MARGIN_SECONDS) * 1000.0)
    stalls = {}
    for name in ("cutover", "revert", "cutover_blocked", "revert_blocked"):
        op = results["operations"].get(name)
        if op is not None:
            stalls[name] = {"worst_ms": op["app"]["worst_ms"], "errors": op["app"]["errors"],
                            "pass": op["app"]["worst_ms"] <= stall_limit_ms and op["app"]["errors"] == 0}
    write_errors = sum(sum(results["writes"][m][k][side]["errors"].values()) for m, _label in MODES
                       for k in ("clients", "one_client") for side in ("plain", "tested"))
    app_errors = sum(op["app"]["errors"] for op in results["operations"].values() if "app" in op)
    integrity = (results["write_check"]["ok"] and results["drift_after_enable"]["drift"] == 0
                 and results["drift_after_revert"]["drift"] == 0 and write_errors == 0 and app_errors == 0)
    all_pass = write_cost_pass and all(s["pass"] for s in stalls.values()) and integrity
    return {"write_cost": {"target": WRITE_COST_TARGET, "judged": judged, "pass": write_cost_pass},
            "stall": {"target_ms": stall_limit_ms, "operations": stalls},
            "integrity": {"write_errors": write_errors, "application_errors": app_errors, "pass": integrity},
            "pass": all_pass}


# -- output --------------------------------------------------------------------------------------------------


def _word(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def table(report: Dict[str, Any]) -> str:
    options, results, verdict = report["options"], report["results"], report["verdicts"]
    writes = results["writes"]
    pinned = all(writes[m]["one_client"]["plain"]["pinned"] for m, _label in MODES)
    lines = [
        "Write cost: {0:,} rows per table; writes as fast as the clients go, UPDATE by PK : INSERT = {1}:1; {2} round(s) "
        "alternating orders_plain and orders, {3:g} s per window with {4} clients, {5:g} s with 1 client{6}".format(
            options["rows"], INSERT_EVERY - 1, options["rounds"], options["window"], options["clients"],
            options["single_window"], " (client and backend pinned to different CPUs)" if pinned else ""),
        "",
        "| mode | table | writes/s | p50 ms | p99 ms | server exec us/write | backend CPU us/write | 1 client: writes/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, label in MODES:
        for side, name in (("plain", PLAIN), ("tested", SOURCE)):
            many, one = writes[mode]["clients"][side], writes[mode]["one_client"][side]
            lines.append("| {0} | {1} | {2:,.0f} | {3:.3f} | {4:.3f} | {5} | {6} | {7:,.0f} | {8:.3f} | {9:.3f} |".format(
                label if side == "plain" else "", name, many["all"]["per_second"], many["all"]["p50_ms"],
                many["all"]["p99_ms"], many["server_exec_us_per_write"], many["backend_cpu_us_per_write"],
                one["all"]["per_second"], one["all"]["p50_ms"], one["all"]["p99_ms"]))
    errors = verdict["integrity"]["write_errors"]
    lines += ["", "orders / orders_plain ({0} write errors in all; p50 per round in brackets):".format(errors), "",
              "| mode | p50 | p99 | throughput (plain/orders) | server exec | backend CPU | 1 client p50 | 1 client throughput |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, label in MODES:
        r, one = writes[mode]["clients"], writes[mode]["one_client"]
        lines.append("| {0} | {1}x [{2}] | {3}x | {4}x | {5}x | {6}x | {7}x [{8}] | {9}x |".format(
            label, r["ratios"]["p50"], ", ".join(str(x["p50"]) for x in r["rounds"]), r["ratios"]["p99"],
            r["ratios"]["throughput_plain_over_tested"], r["ratios"]["server_exec"], r["ratios"]["backend_cpu"],
            one["ratios"]["p50"], ", ".join(str(x["p50"]) for x in one["rounds"]),
            one["ratios"]["throughput_plain_over_tested"]))
    lines += ["", "Write cost target, enabled <= {0}x plain in p50 and throughput with {1} clients and in p50 with 1 client: "
              "{2}".format(WRITE_COST_TARGET, options["clients"], _word(verdict["write_cost"]["pass"])), "",
              "State changes under a paced load ({0} clients x {1:g} q/s: {2:.0%} reads, {3:.0%} UPDATE by PK, {4:.0%} "
              "INSERT)".format(options["clients"], options["rate"], 1 - PACED_UPDATE_SHARE - PACED_INSERT_SHARE,
                               PACED_UPDATE_SHARE, PACED_INSERT_SHARE), "",
              "| operation | wall s | lock timeouts | longest lock attempt ms | app q/s | app p99 ms | app worst ms | "
              "queries > 100 ms | errors | target |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    base = results["paced_baseline_before_cutover"]
    lines.append("| (no change, {0:g} s) | | | | {1:.0f} | {2} | {3} | {4} | {5} | |".format(
        options["baseline"], base["started_per_second"], base["latency"]["p99_ms"], base["worst_ms"], base["slow_queries"],
        base["errors"]))
    stalls = verdict["stall"]["operations"]
    blocked = "blocked {0:g} s".format(options["blocker"])
    for name, label in (("enable", "enable (backfill)"), ("resume", "resume (replay)"), ("cutover", "cutover"),
                        ("revert", "revert"), ("cutover_blocked", "cutover, " + blocked),
                        ("revert_blocked", "revert, " + blocked)):
        op = results["operations"].get(name)
        if op is None:
            continue
        target = ""
        if name in stalls:
            target = "{0} (<= {1} ms, 0 errors)".format(_word(stalls[name]["pass"]), verdict["stall"]["target_ms"])
        lines.append("| {0} | {1:.2f} | {2} | {3} | {4:.0f} | {5} | {6} | {7} | {8} | {9} |".format(
            label, op["wall_seconds"], op["lock_timeouts"], op["lock_held_ms"], op["app"]["started_per_second"],
            op["app"]["latency"]["p99_ms"], op["app"]["worst_ms"], op["app"]["slow_queries"], op["app"]["errors"], target))
    backfill, drift, resume = results["backfill"], results["drift_after_enable"], results["operations"]["resume"]
    check = results["write_check"]
    lines += [
        "",
        "Backfill: {0:,} rows in {1:.1f} s = {2:,} rows/s ({3} batches; enabling took {4:.1f} s in all)".format(
            backfill["rows"], backfill["seconds"], backfill["rows_per_second"] or 0, backfill["batches"],
            backfill["enable_wall_seconds"]),
        "Full drift check: {0:,} rows in {1:.1f} s = {2:,} rows/s; drift after enable {3}, after revert {4}".format(
            drift["rows_checked"] or 0, drift["seconds"], drift["rows_per_second"] or 0, drift["drift"],
            results["drift_after_revert"]["drift"]),
        "Resume: {0:,} changes logged while paused replayed in {1:.1f} s = {2:,} changes/s".format(
            resume["changes_replayed"], resume["wall_seconds"], resume["replay_changes_per_second"] or 0),
        "Write check: {0:,} acknowledged writes looked up, {1} missing, {2} wrong: {3}".format(
            check["keys_checked"], check["missing"], check["wrong"], _word(check["ok"])),
        "Errors, drift and lost writes (all must be zero): {0}".format(_word(verdict["integrity"]["pass"])),
        "Load average (1 min) before/after: {0} / {1} on {2} CPUs".format(
            report["machine"]["load_average"].get("before"), report["machine"]["load_average"].get("after"),
            report["machine"]["cpus"]),
        "Overall: {0}".format(_word(verdict["pass"])),
    ]
    return "\n".join(lines)


def summary(report: Dict[str, Any]) -> Dict[str, Any]:
    results = report["results"]
    writes = results["writes"]
    return {"rows": report["options"]["rows"], "clients": report["options"]["clients"],
            "write_ratios": {m: {"clients": writes[m]["clients"]["ratios"], "one_client": writes[m]["one_client"]["ratios"]}
                             for m, _label in MODES},
            "writes_per_second": {m: {"orders_plain": writes[m]["clients"]["plain"]["all"]["per_second"],
                                      "orders": writes[m]["clients"]["tested"]["all"]["per_second"]} for m, _label in MODES},
            "operations": {k: {"wall_seconds": v["wall_seconds"], "lock_timeouts": v.get("lock_timeouts"),
                               "app_worst_ms": v["app"]["worst_ms"] if "app" in v else None,
                               "app_errors": v["app"]["errors"] if "app" in v else None}
                           for k, v in results["operations"].items()},
            "backfill_rows_per_second": results["backfill"]["rows_per_second"],
            "drift": {"after_enable": results["drift_after_enable"]["drift"],
                      "after_revert": results["drift_after_revert"]["drift"]},
            "write_check_ok": results["write_check"]["ok"],
            "verdicts": {"write_cost": report["verdicts"]["write_cost"]["pass"],
                         "stall": {k: v["pass"] for k, v in report["verdicts"]["stall"]["operations"].items()},
                         "integrity": report["verdicts"]["integrity"]["pass"]},
            "pass": report["verdicts"]["pass"], "report": report.get("output")}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=None, help="rows in orders and in orders_plain (default 1000000, quick 100000)")
    parser.add_argument("--clients", type=int, default=4, help="application threads, one connection each (default 4)")
    parser.add_argument("--quick", action="store_true", help="100k rows, one round of short windows: a smoke run of about a minute")
    parser.add_argument("--rounds", type=int, default=None, help="write-cost rounds per mode (default 3, quick 1)")
    parser.add_argument("--window", type=float, default=None, help="seconds per write window with all clients (default 6, quick 2.5)")
    parser.add_argument("--single-window", type=float, default=None, help="seconds per one-client write window (default 3, quick 1.5)")
    parser.add_argument("--rate", type=float, default=200.0, help="queries/s per paced client (default 200)")
    parser.add_argument("--baseline", type=float, default=None, help="seconds of paced load around cutover (default 5, quick 1.5)")
    parser.add_argument("--lock-timeout", type=float, default=0.5, help="keel's lock_timeout in seconds (default 0.5)")
    parser.add_argument("--blocker", type=float, default=1.2,
                        help="also cut over and revert while another session's read transaction is in the way, held this many "
                             "seconds after keel queues behind it (default 1.2; 0 skips)")
    parser.add_argument("--fsync", action="store_true", help="run the server with fsync on (the harness turns it off)")
    parser.add_argument("--output", type=Path, default=None, help="JSON report path (default bench/results/shadow_write-<timestamp>.json)")
    args = parser.parse_args(argv)
    defaults = {"rows": (1_000_000, 100_000), "rounds": (3, 1), "window": (6.0, 2.5), "single_window": (3.0, 1.5),
                "baseline": (5.0, 1.5)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.clients < 1 or args.rows < args.clients * 10 or args.rounds < 1:
        parser.error("need at least one client, ten rows per client and one round")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _bootstrap_imports()
    signal.signal(signal.SIGTERM, _terminate)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / "shadow_write-{0}.json".format(stamp)
    began = time.monotonic()
    server = Server(args.fsync)
    report: Dict[str, Any] = {
        "benchmark": "shadow_write", "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "options": {"rows": args.rows, "clients": args.clients, "rounds": args.rounds, "window": args.window,
                    "single_window": args.single_window, "rate": args.rate, "baseline": args.baseline,
                    "lock_timeout": args.lock_timeout, "blocker": args.blocker, "fsync": args.fsync, "quick": args.quick,
                    "insert_every": INSERT_EVERY,
                    "paced_mix": {"update": PACED_UPDATE_SHARE, "insert": PACED_INSERT_SHARE,
                                  "read": round(1 - PACED_UPDATE_SHARE - PACED_INSERT_SHARE, 2)}},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "psycopg": psycopg.__version__, "psycopg_impl": psycopg.pq.__impl__,
                    "load_average": {"before": round(os.getloadavg()[0], 2)}},
    }
    if report["machine"]["load_average"]["before"] > 0.5:
        log("warning: load average {0} before the start; something else is running and the numbers will show it".format(
            report["machine"]["load_average"]["before"]))
    try:
        log("starting a throwaway cluster")
        server.start()
        report["machine"]["server_settings"] = server.settings()
        report["results"] = run_benchmark(server, args)
    finally:
        server.remove()
        log("cluster removed")
    report["machine"]["load_average"]["after"] = round(os.getloadavg()[0], 2)
    report["verdicts"] = verdicts(report["results"], args.lock_timeout)
    report["duration_seconds"] = round(time.monotonic() - began, 1)
    report["output"] = str(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(summary(report), indent=2, default=str))
    print()
    print(table(report))
    print("\nfull report: {0} ({1:.0f} s)".format(output, report["duration_seconds"]))
    return 0 if report["verdicts"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
