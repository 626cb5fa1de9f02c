# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Applying every selected tenant's retention policy to the store, and reporting storage cost.

All tenants are listed and every policy conflict is found before the first
delete, so a bad policy stops the run with nothing deleted. Within a backup
the manifest goes first: a backup disappears from listings at once, and a
failure half-way leaves an orphan that the next run removes.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.audit import append_audit_event, audit_event
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import BackupEntry, list_backups
from ansible_collections.keel.postgres.plugins.module_utils.backup.cost_report import deleted_cost, held_cost, summed
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.retention import (
    DELETE,
    KEEP,
    Decision,
    decide,
    locks_longer_than_policy,
    stale_uploads,
    storage_cost,
    tier_of,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import CostTable
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics


@dataclass
class RetentionSettings:
    orphan_grace: datetime.timedelta
    bypass_governance: bool
    accept_longer_locks: bool
    prices: Dict[str, float]
    actor: Optional[str]
    dry_run: bool
    cost_table: Optional[CostTable] = None


class RetentionRun:
    def __init__(self, tenants: Sequence[Tenant], positions: Dict[str, int], store: ObjectStore, keys: KeyProvider,
                 settings: RetentionSettings, metrics: RunMetrics) -> None:
        self.tenants = tenants
        self.positions = positions  # tenant name -> index in the `tenants` option, for error field paths
        self.store = store
        self.keys = keys
        self.settings = settings
        self.metrics = metrics

    def execute(self, now: datetime.datetime) -> Dict[str, Any]:
        with self.metrics.phase("list"):
            listings = {tenant.name: list_backups(self.store, tenant.name, self.keys) for tenant in self.tenants}
        self._refuse_policies_below_locks(listings)
        reports = [self._apply(tenant, listings[tenant.name], now) for tenant in self.tenants]
        changed = any(report["deleted"] or report["discarded_uploads"] for report in reports)
        failures = [failure for report in reports for failure in report["failures"]]
        result = {
            "changed": changed,
            "tenants": reports,
            "deleted_bytes": sum(report["deleted_bytes"] for report in reports),
            "monthly_cost": _sum_costs(reports),
            "failures": failures,
        }
        if self.settings.cost_table is not None:
            result["cost"] = summed([report["cost"] for report in reports], self.settings.cost_table.currency)
            result["cost"]["early_deletion_cost"] = sum(report["deleted_cost"]["early_deletion_cost"] for report in reports)
        return result

    def _refuse_policies_below_locks(self, listings: Dict[str, List[BackupEntry]]) -> None:
        if self.settings.accept_longer_locks:
            return
        for tenant in self.tenants:
            conflicts = locks_longer_than_policy(tenant, listings[tenant.name])
            if conflicts:
                longest = max(entry.latest_retain_until() for entry in conflicts)
                raise InvalidOption(
                    "tenants[{0}].retention.days".format(self.positions[tenant.name]),
                    "{0} days for tenant {1!r} is shorter than the store lock on {2} existing backup(s) (locked until {3}): "
                    "they cannot be deleted on this policy's schedule. Lengthen retention.days, or set accept_longer_locks "
                    "to let those backups go when their lock lapses. Nothing was deleted".format(
                        tenant.retention.days, tenant.name, len(conflicts), longest.isoformat()),
                )

    def _apply(self, tenant: Tenant, entries: List[BackupEntry], now: datetime.datetime) -> Dict[str, Any]:
        decisions = decide(tenant, entries, now, self.settings.orphan_grace, self.settings.bypass_governance)
        uploads = stale_uploads(self.store.incomplete_uploads(layout.backups_prefix(tenant.name)), now, self.settings.orphan_grace)
        deleted: List[Decision] = []
        failures: List[Dict[str, Any]] = []
        if not self.settings.dry_run:
            with self.metrics.phase("delete"):
                for decision in decisions:
                    if decision.action == DELETE:
                        problem = self._delete(decision.entry)
                        if problem:
                            failures.append({"tenant": tenant.name, "backup_id": decision.entry.backup_id, "error": problem})
                        else:
                            deleted.append(decision)
                for upload in uploads:
                    self.store.discard_incomplete(upload)
        else:
            deleted = [decision for decision in decisions if decision.action == DELETE]
        kept = [decision.entry for decision in decisions if decision not in deleted and decision.entry.published]
        deleted_bytes = sum(decision.entry.stored_bytes for decision in deleted)
        self.metrics.count("backups_deleted", len(deleted))
        self.metrics.count("bytes_deleted", deleted_bytes)
        self._record_tiers(tenant, kept, [decision.entry for decision in deleted], now)
        report: Dict[str, Any] = {
            "tenant": tenant.name,
            "backups": len([entry for entry in entries if entry.published]),
            "kept": [decision.as_dict() for decision in decisions if decision.action == KEEP],
            "deleted": [decision.as_dict() for decision in deleted],
            "deleted_bytes": deleted_bytes,
            "discarded_uploads": [{"key": upload.key, "started": upload.started.isoformat() if upload.started else None} for upload in uploads],
            "failures": failures,
            "cost": storage_cost(tenant, kept, now, self.settings.prices),
        }
        table = self.settings.cost_table
        if table is not None:
            # Same keys as the price_per_gib_month report (tiers, bytes, monthly_cost, unpriced_tiers), plus footprint.
            report["cost"] = held_cost(table, tenant, kept, now, self.metrics)
            report["deleted_cost"] = deleted_cost(table, tenant, [decision.entry for decision in deleted if decision.entry.published], now)
        if not self.settings.dry_run and (deleted or failures or uploads):
            report["audit"] = self._audit(tenant, deleted, failures, deleted_bytes)
        return report

    def _record_tiers(self, tenant: Tenant, kept: List[BackupEntry], deleted: List[BackupEntry], now: datetime.datetime) -> None:
        """Bytes kept and deleted per tenant and tier, as labelled gauges (0 for a tier that has none of one kind)."""
        for name, entries in (("retention_kept_bytes", kept), ("retention_deleted_bytes", deleted)):
            for tier in sorted({tier_of(entry, tenant, now) for entry in kept + deleted}):
                self.metrics.gauge(name, sum(entry.stored_bytes for entry in entries if tier_of(entry, tenant, now) == tier),
                                   labels={"tenant": tenant.name, "tier": tier})

    def _delete(self, entry: BackupEntry) -> Optional[str]:
        manifest = layout.manifest_key(entry.tenant, entry.backup_id)
        ordered = sorted(entry.objects, key=lambda key: (key != manifest, key))
        try:
            for key in ordered:
                self.store.delete(key, bypass_governance=self.settings.bypass_governance)
            for obj in self.store.list(layout.verifications_prefix(entry.tenant, entry.backup_id)):
                self.store.delete(obj.key, bypass_governance=self.settings.bypass_governance)
        except KeelError as exc:
            return exc.message
        return None

    def _audit(self, tenant: Tenant, deleted: List[Decision], failures: List[Dict[str, Any]], deleted_bytes: int) -> Dict[str, Any]:
        event = audit_event(
            "retention", "failed" if failures else "succeeded", self.settings.actor, tenant=tenant.name,
            deleted=[decision.entry.backup_id for decision in deleted], deleted_bytes=deleted_bytes,
            failures=failures or None, store=self.store.describe(),
        )
        lock = tenant.retention.lock(datetime.datetime.now(datetime.timezone.utc))
        # An audit event records a legal hold's existence; it does not need one itself.
        return append_audit_event(self.store, event, Lock(mode=lock.mode, retain_until=lock.retain_until))


def _sum_costs(reports: Sequence[Dict[str, Any]]) -> Optional[float]:
    costs = [report["cost"]["monthly_cost"] for report in reports]
    if any(cost is None for cost in costs):
        return None
    return sum(costs)
