# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore verification: proof, per backup, that it restores and holds what was dumped.

For each backup chosen (see ``verify_sample``), in this order:

1. the manifest is authenticated (``BackupReader``: MAC with the tenant key);
2. a scratch database ``keel_verify_<tenant>_<8 hex>`` is created from
   template0 and the stream is restored into it in one transaction, every
   chunk authenticated while it streams (header digest, order, final chunk,
   SHA-256 and sizes against the manifest);
3. row counts and fingerprints are computed on the restored, still raw, data
   with the method the manifest recorded, and compared with it, including
   the set of tables (a missing or extra table is a mismatch). Fingerprints
   are hashes: no row value leaves the database here. A manifest with
   ``provenance`` also has its schema fingerprint compared (``schema_mismatch``);
   ``expect_migration`` was checked against that provenance before step 2;
4. ``masking`` rules (column = expression) are applied and populated
   materialized views refreshed, so that nothing after this point, in
   particular no assertion, sees raw personal data. Masking cannot come
   before step 3: the fingerprints must be those of the data that was dumped;
5. ``assertions`` run, each in its own READ ONLY transaction under a
   statement timeout, and must return exactly one row holding one true;
6. the scratch database is dropped (``WITH (FORCE)``), whatever happened;
7. the outcome is written as a write-once JSON object beside the backup
   (``<tenant>/verifications/<backup_id>/<at>.json``) and an audit event.

Nothing returned or recorded ever holds row data: an SQL error is reported by
SQLSTATE and condition only (a server message can quote row values), an
assertion's value only as true/false/NULL or its type, and pg_restore's
DETAIL and CONTEXT lines and quoted values are left out of its message.

A backup that fails any step is a recorded failure and the run goes on with
the next backup. Only problems that say nothing about the backup (the server
cannot be reached, the scratch database cannot be created) stop the run.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.audit import append_audit_event, audit_event, default_actor
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_VERIFIED
from ansible_collections.keel.postgres.plugins.module_utils.backup.client_process import find_tool
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import provenance_of
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import expected_migration_problem, restored_fingerprint
from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_pipeline import RestoreOptions, restore_dump
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_database import ScratchDatabase
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_database import scratch_database_name as scratch_name
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_ownership import (
    drop_orphaned_scratch_databases,
    hold_scratch,
    orphaned_scratch_databases,
    release,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.scratch_record import FAILED, PASSED, add_message, fail_record, ms_since, timed_stage
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.backup.verification_record import seal_record
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_checks import apply_masking, check_tables, run_assertion
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_options import ExpectMigration, VerifyRequest
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_sample import Chosen, Selection, select_backups
from ansible_collections.keel.postgres.plugins.module_utils.errors import ClientToolProblem, ConnectionFailed, InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import describe_condition, sql_condition, withhold_row_text

try:
    import psycopg
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None

Connect = Callable[[str], Any]  # database name -> autocommit psycopg connection
ConnKwargs = Callable[[str], Dict[str, Any]]  # database name -> libpq keywords for pg_restore

SCRATCH_PREFIX = "keel_verify_"


class VerificationFailed(KeelError):
    """At least one backup failed verification; the per-backup records are attached."""

    kind = "verification_failed"


class ScratchUnavailable(KeelError):
    """The scratch database could not be created: says nothing about the backup, stops the run."""

    kind = "scratch_failed"


# -- pure rules ----------------------------------------------------------------------------------------------------


def scratch_database_name(tenant: str, token: Optional[str] = None) -> str:
    """``keel_verify_<tenant>_<8 hex>``, the tenant part shortened to stay within PostgreSQL's 63-byte names."""
    return scratch_name(SCRATCH_PREFIX, check_tenant_name(tenant, "tenant"), token)


def success_rate(passed: int, failed: int) -> Optional[float]:
    total = passed + failed
    return round(passed / total, 4) if total else None


# -- the run ---------------------------------------------------------------------------------------------------------


class _Scratch(ScratchDatabase):
    """One verification's scratch database, and the key its record is sealed with once the manifest opened."""

    record_mac_key: Optional[bytes] = None


class VerifyRun:
    def __init__(self, request: VerifyRequest, store: ObjectStore, keys: KeyProvider, connect: Connect, conn_kwargs: ConnKwargs,
                 metrics: RunMetrics, clock: Optional[Callable[[], datetime.datetime]] = None) -> None:
        self.request = request
        self.store = store
        self.keys = keys
        self.connect = connect
        self.conn_kwargs = conn_kwargs
        self.metrics = metrics
        self.clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))
        self.actor = request.actor or default_actor()

    def prepare(self) -> Dict[str, Any]:
        """Choose and authenticate the backups and find pg_restore; changes nothing."""
        with self.metrics.phase("select_backups"):
            selection = select_backups(self.store, self.keys, self.request.tenants, self.request.backup_id, self.request.sample, self.clock())
        refuse_unexpected_migration(selection, self.request.expect_migration)
        maintenance = self.connect(self.request.maintenance_db)
        try:
            version_num = maintenance.info.server_version  # libpq reports it at connect time
        finally:
            maintenance.close()
        return {"selection": selection, "pg_restore": find_tool("pg_restore", self.request.client_bin_dir, version_num)}

    def plan(self) -> Dict[str, Any]:
        selection: Selection = self.prepare()["selection"]
        maintenance = self.connect(self.request.maintenance_db)
        try:
            stale = orphaned_scratch_databases(maintenance, SCRATCH_PREFIX)
            release(maintenance, stale)
        finally:
            maintenance.close()
        return {
            "changed": bool(selection.chosen) or bool(stale),
            "stale_scratch_dropped": stale,
            "plan": [chosen.describe() for chosen in selection.chosen],
            "not_sampled": selection.not_sampled,
            "verifications": [],
            "passed_count": 0,
            "failed_count": 0,
            "success_rate": None,
            "by_tier": {},
        }

    def execute(self) -> Dict[str, Any]:
        facts = self.prepare()
        selection: Selection = facts["selection"]
        stale = self._drop_stale_scratch()
        # Both outcomes exist from the first run on, so a Prometheus increase() over them is defined before a failure.
        for outcome in (PASSED, FAILED):
            self.metrics.count(outcome, 0)
        verifications = [self._verify(chosen, facts["pg_restore"]) for chosen in selection.chosen]
        result = _summary(verifications)
        result.update(changed=bool(verifications) or bool(stale), not_sampled=selection.not_sampled, stale_scratch_dropped=stale)
        problems = _run_problems(verifications, self.request.fail_on_failure)
        if problems:
            error = VerificationFailed("restore verification: {0} passed, {1} failed: {2}".format(
                result["passed_count"], result["failed_count"], "; ".join(problems)))
            error.details = result
            raise error
        return result

    def _drop_stale_scratch(self) -> List[str]:
        """Scratch databases left by killed runs (nobody holds their lock) go before this run adds its own."""
        with self.metrics.phase("drop_stale_scratch"):
            maintenance = self.connect(self.request.maintenance_db)
            try:
                return drop_orphaned_scratch_databases(maintenance, SCRATCH_PREFIX)
            finally:
                maintenance.close()

    # -- one backup ----------------------------------------------------------------------------------------------

    def _verify(self, chosen: Chosen, pg_restore: str) -> Dict[str, Any]:
        at = self.clock()
        began = time.monotonic()
        record = _new_record(chosen, at, self.actor)
        scratch = _Scratch(scratch_database_name(chosen.tenant.name), self.connect, self.request.maintenance_db)
        # Held from before the database exists until after it is gone; a killed run's lock goes with its session.
        owner = self.connect(self.request.maintenance_db)
        try:
            hold_scratch(owner, scratch.name)
            with self.metrics.phase("verify"):
                self._restore_and_check(chosen, pg_restore, scratch, record)
        except (ConnectionFailed, ScratchUnavailable):
            raise
        except KeelError as exc:
            fail_record(record, exc.kind, withhold_row_text(exc.message) if isinstance(exc, ClientToolProblem) else exc.message)
        except psycopg.Error as exc:  # unexpected; its message could quote row values
            fail_record(record, "query_failed", "a query on the scratch database failed with {0}".format(describe_condition(sql_condition(exc))))
        finally:
            record["scratch_dropped"] = self._drop(scratch, record)
            owner.close()
        record["duration_ms"] = ms_since(began)
        self.metrics.count(record["outcome"])
        return self._publish(record, at, scratch.record_mac_key)

    def _restore_and_check(self, chosen: Chosen, pg_restore: str, scratch: _Scratch, record: Dict[str, Any]) -> None:
        reader = BackupReader(self.store, self.keys, chosen.tenant.name, chosen.entry.backup_id)
        scratch.record_mac_key = reader.record_mac_key()
        manifest = reader.manifest
        record["table_stats"] = manifest.get("table_stats")
        # Each stage is also a phase of the run (child of "verify"), so its span and rates carry the bytes and rows.
        with timed_stage(record, "fetch_restore", self.metrics):
            self._create(scratch, (manifest.get("scope") or {}).get("schemas") or [])
            record["scratch_database"] = scratch.name
            restore_dump(reader.dump_bytes(), pg_restore, self.conn_kwargs(scratch.name), RestoreOptions(jobs=1, no_owner=True))
            self.metrics.count("stored_bytes", reader.stored_bytes)
            self.metrics.count("dump_bytes", reader.raw_bytes)
        record["dump_bytes"], record["stored_bytes"] = reader.raw_bytes, reader.stored_bytes
        conn = self.connect(scratch.name)
        try:
            self._check_restored(conn, manifest, record)
        finally:
            conn.close()

    def _check_restored(self, conn: Any, manifest: Mapping[str, Any], record: Dict[str, Any]) -> None:
        with timed_stage(record, "stats", self.metrics):
            _compare_with_manifest(conn, manifest, record)
            # Rows the manifest recorded for the tables compared: what the check read back in the scratch database.
            self.metrics.count("rows_verified", sum(int(table.get("rows") or 0) for table in manifest.get("tables") or []))
            self.metrics.count("tables_verified", record["tables_checked"])
        provenance = provenance_of(manifest)
        if provenance is not None:
            with timed_stage(record, "schema_fingerprint", self.metrics):
                _compare_schema_fingerprint(conn, provenance, record)
        if self.request.masking:
            record["assertions"] = [{"name": a.name, "passed": None, "problem": "not run: masking failed"} for a in self.request.assertions]
            with timed_stage(record, "masking"):
                record["masking"] = apply_masking(conn, self.request.masking)
        if self.request.assertions:
            with timed_stage(record, "assertions"):
                record["assertions"] = [run_assertion(conn, assertion, self.request.statement_timeout_ms) for assertion in self.request.assertions]
            failed = [entry for entry in record["assertions"] if not entry["passed"]]
            if failed:
                fail_record(record, "assertion_failed", "{0} of {1} assertions failed: {2}".format(
                    len(failed), len(record["assertions"]), ", ".join("{0} ({1})".format(entry["name"], entry["problem"]) for entry in failed)))

    def _create(self, scratch: _Scratch, schemas: Sequence[str]) -> None:
        try:
            scratch.create()
        except psycopg.Error as exc:
            raise ScratchUnavailable("could not create the scratch database {0}: {1}".format(scratch.name, str(exc).strip())) from None
        scratch.prepare(schemas)

    def _drop(self, scratch: _Scratch, record: Dict[str, Any]) -> bool:
        """Drop the scratch database if this run created it; never raises (the outcome must still be recorded)."""
        began = time.monotonic()
        problem = scratch.drop()
        if problem is not None:
            add_message(record, problem)
            return False
        if scratch.created:
            record["stages_ms"]["drop_scratch"] = ms_since(began)
        return True

    def _publish(self, record: Dict[str, Any], at: datetime.datetime, mac_key: Optional[bytes]) -> Dict[str, Any]:
        key = layout.verification_key(record["tenant"], record["backup_id"], at)
        published = dict(record, record_object=key, record_error=None, record_authenticated=mac_key is not None)
        try:
            self.store.put_bytes(key, seal_record(record, mac_key), Lock())
        except KeelError as exc:
            published.update(record_object=None, record_error=exc.message)
        event = audit_event("restore_verify", record["outcome"], self.actor, tenant=record["tenant"], backup_id=record["backup_id"],
                            tier=record["tier"], reason=record["reason"], duration_ms=record["duration_ms"], tables_checked=record["tables_checked"],
                            verification_object=published["record_object"], scratch_dropped=record["scratch_dropped"], store=self.store.describe())
        published["audit"] = append_audit_event(self.store, event, Lock())
        return published


def refuse_unexpected_migration(selection: Selection, expect: Optional[ExpectMigration]) -> None:
    """``expect_migration``: refuse, before any restore, a chosen backup whose authenticated provenance does not list it."""
    if expect is None:
        return
    for chosen in selection.chosen:
        label = "backup {0} of tenant {1}".format(chosen.entry.backup_id, chosen.tenant.name)
        if chosen.entry.mac_status != MAC_VERIFIED:
            raise InvalidOption("expect_migration", "{0} cannot prove which migrations it holds: its manifest is not authenticated ({1})".format(
                label, chosen.entry.problem or chosen.entry.mac_status))
        problem = expected_migration_problem(provenance_of(chosen.entry.manifest), expect.name, expect.state)
        if problem:
            raise InvalidOption("expect_migration", "{0} {1}".format(label, problem))


def _compare_schema_fingerprint(conn: Any, provenance: Mapping[str, Any], record: Dict[str, Any]) -> None:
    """The restored schema must be the dumped one: proof the backup holds the schema version its provenance names."""
    found = restored_fingerprint(conn, provenance.get("schemas") or [])
    expected = provenance.get("schema_fingerprint")
    record["schema_fingerprint"] = {"expected": expected, "found": found, "match": found == expected}
    if found != expected:
        fail_record(record, "schema_mismatch", "the restored schema's fingerprint {0} differs from the manifest's {1}".format(found[:12], str(expected)[:12]))


def _compare_with_manifest(conn: Any, manifest: Mapping[str, Any], record: Dict[str, Any]) -> None:
    record["tables_checked"], record["mismatches"] = check_tables(conn, manifest)
    if record["mismatches"]:
        fail_record(record, "mismatch", "{0} tables differ from the manifest: {1}".format(
            len(record["mismatches"]), ", ".join("{0} ({1})".format(entry["table"], entry["problem"]) for entry in record["mismatches"][:10])))


def _new_record(chosen: Chosen, at: datetime.datetime, actor: str) -> Dict[str, Any]:
    return {
        "tenant": chosen.tenant.name,
        "backup_id": chosen.entry.backup_id,
        "tier": chosen.tenant.retention.tier,
        "backup_created_at": chosen.entry.created_at.isoformat(),
        "outcome": PASSED,
        "reason": None,
        "message": None,
        "at": at.isoformat(),
        "duration_ms": None,
        "stages_ms": {},
        "table_stats": None,
        "tables_checked": 0,
        "mismatches": [],
        "masking": [],
        "assertions": [],
        "actor": actor,
        "scratch_dropped": True,
        "schema_fingerprint": None,
        "migrations_at_dump": _migrations_at_dump(chosen),
    }


def _migrations_at_dump(chosen: Chosen) -> Optional[Dict[str, Any]]:
    """What the backup's provenance says of every migration (for the record); the check itself is refuse_unexpected_migration."""
    provenance = provenance_of(chosen.entry.manifest)
    if provenance is None:
        return None
    return {entry.get("name"): entry.get("state") for entry in provenance.get("migrations") or []}


def _summary(verifications: List[Dict[str, Any]]) -> Dict[str, Any]:
    passed = sum(1 for entry in verifications if entry["outcome"] == PASSED)
    failed = len(verifications) - passed
    tiers: Dict[str, Dict[str, Any]] = {}
    for entry in verifications:
        tier = tiers.setdefault(entry["tier"], {"passed": 0, "failed": 0})
        tier[entry["outcome"]] += 1
    for tier in tiers.values():
        tier["success_rate"] = success_rate(tier["passed"], tier["failed"])
    # Not "failed": Ansible reads that result key as the task's own failure flag.
    return {"verifications": verifications, "passed_count": passed, "failed_count": failed, "success_rate": success_rate(passed, failed),
            "by_tier": tiers}


def _run_problems(verifications: List[Dict[str, Any]], fail_on_failure: bool) -> List[str]:
    """Why the module fails: failed verifications (unless told not to), and always a scratch database left behind or a lost record."""
    problems: List[str] = []
    for entry in verifications:
        label = "{0} {1}".format(entry["tenant"], entry["backup_id"])
        if entry["outcome"] == FAILED and fail_on_failure:
            problems.append("{0}: {1} ({2})".format(label, entry["reason"], entry["message"]))
        if not entry["scratch_dropped"]:
            problems.append("{0}: scratch database {1} was not dropped".format(label, entry.get("scratch_database")))
        if entry["record_error"]:
            problems.append("{0}: the outcome could not be recorded: {1}".format(label, entry["record_error"]))
    return problems
