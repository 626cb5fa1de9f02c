# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring one backup of a tenant into a target database (the disaster-recovery path).

Everything that can be refused is refused before pg_restore starts: an
unknown backup, a key that was shredded, a manifest that does not
authenticate, a missing target without ``create``, a target that already
holds objects the backup would collide with unless ``clean``. The stream
is authenticated while it is restored; see ``restore_pipeline`` for why a
failure part-way leaves the target as it was.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.audit import append_audit_event, audit_event
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_selection import resolve_backup
from ansible_collections.keel.postgres.plugins.module_utils.backup.client_process import find_tool
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_pipeline import RestoreOptions, restore_dump
from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_target import (
    colliding_objects,
    create_database,
    database_exists,
    drop_database,
    make_room_for_schemas,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

Connect = Callable[[str], Any]  # database name -> autocommit psycopg connection
ConnKwargs = Callable[[str], Dict[str, Any]]  # database name -> libpq keywords for pg_restore


@dataclass(frozen=True)
class RestoreRequest:
    tenant: Tenant
    backup_id: str  # an id or "latest"
    target_db: str
    create: bool
    options: RestoreOptions
    actor: Optional[str]
    maintenance_db: str
    client_bin_dir: Optional[str] = None


class RestoreRun:
    def __init__(self, request: RestoreRequest, store: ObjectStore, keys: KeyProvider, connect: Connect, conn_kwargs: ConnKwargs,
                 metrics: RunMetrics) -> None:
        self.request = request
        self.store = store
        self.keys = keys
        self.connect = connect
        self.conn_kwargs = conn_kwargs
        self.metrics = metrics
        self.tenant = request.tenant.name

    def prepare(self) -> Dict[str, Any]:
        """Resolve and authenticate the backup and check the target; changes nothing."""
        with self.metrics.phase("select_backup"):
            entry = resolve_backup(self.store, self.keys, self.tenant, self.request.backup_id)
            reader = BackupReader(self.store, self.keys, self.tenant, entry.backup_id)
        maintenance = self.connect(self.request.maintenance_db)
        try:
            exists = database_exists(maintenance, self.request.target_db)
            version_num = maintenance.info.server_version  # libpq reports it at connect time
        finally:
            maintenance.close()
        if not exists and not self.request.create:
            raise InvalidOption("target_db", "database {0!r} does not exist; set create: true to create it".format(self.request.target_db))
        collisions = self._collisions(reader) if exists else []
        if collisions and not self.request.options.clean:
            raise InvalidOption("target_db", "database {0!r} is not empty ({1}{2}); set clean: true to drop and replace what the "
                                "backup contains".format(self.request.target_db, ", ".join(collisions[:5]), ", ..." if len(collisions) > 5 else ""))
        return {
            "reader": reader,
            "target_exists": exists,
            "collisions": collisions,
            "pg_restore": find_tool("pg_restore", self.request.client_bin_dir, version_num),
        }

    def plan(self) -> Dict[str, Any]:
        facts = self.prepare()
        manifest = facts["reader"].manifest
        return {
            "backup_id": manifest["backup_id"],
            "target_db": self.request.target_db,
            "create": not facts["target_exists"],
            "replaces": facts["collisions"],
            "tables": len(manifest.get("tables") or []),
            "dump_bytes": manifest["sizes"]["raw"],
        }

    def execute(self, now: datetime.datetime) -> Dict[str, Any]:
        facts = self.prepare()
        reader: BackupReader = facts["reader"]
        began = time.monotonic()
        try:
            if not facts["target_exists"]:
                with self.metrics.phase("create_database"):
                    maintenance = self.connect(self.request.maintenance_db)
                    try:
                        create_database(maintenance, self.request.target_db)
                    finally:
                        maintenance.close()
                    fresh = self.connect(self.request.target_db)
                    try:
                        make_room_for_schemas(fresh, (reader.manifest.get("scope") or {}).get("schemas") or [])
                    finally:
                        fresh.close()
            with self.metrics.phase("restore"):
                streamed = restore_dump(reader.dump_bytes(), facts["pg_restore"], self.conn_kwargs(self.request.target_db), self.request.options)
        except BaseException as exc:
            if not facts["target_exists"]:
                self._drop_created_target()
            if isinstance(exc, KeelError):
                exc.details.setdefault("audit", self._audit("failed", reader.backup_id, error=exc.message, error_kind=exc.kind))
            raise
        self.metrics.count("dump_bytes", streamed.dump_bytes)
        self.metrics.count("stored_bytes", reader.stored_bytes)
        return {
            "changed": True,
            "tenant": self.tenant,
            "backup_id": reader.backup_id,
            "target_db": self.request.target_db,
            "created": not facts["target_exists"],
            "replaced": facts["collisions"],
            "dump_bytes": streamed.dump_bytes,
            "stored_bytes": reader.stored_bytes,
            "spooled_to_private_file": streamed.spooled,
            "duration_s": round(time.monotonic() - began, 3),
            "stages_ms": streamed.stages_ms,
            "audit": self._audit("succeeded", reader.backup_id, target_db=self.request.target_db, dump_bytes=streamed.dump_bytes),
        }

    def _drop_created_target(self) -> None:
        """A target this run created goes again when the restore fails: the server is left as it was."""
        maintenance = self.connect(self.request.maintenance_db)
        try:
            drop_database(maintenance, self.request.target_db)
        finally:
            maintenance.close()

    def _collisions(self, reader: BackupReader) -> list:
        target = self.connect(self.request.target_db)
        try:
            return colliding_objects(target, (reader.manifest.get("scope") or {}).get("schemas") or [])
        finally:
            target.close()

    def _audit(self, outcome: str, backup_id: str, **facts: Any) -> Dict[str, Any]:
        event = audit_event("restore", outcome, self.request.actor, tenant=self.tenant, backup_id=backup_id, store=self.store.describe(), **facts)
        return append_audit_event(self.store, event, Lock())
