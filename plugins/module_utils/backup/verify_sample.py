# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which backups a restore verification covers: one backup, or a sample across tenants.

* one tenant, ``backup_id`` an id or ``latest``;
* ``sample: {mode: latest_per_tier}``: the newest published backup of every
  selected tenant (tiers are per tenant, so this covers every tier in use);
* ``sample: {mode: random, count: N, within_days: D, seed: S}``: N published
  backups per tenant drawn at random among those created in the last D days.

``latest`` here means the newest *published* backup, whatever its manifest
says: a restore skips a damaged newest backup for an older good one, but a
verification that did the same would hide exactly what it exists to find. A
manifest that fails its MAC (or a shredded key) then becomes a recorded
failure of that backup.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_selection import LATEST, check_backup_id, published_backups
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import BackupEntry
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

LATEST_PER_TIER = "latest_per_tier"
RANDOM = "random"
SAMPLE_MODES = (LATEST_PER_TIER, RANDOM)
_SAMPLE_KEYS = {LATEST_PER_TIER: {"mode"}, RANDOM: {"mode", "count", "within_days", "seed"}}


@dataclass(frozen=True)
class SampleSpec:
    mode: str
    count: int = 1
    within_days: Optional[int] = None  # None: every published backup is a candidate
    seed: Optional[Union[int, str]] = None  # None: a different draw on every run

    def as_dict(self) -> Dict[str, Any]:
        return {"mode": self.mode, "count": self.count, "within_days": self.within_days, "seed": self.seed}


@dataclass(frozen=True)
class Chosen:
    """One backup to verify."""

    tenant: Tenant
    entry: BackupEntry

    def describe(self) -> Dict[str, Any]:
        manifest = self.entry.manifest or {}
        return {
            "tenant": self.tenant.name,
            "backup_id": self.entry.backup_id,
            "tier": self.tenant.retention.tier,
            "created_at": self.entry.created_at.isoformat(),
            "mac_status": self.entry.mac_status,
            "problem": self.entry.problem,
            "table_stats": manifest.get("table_stats"),
            "tables": len(manifest.get("tables") or []),
        }


@dataclass
class Selection:
    chosen: List[Chosen] = field(default_factory=list)
    not_sampled: List[Dict[str, Any]] = field(default_factory=list)  # {tenant, tier, reason}: tenants with nothing to verify


def parse_sample(value: Any, field_name: str = "sample") -> Optional[SampleSpec]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidOption(field_name, "must be a mapping such as {mode: latest_per_tier}, not " + type(value).__name__)
    mode = value.get("mode")
    if mode not in SAMPLE_MODES:
        raise InvalidOption(field_name + ".mode", "must be one of {0}, not {1!r}".format(", ".join(SAMPLE_MODES), mode))
    unknown = sorted(set(value) - _SAMPLE_KEYS[mode])
    if unknown:
        raise InvalidOption("{0}.{1}".format(field_name, unknown[0]), "is not an option of mode {0}; it takes {1}".format(
            mode, ", ".join(sorted(_SAMPLE_KEYS[mode]))))
    if mode == LATEST_PER_TIER:
        return SampleSpec(mode=mode)
    seed = value.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
        raise InvalidOption(field_name + ".seed", "must be a number or a string, not {0}".format(type(seed).__name__))
    within_days = value.get("within_days")
    return SampleSpec(
        mode=mode,
        count=_positive_int(value.get("count", 1), field_name + ".count"),
        within_days=None if within_days is None else _positive_int(within_days, field_name + ".within_days"),
        seed=seed,
    )


def select_backups(store: ObjectStore, keys: KeyProvider, tenants: Sequence[Tenant], backup_id: Optional[str],
                   sample: Optional[SampleSpec], now: datetime.datetime) -> Selection:
    """The backups to verify; refuses (InvalidOption) an id or ``latest`` that names nothing."""
    selection = Selection()
    if sample is None:
        [tenant] = tenants
        selection.chosen.append(Chosen(tenant, _one_backup(published_backups(store, keys, tenant.name), tenant, backup_id or LATEST)))
        return selection
    draw = random.Random(sample.seed) if sample.seed is not None else random.SystemRandom()
    for tenant in tenants:
        entries = published_backups(store, keys, tenant.name)
        picked = _sampled(entries, sample, now, draw)
        if not picked:
            selection.not_sampled.append({"tenant": tenant.name, "tier": tenant.retention.tier, "reason": _nothing_to_sample(entries, sample)})
        selection.chosen.extend(Chosen(tenant, entry) for entry in picked)
    return selection


def _one_backup(entries: List[BackupEntry], tenant: Tenant, wanted: str) -> BackupEntry:
    check_backup_id(wanted)
    if wanted == LATEST:
        if not entries:
            raise InvalidOption("backup_id", "tenant {0!r} has no published backup in the store".format(tenant.name))
        return entries[-1]
    for entry in entries:
        if entry.backup_id == wanted:
            return entry
    raise InvalidOption("backup_id", "tenant {0!r} has no backup {1} (it never completed, was deleted, or belongs to another tenant)".format(
        tenant.name, wanted))


def _sampled(entries: List[BackupEntry], sample: SampleSpec, now: datetime.datetime, draw: random.Random) -> List[BackupEntry]:
    if sample.mode == LATEST_PER_TIER:
        return entries[-1:]
    candidates = entries
    if sample.within_days is not None:
        since = now - datetime.timedelta(days=sample.within_days)
        candidates = [entry for entry in entries if entry.created_at >= since]
    picked = draw.sample(candidates, min(sample.count, len(candidates)))
    return sorted(picked, key=lambda entry: entry.backup_id)


def _nothing_to_sample(entries: List[BackupEntry], sample: SampleSpec) -> str:
    if not entries:
        return "no published backup"
    return "no published backup created within the last {0} days".format(sample.within_days)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOption(where, "must be a whole number of at least 1, not {0!r}".format(value))
    return value
