# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tenant's backups as the store holds them, with each manifest's MAC checked.

The store is the catalog: there is no database table to drift from it. A
backup id with a data object but no manifest is an orphan (a backup that
died before publishing), never a backup; it is listed only so retention can
clean it up.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider, WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import open_manifest, parse_manifest, provenance_of
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore, StoredObject
from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import derive_manifest_mac_key, derive_record_mac_key
from ansible_collections.keel.postgres.plugins.module_utils.backup.verification_record import as_authenticated, read_record
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, KeelError, KeyShredded

# mac_status values
MAC_VERIFIED = "verified"
MAC_FAILED = "failed"
MAC_KEY_SHREDDED = "key_shredded"
MAC_KEY_UNAVAILABLE = "key_unavailable"
MAC_NOT_CHECKED = "not_checked"


@dataclass
class BackupEntry:
    tenant: str
    backup_id: str
    objects: Dict[str, StoredObject] = field(default_factory=dict)  # key -> object, every object of this backup
    manifest: Optional[Dict[str, Any]] = None
    mac_status: str = MAC_NOT_CHECKED
    problem: Optional[str] = None
    verification: Optional[Dict[str, Any]] = None  # the latest restore verification record, if any

    @property
    def data(self) -> Optional[StoredObject]:
        return self.objects.get(layout.data_key(self.tenant, self.backup_id))

    @property
    def manifest_object(self) -> Optional[StoredObject]:
        return self.objects.get(layout.manifest_key(self.tenant, self.backup_id))

    @property
    def published(self) -> bool:
        return self.manifest_object is not None

    @property
    def created_at(self) -> datetime.datetime:
        if self.manifest and self.manifest.get("created_at"):
            return datetime.datetime.fromisoformat(self.manifest["created_at"])
        return datetime.datetime.strptime(self.backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)

    @property
    def stored_bytes(self) -> int:
        return sum(obj.size for obj in self.objects.values())

    @property
    def verified_restorable(self) -> bool:
        return bool(self.verification and self.verification.get("outcome") == "passed")

    def lock_lapsed(self, now: datetime.datetime) -> bool:
        return all(obj.lock_lapsed(now) for obj in self.objects.values())

    def latest_retain_until(self) -> Optional[datetime.datetime]:
        dates = [obj.retain_until for obj in self.objects.values() if obj.retain_until is not None]
        return max(dates) if dates else None

    def as_dict(self) -> Dict[str, Any]:
        data = self.data
        manifest = self.manifest or {}
        retain_until = self.latest_retain_until()
        return {
            "backup_id": self.backup_id,
            "tenant": self.tenant,
            "published": self.published,
            "created_at": self.created_at.isoformat(),
            "completed_at": manifest.get("completed_at"),
            "scope": manifest.get("scope"),
            "sizes": manifest.get("sizes"),
            "stored_bytes": self.stored_bytes,
            "lock_mode": data.lock_mode if data else None,
            "retain_until": retain_until.isoformat() if retain_until else None,
            "legal_hold": any(obj.legal_hold for obj in self.objects.values()),
            "key_id": (manifest.get("wrapped_key") or {}).get("key_id"),
            "tables": len(manifest.get("tables") or []),
            "mac_status": self.mac_status,
            "problem": self.problem,
            "verification": self.verification,
            # Authenticated with the manifest when mac_status is verified; null for manifests older than provenance.
            "provenance": provenance_of(manifest),
        }


def list_backups(store: ObjectStore, tenant: str, keys: Optional[KeyProvider], check_macs: bool = True) -> List[BackupEntry]:
    """Every backup id of ``tenant`` in the store, oldest first, manifests parsed and (if asked) authenticated."""
    entries: Dict[str, BackupEntry] = {}
    for obj in store.list(layout.backups_prefix(tenant)):
        backup_id = layout.backup_id_of(obj.key)
        if backup_id is None:
            continue
        entries.setdefault(backup_id, BackupEntry(tenant=tenant, backup_id=backup_id)).objects[obj.key] = obj
    verifications = latest_verifications(store, tenant)
    ordered = [entries[backup_id] for backup_id in sorted(entries)]
    for entry in ordered:
        entry.verification = verifications.get(entry.backup_id)
        if entry.published:
            _load_manifest(store, entry, keys if check_macs else None)
    return ordered


def unwrap_with_rewraps(store: ObjectStore, keys: KeyProvider, tenant: str, backup_id: str) -> Callable[[WrappedKey], bytes]:
    """An unwrap function that falls back to data keys re-wrapped after a rotation."""
    context = key_context(tenant, backup_id)

    def unwrap(wrapped: WrappedKey) -> bytes:
        try:
            return keys.unwrap(tenant, wrapped, context)
        except KeyShredded:
            raise
        except KeelError as first_problem:
            for rewrapped in _rewrapped_keys(store, tenant, backup_id):
                try:
                    return keys.unwrap(tenant, rewrapped, context)
                except KeelError:
                    continue
            raise first_problem

    return unwrap


def key_context(tenant: str, backup_id: str) -> Dict[str, str]:
    """What a wrapped data key is bound to (AAD / KMS encryption context)."""
    return {"tenant": tenant, "backup_id": backup_id}


def latest_verifications(store: ObjectStore, tenant: str) -> Dict[str, Dict[str, Any]]:
    latest: Dict[str, StoredObject] = {}
    for obj in store.list(layout.verifications_prefix(tenant)):
        parts = obj.key.split("/")
        if len(parts) != 4:
            continue
        backup_id = parts[2]
        if backup_id not in latest or obj.key > latest[backup_id].key:
            latest[backup_id] = obj
    records: Dict[str, Dict[str, Any]] = {}
    for backup_id, obj in latest.items():
        records[backup_id] = read_record(store, obj.key) or {"outcome": "unreadable", "record": obj.key}
    return records


def _load_manifest(store: ObjectStore, entry: BackupEntry, keys: Optional[KeyProvider]) -> None:
    key = layout.manifest_key(entry.tenant, entry.backup_id)
    expect = {"tenant": entry.tenant, "backup_id": entry.backup_id}
    try:
        raw = store.get_bytes(key)
        if keys is None:
            entry.manifest = parse_manifest(raw, key)
            return
        entry.manifest, data_key = open_manifest(raw, key, unwrap_with_rewraps(store, keys, entry.tenant, entry.backup_id),
                                                 derive_manifest_mac_key, expect)
        entry.mac_status = MAC_VERIFIED
        if entry.verification is not None:
            entry.verification = as_authenticated(entry.verification, derive_record_mac_key(data_key))
    except KeyShredded as exc:
        entry.mac_status, entry.problem = MAC_KEY_SHREDDED, exc.message
        entry.manifest = _parse_quietly(store, key)
    except IntegrityFailed as exc:
        entry.mac_status, entry.problem = MAC_FAILED, exc.message
    except KeelError as exc:
        entry.mac_status, entry.problem = MAC_KEY_UNAVAILABLE, exc.message
        entry.manifest = _parse_quietly(store, key)


def _parse_quietly(store: ObjectStore, key: str) -> Optional[Dict[str, Any]]:
    # Unauthenticated, for display only (sizes, dates): never used to decide what to restore.
    try:
        return parse_manifest(store.get_bytes(key), key)
    except KeelError:
        return None


def _rewrapped_keys(store: ObjectStore, tenant: str, backup_id: str) -> List[WrappedKey]:
    found: List[WrappedKey] = []
    for obj in store.list(layout.rewrap_prefix(tenant, backup_id)):
        try:
            document: Mapping[str, Any] = json.loads(store.get_bytes(obj.key).decode("utf-8"))
            found.append(WrappedKey.from_dict(document["wrapped_key"]))
        except (KeelError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
    return found
