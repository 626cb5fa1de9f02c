# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The validated options of one backup, checked before the database or the store is touched."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock
from ansible_collections.keel.postgres.plugins.module_utils.backup.table_stats import check_stats_mode
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant, parse_tenants, select_tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration, parse_size

MIN_CHUNK = 64 * 1024
MAX_CHUNK = 64 * 1024 * 1024
MAX_ZSTD_LEVEL = 19  # above this zstd needs "ultra" windows and far more memory than our bound


@dataclass(frozen=True)
class BackupRequest:
    tenant: Tenant
    schemas: List[str]
    database: str
    chunk_size: int
    compression_level: int
    compression_threads: int
    table_stats: str
    actor: Optional[str]
    skip_if_newer_than: Optional[float]  # seconds

    def lock(self, now: datetime.datetime) -> Lock:
        return self.tenant.retention.lock(now)


def backup_request_from(params: Mapping[str, Any]) -> BackupRequest:
    tenant = select_tenant(parse_tenants(params.get("tenants")), params["tenant"])
    schemas = list(params.get("schemas") or tenant.schemas)
    # The connection's `db` option (alias `database`) overrides the tenant's database.
    database = params.get("db") or tenant.database
    chunk_size = parse_size(params.get("chunk_size") or "4MiB", "chunk_size")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise InvalidOption("chunk_size", "must be between 64KiB and 64MiB")
    level = int(params.get("compression_level", 1))
    if not 1 <= level <= MAX_ZSTD_LEVEL:
        raise InvalidOption("compression_level", "must be between 1 and {0}, not {1}".format(MAX_ZSTD_LEVEL, level))
    threads = int(params.get("compression_threads", 2))
    if not 0 <= threads <= 64:
        raise InvalidOption("compression_threads", "must be between 0 (compress in the module's own thread) and 64")
    skip = params.get("skip_if_newer_than")
    return BackupRequest(
        tenant=tenant,
        schemas=schemas,
        database=database,
        chunk_size=chunk_size,
        compression_level=level,
        compression_threads=threads,
        table_stats=check_stats_mode(params.get("table_stats") or "fingerprints"),
        actor=params.get("audit_actor"),
        skip_if_newer_than=parse_duration(skip, "skip_if_newer_than") if skip else None,
    )
