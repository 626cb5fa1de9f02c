# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-tenant backup policy, read from the ``keel_tenants`` inventory variable.

Every problem is reported against the path of the offending field
(``tenants[1].retention.days``) before anything is read from the database or
written to the store, because a typo in a retention policy is a data-loss bug.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import LOCK_MODES, Lock
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.option_shapes import checked_mapping

DEFAULT_TIER = "hot"
_TENANT_KEYS = {"name", "database", "schemas", "retention", "archive"}
_RETENTION_KEYS = {"days", "min_copies", "lock_mode", "tier", "legal_hold"}
_ARCHIVE_KEYS = {"after_days", "storage_class"}


@dataclass(frozen=True)
class RetentionPolicy:
    days: int
    min_copies: int = 1
    lock_mode: Optional[str] = None  # "COMPLIANCE" | "GOVERNANCE" | None
    tier: str = DEFAULT_TIER
    legal_hold: bool = False

    def lock(self, now: datetime.datetime) -> Lock:
        """The store lock of an object written ``now`` under this policy."""
        retain_until = now + datetime.timedelta(days=self.days) if self.lock_mode else None
        return Lock(mode=self.lock_mode, retain_until=retain_until, legal_hold=self.legal_hold)


@dataclass(frozen=True)
class ArchivePolicy:
    after_days: int
    storage_class: str


@dataclass(frozen=True)
class Tenant:
    name: str
    database: str
    retention: RetentionPolicy
    schemas: List[str] = field(default_factory=list)
    archive: Optional[ArchivePolicy] = None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "database": self.database,
            "schemas": list(self.schemas),
            "retention": {
                "days": self.retention.days,
                "min_copies": self.retention.min_copies,
                "lock_mode": self.retention.lock_mode,
                "tier": self.retention.tier,
                "legal_hold": self.retention.legal_hold,
            },
            "archive": {"after_days": self.archive.after_days, "storage_class": self.archive.storage_class} if self.archive else None,
        }


def parse_tenants(entries: Optional[Sequence[Any]], field_name: str = "tenants") -> List[Tenant]:
    if not entries:
        raise InvalidOption(field_name, "at least one tenant is needed (the keel_tenants inventory variable)")
    tenants: List[Tenant] = []
    seen: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = "{0}[{1}]".format(field_name, index)
        tenant = _parse_tenant(entry, where)
        if tenant.name in seen:
            raise InvalidOption(where + ".name", "tenant {0!r} is already defined at {1}[{2}]".format(tenant.name, field_name, seen[tenant.name]))
        seen[tenant.name] = index
        tenants.append(tenant)
    return tenants


def select_tenant(tenants: Sequence[Tenant], name: str, field_name: str = "tenant") -> Tenant:
    for tenant in tenants:
        if tenant.name == name:
            return tenant
    known = ", ".join(t.name for t in tenants)
    raise InvalidOption(field_name, "unknown tenant {0!r}; tenants defines: {1}".format(name, known))


def _parse_tenant(entry: Any, where: str) -> Tenant:
    mapping = checked_mapping(entry, where, _TENANT_KEYS)
    name = check_tenant_name(mapping.get("name"), where + ".name")
    database = mapping.get("database")
    if not isinstance(database, str) or not database:
        raise InvalidOption(where + ".database", "the database to back up is required")
    schemas = mapping.get("schemas") or []
    if not isinstance(schemas, list) or not all(isinstance(s, str) and s for s in schemas):
        raise InvalidOption(where + ".schemas", "must be a list of schema names")
    if "retention" not in mapping:
        raise InvalidOption(where + ".retention", "a retention policy is required (at least days)")
    retention = _parse_retention(mapping["retention"], where + ".retention")
    archive = _parse_archive(mapping["archive"], where + ".archive", retention) if mapping.get("archive") else None
    return Tenant(name=name, database=database, retention=retention, schemas=list(schemas), archive=archive)


def _parse_retention(entry: Any, where: str) -> RetentionPolicy:
    mapping = checked_mapping(entry, where, _RETENTION_KEYS)
    days = _positive_int(mapping.get("days"), where + ".days")
    min_copies = _positive_int(mapping.get("min_copies", 1), where + ".min_copies")
    lock_mode = mapping.get("lock_mode")
    if lock_mode is not None:
        if not isinstance(lock_mode, str) or lock_mode.upper() not in LOCK_MODES:
            raise InvalidOption(where + ".lock_mode", "must be compliance or governance, not {0!r}".format(lock_mode))
        lock_mode = lock_mode.upper()
    tier = mapping.get("tier", DEFAULT_TIER)
    if not isinstance(tier, str) or not tier:
        raise InvalidOption(where + ".tier", "must be a non-empty string naming a price tier")
    legal_hold = mapping.get("legal_hold", False)
    if not isinstance(legal_hold, bool):
        raise InvalidOption(where + ".legal_hold", "must be true or false")
    return RetentionPolicy(days=days, min_copies=min_copies, lock_mode=lock_mode, tier=tier, legal_hold=legal_hold)


def _parse_archive(entry: Any, where: str, retention: RetentionPolicy) -> ArchivePolicy:
    mapping = checked_mapping(entry, where, _ARCHIVE_KEYS)
    after_days = _positive_int(mapping.get("after_days"), where + ".after_days")
    if after_days >= retention.days:
        raise InvalidOption(where + ".after_days", "{0} is not shorter than retention.days {1}: nothing would ever be archived".format(
            after_days, retention.days))
    storage_class = mapping.get("storage_class")
    if not isinstance(storage_class, str) or not storage_class:
        raise InvalidOption(where + ".storage_class", "is required (e.g. GLACIER_IR)")
    return ArchivePolicy(after_days=after_days, storage_class=storage_class)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        else:
            raise InvalidOption(where, "must be a positive whole number, not {0!r}".format(value))
    if value < 1:
        raise InvalidOption(where, "must be at least 1, not {0}".format(value))
    return value
