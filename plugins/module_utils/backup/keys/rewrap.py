# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Re-wrapping the data keys of a tenant's backups with the tenant key's current version.

A backup's manifest and data object are written once and locked: the data
key wrapped in the manifest can never be replaced. After a rotation, this
module adds a second, write-once object per backup beside them::

    <tenant>/backups/<backup_id>/keys/<sha256(key_id)[:32]>.json
        {"tenant", "backup_id", "wrapped_key": {provider, key_id, blob}, "at"}

holding the same data key wrapped by the current version, bound to the same
context (tenant and backup id). ``catalog.unwrap_with_rewraps`` falls back to
these objects, so a backup stays readable once the version that first
wrapped its key is retired. The object gets the lock mode and retain-until
date of the backup's data object, so it lives exactly as long as the backup.

Only backups whose manifest authenticates are re-wrapped: the data key is
checked against the manifest's MAC before it is wrapped again, so a forged
manifest or a wrong key can never be turned into a trusted re-wrap.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_VERIFIED, BackupEntry, key_context, list_backups, unwrap_with_rewraps
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider, WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import verify_manifest, wrapped_key_of
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore, StoredObject
from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import derive_manifest_mac_key
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError


@dataclass
class RewrapFailure:
    backup_id: str
    error: KeelError


@dataclass
class RewrapReport:
    """What a re-wrap pass did (or, in check mode, would do) for one tenant."""

    key_id: str  # the version data keys are (or would be) re-wrapped with
    rewrapped: List[str] = field(default_factory=list)  # backup ids, oldest first
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {backup_id, reason}: published but not re-wrappable
    current: int = 0  # backups already readable with ``key_id`` (manifest or an earlier re-wrap)
    failures: List[RewrapFailure] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.rewrapped)

    def skipped_report(self) -> List[Dict[str, str]]:
        """``skipped`` plus the failures, in the result's ``rewrap_skipped`` shape."""
        failed = [{"backup_id": failure.backup_id, "reason": "re-wrap failed ({0}): {1}".format(failure.error.kind, failure.error.message)}
                  for failure in self.failures]
        return sorted(self.skipped + failed, key=lambda item: item["backup_id"])


def rewrap_document(tenant: str, backup_id: str, wrapped: WrappedKey, at: datetime.datetime) -> bytes:
    """The stored bytes of one re-wrap object (no key material: the data key only as wrapped)."""
    document = {"tenant": tenant, "backup_id": backup_id, "wrapped_key": wrapped.as_dict(), "at": at.isoformat()}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"


def rewrap_lock(entry: BackupEntry, now: datetime.datetime) -> Lock:
    """The lock of the backup's data object (its manifest's if the data object is missing), unless it has lapsed.

    A lapsed retain-until date cannot be set again (S3 refuses dates in the
    past), and such a backup is no longer protected anyway: no lock then.
    """
    source: Optional[StoredObject] = entry.data or entry.manifest_object
    if source is None or not source.lock_mode or source.retain_until is None or source.retain_until <= now:
        return Lock()
    return Lock(mode=source.lock_mode, retain_until=source.retain_until)


class Rewrapper:
    """Re-wraps every published, authenticated backup of one tenant that ``key_id`` cannot read yet."""

    def __init__(self, store: ObjectStore, keys: KeyProvider, tenant: str, check_mode: bool = False) -> None:
        self.store = store
        self.keys = keys
        self.tenant = tenant
        self.check_mode = check_mode

    def run(self, key_id: str, now: Optional[datetime.datetime] = None) -> RewrapReport:
        """Re-wrap with the provider's current version, which the caller knows as ``key_id``.

        In check mode ``key_id`` may be a version that does not exist yet (a
        predicted rotation); nothing is unwrapped, wrapped or written then.
        """
        when = now or datetime.datetime.now(datetime.timezone.utc)
        report = RewrapReport(key_id=key_id)
        for entry in list_backups(self.store, self.tenant, self.keys):
            if not entry.published:
                continue  # an orphan, not a backup: retention removes it
            if entry.mac_status != MAC_VERIFIED:
                report.skipped.append({"backup_id": entry.backup_id, "reason": _unverified_reason(entry)})
                continue
            if self._readable_with(entry, key_id):
                report.current += 1
                continue
            if self.check_mode:
                report.rewrapped.append(entry.backup_id)
                continue
            try:
                if self._rewrap(entry, when):
                    report.rewrapped.append(entry.backup_id)
                else:
                    report.current += 1
            except KeelError as exc:
                report.failures.append(RewrapFailure(entry.backup_id, exc))
        return report

    def _readable_with(self, entry: BackupEntry, key_id: str) -> bool:
        manifest_key_id = ((entry.manifest or {}).get("wrapped_key") or {}).get("key_id")
        return manifest_key_id == key_id or layout.rewrap_key(self.tenant, entry.backup_id, key_id) in entry.objects

    def _rewrap(self, entry: BackupEntry, now: datetime.datetime) -> bool:
        """Write the re-wrap object; False when another run wrote the same one meanwhile."""
        backup_id = entry.backup_id
        where = layout.manifest_key(self.tenant, backup_id)
        manifest = entry.manifest or {}
        data_key = unwrap_with_rewraps(self.store, self.keys, self.tenant, backup_id)(wrapped_key_of(manifest, where))
        # The key that unwrapped must be the one the manifest's MAC was made with, whichever wrap it came from.
        verify_manifest(manifest, derive_manifest_mac_key(data_key), where)
        wrapped = self.keys.wrap(self.tenant, data_key, key_context(self.tenant, backup_id))
        # Named by the version that actually wrapped: a rotation running meanwhile may have moved `current`.
        key = layout.rewrap_key(self.tenant, backup_id, wrapped.key_id)
        if self.store.head(key) is not None:
            return False
        try:
            self.store.put_bytes(key, rewrap_document(self.tenant, backup_id, wrapped, now), rewrap_lock(entry, now))
        except KeelError:
            if self.store.head(key) is not None:
                return False  # a concurrent run re-wrapped it first: the same outcome
            raise
        return True


def _unverified_reason(entry: BackupEntry) -> str:
    reason = "manifest not authenticated ({0})".format(entry.mac_status)
    return "{0}: {1}".format(reason, entry.problem) if entry.problem else reason


def report_facts(report: RewrapReport) -> Dict[str, Any]:
    """The result fields of a re-wrap pass."""
    return {"rewrapped": list(report.rewrapped), "rewrap_skipped": report.skipped_report()}
