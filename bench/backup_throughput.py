"""Backup throughput benchmark: keel.postgres.backup against plain pg_dump, on the same database, in the same run.

For each database size (``--sizes``, in GB of ``pg_database_size``; GB = 2**30 bytes here) it builds a database of
realistic, poorly compressible rows inside PostgreSQL (customers, orders, and an events table whose payload column
is base64 of random bytes), then times, ``--repeat`` times each and in alternating order:

1. ``pg_dump -Fc -Z0 > /dev/null``: the floor, what reading the data costs at all;
2. ``pg_dump -Fc > /dev/null``: what users do today (gzip at its default level);
3. keel backup to a ``file`` store, with the default ``table_stats`` (``--table-stats``) and with ``table_stats: none``;
4. keel backup to an ``s3`` store (SeaweedFS ``weed mini`` on 127.0.0.1).

keel runs through the real module with ``ansible-playbook`` (tests/harness/playbook.py, the working tree as the
collection), so its wall time is what a user waits for; the module's own duration, ``stages_ms``, ``throughput_mib_s``
and ``metrics.phases_ms`` are reported beside it. Peak RSS is the kernel's high-water mark (VmHWM) of one process,
read from /proc every 50 ms: for keel the module's own process (the AnsiballZ python), with the pg_dump it starts
reported apart; for the baselines the pg_dump process. CPU time is split between PostgreSQL, the S3 server, this
benchmark's process tree and everything else on the machine; a run during which something else took a noticeable
share of the CPUs is run again (``--retries``) and left out of the medians.

Further keel variants (module options or environment) can be added with ``--extra-variant``.

Targets: keel to a file store at most 1.4x the floor's wall time, at least 4x faster than the default pg_dump,
peak RSS at most 200 MB and about the same at both sizes. The exit status is 0 when every target is met.

It starts its own throwaway PostgreSQL cluster and S3 server (tests/harness) and removes them at the end. Run it
from anywhere:

    /path/to/venv/bin/python bench/backup_throughput.py --sizes 0.05 --repeat 1    # smoke run, about a minute
    /path/to/venv/bin/python bench/backup_throughput.py                             # 0.25 and 1 GB, 2 repeats

See bench/README.md and docs/benchmarks/backup_throughput.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
GB = 2**30
MIB = 2**20

# Targets of the issue.
FLOOR_RATIO_TARGET = 1.4
SPEEDUP_TARGET = 4.0
RSS_TARGET_MB = 200.0
# "About the same at both sizes": the largest size's peak at most this many MB above the smallest size's.
RSS_FLAT_SLACK_MB = 20.0

# The variants the targets are judged on (--extra-variant ones are reported only).
STANDARD_KEEL = ("keel_file", "keel_file_nostats", "keel_s3")

SAMPLE_INTERVAL = 0.05
# Before each run: wait for a QUIET_WINDOW-second window in which other processes use less than QUIET_CPUS.
QUIET_WINDOW = 1.0
QUIET_CPUS = 0.15
# A run during which other processes used more than this many CPUs on average is "disturbed": it is run again
# (--retries) and left out of the medians when an undisturbed run of the same variant and size exists.
DISTURBED_CPUS = 0.2
TENANT_PREFIX = "bench"
# events rows per batch unit; orders and customers grow with them (1/4 and 1/20).
ORDERS_PER_EVENT = 4
CUSTOMERS_PER_EVENT = 20
MIN_BATCH = 20_000
MAX_BATCH = 400_000
# The warm-up dump's compressibility is measured on every this-many-th MiB.
RATIO_SAMPLE_EVERY = 16

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: keel backup
      keel.postgres.backup: "{{ module_args }}"
"""

REPORTED_SETTINGS = ("server_version", "fsync", "shared_buffers", "wal_level", "max_wal_size", "work_mem",
                     "max_parallel_workers", "effective_io_concurrency")


@dataclasses.dataclass(frozen=True)
class Variant:
    key: str
    title: str
    kind: str  # pg_dump | keel
    compress: Optional[str] = None  # pg_dump: "0" for -Z0, None for its default
    store: Optional[str] = None  # keel: file | s3
    table_stats: Optional[str] = None
    options: Tuple[Tuple[str, Any], ...] = ()  # keel: more module options (--extra-variant)
    env: Tuple[Tuple[str, str], ...] = ()  # keel: environment of ansible-playbook and so of the module (--extra-variant)


def parse_extra_variant(text: str) -> Variant:
    """``NAME:option=value,option=value`` -> a keel variant to a file store; ``env.VAR=value`` sets the module's
    environment. Values are JSON when they parse (3, true, "x"), else strings."""
    name, _colon, assignments = text.partition(":")
    if not name.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError("--extra-variant wants NAME:option=value,..., got {0!r}".format(text))
    options: Dict[str, Any] = {}
    env: Dict[str, str] = {}
    for assignment in filter(None, (part.strip() for part in assignments.split(","))):
        key, equals, raw = assignment.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError("{0!r} is not option=value".format(assignment))
        if key.startswith("env."):
            env[key[4:]] = raw
            continue
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    if "keel_" + name in STANDARD_KEEL:
        raise argparse.ArgumentTypeError("--extra-variant name {0!r} is taken by a standard variant".format(name))
    table_stats = str(options.pop("table_stats", "fingerprints"))
    store = str(options.pop("store", "file"))
    return Variant("keel_" + name, "keel -> {0}, {1}".format(store, assignments or "defaults"), "keel", store=store, table_stats=table_stats,
                   options=tuple(sorted(options.items())), env=tuple(sorted(env.items())))


def variants_for(table_stats: str, extra: List[Variant]) -> List[Variant]:
    chosen = [
        Variant("pg_dump_z0", "pg_dump -Fc -Z0 (floor)", "pg_dump", compress="0"),
        Variant("pg_dump_default", "pg_dump -Fc (default gzip)", "pg_dump"),
        Variant("keel_file", "keel -> file, table_stats={0}".format(table_stats), "keel", store="file", table_stats=table_stats),
    ]
    if table_stats != "none":
        chosen.append(Variant("keel_file_nostats", "keel -> file, table_stats=none", "keel", store="file", table_stats="none"))
    chosen.append(Variant("keel_s3", "keel -> s3 (SeaweedFS), table_stats={0}".format(table_stats), "keel", store="s3",
                          table_stats=table_stats))
    return chosen + extra


# -- the data --------------------------------------------------------------------------------

SCHEMA_SQL = [
    "CREATE EXTENSION IF NOT EXISTS pgcrypto",
    """CREATE TABLE customers (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, name text NOT NULL, email text NOT NULL,
       country char(2) NOT NULL, phone text, marketing_opt_in boolean NOT NULL)""",
    """CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, created_at timestamptz NOT NULL, status text NOT NULL,
       amount numeric(12,2) NOT NULL, currency char(3) NOT NULL, shipping_address text, tracking_code text)""",
    """CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, customer_id bigint NOT NULL, kind text NOT NULL,
       ip inet, user_agent text, attributes text, payload text)""",
]

FIRST_NAMES = "ARRAY['Anna','Ben','Carla','Deniz','Emil','Fatima','Georg','Hana','Ivan','Jule','Kofi','Lena','Mateo','Nina','Omar','Priya']"
LAST_NAMES = "ARRAY['Meyer','Schulz','Novak','Rossi','Garcia','Kowalski','Berg','Okafor','Tanaka','Silva','Dubois','Jensen','Haddad','Ivanova']"

# One batch: events lo..hi, and the orders and customers that go with them. Everything is computed by the server.
BATCH_SQL = [
    """INSERT INTO customers
       SELECT g, timestamptz '2022-01-01' + g * interval '7 minutes',
              (""" + FIRST_NAMES + """)[1 + (random() * 15)::int] || ' ' || (""" + LAST_NAMES + """)[1 + (random() * 13)::int],
              lower(substr(md5(g::text), 1, 8)) || '.' || g || '@' || (ARRAY['example.com','mail.test','corp.example','shop.test'])[1 + g %% 4],
              (ARRAY['DE','FR','US','GB','PL','IT','ES','NL','SE','JP'])[1 + (random() * 9)::int],
              '+49 ' || (100000000 + (random() * 899999999)::int),
              random() < 0.3
       FROM generate_series(%(lo)s / {c} + 1, %(hi)s / {c}) AS g""".format(c=CUSTOMERS_PER_EVENT),
    """INSERT INTO orders
       SELECT g, 1 + (random() * greatest(%(hi)s / {c}, 1))::bigint,
              timestamptz '2023-01-01' + g * interval '53 seconds' + random() * interval '50 seconds',
              (ARRAY['pending','paid','shipped','delivered','refunded','cancelled'])[1 + (random() * 5)::int],
              round((random() * 2500)::numeric, 2),
              (ARRAY['EUR','USD','GBP','PLN'])[1 + (random() * 3)::int],
              (1 + (random() * 250)::int) || ' ' || (ARRAY['Main Street','Hauptstrasse','Rue de la Paix','Via Roma','Kings Road'])[1 + (random() * 4)::int]
                || ', ' || (10000 + (random() * 89999)::int) || ' ' || (ARRAY['Berlin','Paris','Leeds','Milano','Warszawa','Lyon'])[1 + (random() * 5)::int],
              upper(substr(md5(random()::text), 1, 16))
       FROM generate_series(%(lo)s / {o} + 1, %(hi)s / {o}) AS g""".format(c=CUSTOMERS_PER_EVENT, o=ORDERS_PER_EVENT),
    """INSERT INTO events
       SELECT g, timestamptz '2024-01-01' + g * interval '13 seconds' + random() * interval '10 seconds',
              1 + (random() * greatest(%(hi)s / {c}, 1))::bigint,
              (ARRAY['page_view','add_to_cart','checkout','login','search','api_call'])[1 + (random() * 5)::int],
              ('10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int)::inet,
              (ARRAY['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
                     'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
                     'curl/8.5.0', 'okhttp/4.12.0'])[1 + (random() * 3)::int],
              '{{"session":"' || substr(md5(random()::text), 1, 12) || '","campaign":"spring-' || (g %% 40)
                || '","items":' || (random() * 12)::int || ',"ab":"' || (ARRAY['a','b'])[1 + (random())::int] || '"}}',
              encode(gen_random_bytes(16 + (random() * 176)::int), 'base64')
       FROM generate_series(%(lo)s + 1, %(hi)s) AS g""".format(c=CUSTOMERS_PER_EVENT),
]


@dataclasses.dataclass
class Database:
    name: str
    size_gb: float
    tenant: str
    bytes: int = 0
    rows: Dict[str, int] = dataclasses.field(default_factory=dict)
    events: int = 0  # the highest events id, where the next batch starts
    build_seconds: float = 0.0
    raw_dump_bytes: int = 0
    facts: Dict[str, Any] = dataclasses.field(default_factory=dict)


def database_bytes(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def insert_batch(conn: psycopg.Connection, lo: int, hi: int) -> None:
    with conn.transaction():
        for statement in BATCH_SQL:
            conn.execute(statement, {"lo": lo, "hi": hi})


def grow_to(conn: psycopg.Connection, database: Database, target_bytes: int) -> None:
    """Add batches of rows until pg_database_size reaches target_bytes, sizing each batch from the last one."""
    bytes_per_event = 700.0  # first guess; measured after each batch
    size = database_bytes(conn)
    while size < target_bytes:
        wanted = int((target_bytes - size) / bytes_per_event * 1.02) + 1
        count = max(MIN_BATCH, min(MAX_BATCH, wanted))
        insert_batch(conn, database.events, database.events + count)
        database.events += count
        grown = database_bytes(conn)
        if grown > size:
            bytes_per_event = (grown - size) / count
        size = grown


def build_database(server: Any, database: Database, template: Optional[Database]) -> None:
    """Create ``database`` (from ``template``'s files when given), grow it to its size, freeze and analyze it."""
    began = time.perf_counter()
    if template is not None:
        server.execute("CREATE DATABASE {0} TEMPLATE {1} STRATEGY FILE_COPY".format(database.name, template.name))
        database.events = template.events
    else:
        server.create_database(database.name)
    with psycopg.connect(server.dsn(database.name), autocommit=True) as conn:
        if template is None:
            for statement in SCHEMA_SQL:
                conn.execute(statement)
        grow_to(conn, database, int(database.size_gb * GB))
        # Hint bits and the visibility map now, so no timed dump pays for them.
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
        database.bytes = database_bytes(conn)
        database.rows = {name: int(conn.execute("SELECT count(*) FROM " + name).fetchone()[0]) for name in ("customers", "orders", "events")}
        database.facts["tables_mib"] = {
            name: round(int(conn.execute("SELECT pg_total_relation_size(%s::regclass)", (name,)).fetchone()[0]) / MIB, 1)
            for name in ("customers", "orders", "events")}
    database.build_seconds = round(time.perf_counter() - began, 1)


def stats_query_seconds(server: Any, database: Database) -> Dict[str, float]:
    """keel's own row-count and fingerprint queries on an idle server, one after the other: what the stats thread reads."""
    from ansible_collections.keel.postgres.plugins.module_utils.backup.table_stats import (
        apply_row_text_settings,
        collect_table_stats,
        tables_in_scope,
    )

    timings: Dict[str, float] = {}
    with psycopg.connect(server.dsn(database.name), autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        apply_row_text_settings(cursor)
        tables = tables_in_scope(cursor, [])
        for mode in ("row_counts", "fingerprints"):
            began = time.perf_counter()
            collect_table_stats(cursor, tables, mode)
            timings[mode] = round(time.perf_counter() - began, 2)
        cursor.execute("ROLLBACK")
    return timings


# -- measuring processes -----------------------------------------------------------------------

def _children(pid: int) -> List[int]:
    found: List[int] = []
    with contextlib.suppress(OSError):
        for task in Path("/proc/{0}/task".format(pid)).iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def _cmdline(pid: int) -> List[str]:
    try:
        raw = Path("/proc/{0}/cmdline".format(pid)).read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _status_kib(pid: int) -> Dict[str, int]:
    """VmHWM and VmRSS of a live process in KiB ({} when it is gone)."""
    values: Dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/{0}/status".format(pid)).read_text().splitlines():
            name, _colon, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                values[name] = int(rest.split()[0])
    return values


def _cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a live process."""
    try:
        fields = Path("/proc/{0}/stat".format(pid)).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def classify(argv: List[str], parent_kind: str, tool: str = "pg_dump") -> str:
    """module: the AnsiballZ python itself (not the /bin/sh -c that starts it, nor a child it forked that has not yet
    exec'd pg_dump); pg_dump (or the client ``tool`` named): the real binary (not Debian's perl pg_wrapper that execs it,
    which is "wrapper")."""
    if not argv:
        return "other"
    first = os.path.basename(argv[0])
    if first == tool:
        return tool
    if len(argv) > 1 and os.path.basename(argv[1]) == tool:
        return "wrapper"
    if first.startswith("python") and any("AnsiballZ_" in part for part in argv[1:]):
        # A fork of the module shows the module's argv until it execs; its RSS is the parent's pages, not its own.
        return "forking" if parent_kind == "module" else "module"
    return "other"


@dataclasses.dataclass
class ProcessPeak:
    kind: str
    argv0: str
    hwm_kib: int = 0
    rss_kib: int = 0
    cpu_seconds: float = 0.0
    first_seen: float = 0.0
    last_seen: float = 0.0


class TreeSampler(threading.Thread):
    """Every SAMPLE_INTERVAL s, walks the process tree under the roots ``find_roots`` names and keeps, per process
    of interest, the largest VmHWM (the kernel's own peak RSS, so a peak between two samples is not lost), the largest
    VmRSS and the CPU time. Only the last < 50 ms of a process's life can escape it. The processes of interest are
    the module and the client ``tool`` (pg_dump, or pg_restore for bench/restore_verify.py)."""

    def __init__(self, find_roots: Callable[[], List[int]], tool: str = "pg_dump") -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.find_roots = find_roots
        self.tool = tool
        self.stop_event = threading.Event()
        self.peaks: Dict[Tuple[int, str], ProcessPeak] = {}
        self.began = time.perf_counter()
        self.module_rss_mb: List[Tuple[float, float]] = []  # (seconds since start, MB): the module's RSS over time
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)

    def sample(self) -> None:
        self.samples += 1
        now = time.perf_counter() - self.began
        queue = [(pid, "other") for pid in self.find_roots()]
        seen = set()
        while queue:
            pid, parent_kind = queue.pop()
            if pid in seen:
                continue
            seen.add(pid)
            # Read every time: a forked child changes its argv when it execs.
            argv = _cmdline(pid)
            kind = classify(argv, parent_kind, self.tool)
            queue.extend((child, kind) for child in _children(pid))
            if kind in ("module", self.tool):
                if (pid, kind) not in self.peaks:
                    self.peaks[(pid, kind)] = ProcessPeak(kind, argv[0], first_seen=now)
                self._record(pid, kind, now)

    def _record(self, pid: int, kind: str, now: float) -> None:
        status = _status_kib(pid)
        if not status:
            return
        peak = self.peaks[(pid, kind)]
        peak.hwm_kib = max(peak.hwm_kib, status.get("VmHWM", 0))
        peak.rss_kib = max(peak.rss_kib, status.get("VmRSS", 0))
        peak.cpu_seconds = _cpu_seconds(pid) or peak.cpu_seconds
        peak.last_seen = now
        if peak.kind == "module" and (not self.module_rss_mb or now - self.module_rss_mb[-1][0] >= 0.5):
            self.module_rss_mb.append((round(now, 2), round(status.get("VmRSS", 0) / 1024, 1)))

    def summary(self, kind: str) -> Dict[str, Any]:
        chosen = [peak for peak in self.peaks.values() if peak.kind == kind]
        if not chosen:
            return {"processes": 0}
        return {
            "processes": len(chosen),
            "peak_rss_mb": round(max(peak.hwm_kib for peak in chosen) / 1024, 1),
            "max_sampled_rss_mb": round(max(peak.rss_kib for peak in chosen) / 1024, 1),
            "cpu_seconds": round(sum(peak.cpu_seconds for peak in chosen), 2),
            "seen_seconds": round(max(peak.last_seen - peak.first_seen for peak in chosen), 2),
        }


def ansible_playbook_children() -> List[int]:
    """Our own children that are ansible-playbook (run_playbook starts it as our direct child)."""
    return [pid for pid in _children(os.getpid()) if any(os.path.basename(part) == "ansible-playbook" for part in _cmdline(pid)[:2])]


def _cumulative_ticks(pid: int) -> int:
    """utime + stime of a live process, plus cutime + cstime of the children it has reaped."""
    try:
        fields = Path("/proc/{0}/stat".format(pid)).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(value) for value in fields[11:15])


def _tree(pid: int, exclude: Tuple[int, ...] = ()) -> List[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        if current in exclude:
            continue
        found.append(current)
        queue.extend(_children(current))
    return found


def _tree_ticks(pid: Optional[int], exclude: Tuple[int, ...] = ()) -> int:
    """CPU of a process tree: every live member's own time plus what each reaped from its dead children.

    A process that dies between two readings moves from "live" to its parent's cutime/cstime, so the difference
    of two readings is the CPU the tree used in between."""
    if pid is None:
        return 0
    return sum(_cumulative_ticks(member) for member in _tree(pid, exclude))


def _machine_ticks() -> Tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, sum(fields[:8])


class CpuMeter:
    """Where the CPU went between start and the reading: PostgreSQL (postmaster and every backend), the S3 server,
    this benchmark's own tree (ansible, the module, pg_dump), and the rest of the machine (other users, the kernel's
    writeback): the last one shows when someone else's load disturbed a run."""

    def __init__(self, postgres_pid: Optional[int], s3_pid: Optional[int]) -> None:
        self.roots = (postgres_pid, s3_pid)
        self.before = self._read()

    def _read(self) -> Dict[str, int]:
        postgres_pid, s3_pid = self.roots
        busy, total = _machine_ticks()
        exclude = tuple(pid for pid in self.roots if pid is not None)
        return {"busy": busy, "total": total, "postgres": _tree_ticks(postgres_pid), "s3_server": _tree_ticks(s3_pid),
                "benchmark_tree": _tree_ticks(os.getpid(), exclude)}

    def reading(self) -> Dict[str, float]:
        after = self._read()
        delta = {name: after[name] - self.before[name] for name in after}
        tick = float(os.sysconf("SC_CLK_TCK"))
        cpus = os.cpu_count() or 1
        wall_ticks = max(delta["total"] / cpus, 1)
        result = {"machine_cpu_busy_pct": round(100.0 * delta["busy"] / max(delta["total"], 1), 1)}
        ours = 0
        for name in ("postgres", "s3_server", "benchmark_tree"):
            result["cpu_s_" + name] = round(delta[name] / tick, 2)
            ours += delta[name]
        # Busy time nobody of ours used, in CPUs (1.0 = one core the whole run).
        result["other_load_cpus"] = round(max(delta["busy"] - ours, 0) / wall_ticks, 2)
        return result


# -- the runs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Context:
    server: Any
    s3: Any
    bucket: str
    workdir: Path
    key_dir: Path
    pg_dump: str
    tenants: List[Dict[str, Any]]
    timeout: float
    postgres_pid: Optional[int] = None
    s3_pid: Optional[int] = None
    quiet_wait: float = 0.0
    retries: int = 0
    counter: int = 0


def pg_dump_argv(ctx: Context, database: Database, compress: Optional[str]) -> List[str]:
    argv = [ctx.pg_dump, "--format=custom", "--no-password", "--host", ctx.server.host, "--port", str(ctx.server.port),
            "--username", ctx.server.user, "--dbname", database.name]
    if compress is not None:
        argv.append("--compress=" + compress)
    return argv


def run_pg_dump(ctx: Context, database: Database, variant: Variant) -> Dict[str, Any]:
    """pg_dump > /dev/null: wall time, CPU from wait4(), peak RSS as the VmHWM of the pg_dump process itself.

    Not wait4()'s ru_maxrss: for a child forked from this (Python, ~70 MB) process the kernel folds the parent's
    high-water mark at fork time into it, so it would report our RSS instead of pg_dump's."""
    argv = pg_dump_argv(ctx, database, variant.compress)
    with open(os.devnull, "wb") as sink, tempfile.TemporaryFile() as errors:
        meter = CpuMeter(ctx.postgres_pid, ctx.s3_pid)
        began = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=errors)
        sampler = TreeSampler(lambda: [process.pid])
        sampler.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            wall = time.perf_counter() - began
            sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    record: Dict[str, Any] = {"wall_s": round(wall, 3), "peak_rss_mb": sampler.summary("pg_dump").get("peak_rss_mb"),
                              "cpu_s_pg_dump": round(usage.ru_utime + usage.ru_stime, 2), **meter.reading(), "argv": argv[1:]}
    if process.returncode != 0:
        record["error"] = "pg_dump exited {0}: {1}".format(process.returncode, message[-500:])
    return record


def count_dump_bytes(ctx: Context, database: Database) -> Tuple[int, Dict[str, float]]:
    """One untimed pg_dump -Fc -Z0, counted: the raw size every variant reads, and a warm-up of the page cache.

    Every RATIO_SAMPLE_EVERY-th MiB also goes through zlib at its default level (what pg_dump -Fc uses) and zstd
    level 3 (keel's default): how compressible the data is, and how big the default pg_dump's output would be."""
    import zlib

    import zstandard

    gzip, zstd = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION), zstandard.ZstdCompressor(level=3).compressobj()
    process = subprocess.Popen(pg_dump_argv(ctx, database, "0"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    total = sampled = gzip_bytes = zstd_bytes = 0
    assert process.stdout is not None
    for index in itertools.count():
        block = process.stdout.read(MIB)
        if not block:
            break
        total += len(block)
        if index % RATIO_SAMPLE_EVERY == 0:
            sampled += len(block)
            gzip_bytes += len(gzip.compress(block))
            zstd_bytes += len(zstd.compress(block))
    if process.wait() != 0:
        raise RuntimeError("warm-up pg_dump of {0} failed with exit code {1}".format(database.name, process.returncode))
    gzip_bytes += len(gzip.flush())
    zstd_bytes += len(zstd.flush())
    return total, {"sampled_mib": round(sampled / MIB, 1), "zlib_default": round(sampled / max(gzip_bytes, 1), 3),
                   "zstd_3": round(sampled / max(zstd_bytes, 1), 3)}


def keel_store(ctx: Context, kind: str, run_id: str) -> Dict[str, Any]:
    if kind == "file":
        path = ctx.workdir / "stores" / run_id
        path.mkdir(parents=True)
        return {"type": "file", "path": str(path)}
    return {"type": "s3", "bucket": ctx.bucket, "prefix": run_id + "/", "endpoint_url": ctx.s3.endpoint_url, "region": ctx.s3.region,
            "access_key": ctx.s3.access_key, "secret_key": ctx.s3.secret_key}


def run_keel(ctx: Context, database: Database, variant: Variant) -> Dict[str, Any]:
    """keel.postgres.backup through ansible-playbook; wall time of the whole playbook, the module's own report, peak RSS."""
    from tests.harness.playbook import run_playbook

    ctx.counter += 1
    run_id = "run{0:03d}-{1}".format(ctx.counter, variant.key)
    store = keel_store(ctx, variant.store or "file", run_id)
    module_args = {"login_host": ctx.server.host, "port": ctx.server.port, "login_user": ctx.server.user,
                   "tenant": database.tenant, "tenants": ctx.tenants, "store": store,
                   "key_provider": {"type": "file", "directory": str(ctx.key_dir)}, "table_stats": variant.table_stats,
                   **dict(variant.options)}
    sampler = TreeSampler(ansible_playbook_children)
    meter = CpuMeter(ctx.postgres_pid, ctx.s3_pid)
    sampler.start()
    began = time.perf_counter()
    try:
        outcome = run_playbook(PLAYBOOK, extra_vars={"module_args": module_args}, env=dict(variant.env), timeout=ctx.timeout)
    finally:
        wall = time.perf_counter() - began
        sampler.stop()
    record: Dict[str, Any] = {"wall_s": round(wall, 3), **meter.reading(), "run_id": run_id,
                              "module_process": sampler.summary("module"), "pg_dump_process": sampler.summary("pg_dump"),
                              "module_rss_mb_over_time": sampler.module_rss_mb, "sampler_ticks": sampler.samples}
    record["peak_rss_mb"] = record["module_process"].get("peak_rss_mb")
    tasks = [task for task in outcome.tasks if task["name"] == "keel backup"]
    result = tasks[-1]["result"] if tasks else {}
    if outcome.rc != 0 or not tasks or tasks[-1]["status"] == "failed":
        record["error"] = "ansible-playbook rc={0}: {1}".format(outcome.rc, result.get("msg") or outcome.output_tail()[-1500:])
        record["result"] = {key: value for key, value in result.items() if key not in ("invocation",)}
    else:
        record.update(module_figures(result, wall))
    if variant.store == "file":
        shutil.rmtree(store["path"], ignore_errors=True)
    return record


def module_figures(result: Dict[str, Any], wall: float) -> Dict[str, Any]:
    metrics = result.get("metrics") or {}
    duration_s = (metrics.get("duration_ms") or 0) / 1000.0
    return {
        "module_duration_s": round(duration_s, 3),
        "ansible_overhead_s": round(wall - duration_s, 3),
        "stages_ms": result.get("stages_ms"),
        "phases_ms": metrics.get("phases_ms"),
        "throughput_mib_s": result.get("throughput_mib_s"),
        "sizes": result.get("sizes"),
        "compression_ratio": result.get("compression_ratio"),
        "tables": result.get("tables"),
        "backup_id": result.get("backup_id"),
    }


def run_variant(ctx: Context, database: Database, variant: Variant) -> Dict[str, Any]:
    if variant.kind == "pg_dump":
        return run_pg_dump(ctx, database, variant)
    return run_keel(ctx, database, variant)


# -- summary and judgement ------------------------------------------------------------------------

def median_of(records: List[Dict[str, Any]], key: str) -> Optional[float]:
    values = [record[key] for record in records if record.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(report: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per size and variant: medians over the repeats, and the ratios against the floor and the default pg_dump."""
    summary: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for size in report["databases"]:
        raw = report["databases"][size]["raw_dump_bytes"]
        rows: Dict[str, Dict[str, Any]] = {}
        for variant in report["variants"]:
            runs = [r for r in report["runs"] if r["size"] == size and r["variant"] == variant["key"] and not r.get("error")]
            clean = [r for r in runs if not r.get("disturbed")]
            disturbed = len(runs) - len(clean)
            runs = clean or runs
            failed = [r["error"] for r in report["runs"] if r["size"] == size and r["variant"] == variant["key"] and r.get("error")]
            entry: Dict[str, Any] = {"title": variant["title"], "runs": len(runs), "failed": len(failed), "errors": failed[:3],
                                     "disturbed_runs": disturbed, "only_disturbed_runs": bool(runs) and not clean}
            if runs:
                entry["wall_s"] = median_of(runs, "wall_s")
                entry["wall_s_all"] = [r["wall_s"] for r in runs]
                entry["mib_s"] = round(raw / MIB / entry["wall_s"], 1) if entry["wall_s"] else None
                entry["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb") is not None) if any(
                    r.get("peak_rss_mb") is not None for r in runs) else None
                entry["machine_cpu_busy_pct"] = median_of(runs, "machine_cpu_busy_pct")
                entry["other_load_cpus"] = median_of(runs, "other_load_cpus")
                for run in runs:
                    run["cpu_s_total"] = round(sum(run.get(name) or 0.0 for name in ("cpu_s_postgres", "cpu_s_s3_server", "cpu_s_benchmark_tree")), 2)
                entry["cpu_s_total"] = median_of(runs, "cpu_s_total")
                entry["cpu_s_postgres"] = median_of(runs, "cpu_s_postgres")
                if variant["kind"] == "keel":
                    entry.update(keel_medians(runs))
            rows[variant["key"]] = entry
        add_ratios(rows)
        summary[size] = rows
    return summary


def keel_medians(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    def nested(path: Tuple[str, str]) -> Optional[float]:
        values = [r[path[0]][path[1]] for r in runs if isinstance(r.get(path[0]), dict) and r[path[0]].get(path[1]) is not None]
        return round(statistics.median(values), 1) if values else None

    stages = sorted({name for r in runs for name in (r.get("stages_ms") or {})})
    phases = sorted({name for r in runs for name in (r.get("phases_ms") or {})})
    return {
        "module_duration_s": median_of(runs, "module_duration_s"),
        "ansible_overhead_s": median_of(runs, "ansible_overhead_s"),
        "throughput_mib_s": median_of(runs, "throughput_mib_s"),
        "compression_ratio": median_of(runs, "compression_ratio"),
        "stages_ms": {name: nested(("stages_ms", name)) for name in stages},
        "phases_ms": {name: nested(("phases_ms", name)) for name in phases},
        "module_cpu_s": nested(("module_process", "cpu_seconds")),
        "pg_dump_peak_rss_mb": max((r["pg_dump_process"].get("peak_rss_mb") or 0) for r in runs),
        "pg_dump_cpu_s": nested(("pg_dump_process", "cpu_seconds")),
    }


def add_ratios(rows: Dict[str, Dict[str, Any]]) -> None:
    floor = rows.get("pg_dump_z0", {}).get("wall_s")
    default = rows.get("pg_dump_default", {}).get("wall_s")
    for entry in rows.values():
        wall = entry.get("wall_s")
        if not wall:
            continue
        entry["ratio_vs_floor"] = round(wall / floor, 2) if floor else None
        entry["speedup_vs_default"] = round(default / wall, 2) if default else None
        module = entry.get("module_duration_s")
        if module:
            entry["module_ratio_vs_floor"] = round(module / floor, 2) if floor else None
            entry["module_speedup_vs_default"] = round(default / module, 2) if default else None


def judge(summary: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """The targets, for keel to a file store with the default table_stats (keel_file), judged on end-to-end wall time."""
    verdict: Dict[str, Any] = {}
    for size, rows in summary.items():
        keel = rows.get("keel_file", {})
        if not keel.get("wall_s"):
            verdict[size] = {"keel_file_ran": False}
            continue
        verdict[size] = {
            "floor_ratio_le_1_4": keel.get("ratio_vs_floor") is not None and keel["ratio_vs_floor"] <= FLOOR_RATIO_TARGET,
            "speedup_ge_4": keel.get("speedup_vs_default") is not None and keel["speedup_vs_default"] >= SPEEDUP_TARGET,
            "peak_rss_le_200mb": all(entry.get("peak_rss_mb") is not None and entry["peak_rss_mb"] <= RSS_TARGET_MB
                                     for key, entry in rows.items() if key in STANDARD_KEEL and entry.get("runs")),
        }
    sizes = sorted(summary, key=float)
    if len(sizes) > 1:
        flat = {}
        for key in STANDARD_KEEL:
            peaks = [summary[size].get(key, {}).get("peak_rss_mb") for size in (sizes[0], sizes[-1])]
            if None not in peaks:
                flat[key] = {"small_mb": peaks[0], "large_mb": peaks[1], "flat": peaks[1] - peaks[0] <= RSS_FLAT_SLACK_MB}
        verdict["rss_flat_across_sizes"] = flat
    checks = [value for size in sizes for value in verdict[size].values()]
    checks += [entry["flat"] for entry in verdict.get("rss_flat_across_sizes", {}).values()]
    verdict["all_met"] = bool(checks) and all(checks)
    return verdict


# -- output ----------------------------------------------------------------------------------------

def fmt(value: Any, pattern: str = "{0:.2f}") -> str:
    return "" if value is None else pattern.format(value)


def main_table(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    headers = ["variant", "size", "wall s", "MiB/s", "peak RSS MB", "x floor", "speed-up vs pg_dump -Fc", "module s (x floor)",
               "CPU s (PostgreSQL)", "other load", "runs"]
    lines = []
    for size, rows in report["summary"].items():
        facts = report["databases"][size]
        label = "{0} GB ({1:.0f} MiB)".format(size, facts["bytes"] / MIB)
        for entry in rows.values():
            if not entry.get("runs"):
                lines.append([entry["title"], label, "FAILED: " + "; ".join(e[:160] for e in entry.get("errors", []))] + [""] * 8)
                continue
            module = ""
            if entry.get("module_duration_s"):
                module = "{0:.2f} ({1})".format(entry["module_duration_s"], fmt(entry.get("module_ratio_vs_floor")))
            lines.append([entry["title"], label, fmt(entry["wall_s"]), fmt(entry.get("mib_s"), "{0:.0f}"),
                          fmt(entry.get("peak_rss_mb"), "{0:.0f}"), fmt(entry.get("ratio_vs_floor")),
                          fmt(entry.get("speedup_vs_default"), "{0:.2f}x"), module,
                          "{0} ({1})".format(fmt(entry.get("cpu_s_total"), "{0:.1f}"), fmt(entry.get("cpu_s_postgres"), "{0:.1f}")),
                          fmt(entry.get("other_load_cpus")),
                          run_count(entry)])
    return headers, lines


def run_count(entry: Dict[str, Any]) -> str:
    """Runs in the medians; '+N disturbed' left out (or, marked '!', all of them disturbed); failures."""
    text = str(entry["runs"])
    if entry.get("only_disturbed_runs"):
        text += " (all disturbed!)"
    elif entry.get("disturbed_runs"):
        text += " (+{0} disturbed)".format(entry["disturbed_runs"])
    if entry.get("failed"):
        text += " ({0} failed)".format(entry["failed"])
    return text


def keel_table(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    headers = ["variant", "size", "module MiB/s", "zstd ratio", "ansible overhead s", "stages_ms dump/compress/encrypt/store",
               "phases_ms stream/table_stats_wait/commit_data", "module CPU s", "pg_dump RSS MB"]
    lines = []
    for size, rows in report["summary"].items():
        for key, entry in rows.items():
            if not key.startswith("keel") or not entry.get("runs"):
                continue
            stages, phases = entry.get("stages_ms") or {}, entry.get("phases_ms") or {}
            lines.append([
                key, size, fmt(entry.get("throughput_mib_s"), "{0:.0f}"), fmt(entry.get("compression_ratio")),
                fmt(entry.get("ansible_overhead_s")),
                "/".join(fmt(stages.get(name), "{0:.0f}") for name in ("dump", "compress", "encrypt", "store")),
                "/".join(fmt(phases.get(name), "{0:.0f}") for name in ("stream", "table_stats_wait", "commit_data")),
                fmt(entry.get("module_cpu_s"), "{0:.1f}"), fmt(entry.get("pg_dump_peak_rss_mb"), "{0:.0f}")])
    return headers, lines


def render(headers: List[str], lines: List[List[str]], markdown: bool) -> List[str]:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _header in headers) + "|"]
        return out + ["| " + " | ".join(cells) + " |" for cells in lines]
    widths = [max([len(headers[i])] + [len(cells[i]) for cells in lines]) for i in range(len(headers))]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    return out + ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]


def text_report(report: Dict[str, Any], markdown: bool = False) -> str:
    out = render(*main_table(report), markdown)
    out += ["", *render(*keel_table(report), markdown), ""]
    for size, facts in report["databases"].items():
        ratios = facts.get("sampled_compression_ratio") or {}
        out.append("{0} GB: pg_database_size {1:.0f} MiB, raw dump (-Z0) {2:.0f} MiB, rows {3}, built in {4} s; idle stats queries: {5}; "
                   "compression ratio of {6} MiB sampled: zlib default {7}, zstd-3 {8}".format(
                       size, facts["bytes"] / MIB, facts["raw_dump_bytes"] / MIB, facts["rows"], facts["build_seconds"],
                       ", ".join("{0} {1} s".format(k, v) for k, v in facts.get("stats_query_seconds", {}).items()),
                       ratios.get("sampled_mib"), ratios.get("zlib_default"), ratios.get("zstd_3")))
    verdict = report.get("verdict", {})
    for size in report["databases"]:
        out.append("targets at {0} GB: {1}".format(size, ", ".join(
            "{0} {1}".format(name, "ok" if ok else "MISS") for name, ok in verdict.get(size, {}).items())))
    for key, entry in verdict.get("rss_flat_across_sizes", {}).items():
        verdict_word = "ok" if entry["flat"] else "MISS"
        out.append("peak RSS flat across sizes, {0}: {1} -> {2} MB {3}".format(key, entry["small_mb"], entry["large_mb"], verdict_word))
    return "\n".join(out)


def log(message: str) -> None:
    print("[{0}] {1}".format(datetime.datetime.now().strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def machine_facts(server: Any) -> Dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    settings = dict(server.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY (%s)", (list(REPORTED_SETTINGS),)))
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1), "postgres": settings}


def git_commit() -> Optional[str]:
    completed = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return completed.stdout.strip() if completed.returncode == 0 else None


# -- setup and main ----------------------------------------------------------------------------------

def _bootstrap_imports() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.harness.collection_path import ensure_collection_importable

    ensure_collection_importable()


def keel_pg_dump(server: Any) -> Dict[str, Any]:
    """The pg_dump keel's module picks by default (newest on PATH and in the versioned directories): the baselines use it too."""
    from ansible_collections.keel.postgres.plugins.module_utils import client_tools

    version = int(server.execute("SELECT current_setting('server_version_num')::int")[0][0])
    tool = client_tools.inspect_client_tool("pg_dump", None, version)
    if not tool.get("path"):
        raise SystemExit("no pg_dump found")
    return {"path": str(tool["path"]), "version": tool.get("version")}


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[Tuple[Any, Any]]:
    """The throwaway PostgreSQL cluster and SeaweedFS server, always removed at the end."""
    from tests.harness.postgres_cluster import PostgresCluster
    from tests.harness.s3_server import S3Server

    cluster = PostgresCluster()
    s3 = S3Server()
    try:
        cluster.start()
        s3.start()
        yield cluster, s3
    finally:
        for name, stop in (("PostgreSQL", cluster.remove), ("S3", s3.remove)):
            try:
                stop()
            except Exception as error:  # report, and still stop the other one
                log("could not remove the {0} server: {1}".format(name, error))


def prepare_databases(cluster: Any, sizes: List[float]) -> List[Database]:
    """One database per size, the larger ones grown from a file copy of the next smaller one."""
    databases: List[Database] = []
    previous: Optional[Database] = None
    for index, size in enumerate(sorted(sizes)):
        database = Database(name="bench_{0}".format(index), size_gb=size, tenant="{0}-{1}".format(TENANT_PREFIX, index))
        log("building {0} ({1} GB){2}".format(database.name, size, " from a copy of " + previous.name if previous else ""))
        build_database(cluster, database, previous)
        log("  {0:.0f} MiB in {1} s, rows {2}".format(database.bytes / MIB, database.build_seconds, database.rows))
        databases.append(database)
        previous = database
    return databases


def size_label(size: float) -> str:
    return "{0:g}".format(size)


def benchmark(args: argparse.Namespace, report: Dict[str, Any], workdir: Path) -> None:
    from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider

    variants = variants_for(args.table_stats, args.extra_variant)
    report["variants"] = [dataclasses.asdict(v) for v in variants]
    with servers(workdir) as (cluster, s3):
        log("PostgreSQL on port {0} ({1}), S3 at {2}".format(cluster.port, cluster.base_dir, s3.endpoint_url))
        report["machine"] = machine_facts(cluster)
        pg_dump = keel_pg_dump(cluster)
        report["pg_dump"] = pg_dump
        bucket = "keel-bench-{0}".format(os.getpid())
        s3.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        key_dir = workdir / "keys"
        key_dir.mkdir(mode=0o700)
        databases = prepare_databases(cluster, args.sizes)
        tenants = [{"name": db.tenant, "database": db.name, "retention": {"days": 1, "lock_mode": "governance"}} for db in databases]
        for db in databases:
            FileKeyProvider(str(key_dir)).create(db.tenant)
        ctx = Context(server=cluster, s3=s3, bucket=bucket, workdir=workdir, key_dir=key_dir, pg_dump=pg_dump["path"], tenants=tenants,
                      timeout=600 + 900 * max(args.sizes), postgres_pid=cluster.pid, s3_pid=s3.pid, quiet_wait=args.quiet_wait, retries=args.retries)
        for db in databases:
            measure_size(ctx, db, variants, args.repeat, report)


def measure_size(ctx: Context, database: Database, variants: List[Variant], repeat: int, report: Dict[str, Any]) -> None:
    label = size_label(database.size_gb)
    log("{0} GB: warm-up dump".format(label))
    database.raw_dump_bytes, database.facts["sampled_compression_ratio"] = count_dump_bytes(ctx, database)
    try:
        database.facts["stats_query_seconds"] = stats_query_seconds(ctx.server, database)
    except Exception as error:  # only a diagnostic
        database.facts["stats_query_seconds"] = {"error": str(error)[:200]}
    log("  raw dump {0:.0f} MiB; compression ratio of a sample {1}; idle stats queries {2}".format(
        database.raw_dump_bytes / MIB, database.facts["sampled_compression_ratio"], database.facts["stats_query_seconds"]))
    report["databases"][label] = {"name": database.name, "bytes": database.bytes, "rows": database.rows, "build_seconds": database.build_seconds,
                                  "raw_dump_bytes": database.raw_dump_bytes, **database.facts}
    for round_number in range(repeat):
        order = variants if round_number % 2 == 0 else list(reversed(variants))
        for position, variant in enumerate(order):
            for attempt in range(1 + ctx.retries):
                record = measured_run(ctx, database, variant)
                record.update({"size": label, "variant": variant.key, "round": round_number, "position": position, "attempt": attempt})
                report["runs"].append(record)
                log("{0} GB round {1} {2}: {3}".format(label, round_number + 1, variant.key, describe(record)))
                if not record["disturbed"]:
                    break


def measured_run(ctx: Context, database: Database, variant: Variant) -> Dict[str, Any]:
    os.sync()  # the previous run's store writes reach the disk now, not during this run
    waited, other_before = wait_for_quiet(ctx)
    load = round(os.getloadavg()[0], 2)
    record = run_variant(ctx, database, variant)
    record.update({"loadavg_before": load, "quiet_wait_s": waited, "other_load_cpus_before": other_before})
    # Someone else's work took a noticeable share of the 2 CPUs while this run ran: repeat it, leave it out of the medians.
    record["disturbed"] = (record.get("other_load_cpus") or 0.0) > DISTURBED_CPUS
    return record


def wait_for_quiet(ctx: Context) -> Tuple[float, float]:
    """Wait (up to ctx.quiet_wait s) until the rest of the machine uses < QUIET_CPUS over a 1 s window: on a shared
    2-core machine one CPU-bound test run elsewhere halves what we measure. Returns (seconds waited, last reading)."""
    began = time.perf_counter()
    while True:
        meter = CpuMeter(ctx.postgres_pid, ctx.s3_pid)
        time.sleep(QUIET_WINDOW)
        other = meter.reading()["other_load_cpus"]
        waited = time.perf_counter() - began
        if other < QUIET_CPUS or waited >= ctx.quiet_wait:
            if waited > 2 * QUIET_WINDOW:
                log("  waited {0:.0f} s for other load to settle (now {1} CPUs)".format(waited, other))
            return round(waited, 1), other


def describe(record: Dict[str, Any]) -> str:
    if record.get("error"):
        return "FAILED " + record["error"][:400]
    text = "{0:.2f} s, peak RSS {1} MB".format(record["wall_s"], record.get("peak_rss_mb"))
    if "module_duration_s" in record:
        text += ", module {0:.2f} s, {1} MiB/s, stages {2}, phases {3}".format(
            record["module_duration_s"], record.get("throughput_mib_s"), record.get("stages_ms"),
            {k: round(v) for k, v in (record.get("phases_ms") or {}).items()})
    return text


def parse_sizes(text: str) -> List[float]:
    sizes = sorted({float(value) for value in text.split(",") if value.strip()})
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError("sizes must be positive numbers of GB, comma-separated")
    return sizes


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[0.25, 1.0], help="database sizes in GB (2**30 bytes), comma-separated (default 0.25,1.0)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every variant per size, in alternating order (default 2)")
    parser.add_argument("--table-stats", choices=["fingerprints", "row_counts", "none"], default="fingerprints",
                        help="keel's table_stats option for keel_file and keel_s3 (default fingerprints); keel_file_nostats always uses none")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="before each run, wait up to this many seconds until other processes use < {0} CPUs "
                             "(default 120; 0: never wait)".format(QUIET_CPUS))
    parser.add_argument("--retries", type=int, default=2,
                        help="run a disturbed run (other processes used > {0} CPUs during it) again up to this many times (default 2)".format(DISTURBED_CPUS))
    parser.add_argument("--extra-variant", type=parse_extra_variant, action="append", default=[], metavar="NAME:OPTION=VALUE,...",
                        help="also run keel with these module options (file store unless store=s3; env.VAR=value sets the module's "
                             "environment), e.g. zstd1:compression_level=1,table_stats=none; repeatable")
    parser.add_argument("--output", type=Path, help="JSON report path (default bench/results/backup_throughput-<timestamp>.json)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--from-json", type=Path, metavar="REPORT", help="only print the tables of an earlier JSON report")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_report(name: str, args: argparse.Namespace, options: Dict[str, Any], extra: Dict[str, Any],
               run: Callable[[argparse.Namespace, Dict[str, Any], Path], None],
               summarize_report: Callable[[Dict[str, Any]], Any], judge_summary: Callable[[Any], Dict[str, Any]],
               render: Callable[..., str]) -> int:
    """Run a benchmark in a scratch directory and always write its JSON report, even when it fails part-way.

    Shared by the benchmarks under bench/: ``run`` fills ``report``; the verdict
    decides the exit status (0 when every target is met).
    """
    signal.signal(signal.SIGTERM, _terminate)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / "{0}-{1}.json".format(name, stamp)
    if os.getloadavg()[0] > 0.5:
        log("warning: load average {0:.2f} before the start: something else is using the CPUs (runs wait for quiet, see --quiet-wait)".format(
            os.getloadavg()[0]))
    report: Dict[str, Any] = {"benchmark": name, "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                              "options": options}
    report.update(extra)
    report.update({"loadavg_at_start": [round(value, 2) for value in os.getloadavg()], "git_commit": git_commit(),
                   "databases": {}, "runs": []})
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="keel-bench-{0}-".format(name.split("_", maxsplit=1)[0]), dir="/tmp"))
    try:
        run(args, report, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        report["duration_seconds"] = round(time.perf_counter() - began, 1)
        report["loadavg_at_end"] = [round(value, 2) for value in os.getloadavg()]
        if report["databases"]:
            report["summary"] = summarize_report(report)
            report["verdict"] = judge_summary(report["summary"])
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, default=str) + "\n")
        log("report: {0}".format(output))
    print(json.dumps({"report": str(output), "duration_seconds": report["duration_seconds"], "verdict": report.get("verdict")}, indent=2))
    print()
    print(render(report, markdown=args.markdown))
    return 0 if report.get("verdict", {}).get("all_met") else 1


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(text_report(json.loads(args.from_json.read_text()), markdown=args.markdown))
        return 0
    _bootstrap_imports()
    options = {"sizes": args.sizes, "repeat": args.repeat, "table_stats": args.table_stats, "quiet_wait": args.quiet_wait,
               "retries": args.retries, "extra_variants": [dataclasses.asdict(v) for v in args.extra_variant]}
    return run_report("backup_throughput", args, options, {}, benchmark, summarize, judge, text_report)


if __name__ == "__main__":
    sys.exit(main())
