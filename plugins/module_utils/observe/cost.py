# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cost, energy and carbon of stored backups, from a price table the user keeps in inventory vars.

Pure functions: measured bytes and request counts in, money, kWh and grams of
CO2e out. Nothing here knows a provider's real prices; the table is the
user's contract figures (docs/cost.md). Units follow the providers' bills:
a GB is 2**30 bytes (what AWS calls a GB-month), a TB 2**40 bytes, a month
30 days. Energy is an estimate: storage bytes times the table's kWh per
TB-month; carbon is that energy times the table's gCO2e per kWh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

GB = float(1 << 30)
TB = float(1 << 40)
DAYS_PER_MONTH = 30.0
PRICE_FIELDS = (
    "price_gb_month",  # storage, per GB-month
    "price_per_1000_put",  # PUT, COPY, POST, LIST (and lifecycle transitions into the tier), per 1000 requests
    "price_per_1000_get",  # GET, HEAD and the like, per 1000 requests
    "price_gb_retrieved",  # retrieval (reading back from cold tiers), per GB
    "min_storage_days",  # an object deleted or moved earlier is billed as if kept this long
    "kwh_per_tb_month",  # energy factor of storing one TB for a month
    "gco2e_per_kwh",  # carbon intensity of that energy
)
_TABLE_KEYS = ("currency", "archive_tier", "tiers")
# Request counters (see stores.s3_store.REQUEST_METRICS) in the provider's two billing classes.
PUT_CLASS = ("s3_put_requests", "s3_multipart_starts", "s3_part_uploads", "s3_multipart_completes", "s3_list_requests")
GET_CLASS = ("s3_get_requests", "s3_head_requests")


@dataclass(frozen=True)
class TierPrice:
    price_gb_month: float
    price_per_1000_put: float = 0.0
    price_per_1000_get: float = 0.0
    price_gb_retrieved: float = 0.0
    min_storage_days: float = 0.0
    kwh_per_tb_month: float = 0.0
    gco2e_per_kwh: float = 0.0


@dataclass(frozen=True)
class CostTable:
    currency: str
    tiers: Dict[str, TierPrice] = field(default_factory=dict)
    archive_tier: Optional[str] = None


@dataclass(frozen=True)
class StoredSet:
    """Backups of one tenant in one tier that share an age, as the cost engine sees them."""

    tier: str
    stored_bytes: int
    age_days: float = 0.0
    objects: int = 1
    # Days after creation at which retention lets the backup go (for minimum-storage charges); None: unknown.
    delete_after_days: Optional[float] = None


# -- the table ---------------------------------------------------------------------------------------------------


def parse_cost_table(value: Any, where: str = "cost_table") -> Optional[CostTable]:
    """The ``cost_table`` option as a ``CostTable``; None when not given; ``InvalidOption`` naming the bad field."""
    if value is None or value == {}:
        return None
    if not isinstance(value, Mapping):
        raise InvalidOption(where, "must be a dict with currency, tiers and optionally archive_tier")
    unknown = sorted(str(key) for key in value if key not in _TABLE_KEYS)
    if unknown:
        raise InvalidOption("{0}.{1}".format(where, unknown[0]), "is not a cost table field; use {0}".format(", ".join(_TABLE_KEYS)))
    currency = value.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        raise InvalidOption(where + ".currency", "must be a currency code such as EUR or USD")
    tiers_value = value.get("tiers")
    if not isinstance(tiers_value, Mapping) or not tiers_value:
        raise InvalidOption(where + ".tiers", "must map at least one tier or storage class name to its prices")
    tiers = {str(name): _parse_tier(entry, "{0}.tiers.{1}".format(where, name)) for name, entry in tiers_value.items()}
    archive_tier = value.get("archive_tier")
    if archive_tier is not None and str(archive_tier) not in tiers:
        raise InvalidOption(where + ".archive_tier", "{0!r} is not one of the tiers ({1})".format(archive_tier, ", ".join(sorted(tiers))))
    return CostTable(currency=currency.strip(), tiers=tiers, archive_tier=str(archive_tier) if archive_tier is not None else None)


def _parse_tier(entry: Any, where: str) -> TierPrice:
    if not isinstance(entry, Mapping):
        raise InvalidOption(where, "must be a dict of prices ({0})".format(", ".join(PRICE_FIELDS)))
    unknown = sorted(str(key) for key in entry if key not in PRICE_FIELDS)
    if unknown:
        raise InvalidOption("{0}.{1}".format(where, unknown[0]), "is not a price field; use {0}".format(", ".join(PRICE_FIELDS)))
    if "price_gb_month" not in entry:
        raise InvalidOption(where + ".price_gb_month", "is required")
    return TierPrice(**{name: _non_negative(entry[name], "{0}.{1}".format(where, name)) for name in PRICE_FIELDS if name in entry})


def _non_negative(value: Any, where: str) -> float:
    # bool is an int in Python; "true" as a price is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidOption(where, "must be a non-negative number")
    try:
        number = float(value)
    except ValueError:
        raise InvalidOption(where, "must be a non-negative number") from None
    if number < 0 or not math.isfinite(number):
        raise InvalidOption(where, "must be a non-negative number")
    return number


# -- pure computations ---------------------------------------------------------------------------------------------


def footprint(stored_bytes: float, price: TierPrice) -> Dict[str, float]:
    """Monthly cost, energy and carbon of keeping ``stored_bytes`` in a tier."""
    energy = stored_bytes / TB * price.kwh_per_tb_month
    return {
        "monthly_cost": stored_bytes / GB * price.price_gb_month,
        "energy_kwh_per_month": energy,
        "carbon_grams_per_month": energy * price.gco2e_per_kwh,
    }


def request_cost(requests: Mapping[str, int], price: TierPrice) -> float:
    """What the counted requests cost at the tier's per-1000 prices (DELETE and aborts are free on AWS; not priced)."""
    puts = sum(requests.get(name, 0) for name in PUT_CLASS)
    gets = sum(requests.get(name, 0) for name in GET_CLASS)
    return puts / 1000.0 * price.price_per_1000_put + gets / 1000.0 * price.price_per_1000_get


def retrieval_cost(read_bytes: float, price: TierPrice) -> float:
    return read_bytes / GB * price.price_gb_retrieved


def early_deletion_charge(stored_bytes: float, days_stored: float, price: TierPrice) -> float:
    """The minimum-storage charge for removing (or moving out) an object after ``days_stored`` days in the tier."""
    missing_days = max(0.0, price.min_storage_days - days_stored)
    return stored_bytes / GB * price.price_gb_month * missing_days / DAYS_PER_MONTH


def tier_report(sets: Sequence[StoredSet], table: CostTable) -> Dict[str, Any]:
    """Per tier: bytes, backups, monthly cost, energy, carbon; and their totals. Unpriced tiers make the totals null."""
    tiers: Dict[str, Dict[str, Any]] = {}
    for stored in sets:
        entry = tiers.setdefault(stored.tier, {"bytes": 0, "backups": 0})
        entry["bytes"] += stored.stored_bytes
        entry["backups"] += 1
    unpriced = sorted(name for name in tiers if name not in table.tiers)
    for name, entry in tiers.items():
        price = table.tiers.get(name)
        entry.update(footprint(entry["bytes"], price) if price else {"monthly_cost": None, "energy_kwh_per_month": None, "carbon_grams_per_month": None})
    report: Dict[str, Any] = {"currency": table.currency, "tiers": tiers, "bytes": sum(entry["bytes"] for entry in tiers.values()),
                              "unpriced_tiers": unpriced}
    for key in ("monthly_cost", "energy_kwh_per_month", "carbon_grams_per_month"):
        report[key] = None if unpriced else sum((entry[key] for entry in tiers.values()), 0.0)
    return report


def what_if_archive(sets: Sequence[StoredSet], after_days: float, table: CostTable) -> Dict[str, Any]:
    """Cost and footprint if every backup older than ``after_days`` lived in the archive tier instead.

    Maps to one lifecycle transition rule (Days = ``after_days``, StorageClass =
    the archive tier): Object Lock forbids rewriting a retained object but not
    a transition. One-off costs are reported apart from the monthly figures:
    the transition requests (priced at the archive tier's PUT price, as AWS
    bills lifecycle transitions) and the minimum-storage charge of archived
    backups that retention deletes before the archive tier's minimum.
    """
    if table.archive_tier is None:
        raise InvalidOption("cost_table.archive_tier", "is needed for what_if_archive_after_days: name the tier backups would move to")
    archive = table.tiers[table.archive_tier]
    moved = [stored for stored in sets if stored.age_days >= after_days and stored.tier != table.archive_tier]
    after = [StoredSet(table.archive_tier, stored.stored_bytes, stored.age_days, stored.objects, stored.delete_after_days) if stored in moved
             else stored for stored in sets]
    now_report = tier_report(sets, table)
    then_report = tier_report(after, table)
    early = sum(early_deletion_charge(stored.stored_bytes, stored.delete_after_days - after_days, archive)
                for stored in moved if stored.delete_after_days is not None)
    return {
        "after_days": after_days,
        "archive_tier": table.archive_tier,
        "currency": table.currency,
        "moved_backups": len(moved),
        "moved_bytes": sum(stored.stored_bytes for stored in moved),
        "current": _totals(now_report),
        "what_if": _totals(then_report),
        "saving_percent": _saving(now_report["monthly_cost"], then_report["monthly_cost"]),
        "energy_saving_percent": _saving(now_report["energy_kwh_per_month"], then_report["energy_kwh_per_month"]),
        "carbon_saving_percent": _saving(now_report["carbon_grams_per_month"], then_report["carbon_grams_per_month"]),
        "transition_cost": sum(stored.objects for stored in moved) / 1000.0 * archive.price_per_1000_put,
        "early_deletion_cost": early,
        "lifecycle_rule": {"transition_days": after_days, "storage_class": table.archive_tier},
    }


def _totals(report: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: report[key] for key in ("bytes", "monthly_cost", "energy_kwh_per_month", "carbon_grams_per_month", "unpriced_tiers")}


def _saving(before: Optional[float], after: Optional[float]) -> Optional[float]:
    if before is None or after is None or before <= 0:
        return None
    return round((before - after) / before * 100.0, 2)


# -- metrics ----------------------------------------------------------------------------------------------------------


def record_cost_gauges(metrics: Any, tenant: str, report: Mapping[str, Any]) -> None:
    """The tier report as labelled gauges, so the Prometheus textfile carries cost and footprint per tenant and tier."""
    for tier, entry in sorted(report["tiers"].items()):
        labels = {"tenant": tenant, "tier": tier}
        metrics.gauge("storage_bytes", entry["bytes"], labels=labels)
        if entry["monthly_cost"] is None:
            continue
        metrics.gauge("storage_monthly_cost", entry["monthly_cost"], labels=dict(labels, currency=report["currency"]))
        metrics.gauge("storage_energy_kwh_per_month", entry["energy_kwh_per_month"], labels=labels)
        metrics.gauge("storage_carbon_grams_per_month", entry["carbon_grams_per_month"], labels=labels)
