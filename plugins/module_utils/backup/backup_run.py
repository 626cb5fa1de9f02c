# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One backup of one tenant, end to end: checks, snapshot, stream, manifest, audit.

Order matters for safety. Everything that can be refused (tenant, key, store,
lock settings, schemas, pg_dump) is checked before a byte is written. The
data object is committed before the manifest, and the manifest is the last
write: a crash or kill at any point leaves either nothing, an incomplete
upload, or an orphan data object that no listing treats as a backup.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils import client_tools
from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.audit import append_audit_event, audit_event
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_request import BackupRequest
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import key_context, list_backups
from ansible_collections.keel.postgres.plugins.module_utils.backup.compression import new_compressor
from ansible_collections.keel.postgres.plugins.module_utils.backup.dump_pipeline import PipelineResult, pg_dump_invocation, run_pipeline
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import DATA_KEY_BYTES, KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import seal_manifest
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.progress import ProgressFile
from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import schema_state, snapshot_position
from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import (
    StreamSealer,
    derive_manifest_mac_key,
    new_header,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.table_stats import (
    FINGERPRINT_METHOD,
    TableStats,
    begin_exported_snapshot,
    collect_table_stats,
    missing_schemas,
    tables_in_scope,
)
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError, KeyShredded, KeyUnavailable, QueryFailed
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

Connect = Callable[[str], Any]  # database name -> psycopg connection


class BackupRun:
    def __init__(self, request: BackupRequest, store: ObjectStore, keys: KeyProvider, connect: Connect,
                 metrics: RunMetrics, client_bin_dir: Optional[str] = None, conn_kwargs: Optional[Dict[str, Any]] = None,
                 progress_file: Optional[str] = None) -> None:
        self.request = request
        self.store = store
        self.keys = keys
        self.connect = connect
        self.metrics = metrics
        self.client_bin_dir = client_bin_dir
        # libpq keywords pg_dump connects with: the tenant's database, named after the module and the tool.
        self.conn_kwargs = conn_kwargs or {}
        self.tenant = request.tenant.name
        self.progress_file = progress_file  # where percent done and ETA are rewritten while the dump streams (progress.py)
        metrics.label(tenant=self.tenant, db=request.database, store=store.kind, tier=request.tenant.retention.tier)

    # -- checks that refuse before anything is written -------------------------------------------------

    def check_store_and_key(self, now: datetime.datetime) -> Lock:
        lock = self.request.lock(now)
        with self.metrics.phase("check_store"):
            self.store.check_ready(lock)
            default_days = self.store.default_retention_days()
        if lock.mode and default_days and default_days > self.request.tenant.retention.days:
            raise InvalidOption(
                "tenants.retention.days",
                "tenant {0!r} keeps backups {1} days, but the store's default lock is {2} days: objects would stay "
                "locked beyond the tenant's retention. Shorten the bucket default or lengthen the policy".format(
                    self.tenant, self.request.tenant.retention.days, default_days),
            )
        with self.metrics.phase("check_key"):
            state = self.keys.describe(self.tenant)
        if state.shredded:
            raise KeyShredded("tenant {0!r}'s key was shredded at {1}: no new backup can be made for it".format(self.tenant, state.shredded_at))
        if not state.exists:
            raise KeyUnavailable("tenant {0!r} has no key in the {1} key provider; create it first with keel.postgres.tenant_key".format(
                self.tenant, state.provider))
        return lock

    def recent_backup(self, now: datetime.datetime) -> Optional[Dict[str, Any]]:
        """The newest published backup younger than skip_if_newer_than, if any."""
        if self.request.skip_if_newer_than is None:
            return None
        with self.metrics.phase("list_backups"):
            entries = [entry for entry in list_backups(self.store, self.tenant, self.keys) if entry.published and entry.mac_status == "verified"]
        if entries and (now - entries[-1].created_at).total_seconds() < self.request.skip_if_newer_than:
            return entries[-1].as_dict()
        return None

    def inspect_database(self, conn: Any) -> Dict[str, Any]:
        with conn.cursor() as cursor:
            missing = missing_schemas(cursor, self.request.schemas)
            if missing:
                raise InvalidOption("schemas", "database {0!r} has no schema {1}".format(self.request.database, ", ".join(missing)))
            tables = tables_in_scope(cursor, self.request.schemas)
            cursor.execute("SELECT current_setting('server_version_num')::int, pg_database_size(current_database())")
            version_num, database_bytes = cursor.fetchone()
        tool = client_tools.inspect_client_tool("pg_dump", self.client_bin_dir, version_num)
        client_tools.require_compatible(tool)
        return {"tables": tables, "server_version_num": version_num, "database_bytes": database_bytes, "pg_dump": tool}

    # -- the backup --------------------------------------------------------------------------------------

    def plan(self, now: datetime.datetime) -> Dict[str, Any]:
        lock = self.check_store_and_key(now)
        conn = self.connect(self.request.database)
        try:
            facts = self.inspect_database(conn)
        finally:
            conn.close()
        return {
            "tenant": self.tenant,
            "database": self.request.database,
            "schemas": self.request.schemas,
            "tables": len(facts["tables"]),
            "database_bytes": facts["database_bytes"],
            "lock_mode": lock.mode,
            "retain_until": lock.retain_until.isoformat() if lock.retain_until else None,
            "store": self.store.describe(),
        }

    def execute(self, now: datetime.datetime) -> Dict[str, Any]:
        lock = self.check_store_and_key(now)
        backup_id = layout.new_backup_id(now)
        conn = self.connect(self.request.database)
        try:
            facts = self.inspect_database(conn)
        except BaseException:
            conn.close()
            raise
        writer = None
        stats: Optional[_StatsCollector] = None
        progress: Optional[ProgressFile] = None
        try:
            data_key = os.urandom(DATA_KEY_BYTES)
            with self.metrics.phase("wrap_key"):
                wrapped = self.keys.wrap(self.tenant, data_key, key_context(self.tenant, backup_id))
            header = new_header(self.tenant, backup_id, wrapped, self.request.chunk_size, compression="zstd")
            sealer = StreamSealer(header, data_key)
            snapshot = begin_exported_snapshot(conn)
            # Position in the exported snapshot, before the stats thread takes the connection; the schema state follows there.
            with self.metrics.phase("provenance"), conn.cursor() as cursor:
                facts["provenance"] = snapshot_position(cursor)
            argv, env = pg_dump_invocation(str(facts["pg_dump"]["path"]), self.conn_kwargs, self.request.schemas, snapshot)
            stats = _StatsCollector(conn, facts["tables"], self.request.table_stats, self.request.schemas)
            writer = self.store.open_writer(layout.data_key(self.tenant, backup_id), lock)
            progress = ProgressFile(self.progress_file, self.tenant, facts["database_bytes"]) if self.progress_file else None
            began = time.monotonic()
            stats.start()
            with self.metrics.phase("stream"):
                pipeline = run_pipeline(argv, env, new_compressor(self.request.compression_level, self.request.compression_threads), sealer, writer,
                                        metrics=self.metrics, progress=progress.update if progress else None)
            with self.metrics.phase("table_stats_wait"):
                tables = stats.result()
                facts["provenance"].update(stats.schema_state)
            with self.metrics.phase("commit_data"):
                data_object = writer.commit()
            writer = None
            conn.rollback()
            elapsed = time.monotonic() - began
            document = self._manifest(backup_id, now, facts, pipeline, sealer, wrapped.as_dict(), lock, tables)
            with self.metrics.phase("publish_manifest"):
                manifest_object = self.store.put_bytes(layout.manifest_key(self.tenant, backup_id),
                                                       seal_manifest(document, derive_manifest_mac_key(data_key)), lock)
        except KeelError as exc:
            if writer is not None:
                writer.abort()
            if progress is not None:
                progress.fail()
            exc.details.setdefault("audit", self._audit("backup", "failed", lock, backup_id=backup_id, error=exc.message))
            raise
        except BaseException:
            if writer is not None:
                writer.abort()
            if progress is not None:
                progress.fail()
            raise
        finally:
            if stats is not None:
                stats.stop()
            conn.close()
        self._count(pipeline, len(tables), elapsed)
        result = self._result(backup_id, document, pipeline, elapsed, data_object.size)
        result["sizes"]["manifest"] = manifest_object.size
        result["storage_class"] = data_object.storage_class
        result["tier"] = self.request.tenant.retention.tier
        if progress is not None:
            result["progress"] = progress.finish(pipeline.raw_bytes)
        result["audit"] = self._audit("backup", "succeeded", lock, backup_id=backup_id, stored_bytes=pipeline.stored_bytes,
                                      tables=len(tables), retain_until=result["retain_until"])
        return result

    # -- pieces ------------------------------------------------------------------------------------------

    def _manifest(self, backup_id: str, now: datetime.datetime, facts: Dict[str, Any], pipeline: PipelineResult, sealer: StreamSealer,
                  wrapped: Dict[str, str], lock: Lock, tables: List[TableStats]) -> Dict[str, Any]:
        policy = self.request.tenant.retention
        return {
            "backup_id": backup_id,
            "tenant": self.tenant,
            "created_at": now.isoformat(),
            "completed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "scope": {"database": self.request.database, "schemas": self.request.schemas},
            "server_version_num": facts["server_version_num"],
            "pg_dump_version": facts["pg_dump"]["version"],
            "stream": {
                "object": layout.DATA_NAME,
                "header_sha256": hashlib.sha256(sealer.header_bytes).hexdigest(),
                "chunk_size": self.request.chunk_size,
                "chunks": sealer.chunks,
                "compression": "zstd",
                "cipher": "AES-256-GCM",
            },
            "sizes": {"raw": pipeline.raw_bytes, "compressed": pipeline.compressed_bytes, "stored": pipeline.stored_bytes},
            "sha256": pipeline.stored_sha256,
            "wrapped_key": wrapped,
            "lock": {"mode": lock.mode, "retain_until": lock.retain_until.isoformat() if lock.retain_until else None, "legal_hold": lock.legal_hold},
            "retention": {"days": policy.days, "tier": policy.tier},
            "table_stats": self.request.table_stats,
            "fingerprint_method": FINGERPRINT_METHOD if self.request.table_stats == "fingerprints" else None,
            "tables": [table.as_dict() for table in tables],
            "provenance": facts.get("provenance"),
        }

    def _result(self, backup_id: str, document: Dict[str, Any], pipeline: PipelineResult, elapsed: float, stored_size: int) -> Dict[str, Any]:
        throughput = pipeline.raw_bytes / elapsed / (1024 * 1024) if elapsed > 0 else None
        return {
            "changed": True,
            "backup_id": backup_id,
            "tenant": self.tenant,
            "object": layout.data_key(self.tenant, backup_id),
            "manifest": layout.manifest_key(self.tenant, backup_id),
            "store": self.store.describe(),
            "sizes": dict(document["sizes"], object=stored_size),
            "compression_ratio": round(pipeline.raw_bytes / pipeline.compressed_bytes, 3) if pipeline.compressed_bytes else None,
            "stages_ms": pipeline.stages_ms,
            "throughput_mib_s": round(throughput, 2) if throughput else None,
            "tables": len(document["tables"]),
            "key_id": document["wrapped_key"]["key_id"],
            "lock_mode": document["lock"]["mode"],
            "retain_until": document["lock"]["retain_until"],
            "legal_hold": document["lock"]["legal_hold"],
        }

    def _count(self, pipeline: PipelineResult, tables: int, elapsed: float) -> None:
        # raw_bytes, compressed_bytes and stored_bytes were counted by the pipeline's stages (their phase rates).
        self.metrics.count("tables", tables)
        if elapsed > 0:
            self.metrics.gauge("throughput_raw_bytes_per_second", round(pipeline.raw_bytes / elapsed, 1))
            self.metrics.gauge("throughput_stored_bytes_per_second", round(pipeline.stored_bytes / elapsed, 1))
        if pipeline.compressed_bytes:
            self.metrics.gauge("compression_ratio", round(pipeline.raw_bytes / pipeline.compressed_bytes, 3))

    def _audit(self, action: str, outcome: str, lock: Lock, **facts: Any) -> Dict[str, Any]:
        event = audit_event(action, outcome, self.request.actor, tenant=self.tenant, store=self.store.describe(), **facts)
        return append_audit_event(self.store, event, Lock(mode=lock.mode, retain_until=lock.retain_until))


class _StatsCollector:
    """Reads the schema state (provenance), then counts and fingerprints tables, in the exported snapshot while pg_dump
    streams the same snapshot."""

    def __init__(self, conn: Any, tables: List[tuple], mode: str, schemas: Optional[List[str]] = None) -> None:
        self._conn = conn
        self._tables = tables
        self._mode = mode
        self._schemas = schemas or []
        self.schema_state: Dict[str, Any] = {}
        self._stats: List[TableStats] = []
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._collect, name="keel-table-stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """After a failure elsewhere: cancel the running query so the connection can be closed."""
        if self._thread.is_alive():
            self._conn.cancel()
            self._thread.join(timeout=30)

    def result(self) -> List[TableStats]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._stats

    def _collect(self) -> None:
        try:
            with self._conn.cursor() as cursor:
                self.schema_state = schema_state(cursor, self._schemas)
                self._stats = collect_table_stats(cursor, self._tables, self._mode)
        except Exception as exc:  # handed to the main thread by result()
            self._error = QueryFailed("reading the dump's snapshot (schema state, row counts) failed: {0}".format(str(exc).strip()),
                                      cause=type(exc).__name__)
