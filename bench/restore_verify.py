"""Restore verification benchmark: keel.postgres.restore_verify against plain pg_restore, on the same database, in the same run.

For each database size (``--sizes``, in GB of ``pg_database_size``; GB = 2**30 bytes) it builds the database
bench/backup_throughput.py builds (customers, orders, events with a random base64 payload) and prepares, untimed:

- two dump files of it: ``pg_dump -Fc`` (gzip at zlib's default level, 6) and ``pg_dump -Fc -Z0``;
- three keel backups of it: to a ``file`` store with the default ``table_stats: fingerprints``, to an ``s3`` store
  (SeaweedFS ``weed mini`` on 127.0.0.1) with fingerprints, and to a ``file`` store with ``table_stats: row_counts``
  (verification then compares row counts only, which shows what the fingerprint comparison costs).

Then it times, ``--repeat`` times each and in alternating order:

1. the baselines, for each dump file: ``createdb --template=template0`` + ``pg_restore`` (one job) + ``dropdb --force``,
   once plain (``pg_restore --dbname scratch FILE``) and once with the flags keel's restore uses
   (``--single-transaction --exit-on-error --no-owner --no-privileges``);
2. ``keel.postgres.restore_verify`` of each backup through ``ansible-playbook`` (tests/harness/playbook.py, the
   working tree as the collection): manifest authenticated, scratch database created, the stream restored into it
   with ``pg_restore --single-transaction`` while every chunk is authenticated, row counts (and fingerprints) compared
   with the manifest, scratch database dropped, outcome written to the store.

Wall time of keel is the whole ansible-playbook run; the module's own ``metrics.duration_ms``, its ``phases_ms`` and
the verification record's ``stages_ms`` are reported beside it. Peak RSS is the kernel's high-water mark (VmHWM) of one
process: for keel the module's own process (the AnsiballZ python), with the pg_restore it starts reported apart; for
the baselines the pg_restore process. Before each run: a CHECKPOINT (the previous run's restore is not flushed during
this one), sync, and a wait for the machine to be quiet; a run during which other processes took a noticeable share
of the CPUs is run again (``--retries``) and left out of the medians. Measuring, the quiet wait, the data and the
servers come from bench/backup_throughput.py.

Target: ``restore_verify`` of the default backup (file store, fingerprints) at most 1.5x the wall time of the baseline
``pg_restore --single-transaction`` of the default ``pg_dump -Fc`` file, at every size, judged end to end (the whole
ansible-playbook run); the module-only ratio is reported too. The exit status is 0 when the target is met.

    /path/to/venv/bin/python bench/restore_verify.py --sizes 0.05 --repeat 1    # smoke run, about 30 s
    /path/to/venv/bin/python bench/restore_verify.py                             # 0.25 and 1 GB, 2 repeats

See bench/README.md and docs/benchmarks/restore_verify.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

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
    fmt,
    keel_pg_dump,
    keel_store,
    log,
    machine_facts,
    median_of,
    parse_sizes,
    pg_dump_argv,
    prepare_databases,
    render,
    run_count,
    run_report,
    servers,
    size_label,
    stats_query_seconds,
    wait_for_quiet,
)

RATIO_TARGET = 1.5
# The baseline the target is judged against, and the keel variant judged.
BASELINE = "pg_restore_gzip_1txn"
JUDGED = "keel_file"
# What keel's restore passes to pg_restore besides the connection (restore_pipeline.pg_restore_invocation, one job, no_owner).
KEEL_RESTORE_FLAGS = ("--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges")

BACKUP_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: keel backup
      keel.postgres.backup: "{{ module_args }}"
"""

VERIFY_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: keel restore_verify
      keel.postgres.restore_verify: "{{ module_args }}"
"""


@dataclasses.dataclass(frozen=True)
class Variant:
    key: str
    title: str
    kind: str  # pg_restore | keel
    dump: Optional[str] = None  # pg_restore: gzip (pg_dump's default) | z0
    single_transaction: bool = False  # pg_restore: keel's flags
    store: Optional[str] = None  # keel: file | s3
    table_stats: Optional[str] = None  # keel: of the backup verified


VARIANTS = [
    Variant("pg_restore_gzip", "pg_restore, pg_dump -Fc (gzip-6)", "pg_restore", dump="gzip"),
    Variant(BASELINE, "pg_restore --single-transaction, pg_dump -Fc (gzip-6) (baseline)", "pg_restore", dump="gzip", single_transaction=True),
    Variant("pg_restore_z0", "pg_restore, pg_dump -Fc -Z0", "pg_restore", dump="z0"),
    Variant("pg_restore_z0_1txn", "pg_restore --single-transaction, pg_dump -Fc -Z0", "pg_restore", dump="z0", single_transaction=True),
    Variant(JUDGED, "keel restore_verify <- file, fingerprints", "keel", store="file", table_stats="fingerprints"),
    Variant("keel_s3", "keel restore_verify <- s3 (SeaweedFS), fingerprints", "keel", store="s3", table_stats="fingerprints"),
    Variant("keel_file_rowcounts", "keel restore_verify <- file, row_counts", "keel", store="file", table_stats="row_counts"),
]
VARIANT_KEYS = [variant.key for variant in VARIANTS]


@dataclasses.dataclass
class RestoreContext(Context):
    """backup_throughput's Context plus the client tools of the baselines (from the directory of keel's pg_restore)."""

    pg_restore: str = ""
    createdb: str = ""
    dropdb: str = ""


@dataclasses.dataclass
class Prepared:
    """What the timed runs of one size restore: dump files by kind, keel backups (with their store spec) by variant key."""

    dumps: Dict[str, Path] = dataclasses.field(default_factory=dict)
    backups: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)


# -- setup (untimed) ---------------------------------------------------------------------------------------------------

def connection_args(ctx: RestoreContext) -> Dict[str, Any]:
    return {"login_host": ctx.server.host, "port": ctx.server.port, "login_user": ctx.server.user}


def client_tools_for(server: Any) -> Dict[str, Any]:
    """The pg_restore keel's module picks by default; createdb and dropdb from the same directory."""
    from ansible_collections.keel.postgres.plugins.module_utils import client_tools

    version = int(server.execute("SELECT current_setting('server_version_num')::int")[0][0])
    tool = client_tools.inspect_client_tool("pg_restore", None, version)
    if not tool.get("path"):
        raise SystemExit("no pg_restore found")
    bindir = Path(str(tool["path"])).parent
    found = {"pg_restore": str(tool["path"]), "version": tool.get("version")}
    for name in ("createdb", "dropdb"):
        path = bindir / name
        found[name] = str(path) if path.is_file() else shutil.which(name)
        if not found[name]:
            raise SystemExit("no {0} found beside {1}".format(name, tool["path"]))
    return found


def make_dump(ctx: RestoreContext, database: Database, kind: str) -> Tuple[Path, Dict[str, Any]]:
    path = ctx.workdir / "dumps" / "{0}-{1}.pgc".format(database.name, kind)
    path.parent.mkdir(exist_ok=True)
    argv = [*pg_dump_argv(ctx, database, "0" if kind == "z0" else None), "--file", str(path)]
    began = time.perf_counter()
    completed = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError("pg_dump ({0}) of {1} failed: {2}".format(kind, database.name, completed.stderr[-500:]))
    return path, {"bytes": path.stat().st_size, "dump_seconds": round(time.perf_counter() - began, 2), "argv": argv[1:]}


def make_backup(ctx: RestoreContext, database: Database, variant: Variant) -> Dict[str, Any]:
    """One keel backup for ``variant`` (untimed setup): its id, and the store spec restore_verify needs."""
    from tests.harness.playbook import run_playbook

    ctx.counter += 1
    run_id = "backup{0:03d}-{1}".format(ctx.counter, variant.key)
    store = keel_store(ctx, variant.store or "file", run_id)
    module_args = {**connection_args(ctx), "tenant": database.tenant, "tenants": ctx.tenants, "store": store,
                   "key_provider": {"type": "file", "directory": str(ctx.key_dir)}, "table_stats": variant.table_stats}
    began = time.perf_counter()
    outcome = run_playbook(BACKUP_PLAYBOOK, extra_vars={"module_args": module_args}, timeout=ctx.timeout)
    wall = time.perf_counter() - began
    result = task_result(outcome, "keel backup")
    if "error" in result:
        raise RuntimeError("keel backup for {0} of {1} failed: {2}".format(variant.key, database.name, result["error"]))
    return {"store": store, "backup_id": result["backup_id"], "store_type": store["type"], "run_id": run_id, "table_stats": variant.table_stats,
            "sizes": result.get("sizes"), "tables": result.get("tables"), "wall_s": round(wall, 2),
            "module_duration_s": round(((result.get("metrics") or {}).get("duration_ms") or 0) / 1000.0, 2)}


def wal_files(ctx: RestoreContext) -> int:
    return int(ctx.server.execute("SELECT count(*) FROM pg_ls_waldir()")[0][0])


def task_result(outcome: Any, name: str) -> Dict[str, Any]:
    """The named task's result, or {"error": ...} when the playbook or the task failed."""
    tasks = [task for task in outcome.tasks if task["name"] == name]
    result = {key: value for key, value in (tasks[-1]["result"] if tasks else {}).items() if key != "invocation"}
    if outcome.rc != 0 or not tasks or tasks[-1]["status"] == "failed":
        return dict(result, error="ansible-playbook rc={0}: {1}".format(outcome.rc, result.get("msg") or outcome.output_tail()[-1500:]))
    return result


def prepare_size(ctx: RestoreContext, database: Database, variants: List[Variant], facts: Dict[str, Any]) -> Prepared:
    prepared = Prepared()
    for kind in sorted({variant.dump for variant in variants if variant.kind == "pg_restore"}, key=str):
        assert kind is not None
        prepared.dumps[kind], facts.setdefault("dumps", {})[kind] = make_dump(ctx, database, kind)
        log("  dump file {0}: {1:.0f} MiB in {2} s".format(kind, facts["dumps"][kind]["bytes"] / MIB, facts["dumps"][kind]["dump_seconds"]))
    if prepared.dumps:
        # The first restore of a size grows pg_wal (at 1 GB from 32 to 60 segments, each new one zero-filled rather than
        # recycled), and in a run without this warm-up it was the slowest of all (11.3 s against 8.5 s for the same variant
        # later). One untimed restore first, so that no timed variant pays for it.
        kind = "z0" if "z0" in prepared.dumps else sorted(prepared.dumps)[0]
        wal_files_before = wal_files(ctx)
        warm = run_pg_restore(ctx, database, Variant("warm_up", "warm-up", "pg_restore", dump=kind, single_transaction=True), prepared.dumps[kind])
        facts["warm_up_restore"] = {key: warm.get(key) for key in ("wall_s", "steps_ms", "cpu_s_postgres", "error")}
        facts["warm_up_restore"]["wal_files_before_after"] = [wal_files_before, wal_files(ctx)]
        log("  warm-up restore ({0}, untimed): {1}".format(kind, describe(warm)))
    for variant in variants:
        if variant.kind != "keel":
            continue
        backup = make_backup(ctx, database, variant)
        prepared.backups[variant.key] = backup
        facts.setdefault("backups", {})[variant.key] = {key: value for key, value in backup.items() if key != "store"}
        log("  keel backup for {0}: {1} ({2}), {3} s".format(variant.key, backup["backup_id"], backup["sizes"], backup["wall_s"]))
    return prepared


# -- the timed runs --------------------------------------------------------------------------------------------------

def run_pg_restore(ctx: RestoreContext, database: Database, variant: Variant, dump_path: Path) -> Dict[str, Any]:
    """createdb + pg_restore + dropdb, each timed; peak RSS and CPU (wait4) of the pg_restore process."""
    ctx.counter += 1
    scratch = "bench_restore_{0:03d}".format(ctx.counter)
    connection = ["--host", ctx.server.host, "--port", str(ctx.server.port), "--username", ctx.server.user, "--no-password"]
    create = [ctx.createdb, *connection, "--template=template0", scratch]
    restore = [ctx.pg_restore, *connection, "--dbname", scratch, *(KEEL_RESTORE_FLAGS if variant.single_transaction else ()), str(dump_path)]
    drop = [ctx.dropdb, *connection, "--force", "--if-exists", scratch]
    steps: Dict[str, float] = {}
    record: Dict[str, Any] = {"argv": restore[1:]}
    dropped = False
    meter = CpuMeter(ctx.postgres_pid, ctx.s3_pid)
    began = time.perf_counter()
    try:
        step_began = time.perf_counter()
        created = subprocess.run(create, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        steps["createdb"] = time.perf_counter() - step_began
        if created.returncode != 0:
            record["error"] = "createdb exited {0}: {1}".format(created.returncode, created.stderr.strip()[-500:])
            return record
        with tempfile.TemporaryFile() as errors:
            step_began = time.perf_counter()
            process = subprocess.Popen(restore, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
            sampler = TreeSampler(lambda: [process.pid], tool="pg_restore")
            sampler.start()
            try:
                status, usage = os.wait4(process.pid, 0)[1:]
            finally:
                steps["pg_restore"] = time.perf_counter() - step_began
                sampler.stop()
            process.returncode = os.waitstatus_to_exitcode(status)
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
        record.update({"peak_rss_mb": sampler.summary("pg_restore").get("peak_rss_mb"), "cpu_s_pg_restore": round(usage.ru_utime + usage.ru_stime, 2)})
        if process.returncode != 0:
            record["error"] = "pg_restore exited {0}: {1}".format(process.returncode, message[-500:])
        elif message:
            record["pg_restore_stderr"] = message[-500:]
        step_began = time.perf_counter()
        removed = subprocess.run(drop, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        steps["dropdb"] = time.perf_counter() - step_began
        dropped = removed.returncode == 0
        if not dropped:
            record["error"] = "dropdb exited {0}: {1}".format(removed.returncode, removed.stderr.strip()[-500:])
    finally:
        record["wall_s"] = round(time.perf_counter() - began, 3)
        record.update(meter.reading())
        record["steps_ms"] = {name: round(seconds * 1000.0) for name, seconds in steps.items()}
        if not dropped:  # after a failure: clean up, untimed
            subprocess.run(drop, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return record


def run_keel_verify(ctx: RestoreContext, database: Database, variant: Variant, backup: Dict[str, Any]) -> Dict[str, Any]:
    """keel.postgres.restore_verify of one backup through ansible-playbook: wall time, the module's figures, peak RSS."""
    from tests.harness.playbook import run_playbook

    module_args = {**connection_args(ctx), "tenant": database.tenant, "tenants": ctx.tenants, "store": backup["store"],
                   "key_provider": {"type": "file", "directory": str(ctx.key_dir)}, "backup_id": backup["backup_id"]}
    sampler = TreeSampler(ansible_playbook_children, tool="pg_restore")
    meter = CpuMeter(ctx.postgres_pid, ctx.s3_pid)
    sampler.start()
    began = time.perf_counter()
    try:
        outcome = run_playbook(VERIFY_PLAYBOOK, extra_vars={"module_args": module_args}, timeout=ctx.timeout)
    finally:
        wall = time.perf_counter() - began
        sampler.stop()
    record: Dict[str, Any] = {"wall_s": round(wall, 3), **meter.reading(), "backup_id": backup["backup_id"],
                              "module_process": sampler.summary("module"), "pg_restore_process": sampler.summary("pg_restore"),
                              "module_rss_mb_over_time": sampler.module_rss_mb, "sampler_ticks": sampler.samples}
    record["peak_rss_mb"] = record["module_process"].get("peak_rss_mb")
    result = task_result(outcome, "keel restore_verify")
    verifications = result.get("verifications") or []
    if "error" in result:
        record["error"] = result["error"]
    elif len(verifications) != 1 or verifications[0].get("outcome") != "passed":
        record["error"] = "expected one passed verification, got {0}".format([(v.get("outcome"), v.get("reason"), v.get("message")) for v in verifications])
    metrics = result.get("metrics") or {}
    duration_s = (metrics.get("duration_ms") or 0) / 1000.0
    record.update({"module_duration_s": round(duration_s, 3), "ansible_overhead_s": round(wall - duration_s, 3),
                   "phases_ms": metrics.get("phases_ms"), "counters": metrics.get("counters")})
    if verifications:
        entry = verifications[0]
        record["verification"] = {key: entry.get(key) for key in ("outcome", "reason", "message", "duration_ms", "stages_ms", "table_stats",
                                                                  "tables_checked", "mismatches", "dump_bytes", "stored_bytes", "scratch_dropped",
                                                                  "record_object", "record_error")}
        record["stages_ms"] = entry.get("stages_ms")
    left = ctx.server.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'keel\_verify\_%'")
    if left:  # the module promises this never happens
        record["error"] = "scratch databases left behind: {0}".format([row[0] for row in left])
        for (name,) in left:
            ctx.server.execute('DROP DATABASE IF EXISTS "{0}" WITH (FORCE)'.format(name))
    return record


def measured_run(ctx: RestoreContext, database: Database, variant: Variant, prepared: Prepared) -> Dict[str, Any]:
    # The previous run's restore (and its dropped database) reaches the disk now, not during this run.
    ctx.server.execute("CHECKPOINT")
    os.sync()
    waited, other_before = wait_for_quiet(ctx)
    load = round(os.getloadavg()[0], 2)
    if variant.kind == "pg_restore":
        record = run_pg_restore(ctx, database, variant, prepared.dumps[str(variant.dump)])
    else:
        record = run_keel_verify(ctx, database, variant, prepared.backups[variant.key])
    record.update({"loadavg_before": load, "quiet_wait_s": waited, "other_load_cpus_before": other_before, "wal_files_after": wal_files(ctx)})
    record["disturbed"] = (record.get("other_load_cpus") or 0.0) > DISTURBED_CPUS
    return record


def describe(record: Dict[str, Any]) -> str:
    if record.get("error"):
        return "FAILED " + record["error"][:400]
    text = "{0:.2f} s, peak RSS {1} MB, other load {2}".format(record["wall_s"], record.get("peak_rss_mb"), record.get("other_load_cpus"))
    if "steps_ms" in record:
        text += ", steps {0}".format(record["steps_ms"])
    if "module_duration_s" in record:
        text += ", module {0:.2f} s, stages {1}, phases {2}, pg_restore RSS {3} MB".format(
            record["module_duration_s"], record.get("stages_ms"), {k: round(v) for k, v in (record.get("phases_ms") or {}).items()},
            record.get("pg_restore_process", {}).get("peak_rss_mb"))
    return text


# -- summary and judgement ----------------------------------------------------------------------------------------------

def nested_median(runs: List[Dict[str, Any]], outer: str, inner: str) -> Optional[float]:
    values = [r[outer][inner] for r in runs if isinstance(r.get(outer), dict) and r[outer].get(inner) is not None]
    return round(statistics.median(values), 2) if values else None


def largest(values: List[Optional[float]]) -> Optional[float]:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def summarize(report: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per size and variant: medians over the undisturbed runs, and the ratios to the baselines."""
    summary: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for size in report["databases"]:
        rows: Dict[str, Dict[str, Any]] = {}
        for variant in report["variants"]:
            mine = [r for r in report["runs"] if r["size"] == size and r["variant"] == variant["key"]]
            runs = [r for r in mine if not r.get("error")]
            clean = [r for r in runs if not r.get("disturbed")]
            failed = [r["error"] for r in mine if r.get("error")]
            entry: Dict[str, Any] = {"title": variant["title"], "kind": variant["kind"], "runs": len(clean or runs), "failed": len(failed),
                                     "errors": failed[:3], "disturbed_runs": len(runs) - len(clean), "only_disturbed_runs": bool(runs) and not clean}
            runs = clean or runs
            if runs:
                for run in runs:
                    run["cpu_s_total"] = round(sum(run.get(name) or 0.0 for name in ("cpu_s_postgres", "cpu_s_s3_server", "cpu_s_benchmark_tree")), 2)
                entry.update({"wall_s": median_of(runs, "wall_s"), "wall_s_all": [r["wall_s"] for r in runs],
                              "peak_rss_mb": largest([r.get("peak_rss_mb") for r in runs]),
                              "cpu_s_total": median_of(runs, "cpu_s_total"), "cpu_s_postgres": median_of(runs, "cpu_s_postgres"),
                              "cpu_s_s3_server": median_of(runs, "cpu_s_s3_server"), "other_load_cpus": median_of(runs, "other_load_cpus")})
                if variant["kind"] == "pg_restore":
                    entry["steps_ms"] = {name: nested_median(runs, "steps_ms", name) for name in ("createdb", "pg_restore", "dropdb")}
                    entry["pg_restore_cpu_s"] = median_of(runs, "cpu_s_pg_restore")
                    entry["pg_restore_peak_rss_mb"] = entry["peak_rss_mb"]
                else:
                    entry.update(keel_medians(runs))
            rows[variant["key"]] = entry
        add_ratios(rows)
        summary[size] = rows
    return summary


def keel_medians(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    stages = sorted({name for r in runs for name in (r.get("stages_ms") or {})})
    phases = sorted({name for r in runs for name in (r.get("phases_ms") or {})})
    figures: Dict[str, Any] = {
        "module_duration_s": median_of(runs, "module_duration_s"),
        "ansible_overhead_s": median_of(runs, "ansible_overhead_s"),
        "stages_ms": {name: nested_median(runs, "stages_ms", name) for name in stages},
        "phases_ms": {name: nested_median(runs, "phases_ms", name) for name in phases},
        "record_duration_ms": nested_median(runs, "verification", "duration_ms"),
        "module_cpu_s": nested_median(runs, "module_process", "cpu_seconds"),
        "pg_restore_cpu_s": nested_median(runs, "pg_restore_process", "cpu_seconds"),
        "pg_restore_peak_rss_mb": largest([r.get("pg_restore_process", {}).get("peak_rss_mb") for r in runs]),
        "dump_bytes": runs[0].get("verification", {}).get("dump_bytes"),
        "stored_bytes": runs[0].get("verification", {}).get("stored_bytes"),
        "tables_checked": runs[0].get("verification", {}).get("tables_checked"),
        "table_stats": runs[0].get("verification", {}).get("table_stats"),
    }
    if figures["module_duration_s"] and figures["dump_bytes"]:
        figures["module_mib_s"] = round(figures["dump_bytes"] / MIB / figures["module_duration_s"], 1)
    known = sum(value or 0.0 for value in figures["stages_ms"].values())
    if figures["module_duration_s"]:
        # Module time outside the record's stages: imports done before the clock starts are not in it; this is choosing and
        # authenticating the backup, connecting, and writing the record and the audit event.
        figures["module_outside_stages_s"] = round(figures["module_duration_s"] - known / 1000.0, 2)
    return figures


def add_ratios(rows: Dict[str, Dict[str, Any]]) -> None:
    baselines = {key: entry.get("wall_s") for key, entry in rows.items() if entry.get("kind") == "pg_restore" and entry.get("wall_s")}
    primary = baselines.get(BASELINE)
    for entry in rows.values():
        wall = entry.get("wall_s")
        if not wall:
            continue
        entry["ratio"] = round(wall / primary, 2) if primary else None
        entry["ratio_vs"] = {key: round(wall / value, 2) for key, value in baselines.items()}
        module = entry.get("module_duration_s")
        if module:
            entry["module_ratio"] = round(module / primary, 2) if primary else None
            entry["module_ratio_vs"] = {key: round(module / value, 2) for key, value in baselines.items()}


def judge(summary: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """keel_file (default backup options) against the baseline, end to end (the target) and module only (reported)."""
    verdict: Dict[str, Any] = {"target": "{0} wall time <= {1}x {2} wall time at every size".format(JUDGED, RATIO_TARGET, BASELINE)}
    met = []
    for size, rows in summary.items():
        per_variant = {}
        for key, entry in rows.items():
            if entry.get("kind") != "keel":
                continue
            if entry.get("ratio") is None:
                per_variant[key] = {"ran": False}
                continue
            per_variant[key] = {"wall_ratio": entry["ratio"], "wall_ok": entry["ratio"] <= RATIO_TARGET,
                                "module_ratio": entry.get("module_ratio"),
                                "module_ok": entry.get("module_ratio") is not None and entry["module_ratio"] <= RATIO_TARGET}
        verdict[size] = per_variant
        met.append(bool(per_variant.get(JUDGED, {}).get("wall_ok")))
    verdict["all_met"] = bool(met) and all(met)
    return verdict


# -- output --------------------------------------------------------------------------------------------------------------

def main_table(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    headers = ["variant", "size", "wall s", "module s", "x baseline (wall)", "x baseline (module)", "peak RSS MB", "pg_restore RSS MB",
               "CPU s (PostgreSQL)", "other load", "runs"]
    lines = []
    for size, rows in report["summary"].items():
        label = "{0} GB ({1:.0f} MiB)".format(size, report["databases"][size]["bytes"] / MIB)
        for entry in rows.values():
            if not entry.get("wall_s"):
                lines.append([entry["title"], label, "FAILED: " + "; ".join(e[:160] for e in entry.get("errors", []))] + [""] * 8)
                continue
            lines.append([entry["title"], label, fmt(entry["wall_s"]), fmt(entry.get("module_duration_s")), fmt(entry.get("ratio")),
                          fmt(entry.get("module_ratio")), fmt(entry.get("peak_rss_mb"), "{0:.0f}"), fmt(entry.get("pg_restore_peak_rss_mb"), "{0:.0f}"),
                          "{0} ({1})".format(fmt(entry.get("cpu_s_total"), "{0:.1f}"), fmt(entry.get("cpu_s_postgres"), "{0:.1f}")),
                          fmt(entry.get("other_load_cpus")), run_count(entry)])
    return headers, lines


def time_table(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    """Where the time goes: the restore (create + restore), the drop, the comparison with the manifest, the rest."""
    headers = ["variant", "size", "create+restore s", "drop s", "stats s", "module rest s", "ansible s", "pg_restore CPU s", "module CPU s",
               "module MiB/s"]
    lines = []
    for size, rows in report["summary"].items():
        for key, entry in rows.items():
            if not entry.get("wall_s"):
                continue
            if entry["kind"] == "pg_restore":
                steps = entry.get("steps_ms") or {}
                restore = (steps.get("createdb") or 0) + (steps.get("pg_restore") or 0)
                lines.append([key, size, fmt(restore / 1000.0), fmt((steps.get("dropdb") or 0) / 1000.0), "", "", "",
                              fmt(entry.get("pg_restore_cpu_s"), "{0:.1f}"), "", ""])
                continue
            stages = entry.get("stages_ms") or {}
            lines.append([key, size, fmt(ms_to_s(stages.get("fetch_restore"))), fmt(ms_to_s(stages.get("drop_scratch"))),
                          fmt(ms_to_s(stages.get("stats"))), fmt(entry.get("module_outside_stages_s")), fmt(entry.get("ansible_overhead_s")),
                          fmt(entry.get("pg_restore_cpu_s"), "{0:.1f}"), fmt(entry.get("module_cpu_s"), "{0:.1f}"),
                          fmt(entry.get("module_mib_s"), "{0:.0f}")])
    return headers, lines


def ms_to_s(value: Optional[float]) -> Optional[float]:
    return None if value is None else value / 1000.0


def text_report(report: Dict[str, Any], markdown: bool = False) -> str:
    out = render(*main_table(report), markdown)
    out += ["", *render(*time_table(report), markdown), ""]
    for size, facts in report["databases"].items():
        dumps = ", ".join("{0} {1:.0f} MiB".format(kind, entry["bytes"] / MIB) for kind, entry in (facts.get("dumps") or {}).items())
        backups = []
        for key, entry in (facts.get("backups") or {}).items():
            sizes = entry.get("sizes") or {}
            backups.append("{0} raw {1:.0f} MiB stored {2:.0f} MiB".format(key, sizes.get("raw", 0) / MIB, sizes.get("stored", 0) / MIB))
        idle = ", ".join("{0} {1} s".format(k, v) for k, v in (facts.get("stats_query_seconds") or {}).items())
        out.append("{0} GB: pg_database_size {1:.0f} MiB, rows {2}; dump files: {3}; keel backups: {4}; idle stats queries on the source: {5}".format(
            size, facts["bytes"] / MIB, facts["rows"], dumps, ", ".join(backups), idle))
        rows = report.get("summary", {}).get(size, {})
        fingerprints, counts = rows.get(JUDGED, {}), rows.get("keel_file_rowcounts", {})
        if fingerprints.get("wall_s") and counts.get("wall_s"):
            out.append("  fingerprint comparison costs {0:+.2f} s wall, {1:+.2f} s module, stats stage {2} -> {3} s".format(
                fingerprints["wall_s"] - counts["wall_s"], (fingerprints.get("module_duration_s") or 0) - (counts.get("module_duration_s") or 0),
                fmt(ms_to_s((counts.get("stages_ms") or {}).get("stats"))), fmt(ms_to_s((fingerprints.get("stages_ms") or {}).get("stats")))))
    verdict = report.get("verdict", {})
    for size in report["databases"]:
        for key, entry in verdict.get(size, {}).items():
            if not entry.get("ran", True):
                out.append("{0} GB {1}: did not run".format(size, key))
                continue
            out.append("{0} GB {1}: {2}x baseline end to end ({3}), module only {4}x ({5}){6}".format(
                size, key, entry["wall_ratio"], "ok" if entry["wall_ok"] else "MISS", entry["module_ratio"], "ok" if entry["module_ok"] else "MISS",
                "  <- judged" if key == JUDGED else ""))
    if verdict:
        out.append("target ({0}): {1}".format(verdict.get("target"), "met" if verdict.get("all_met") else "NOT met"))
    return "\n".join(out)


# -- setup and main ------------------------------------------------------------------------------------------------------

def benchmark(args: argparse.Namespace, report: Dict[str, Any], workdir: Path) -> None:
    from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider

    variants = [variant for variant in VARIANTS if variant.key in args.variants]
    report["variants"] = [dataclasses.asdict(v) for v in variants]
    with servers(workdir) as (cluster, s3):
        log("PostgreSQL on port {0} ({1}), S3 at {2}".format(cluster.port, cluster.base_dir, s3.endpoint_url))
        report["machine"] = machine_facts(cluster)
        pg_dump = keel_pg_dump(cluster)
        tools = client_tools_for(cluster)
        report["pg_dump"], report["client_tools"] = pg_dump, tools
        bucket = "keel-bench-{0}".format(os.getpid())
        s3.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        key_dir = workdir / "keys"
        key_dir.mkdir(mode=0o700)
        databases = prepare_databases(cluster, args.sizes)
        tenants = [{"name": db.tenant, "database": db.name, "retention": {"days": 1, "lock_mode": "governance"}} for db in databases]
        for db in databases:
            FileKeyProvider(str(key_dir)).create(db.tenant)
        ctx = RestoreContext(server=cluster, s3=s3, bucket=bucket, workdir=workdir, key_dir=key_dir, pg_dump=pg_dump["path"], tenants=tenants,
                             timeout=600 + 900 * max(args.sizes), postgres_pid=cluster.pid, s3_pid=s3.pid, quiet_wait=args.quiet_wait,
                             retries=args.retries, pg_restore=tools["pg_restore"], createdb=tools["createdb"], dropdb=tools["dropdb"])
        for db in databases:
            measure_size(ctx, db, variants, args.repeat, report)


def measure_size(ctx: RestoreContext, database: Database, variants: List[Variant], repeat: int, report: Dict[str, Any]) -> None:
    label = size_label(database.size_gb)
    facts: Dict[str, Any] = {"name": database.name, "bytes": database.bytes, "rows": database.rows, "build_seconds": database.build_seconds,
                             **database.facts}
    report["databases"][label] = facts
    log("{0} GB: dump files and keel backups (untimed)".format(label))
    try:
        facts["stats_query_seconds"] = stats_query_seconds(ctx.server, database)
    except Exception as error:  # only a diagnostic
        facts["stats_query_seconds"] = {"error": str(error)[:200]}
    prepared = prepare_size(ctx, database, variants, facts)
    for round_number in range(repeat):
        order = variants if round_number % 2 == 0 else list(reversed(variants))
        for position, variant in enumerate(order):
            for attempt in range(1 + ctx.retries):
                record = measured_run(ctx, database, variant, prepared)
                record.update({"size": label, "variant": variant.key, "round": round_number, "position": position, "attempt": attempt})
                report["runs"].append(record)
                log("{0} GB round {1} {2}: {3}".format(label, round_number + 1, variant.key, describe(record)))
                if not record["disturbed"]:
                    break
    # This size's files are not needed any more: the next size's runs should not share the page cache with them.
    for path in prepared.dumps.values():
        path.unlink()
    for backup in prepared.backups.values():
        if backup["store"]["type"] == "file":
            shutil.rmtree(backup["store"]["path"], ignore_errors=True)


def parse_variants(text: str) -> List[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [key for key in chosen if key not in VARIANT_KEYS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError("unknown variants {0}; choose from {1}".format(unknown, ", ".join(VARIANT_KEYS)))
    return chosen


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[0.25, 1.0], help="database sizes in GB (2**30 bytes), comma-separated (default 0.25,1.0)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every variant per size, in alternating order (default 2)")
    parser.add_argument("--variants", type=parse_variants, default=VARIANT_KEYS, help="comma-separated subset of: " + ", ".join(VARIANT_KEYS))
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="before each run, wait up to this many seconds until other processes are quiet (default 120; 0: never wait)")
    parser.add_argument("--retries", type=int, default=2, help="run a disturbed run (other processes used > {0} CPUs during it) again "
                        "up to this many times (default 2)".format(DISTURBED_CPUS))
    parser.add_argument("--output", type=Path, help="JSON report path (default bench/results/restore_verify-<timestamp>.json)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--from-json", type=Path, metavar="REPORT", help="only print the tables of an earlier JSON report")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(text_report(json.loads(args.from_json.read_text()), markdown=args.markdown))
        return 0
    from tests.harness.collection_path import ensure_collection_importable

    ensure_collection_importable()
    options = {"sizes": args.sizes, "repeat": args.repeat, "variants": args.variants, "quiet_wait": args.quiet_wait, "retries": args.retries}
    extra = {"target": {"ratio": RATIO_TARGET, "baseline": BASELINE, "judged": JUDGED}}
    return run_report("restore_verify", args, options, extra, benchmark, summarize, judge, text_report)


if __name__ == "__main__":
    sys.exit(main())
