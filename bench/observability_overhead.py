"""Observability overhead benchmark: what metrics, traces and the Prometheus textfile cost a keel module run.

Two workloads, each run through the real module with ``ansible-playbook`` (tests/harness/playbook.py, the working
tree as the collection), once with observability OFF (no ``metrics_textfile``, no ``otlp_endpoint``) and once ON
(``metrics_textfile: <scratch>/keel.prom``, ``otlp_endpoint`` = a loopback OTLP/HTTP receiver, ``traceparent``):

1. ``keel.postgres.schema_change``: ``alter_column`` ``amount int -> bigint`` on an ``orders`` table of ``--rows`` rows
   (1M by default; the same table as bench/zero_downtime.py), ``state: completed``, ``revert_window: 0``: a backfill of
   every row, ended ``finalized``. Each run gets its own copy of the database (``CREATE DATABASE ... TEMPLATE``, made
   before the clock starts and dropped after).
2. ``keel.postgres.backup`` of a database of ``--size`` GB (the realistic data of bench/backup_throughput.py) to a
   SeaweedFS ``s3`` store (``--store file`` for a directory), each run under a prefix of its own, so nothing is skipped.

The runs come in ``--repeat`` pairs, interleaved OFF, ON / ON, OFF / OFF, ON ..., so drift on a shared machine hits
both sides. A pair's overhead is ON / OFF - 1 of the ansible-playbook wall time; the report gives the median over the
pairs with their spread, and says when the noise between pairs is larger than the 2% it is asked to resolve.

Beside the wall time: the module's own ``metrics.duration_ms`` (which ends after the export, so it includes it), how
long the module process lived, its CPU time and its peak RSS (VmHWM of the AnsiballZ python, sampled every 20 ms),
and, for ON runs, from the spans the receiver got: the export (``duration_ms`` minus the root span's length) and the
time after the last phase (textfile, OpenTelemetry imports, spans, export: an upper bound of observability's cost in
the module), also as a share of the OFF wall time. The module imports OpenTelemetry only when tracing is on; that
import and the rest of the observe step are also measured on their own in a fresh interpreter (wall, CPU and RSS
growth of keel's textfile write, the imports and ``tracing.export_run``), so the report shows the fixed cost apart
from the noise. An ON run whose spans did not reach the receiver, or whose textfile was not written, is void and
counts as an error.

Targets (issue 12): at most 2% wall-time overhead (median over the pairs) and peak RSS within 10 MB, for each
workload. The exit status is 0 when every target is met; whether the noise can resolve 2% and whether the in-module
cost stays under 2% are reported beside them, not judged.

    /path/to/venv/bin/python bench/observability_overhead.py --quick    # 100k rows, 0.05 GB, one pair, about 75 s
    /path/to/venv/bin/python bench/observability_overhead.py            # 1M rows, 0.25 GB, three pairs, 3.5-5 minutes

It starts its own throwaway PostgreSQL cluster, SeaweedFS server and OTLP receiver (tests/harness) and removes them at
the end. Measuring (process sampler, CPU meter, quiet wait), the backup data and the report writer come from
bench/backup_throughput.py; the cluster and the orders table from bench/zero_downtime.py.
See bench/README.md and docs/benchmarks/observability_overhead.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.backup_throughput import (  # noqa: E402
    DISTURBED_CPUS,
    MIB,
    Context,
    CpuMeter,
    Database,
    TreeSampler,
    ansible_playbook_children,
    build_database,
    fmt,
    keel_store,
    log,
    render,
    run_report,
    wait_for_quiet,
)

WALL_OVERHEAD_TARGET_PCT = 2.0
RSS_DELTA_TARGET_MB = 10.0
# The OTel import and the export happen in the module's last few hundred ms; backup_throughput's 50 ms sampler could
# miss the top of the RSS curve there, so this one samples faster.
RSS_SAMPLE_INTERVAL = 0.02
WORKLOADS = ("schema_change", "backup")
MODES = ("off", "on")
MIGRATION = [{"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}}]
REPORTED_SETTINGS = ("server_version", "fsync", "shared_buffers", "max_wal_size", "work_mem", "maintenance_work_mem")
# What the module imports when tracing is on (tracing.export_run / build_spans / _exporter).
OTEL_IMPORTS = ("opentelemetry.sdk.trace", "opentelemetry.sdk.trace.export", "opentelemetry.sdk.resources",
                "opentelemetry.trace.propagation.tracecontext", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
# What every module has imported before that point (the baseline of the fresh-interpreter measurement).
MODULE_IMPORTS = ("ansible.module_utils.basic", "psycopg",
                  "ansible_collections.keel.postgres.plugins.module_utils.keel_module")

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: keel {0}
      keel.postgres.{0}: "{{{{ module_args }}}}"
"""


class FastSampler(TreeSampler):
    """backup_throughput's process-tree sampler at RSS_SAMPLE_INTERVAL."""

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(RSS_SAMPLE_INTERVAL)


# -- servers and data ------------------------------------------------------------------------------

@contextlib.contextmanager
def servers(with_s3: bool) -> Iterator[Tuple[Any, Any, Any]]:
    """zero_downtime's tuned PostgreSQL, a SeaweedFS server (when the store is s3) and the OTLP receiver; always removed."""
    from bench.zero_downtime import Server
    from tests.harness.otlp_receiver import OtlpReceiver
    from tests.harness.s3_server import S3Server

    server = Server()
    s3 = S3Server() if with_s3 else None
    receiver = OtlpReceiver()
    stops = [("PostgreSQL", server.remove)] + ([("S3", s3.remove)] if s3 else []) + [("OTLP receiver", receiver.stop)]
    try:
        server.start()
        if s3 is not None:
            s3.start()
        receiver.start()
        yield server, s3, receiver
    finally:
        for name, stop in stops:
            try:
                stop()
            except Exception as error:  # report, and still stop the others
                log("could not stop the {0}: {1}".format(name, error))


FIXED_COST_CODE = """
import importlib, json, os, sys, tempfile, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
for name in MODULE_IMPORTS:
    importlib.import_module(name)
from ansible_collections.keel.postgres.plugins.module_utils.observe import textfile, tracing
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
metrics = RunMetrics()
metrics.label(db='bench', table='orders', migration='obs_bench')
for step in ('connect', 'validate', 'start', 'complete', 'finalize'):
    with metrics.phase(step):
        if step == 'start':
            with metrics.phase('backfill', table='orders'):
                for _batch in range(100):
                    with metrics.phase('batch'):
                        metrics.count('rows_backfilled', 10000)
marks = [(rss(), time.process_time(), time.perf_counter())]
with tempfile.TemporaryDirectory() as scratch:
    textfile.write_textfile(os.path.join(scratch, 'keel.prom'), 'schema_change', metrics.as_dict(), metrics.maxima, True, time.time())
marks.append((rss(), time.process_time(), time.perf_counter()))
for name in OTEL_IMPORTS:
    importlib.import_module(name)
marks.append((rss(), time.process_time(), time.perf_counter()))
settings = tracing.trace_settings({'otlp_endpoint': sys.argv[1], 'traceparent': sys.argv[2]}, {})
outcome = tracing.export_run(metrics, 'schema_change', None, False, settings)
marks.append((rss(), time.process_time(), time.perf_counter()))
steps = {}
for name, before, after in zip(('textfile', 'otel_import', 'export_run'), marks, marks[1:]):
    steps[name] = {'wall_ms': (after[2] - before[2]) * 1000.0, 'cpu_ms': (after[1] - before[1]) * 1000.0, 'rss_growth_mb': after[0] - before[0]}
print(json.dumps({'steps': steps, 'spans': outcome.spans, 'warning': outcome.warning}))
"""


def fixed_cost(receiver: Any, repeat: int = 5) -> Dict[str, Any]:
    """What a traced, textfile-writing run adds after its work, without the noise of a whole run: in a fresh
    interpreter that has imported what every module imports, keel's own observe code on a migration-shaped
    RunMetrics (5 phases, 100 batches): the textfile write, the OpenTelemetry imports, and ``tracing.export_run``
    (TracerProvider, resource, spans, the exporter, one request to the loopback receiver). Medians of ``repeat``."""
    from tests.harness.collection_path import ensure_collection_link

    code = FIXED_COST_CODE.replace("MODULE_IMPORTS", repr(MODULE_IMPORTS)).replace("OTEL_IMPORTS", repr(OTEL_IMPORTS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ensure_collection_link()), os.environ.get("PYTHONPATH", "")]))
    samples: List[Dict[str, Any]] = []
    for _attempt in range(repeat):
        trace_id = os.urandom(16).hex()
        argv = [sys.executable, "-c", code, receiver.endpoint, "00-{0}-{1}-01".format(trace_id, os.urandom(8).hex())]
        completed = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        if completed.returncode != 0:
            return {"error": completed.stderr.strip()[-800:]}
        sample = json.loads(completed.stdout)
        sample["spans_received"] = sum(1 for span in receiver.spans if span.trace_id == trace_id)
        samples.append(sample)
    result: Dict[str, Any] = {"repeat": repeat, "otel_modules": list(OTEL_IMPORTS),
                              "spans_sent": samples[0]["spans"], "spans_received": [sample["spans_received"] for sample in samples],
                              "warnings": sorted({sample["warning"] for sample in samples if sample["warning"]})}
    if any(sample["spans_received"] != sample["spans"] for sample in samples):
        result["error"] = "spans were lost on the way to the receiver: the export was not measured"
    for step in ("textfile", "otel_import", "export_run"):
        result[step] = {key: median([sample["steps"][step][key] for sample in samples], 1) for key in ("wall_ms", "cpu_ms", "rss_growth_mb")}
    result["total"] = {key: round(sum(result[step][key] for step in ("textfile", "otel_import", "export_run")), 1)
                       for key in ("wall_ms", "cpu_ms", "rss_growth_mb")}
    return result


# -- one run ------------------------------------------------------------------------------------------

def run_module(ctx: Context, module: str, module_args: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """One ansible-playbook run of ``module``: its wall time, the module process (peak RSS, CPU, lifetime), the
    machine's CPU split, and the module's result."""
    from tests.harness.playbook import run_playbook

    sampler = FastSampler(ansible_playbook_children)
    meter = CpuMeter(ctx.postgres_pid, ctx.s3_pid)
    sampler.start()
    began = time.perf_counter()
    try:
        outcome = run_playbook(PLAYBOOK.format(module), extra_vars={"module_args": module_args}, timeout=ctx.timeout)
    finally:
        wall = time.perf_counter() - began
        sampler.stop()
    process = sampler.summary("module")
    record: Dict[str, Any] = {"wall_s": round(wall, 3), **meter.reading(), "module_process": process,
                              "peak_rss_mb": process.get("peak_rss_mb"), "module_cpu_s": process.get("cpu_seconds"),
                              "module_alive_s": process.get("seen_seconds"), "pg_dump_process": sampler.summary("pg_dump")}
    tasks = [task for task in outcome.tasks if task["name"] == "keel " + module]
    result = tasks[-1]["result"] if tasks else {}
    if outcome.rc != 0 or not tasks or tasks[-1]["status"] == "failed":
        record["error"] = "ansible-playbook rc={0}: {1}".format(outcome.rc, result.get("msg") or outcome.output_tail()[-1500:])
    metrics = result.get("metrics") or {}
    record.update({"module_duration_s": round((metrics.get("duration_ms") or 0) / 1000.0, 3) if metrics else None,
                   "phases_ms": metrics.get("phases_ms"), "exported": metrics.get("exported"),
                   "warnings": result.get("warnings") or []})
    record["ansible_overhead_s"] = round(wall - record["module_duration_s"], 3) if record["module_duration_s"] else None
    return record, result


def observability_args(ctx: ObsContext, trace_id: str) -> Dict[str, Any]:
    textfile = ctx.workdir / "prom" / "keel.prom"
    # Removed first: the check after the run must see this run's file, not the last ON run's.
    textfile.unlink(missing_ok=True)
    return {"metrics_textfile": str(textfile), "otlp_endpoint": ctx.receiver.endpoint,
            "traceparent": "00-{0}-{1}-01".format(trace_id, os.urandom(8).hex())}


def check_observed(ctx: ObsContext, record: Dict[str, Any], module: str, trace_id: str) -> None:
    """ON runs: the spans reached the receiver under our trace id and the textfile holds keel's metrics, else the
    run is void. Adds the root span's length, the export and the time after the last phase to the record."""
    spans = [span for span in ctx.receiver.spans if span.trace_id == trace_id]
    roots = [span for span in spans if span.name == "keel.postgres." + module]
    textfile = ctx.workdir / "prom" / "keel.prom"
    samples = [line for line in textfile.read_text().splitlines() if line.startswith("keel_")] if textfile.is_file() else []
    record["observed"] = {"spans_received": len(spans), "spans_reported": (record.get("exported") or {}).get("spans"),
                          "textfile_samples": len(samples), "export_requests": len(ctx.receiver.requests)}
    if not roots or not samples:
        record["error"] = record.get("error") or "void ON run: {0} spans arrived, {1} textfile samples".format(len(spans), len(samples))
        return
    root = roots[0]
    root_ms = (root.end_ns - root.start_ns) / 1e6
    work_ms = (max([span.end_ns for span in spans if span is not root] or [root.end_ns]) - root.start_ns) / 1e6
    record["root_span_ms"] = round(root_ms, 1)
    if record.get("module_duration_s"):
        duration_ms = record["module_duration_s"] * 1000.0
        # duration_ms is taken after the export; the root span ends when the spans are built (after the SDK import,
        # before the exporter's import and the request): the difference is the export.
        record["export_ms"] = round(duration_ms - root_ms, 1)
        # From the end of the last phase: the textfile, the OpenTelemetry imports, building and sending the spans
        # (and the little result assembly an OFF run does too): an upper bound of observability's cost in the module.
        record["after_work_ms"] = round(duration_ms - work_ms, 1)


def prepare_run(ctx: Context) -> Dict[str, Any]:
    """Before the clock starts: the disk is flushed and the machine quiet (backup_throughput's wait)."""
    os.sync()
    waited, other_before = wait_for_quiet(ctx)
    return {"loadavg_before": round(os.getloadavg()[0], 2), "quiet_wait_s": waited, "other_load_cpus_before": other_before}


def run_schema_change(ctx: ObsContext, mode: str, run_id: str, rows: int) -> Dict[str, Any]:
    dbname = "sc_" + run_id
    ctx.server.clone(ctx.template, dbname)
    try:
        ctx.server.cluster.execute("CHECKPOINT")
        before = prepare_run(ctx)
        args = {"login_host": ctx.server.cluster.host, "port": ctx.server.cluster.port, "login_user": ctx.server.cluster.user,
                "db": dbname, "name": "obs_bench", "operations": MIGRATION, "state": "completed", "revert_window": 0}
        trace_id = os.urandom(16).hex()
        if mode == "on":
            args.update(observability_args(ctx, trace_id))
        record, result = run_module(ctx, "schema_change", args)
        record.update(before)
        record["phase"] = result.get("phase")
        if not record.get("error") and result.get("phase") != "finalized":
            record["error"] = "the migration ended {0!r}, not finalized".format(result.get("phase"))
        if mode == "on":
            check_observed(ctx, record, "schema_change", trace_id)
        record["rows_backfilled"] = ((result.get("metrics") or {}).get("counters") or {}).get("rows_backfilled")
    finally:
        ctx.server.drop(dbname)
    return record


def run_backup(ctx: ObsContext, mode: str, run_id: str, database: Database, store_kind: str) -> Dict[str, Any]:
    store = keel_store(ctx, store_kind, run_id)  # a fresh directory or S3 prefix: nothing to skip
    before = prepare_run(ctx)
    args = {"login_host": ctx.server.cluster.host, "port": ctx.server.cluster.port, "login_user": ctx.server.cluster.user,
            "tenant": database.tenant, "tenants": ctx.tenants, "store": store,
            "key_provider": {"type": "file", "directory": str(ctx.key_dir)}}
    trace_id = os.urandom(16).hex()
    if mode == "on":
        args.update(observability_args(ctx, trace_id))
    try:
        record, result = run_module(ctx, "backup", args)
    finally:
        if store_kind == "file":
            shutil.rmtree(store["path"], ignore_errors=True)
    record.update(before)
    record.update({"stages_ms": result.get("stages_ms"), "throughput_mib_s": result.get("throughput_mib_s"),
                   "backup_id": result.get("backup_id")})
    if not record.get("error") and result.get("skipped"):
        record["error"] = "the backup was skipped"
    if mode == "on":
        check_observed(ctx, record, "backup", trace_id)
    return record


# -- the benchmark ----------------------------------------------------------------------------------

@dataclasses.dataclass
class ObsContext(Context):
    """backup_throughput's Context plus the OTLP receiver and the orders template database."""

    receiver: Any = None
    template: str = ""


def benchmark(args: argparse.Namespace, report: Dict[str, Any], workdir: Path) -> None:
    from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider

    with servers("backup" in args.workloads and args.store == "s3") as (server, s3, receiver):
        cluster = server.cluster
        report["fixed_cost"] = fixed_cost(receiver)
        log("observability's fixed cost in a fresh interpreter: {0}".format(report["fixed_cost"]))
        s3_text = ", S3 at " + s3.endpoint_url if s3 else ""
        log("PostgreSQL on port {0}, OTLP receiver at {1}{2}".format(cluster.port, receiver.endpoint, s3_text))
        report["machine"] = machine(cluster)
        bucket = "keel-obs-{0}".format(os.getpid())
        if s3 is not None:
            s3.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        (workdir / "prom").mkdir()
        key_dir = workdir / "keys"
        key_dir.mkdir(mode=0o700)
        template = ""
        if "schema_change" in args.workloads:
            began = time.perf_counter()
            template = server.build_template(args.rows)
            report["databases"]["schema_change"] = {"name": template, "rows": args.rows, "build_seconds": round(time.perf_counter() - began, 1)}
        database = Database(name="bench_backup", size_gb=args.size, tenant="bench-obs")
        if "backup" in args.workloads:
            log("building {0} ({1} GB)".format(database.name, args.size))
            build_database(cluster, database, None)
            log("  {0:.0f} MiB in {1} s, rows {2}".format(database.bytes / MIB, database.build_seconds, database.rows))
            report["databases"]["backup"] = {"name": database.name, "size_gb": args.size, "bytes": database.bytes, "rows": database.rows,
                                             "build_seconds": database.build_seconds, "store": args.store, **database.facts}
            FileKeyProvider(str(key_dir)).create(database.tenant)
        tenants = [{"name": database.tenant, "database": database.name, "retention": {"days": 1, "lock_mode": "governance"}}]
        ctx = ObsContext(server=server, s3=s3, bucket=bucket, workdir=workdir, key_dir=key_dir, pg_dump="", tenants=tenants,
                         timeout=600 + 900 * args.size, postgres_pid=cluster.pid, s3_pid=s3.pid if s3 else None,
                         quiet_wait=args.quiet_wait, receiver=receiver, template=template)
        # Warm-up, untimed: the first runs pay for cold caches (python bytecode, the page cache, OpenTelemetry's files).
        log("warm-up runs (not counted)")
        for workload, mode in ((args.workloads[0], "off"), (args.workloads[-1], "on")):
            warm = one_run(ctx, args, workload, mode, database)
            if warm.get("error"):
                raise RuntimeError("warm-up {0} run failed: {1}".format(workload, warm["error"]))
        for pair in range(args.repeat):
            order = MODES if pair % 2 == 0 else tuple(reversed(MODES))
            for workload in args.workloads:
                for position, mode in enumerate(order):
                    record = one_run(ctx, args, workload, mode, database)
                    record.update({"workload": workload, "mode": mode, "pair": pair, "position": position})
                    report["runs"].append(record)
                    log("pair {0} {1} {2}: {3}".format(pair + 1, workload, mode.upper(), describe(record)))


def one_run(ctx: ObsContext, args: argparse.Namespace, workload: str, mode: str, database: Database) -> Dict[str, Any]:
    ctx.counter += 1
    run_id = "run{0:03d}_{1}".format(ctx.counter, mode)
    record = (run_schema_change(ctx, mode, run_id, args.rows) if workload == "schema_change"
              else run_backup(ctx, mode, run_id, database, args.store))
    record["run_id"] = run_id
    record["disturbed"] = (record.get("other_load_cpus") or 0.0) > DISTURBED_CPUS
    return record


def machine(cluster: Any) -> Dict[str, Any]:
    settings = dict(cluster.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY (%s)", (list(REPORTED_SETTINGS),)))
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "postgres": settings}


def describe(record: Dict[str, Any]) -> str:
    if record.get("error"):
        return "FAILED " + record["error"][:400]
    text = "{0:.2f} s (module {1} s, alive {2} s, CPU {3} s), peak RSS {4} MB, other load {5}".format(
        record["wall_s"], record.get("module_duration_s"), record.get("module_alive_s"), record.get("module_cpu_s"),
        record.get("peak_rss_mb"), record.get("other_load_cpus"))
    if "export_ms" in record:
        observed = record["observed"]
        text += ", {0} spans, export {1} ms, after the last phase {2} ms".format(observed["spans_received"], record["export_ms"], record.get("after_work_ms"))
    return text


# -- summary and judgement ----------------------------------------------------------------------------

def median(values: List[Optional[float]], digits: int = 3) -> Optional[float]:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), digits) if present else None


def pct(on: Optional[float], off: Optional[float]) -> Optional[float]:
    return round((on / off - 1.0) * 100.0, 2) if on is not None and off else None


def summarize(report: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per workload: medians OFF/ON, the overhead of each pair and its spread, peak RSS, the export time."""
    summary: Dict[str, Dict[str, Any]] = {}
    for workload in WORKLOADS:
        runs = [r for r in report["runs"] if r["workload"] == workload]
        if not runs:
            continue
        pairs = []
        for pair in sorted({r["pair"] for r in runs}):
            both = {r["mode"]: r for r in runs if r["pair"] == pair}
            if set(both) != set(MODES) or any(r.get("error") for r in both.values()):
                continue
            off, on = both["off"], both["on"]
            pairs.append({"pair": pair, "disturbed": off["disturbed"] or on["disturbed"], "off_wall_s": off["wall_s"], "on_wall_s": on["wall_s"],
                          "wall_overhead_pct": pct(on["wall_s"], off["wall_s"]),
                          "module_overhead_pct": pct(on.get("module_duration_s"), off.get("module_duration_s")),
                          "cpu_overhead_pct": pct(on.get("module_cpu_s"), off.get("module_cpu_s")),
                          "rss_delta_mb": round(on["peak_rss_mb"] - off["peak_rss_mb"], 1)
                          if on.get("peak_rss_mb") is not None and off.get("peak_rss_mb") is not None else None})
        clean = [p for p in pairs if not p["disturbed"]]
        # Undisturbed pairs when there are at least two (one pair says nothing about noise); else every pair: the
        # interleaving is what spreads drift over both sides, and on a busy shared machine few runs are undisturbed.
        used = clean if len(clean) >= 2 else pairs
        ok = {mode: [r for r in runs if r["mode"] == mode and not r.get("error") and r["pair"] in {p["pair"] for p in used}] for mode in MODES}
        entry: Dict[str, Any] = {"pairs": len(used), "disturbed_pairs_left_out": len(pairs) - len(used),
                                 "disturbed_pairs_used": sum(1 for p in used if p["disturbed"]),
                                 "failed_runs": [r["error"][:300] for r in runs if r.get("error")],
                                 "pair_details": pairs}
        for mode in MODES:
            chosen = ok[mode]
            entry[mode] = {"runs": len(chosen), "wall_s": median([r["wall_s"] for r in chosen]),
                           "module_duration_s": median([r.get("module_duration_s") for r in chosen]),
                           "module_alive_s": median([r.get("module_alive_s") for r in chosen]),
                           "module_cpu_s": median([r.get("module_cpu_s") for r in chosen], 2),
                           "peak_rss_mb": median([r.get("peak_rss_mb") for r in chosen], 1),
                           "ansible_overhead_s": median([r.get("ansible_overhead_s") for r in chosen])}
        on_runs = ok["on"]
        entry["on"]["export_ms"] = median([r.get("export_ms") for r in on_runs], 1)
        entry["on"]["root_span_ms"] = median([r.get("root_span_ms") for r in on_runs], 1)
        entry["on"]["after_work_ms"] = median([r.get("after_work_ms") for r in on_runs], 1)
        # The measured in-module cost set against the OFF wall time: an estimate the run-to-run noise does not blur
        # (it leaves out what an ON run might cost outside the module process, e.g. a bigger result for ansible).
        after, off_wall = entry["on"]["after_work_ms"], entry["off"]["wall_s"]
        entry["in_module_overhead_pct"] = round(after / 10.0 / off_wall, 2) if after is not None and off_wall else None
        entry["on"]["spans"] = median([r.get("observed", {}).get("spans_received") for r in on_runs], 0)
        overheads = [p["wall_overhead_pct"] for p in used if p["wall_overhead_pct"] is not None]
        entry["wall_overhead_pct"] = median(overheads, 2)
        entry["wall_overhead_pct_range"] = [min(overheads), max(overheads)] if overheads else None
        entry["module_overhead_pct"] = median([p["module_overhead_pct"] for p in used], 2)
        entry["cpu_overhead_pct"] = median([p["cpu_overhead_pct"] for p in used], 2)
        entry["rss_delta_mb"] = median([p["rss_delta_mb"] for p in used], 1)
        offs = [r["wall_s"] for r in ok["off"]]
        # The noise floor: how far apart two runs of the same thing land (OFF against OFF), and how much the pairs disagree.
        entry["off_spread_pct"] = round((max(offs) - min(offs)) / statistics.median(offs) * 100.0, 2) if len(offs) > 1 else None
        entry["pair_spread_pct"] = round(max(overheads) - min(overheads), 2) if len(overheads) > 1 else None
        spreads = [value for value in (entry["off_spread_pct"], entry["pair_spread_pct"]) if value is not None]
        entry["resolves_2pct"] = bool(spreads) and max(spreads) <= WALL_OVERHEAD_TARGET_PCT
        summary[workload] = entry
    return summary


def judge(summary: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    verdict: Dict[str, Any] = {}
    for workload, entry in summary.items():
        ran = entry["pairs"] > 0
        verdict[workload] = {
            "wall_overhead_le_2pct": ran and entry["wall_overhead_pct"] is not None and entry["wall_overhead_pct"] <= WALL_OVERHEAD_TARGET_PCT,
            "rss_delta_le_10mb": ran and entry["rss_delta_mb"] is not None and entry["rss_delta_mb"] <= RSS_DELTA_TARGET_MB,
            "no_failed_or_void_runs": not entry["failed_runs"],
        }
        # Reported beside the targets, not judged: whether the wall-time comparison can see 2% at all, and the
        # in-module cost (time after the last phase) set against the OFF wall time.
        verdict[workload + "_noise_resolves_2pct"] = entry["resolves_2pct"]
        in_module = entry.get("in_module_overhead_pct")
        verdict[workload + "_in_module_cost_le_2pct"] = in_module is not None and in_module <= WALL_OVERHEAD_TARGET_PCT
    checks = [value for workload in WORKLOADS for value in verdict.get(workload, {}).values()]
    verdict["all_met"] = bool(checks) and all(checks)
    return verdict


# -- output ---------------------------------------------------------------------------------------------

def main_table(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    headers = ["workload", "pairs", "wall s OFF / ON", "overhead % (pairs min..max)", "noise % (OFF spread / pair spread)", "in-module cost %",
               "module duration_ms s OFF / ON", "module CPU s OFF / ON", "peak RSS MB OFF / ON (delta)", "export ms (after last phase)", "spans"]
    lines = []
    for workload, entry in report["summary"].items():
        off, on = entry["off"], entry["on"]
        spread = entry.get("wall_overhead_pct_range")
        noise = "{0} / {1}{2}".format(fmt(entry.get("off_spread_pct")), fmt(entry.get("pair_spread_pct")),
                                      "" if entry.get("resolves_2pct") else " (cannot resolve 2%)")
        lines.append([
            workload, str(entry["pairs"]) + (" ({0} disturbed)".format(entry["disturbed_pairs_used"]) if entry.get("disturbed_pairs_used") else ""),
            "{0} / {1}".format(fmt(off["wall_s"]), fmt(on["wall_s"])),
            "{0} ({1}..{2})".format(fmt(entry.get("wall_overhead_pct"), "{0:+.2f}"), fmt(spread[0] if spread else None, "{0:+.2f}"),
                                    fmt(spread[1] if spread else None, "{0:+.2f}")),
            noise, fmt(entry.get("in_module_overhead_pct"), "{0:+.2f}"),
            "{0} / {1}".format(fmt(off["module_duration_s"]), fmt(on["module_duration_s"])),
            "{0} / {1}".format(fmt(off["module_cpu_s"]), fmt(on["module_cpu_s"])),
            "{0} / {1} ({2})".format(fmt(off["peak_rss_mb"], "{0:.1f}"), fmt(on["peak_rss_mb"], "{0:.1f}"), fmt(entry.get("rss_delta_mb"), "{0:+.1f}")),
            "{0} ({1})".format(fmt(on.get("export_ms"), "{0:.0f}"), fmt(on.get("after_work_ms"), "{0:.0f}")), fmt(on.get("spans"), "{0:.0f}")])
    return headers, lines


def pair_table(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    headers = ["workload", "pair", "order", "wall s OFF / ON", "wall %", "module duration %", "module CPU %", "RSS delta MB", "disturbed"]
    lines = []
    for workload, entry in report["summary"].items():
        for details in entry["pair_details"]:
            lines.append([workload, str(details["pair"] + 1), "OFF, ON" if details["pair"] % 2 == 0 else "ON, OFF",
                          "{0} / {1}".format(fmt(details["off_wall_s"]), fmt(details["on_wall_s"])),
                          fmt(details["wall_overhead_pct"], "{0:+.2f}"), fmt(details["module_overhead_pct"], "{0:+.2f}"),
                          fmt(details["cpu_overhead_pct"], "{0:+.2f}"), fmt(details["rss_delta_mb"], "{0:+.1f}"),
                          "yes" if details["disturbed"] else ""])
    return headers, lines


def text_report(report: Dict[str, Any], markdown: bool = False) -> str:
    out = render(*main_table(report), markdown)
    out += ["", *render(*pair_table(report), markdown), ""]
    fixed = report.get("fixed_cost") or {}
    if "total" in fixed:
        out.append("fixed cost in a fresh interpreter (after the module's own imports), wall ms / CPU ms / RSS MB: " + "; ".join(
            "{0} {1} / {2} / +{3}".format(step, fixed[step]["wall_ms"], fixed[step]["cpu_ms"], fixed[step]["rss_growth_mb"])
            for step in ("textfile", "otel_import", "export_run", "total")) + "; spans received {0}".format(fixed.get("spans_received")))
    facts = report["databases"]
    if "schema_change" in facts:
        out.append("schema_change: alter_column amount int -> bigint, {0} rows, state completed, revert_window 0".format(facts["schema_change"]["rows"]))
    if "backup" in facts:
        backup = facts["backup"]
        out.append("backup: {0:.0f} MiB database ({1} GB asked), store {2}".format(backup["bytes"] / MIB, backup["size_gb"], backup["store"]))
    verdict = report.get("verdict", {})
    for workload in WORKLOADS:
        if workload in verdict:
            out.append("targets, {0}: {1}; noise resolves 2%: {2}; in-module cost <= 2%: {3}".format(workload, ", ".join(
                "{0} {1}".format(name, "ok" if ok else "MISS") for name, ok in verdict[workload].items()),
                "yes" if verdict.get(workload + "_noise_resolves_2pct") else "no",
                "yes" if verdict.get(workload + "_in_module_cost_le_2pct") else "no"))
    return "\n".join(out)


def parse_workloads(text: str) -> List[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if not chosen or unknown:
        raise argparse.ArgumentTypeError("workloads are a comma-separated subset of {0}".format(",".join(WORKLOADS)))
    return [name for name in WORKLOADS if name in chosen]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the orders table schema_change migrates (default 1000000)")
    parser.add_argument("--size", type=float, default=0.25, help="size of the backed-up database in GB (2**30 bytes; default 0.25)")
    parser.add_argument("--repeat", type=int, default=3, help="OFF/ON pairs per workload, in alternating order (default 3)")
    parser.add_argument("--store", choices=["s3", "file"], default="s3", help="backup store: SeaweedFS s3 (default) or a directory")
    parser.add_argument("--workloads", type=parse_workloads, default=list(WORKLOADS),
                        help="comma-separated subset of schema_change,backup (default both)")
    parser.add_argument("--quick", action="store_true", help="100k rows, 0.05 GB, one pair: a smoke run of about a minute")
    parser.add_argument("--quiet-wait", type=float,
                        help="before each run, wait up to this many seconds for other processes to calm down (default 10, --quick 3; 0: never)")
    parser.add_argument("--output", type=Path, help="JSON report path (default bench/results/observability_overhead-<timestamp>.json)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--from-json", type=Path, metavar="REPORT", help="only print the tables of an earlier JSON report")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.size, args.repeat = 100_000, 0.05, 1
    if args.quiet_wait is None:
        args.quiet_wait = 3.0 if args.quick else 10.0
    if args.repeat < 1 or args.rows < 1 or args.size <= 0:
        parser.error("--repeat and --rows must be at least 1, --size positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        report["summary"] = summarize(report)  # recomputed: an older report gets the current figures
        report["verdict"] = judge(report["summary"])
        print(text_report(report, markdown=args.markdown))
        return 0
    from tests.harness.collection_path import ensure_collection_importable

    ensure_collection_importable()
    options = {"rows": args.rows, "size_gb": args.size, "repeat": args.repeat, "store": args.store, "quick": args.quick, "workloads": args.workloads,
               "quiet_wait": args.quiet_wait, "rss_sample_interval_s": RSS_SAMPLE_INTERVAL}
    return run_report("observability_overhead", args, options, {}, benchmark, summarize, judge, text_report)


if __name__ == "__main__":
    sys.exit(main())
