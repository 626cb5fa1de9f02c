# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``cost`` of backup, backup_info and backup_retention results: what the store holds, priced by ``cost_table``.

The pricing itself is ``observe.cost`` (pure); this file turns backups into
what it prices: one ``StoredSet`` per backup, in the tier the tenant's policy
puts it in (``retention.tier``, or ``archive.storage_class`` once older than
``archive.after_days``), and records the result as labelled gauges.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import BackupEntry
from ansible_collections.keel.postgres.plugins.module_utils.backup.retention import tier_of
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import (
    CostTable,
    StoredSet,
    early_deletion_charge,
    record_cost_gauges,
    request_cost,
    tier_report,
    what_if_archive,
)
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

_TOTAL_KEYS = ("monthly_cost", "energy_kwh_per_month", "carbon_grams_per_month")


def stored_sets(tenant: Tenant, entries: Sequence[BackupEntry], now: datetime.datetime) -> List[StoredSet]:
    return [StoredSet(tier=tier_of(entry, tenant, now), stored_bytes=entry.stored_bytes,
                      age_days=(now - entry.created_at).total_seconds() / 86400.0, objects=len(entry.objects),
                      delete_after_days=float(tenant.retention.days)) for entry in entries]


def new_backup_cost(table: CostTable, tenant: str, tier: str, stored_bytes: int, requests: Mapping[str, int],
                    metrics: RunMetrics) -> Dict[str, Any]:
    """The monthly cost and footprint the new backup adds, and what this run's requests cost."""
    report = tier_report([StoredSet(tier, stored_bytes)], table)
    price = table.tiers.get(tier)
    report["requests_cost"] = request_cost(requests, price) if price else None
    record_cost_gauges(metrics, tenant, report)
    return report


def held_cost(table: CostTable, tenant: Tenant, entries: Sequence[BackupEntry], now: datetime.datetime, metrics: RunMetrics) -> Dict[str, Any]:
    """What a tenant's published backups cost and weigh per month, per tier."""
    report = tier_report(stored_sets(tenant, entries, now), table)
    record_cost_gauges(metrics, tenant.name, report)
    return report


def deleted_cost(table: CostTable, tenant: Tenant, entries: Sequence[BackupEntry], now: datetime.datetime) -> Dict[str, Any]:
    """Bytes removed per tier, the monthly cost they no longer add, and minimum-storage charges for removing them early."""
    sets = stored_sets(tenant, entries, now)
    report = tier_report(sets, table)
    report["early_deletion_cost"] = sum(early_deletion_charge(stored.stored_bytes, stored.age_days, table.tiers[stored.tier])
                                        for stored in sets if stored.tier in table.tiers)
    return report


def what_if(table: CostTable, tenants: Sequence[Tenant], listings: Mapping[str, Sequence[BackupEntry]], now: datetime.datetime,
            after_days: Optional[int]) -> Optional[Dict[str, Any]]:
    """The archive what-if over every listed tenant's backups, with one entry per tenant."""
    if after_days is None:
        return None
    if after_days < 0:
        raise InvalidOption("what_if_archive_after_days", "must be 0 or more days")
    everything: List[StoredSet] = []
    per_tenant: Dict[str, Any] = {}
    for tenant in tenants:
        sets = stored_sets(tenant, listings[tenant.name], now)
        everything.extend(sets)
        per_tenant[tenant.name] = what_if_archive(sets, after_days, table)
    report = what_if_archive(everything, after_days, table)
    report["tenants"] = per_tenant
    return report


def summed(reports: Sequence[Optional[Mapping[str, Any]]], currency: str) -> Dict[str, Any]:
    """Totals over tenants; null when any tenant's total is null (an unpriced tier)."""
    total: Dict[str, Any] = {"currency": currency}
    for key in _TOTAL_KEYS:
        values = [report[key] for report in reports if report is not None]
        total[key] = None if any(value is None for value in values) else sum(values)
    return total
