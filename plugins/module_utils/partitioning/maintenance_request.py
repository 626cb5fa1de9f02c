# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The validated options of one ``partition_maintenance`` run, checked before connecting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, parse_table_name
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.module_options import lock_policy_from
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration

MAX_PREMAKE = 1000  # a typo such as 4000 would otherwise create thousands of tables under the parent's lock


@dataclass(frozen=True)
class MaintenanceRequest:
    table: TableName
    premake: int
    interval: Any  # the raw option; parsed once the key's type is known
    retention: Optional[float]  # seconds
    archive_tenant: Optional[str]
    drop_detached: bool
    policy: LockPolicy


def maintenance_request_from(params: Mapping[str, Any]) -> MaintenanceRequest:
    premake = params["premake"]
    if not 0 <= premake <= MAX_PREMAKE:
        raise InvalidOption("premake", "must be between 0 and {0}, got {1}".format(MAX_PREMAKE, premake))
    retention = params.get("retention")
    seconds = None
    if retention is not None and str(retention).strip() != "":
        seconds = parse_duration(retention, "retention")
        if seconds <= 0:
            raise InvalidOption("retention", "must be longer than zero, got {0!r}".format(retention))
    return MaintenanceRequest(
        table=parse_table_name(params["table"], "table"),
        premake=premake,
        interval=params.get("interval"),
        retention=seconds,
        archive_tenant=_archive_tenant(params),
        drop_detached=params["drop_detached"],
        # Detaches wait for older snapshots by design: only lock waits are bounded, never statements.
        policy=lock_policy_from(params, statement_timeout=0),
    )


def _archive_tenant(params: Mapping[str, Any]) -> Optional[str]:
    archive = params.get("archive")
    if not archive:
        return None
    tenant = archive.get("tenant")
    if not tenant:
        raise InvalidOption("archive.tenant", "name the tenant whose store and key receive the archives")
    for needed in ("tenants", "store", "key_provider"):
        if not params.get(needed):
            raise InvalidOption(needed, "is required when archive is set (as for keel.postgres.backup)")
    return tenant
