# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which backups a tenant's policy lets go, and why every other one stays.

A backup is deleted only when every rule agrees: older than the policy's
days, no legal hold, its store lock lapsed (or GOVERNANCE and bypass asked),
not among the newest ``min_copies`` readable backups, and not the newest
backup a restore verification passed on. A backup whose manifest fails its
MAC is never deleted automatically: it is evidence, and a person decides.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_FAILED, MAC_VERIFIED, BackupEntry
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import IncompleteUpload
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import CostTable, StoredSet, TierPrice, tier_report

DELETE = "delete"
KEEP = "keep"
# A lock that outlasts the policy by less than this is rounding (clock skew, upload time), not a conflict.
_LOCK_SLACK = datetime.timedelta(days=1)


@dataclass
class Decision:
    entry: BackupEntry
    action: str
    reason: str

    def as_dict(self) -> Dict[str, Any]:
        retain_until = self.entry.latest_retain_until()
        return {
            "backup_id": self.entry.backup_id,
            "action": self.action,
            "reason": self.reason,
            "created_at": self.entry.created_at.isoformat(),
            "stored_bytes": self.entry.stored_bytes,
            "published": self.entry.published,
            "retain_until": retain_until.isoformat() if retain_until else None,
        }


def locks_longer_than_policy(tenant: Tenant, entries: Sequence[BackupEntry]) -> List[BackupEntry]:
    """Backups locked well beyond ``retention.days``: the policy was shortened below an existing lock."""
    allowed = datetime.timedelta(days=tenant.retention.days) + _LOCK_SLACK
    conflicts = []
    for entry in entries:
        retain_until = entry.latest_retain_until()
        if retain_until is not None and retain_until - entry.created_at > allowed:
            conflicts.append(entry)
    return conflicts


def decide(tenant: Tenant, entries: Sequence[BackupEntry], now: datetime.datetime, orphan_grace: datetime.timedelta,
           bypass_governance: bool = False) -> List[Decision]:
    policy = tenant.retention
    readable = [entry for entry in entries if entry.published and entry.mac_status == MAC_VERIFIED]
    protected_copies = {entry.backup_id for entry in readable[-policy.min_copies:]}
    verified = [entry for entry in readable if entry.verified_restorable]
    newest_verified = verified[-1].backup_id if verified else None
    decisions = []
    for entry in entries:
        reason = _reason_to_keep(entry, tenant, now, orphan_grace, protected_copies, newest_verified, bypass_governance)
        decisions.append(Decision(entry, KEEP, reason) if reason else Decision(entry, DELETE, _reason_to_delete(entry, tenant)))
    return decisions


def stale_uploads(uploads: Sequence[IncompleteUpload], now: datetime.datetime, grace: datetime.timedelta) -> List[IncompleteUpload]:
    # A younger incomplete upload may be a backup running right now.
    return [upload for upload in uploads if upload.started is not None and now - upload.started > grace]


def _reason_to_keep(entry: BackupEntry, tenant: Tenant, now: datetime.datetime, orphan_grace: datetime.timedelta,
                    protected_copies: set, newest_verified: Optional[str], bypass_governance: bool) -> Optional[str]:
    age = now - entry.created_at
    if any(obj.legal_hold for obj in entry.objects.values()):
        return "legal hold"
    if not entry.published:
        if age <= orphan_grace:
            return "unpublished for less than the orphan grace period: the backup may still be running"
    else:
        if entry.mac_status == MAC_FAILED:
            return "manifest fails its MAC check: kept as evidence, never deleted automatically"
        if age < datetime.timedelta(days=tenant.retention.days):
            return "within retention ({0} days)".format(tenant.retention.days)
        if entry.backup_id in protected_copies:
            return "one of the newest {0} readable backups (min_copies)".format(tenant.retention.min_copies)
        if entry.backup_id == newest_verified:
            return "the newest backup with a passed restore verification"
    blocking = _lock_blocking(entry, now, bypass_governance)
    if blocking:
        return blocking
    return None


def _lock_blocking(entry: BackupEntry, now: datetime.datetime, bypass_governance: bool) -> Optional[str]:
    for obj in entry.objects.values():
        if obj.retain_until is None or obj.retain_until <= now:
            continue
        if obj.lock_mode == "GOVERNANCE" and bypass_governance:
            continue
        return "{0} lock until {1}".format(obj.lock_mode or "store", obj.retain_until.isoformat())
    return None


def _reason_to_delete(entry: BackupEntry, tenant: Tenant) -> str:
    if not entry.published:
        return "orphan of a backup that never published its manifest"
    return "older than {0} days, lock lapsed, not needed for min_copies or verification".format(tenant.retention.days)


def tier_of(entry: BackupEntry, tenant: Tenant, now: datetime.datetime) -> str:
    archive = tenant.archive
    if archive is not None and now - entry.created_at >= datetime.timedelta(days=archive.after_days):
        return archive.storage_class
    return tenant.retention.tier


def storage_cost(tenant: Tenant, kept: Sequence[BackupEntry], now: datetime.datetime, prices: Dict[str, float]) -> Dict[str, Any]:
    """Bytes kept per tier and their estimated monthly cost from the price table (per GiB-month).

    The cost engine's tier report (``observe.cost``) with storage prices only, in the keys this report has always had.
    """
    table = CostTable(currency="", tiers={name: TierPrice(price_gb_month=float(price)) for name, price in prices.items()})
    report = tier_report([StoredSet(tier_of(entry, tenant, now), entry.stored_bytes) for entry in kept], table)
    return {
        "tiers": {name: {key: entry[key] for key in ("bytes", "backups", "monthly_cost")} for name, entry in report["tiers"].items()},
        "bytes": report["bytes"],
        "monthly_cost": report["monthly_cost"],
        "unpriced_tiers": report["unpriced_tiers"],
    }
