# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rehearsing a migration on a restored backup: what it will cost, measured before it runs for real.

In this order:

1. the backup (``latest`` or an id) of the tenant is resolved and its
   manifest authenticated, and ``pg_restore`` found (nothing created yet);
2. scratch databases ``keel_rehearse_*`` left by killed rehearsals are
   dropped (``scratch_ownership``: a live rehearsal holds the advisory lock
   named after its scratch database, on the maintenance database);
3. a scratch database ``keel_rehearse_<tenant>_<8 hex>`` is created from
   template0 and the backup restored into it, authenticated while it streams
   (the restore engine ``restore_verify`` uses);
4. the ``masking`` rules are applied (``verify_checks.apply_masking``) before
   anything else reads the data, so neither the migration, the replayed
   queries nor the result ever see raw personal data;
5. the replayed read queries are timed (before), the migration runs on the
   scratch database with the real engine (``MigrationRun``) to the requested
   state while the queries replay on a thread of their own (during), and they
   are timed again (after);
6. the scratch database is dropped (``WITH (FORCE)``), whatever happened:
   a failed migration, a failed query, an interrupted module.

The real database is not connected to at all: the maintenance database
(``postgres`` by default) serves to create and drop the scratch database.

Measured figures (``prediction_report``) come back as ``predicted``: the real
run takes them back through ``rehearsal_predictions`` and sets its own
figures beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_selection import LATEST, check_backup_id, resolve_backup
from ansible_collections.keel.postgres.plugins.module_utils.backup.client_process import find_tool
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_pipeline import RestoreOptions, restore_dump
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_database import ScratchDatabase, scratch_database_name
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_ownership import drop_orphaned_scratch_databases, hold_scratch
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_record import FAILED, PASSED, add_message, fail_record, timed_stage
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_checks import apply_masking
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_options import MaskingRule, parse_masking
from ansible_collections.keel.postgres.plugins.module_utils.errors import ClientToolProblem, InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import LatencyQuery, SamplerSettings, sample_latencies
from ansible_collections.keel.postgres.plugins.module_utils.kpi.query_sources import parse_queries
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationRequest, MigrationRun
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.prediction_report import run_figures
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.rehearsal_replay import ReplayDuring, latency_report
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import describe_condition, sql_condition, withhold_row_text
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration

try:
    import psycopg
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None

Connect = Callable[[str], Any]  # database name -> autocommit psycopg connection
ConnKwargs = Callable[[str], Dict[str, Any]]  # database name -> libpq keywords for pg_restore

SCRATCH_PREFIX = "keel_rehearse_"
REHEARSED_STATES = ("started", "completed", "finalized")


class RehearsalFailed(KeelError):
    """The rehearsal found a problem (or its scratch database could not be dropped); its record is attached."""

    kind = "rehearsal_failed"


@dataclass(frozen=True)
class RehearsalRequest:
    tenant: str
    backup_id: str  # an id or "latest"
    masking: List[MaskingRule] = field(default_factory=list)
    queries: List[LatencyQuery] = field(default_factory=list)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    maintenance_db: str = "postgres"
    client_bin_dir: Optional[str] = None


def parse_rehearse(value: Mapping[str, Any], db: Optional[str]) -> RehearsalRequest:
    """The ``rehearse`` option (validated by its argument spec), every mistake named by its path."""
    tenant = value.get("tenant") or db
    if not tenant:
        raise InvalidOption("rehearse.tenant", "name the tenant whose backup is restored (it defaults to the database name, db, "
                            "which is not set)")
    check_tenant_name(tenant, "rehearse.tenant")
    runs, warmup = value["runs"], value["warmup"]
    if runs < 1:
        raise InvalidOption("rehearse.runs", "must be at least 1")
    if warmup < 0:
        raise InvalidOption("rehearse.warmup", "must not be negative")
    timeout_ms = int(parse_duration(value["statement_timeout"], "rehearse.statement_timeout") * 1000)
    if timeout_ms < 1:
        raise InvalidOption("rehearse.statement_timeout", "must be at least 1ms")
    return RehearsalRequest(
        tenant=tenant,
        backup_id=check_backup_id(value.get("backup") or LATEST, "rehearse.backup"),
        masking=parse_masking(value.get("masking"), "rehearse.masking"),
        queries=parse_queries(value["queries"], "rehearse.queries") if value.get("queries") else [],
        sampler=SamplerSettings(runs=runs, warmup=warmup, allow_writes=False, statement_timeout_ms=timeout_ms),
        maintenance_db=value["maintenance_db"],
        client_bin_dir=value.get("client_bin_dir"),
    )


def rehearse_argument_spec() -> Dict[str, Any]:
    """The suboptions of ``schema_change``'s ``rehearse`` option."""
    return dict(
        backup=dict(type="str", default=LATEST),
        tenant=dict(type="str"),
        masking=dict(type="list", elements="dict", default=[]),
        queries=dict(type="list", elements="dict", default=[]),
        runs=dict(type="int", default=30),
        warmup=dict(type="int", default=3),
        statement_timeout=dict(type="raw", default="30s"),
        maintenance_db=dict(type="str", default="postgres"),
        client_bin_dir=dict(type="path"),
    )


def rehearse(params: Mapping[str, Any], migration: MigrationRequest, connect: Connect, conn_kwargs: ConnKwargs, metrics: RunMetrics,
             check_mode: bool) -> Dict[str, Any]:
    """``schema_change`` with ``rehearse``: the rehearsal only; the real database is not connected to, so never changed."""
    if params.get("rehearsal_predictions") is not None:
        raise InvalidOption("rehearsal_predictions", "cannot be combined with rehearse: a rehearsal makes predictions, the real run "
                            "(without rehearse) compares with them")
    if migration.state not in REHEARSED_STATES:
        raise InvalidOption("rehearse", "rehearses a migration towards state {0}, not {1}".format(" or ".join(REHEARSED_STATES), migration.state))
    for option in ("store", "key_provider"):
        if not params.get(option):
            raise InvalidOption(option, "is required with rehearse: it says where the backup to rehearse on is and how to open it")
    request = parse_rehearse(params["rehearse"], params.get("db"))
    store, keys = open_store_and_keys(params)
    rehearsal = Rehearsal(request, migration, store, keys, connect, conn_kwargs, metrics)
    record = rehearsal.plan() if check_mode else rehearsal.execute()
    return {"changed": False, "name": migration.name, "rehearsal": record}


class Rehearsal:
    def __init__(self, request: RehearsalRequest, migration: MigrationRequest, store: ObjectStore, keys: KeyProvider, connect: Connect,
                 conn_kwargs: ConnKwargs, metrics: RunMetrics) -> None:
        self.request = request
        self.migration = migration
        self.store = store
        self.keys = keys
        self.connect = connect
        self.conn_kwargs = conn_kwargs
        self.metrics = metrics
        # The scratch migration's own record: its counters are the predictions, not this module run's figures.
        self.run_metrics = RunMetrics()

    def prepare(self) -> Dict[str, Any]:
        """Resolve and authenticate the backup, find pg_restore; changes nothing."""
        with self.metrics.phase("select_backup"):
            entry = resolve_backup(self.store, self.keys, self.request.tenant, self.request.backup_id, "rehearse.backup")
            reader = BackupReader(self.store, self.keys, self.request.tenant, entry.backup_id)
        maintenance = self.connect(self.request.maintenance_db)
        try:
            version_num = maintenance.info.server_version
        finally:
            maintenance.close()
        return {"reader": reader, "pg_restore": find_tool("pg_restore", self.request.client_bin_dir, version_num)}

    def plan(self) -> Dict[str, Any]:
        reader: BackupReader = self.prepare()["reader"]
        return {"tenant": self.request.tenant, "backup_id": reader.backup_id, "outcome": "planned",
                "tables": len(reader.manifest.get("tables") or []), "dump_bytes": reader.manifest["sizes"]["raw"],
                "masking_rules": len(self.request.masking), "queries": [query.name for query in self.request.queries]}

    def execute(self) -> Dict[str, Any]:
        facts = self.prepare()
        reader: BackupReader = facts["reader"]
        self.metrics.label(tenant=self.request.tenant, migration=self.migration.name)
        record = _new_record(self.request.tenant, reader.backup_id, self._drop_stale_scratch())
        scratch = ScratchDatabase(scratch_database_name(SCRATCH_PREFIX, self.request.tenant), self.connect, self.request.maintenance_db)
        # Held from before the database exists until after it is gone; a killed run's lock goes with its session.
        owner = self.connect(self.request.maintenance_db)
        try:
            hold_scratch(owner, scratch.name)
            with self.metrics.phase("rehearsal"):
                self._restore(reader, facts["pg_restore"], scratch, record)
                self._rehearse(scratch.name, record)
        except KeelError as exc:
            fail_record(record, exc.kind, withhold_row_text(exc.message) if isinstance(exc, ClientToolProblem) else exc.message)
        except psycopg.Error as exc:  # its message could quote row values
            fail_record(record, "query_failed", "a statement on the scratch database failed with {0}".format(describe_condition(sql_condition(exc))))
        finally:
            record["scratch_dropped"] = self._drop(scratch, record)
            owner.close()
        self._gauges(record)
        if record["outcome"] == FAILED or not record["scratch_dropped"]:
            error = RehearsalFailed("rehearsal of migration {0!r} on backup {1} of tenant {2!r} failed: {3} ({4})".format(
                self.migration.name, reader.backup_id, self.request.tenant, record["reason"] or "scratch_not_dropped", record["message"]))
            error.details = {"rehearsal": record, "name": self.migration.name}
            raise error
        return record

    # -- steps -------------------------------------------------------------------------------------------------------

    def _drop_stale_scratch(self) -> List[str]:
        maintenance = self.connect(self.request.maintenance_db)
        try:
            return drop_orphaned_scratch_databases(maintenance, SCRATCH_PREFIX)
        finally:
            maintenance.close()

    def _restore(self, reader: BackupReader, pg_restore: str, scratch: ScratchDatabase, record: Dict[str, Any]) -> None:
        with timed_stage(record, "restore", self.metrics):
            scratch.create()
            record["scratch_database"] = scratch.name
            scratch.prepare((reader.manifest.get("scope") or {}).get("schemas") or [])
            streamed = restore_dump(reader.dump_bytes(), pg_restore, self.conn_kwargs(scratch.name), RestoreOptions(jobs=1, no_owner=True))
        record["dump_bytes"] = streamed.dump_bytes
        self.metrics.count("dump_bytes", streamed.dump_bytes)

    def _rehearse(self, scratch: str, record: Dict[str, Any]) -> None:
        conn = self.connect(scratch)
        replay_conn = self.connect(scratch) if self.request.queries else None  # opened here: metrics are not thread-safe
        try:
            if self.request.masking:
                with timed_stage(record, "masking", self.metrics):
                    record["masking"] = apply_masking(conn, self.request.masking)
            run = MigrationRun(conn, self.migration, self.run_metrics)
            samples_before = self._sample(conn, record, "measure_before")
            replay = ReplayDuring(replay_conn, self.request.queries, self.request.sampler) if replay_conn is not None else None
            if replay is not None:
                replay.start()
            try:
                with timed_stage(record, "migrate", self.metrics):
                    outcome = run.run(check_mode=False)
            finally:
                samples_during = replay.stop() if replay is not None else []
            record["migration"] = {"phase": outcome.get("phase"), "phases": outcome.get("phases"), "tables": outcome.get("tables"),
                                   "version_schema": outcome.get("version_schema")}
            record["predicted"] = dict(run_figures(outcome, self.run_metrics.as_dict()), backup_id=record["backup_id"],
                                       tenant=self.request.tenant)
            if replay is not None and replay.error is not None:
                raise replay.error
            samples_after = self._sample(conn, record, "measure_after")
            if self.request.queries:
                server = {"version": conn.execute("SHOW server_version").fetchone()[0], "version_num": conn.info.server_version,
                          "database": scratch}
                record["latency"] = latency_report(samples_before, samples_during, samples_after, self.request.sampler, server)
                record["predicted"]["p99_delta_pct_during"] = record["latency"]["p99_delta_pct_during"]
                record["predicted"]["p99_delta_pct_after"] = record["latency"]["p99_delta_pct_after"]
        finally:
            record["scratch_metrics"] = self.run_metrics.as_dict()
            for connection in (conn, replay_conn):
                if connection is not None:
                    connection.close()

    def _sample(self, conn: Any, record: Dict[str, Any], stage: str) -> List[Any]:
        if not self.request.queries:
            return []
        with timed_stage(record, stage, self.metrics):
            return sample_latencies(conn, self.request.queries, self.request.sampler, self.metrics)

    def _drop(self, scratch: ScratchDatabase, record: Dict[str, Any]) -> bool:
        """Drop the scratch database if this run created it; never raises (the record must still come back)."""
        if not scratch.created:
            return True
        with timed_stage(record, "drop_scratch", self.metrics):
            problem = scratch.drop()
        if problem is not None:
            add_message(record, problem)
            return False
        return True

    def _gauges(self, record: Dict[str, Any]) -> None:
        predicted = record.get("predicted")
        if not predicted:
            return
        self.metrics.gauge("rehearsal_predicted_duration_ms", predicted["duration_ms"])
        self.metrics.gauge("rehearsal_predicted_wal_bytes", predicted["wal_bytes"])
        self.metrics.gauge("rehearsal_predicted_size_change_bytes", predicted["size_change_bytes"])
        self.metrics.gauge("rehearsal_predicted_lock_timeouts", predicted["lock_timeouts"])


def _new_record(tenant: str, backup_id: str, stale: List[str]) -> Dict[str, Any]:
    return {
        "tenant": tenant,
        "backup_id": backup_id,
        "outcome": PASSED,
        "reason": None,
        "message": None,
        "scratch_database": None,
        "scratch_dropped": False,
        "stale_scratch_dropped": stale,
        "stages_ms": {},
        "masking": [],
        "migration": None,
        "predicted": None,
        "latency": None,
        "wal_shared_with_cluster": True,
    }
