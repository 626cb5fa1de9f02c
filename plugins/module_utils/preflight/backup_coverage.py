# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is every recent migration of this database covered by a verified backup?

Which migrations are checked (from the keel catalog of the connected database):
every migration not undone (rolled back or reverted) that is not finalized, that
is in flight or completed and still revertible, and every finalized one completed
within ``within`` (by the server's clock, which stamped ``completed_at``).

A migration M is *covered* when one backup B satisfies all of:

1. B belongs to a tenant whose ``database`` is this database, and B's scope
   (its dumped schemas; all of them when none are named) holds M's tables;
2. B's manifest is authenticated with the tenant's key (its MAC checks) and
   records provenance (backups made before provenance cannot prove anything);
3. B's snapshot precedes M's start: in B's provenance (the keel catalog as the
   dump's snapshot saw it) M is absent, or rolled back / reverted. The catalog
   row is committed before M changes any table, so this is exact and needs no
   clock: B holds the schema and data from before M touched them. It also holds
   for a migration restarted after a rollback;
4. B's latest restore verification passed, and its record is authenticated
   with the backup's key (a record anyone with store write access could have
   written counts for nothing).

The newest such backup is reported. Everything here only reads the store.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_VERIFIED, BackupEntry, list_backups
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import provenance_of
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import catalog_migrations, precedes_start
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant, parse_tenants, select_tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog as migrations_catalog
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


@dataclass(frozen=True)
class CoverageRequest:
    tenants: List[Tenant]  # the candidates; those whose database is the connected one are used
    store: ObjectStore
    keys: KeyProvider
    within_seconds: float


def coverage_request_from(params: Mapping[str, Any]) -> Optional[CoverageRequest]:
    """The module's ``backup_coverage`` with ``tenants``, ``store`` and ``key_provider``; None when not asked for."""
    options = params.get("backup_coverage")
    if options is None:
        if (params.get("fail_on") or {}).get("require_backup_coverage"):
            raise InvalidOption("fail_on.require_backup_coverage", "needs backup_coverage (with tenants, store and key_provider)")
        return None
    for name in ("tenants", "store", "key_provider"):
        if not params.get(name):
            raise InvalidOption(name, "is required with backup_coverage: coverage is read from the backup store")
    tenants = parse_tenants(params["tenants"])
    if options.get("tenant"):
        tenants = [select_tenant(tenants, options["tenant"], "backup_coverage.tenant")]
    within = parse_duration(options.get("within") or "7d", "backup_coverage.within")
    if within < 0:
        raise InvalidOption("backup_coverage.within", "cannot be negative")
    store, keys = open_store_and_keys(params)
    return CoverageRequest(tenants=tenants, store=store, keys=keys, within_seconds=within)


# -- pure rules ----------------------------------------------------------------------------------------------------


def needs_coverage(migration: Dict[str, Any], now: datetime.datetime, within_seconds: float) -> bool:
    """In flight or not finalized; or finalized, but completed (or finalized) less than ``within`` ago."""
    state = migration.get("state")
    if state in migrations_catalog.UNDONE:
        return False
    if state != migrations_catalog.FINALIZED:
        return True
    stamp = migration.get("completed_at") or migration.get("finalized_at")
    if stamp is None:
        return True
    return (now - datetime.datetime.fromisoformat(stamp)).total_seconds() <= within_seconds


def in_scope(migration: Dict[str, Any], manifest: Dict[str, Any]) -> bool:
    """The backup dumped every schema the migration's tables are in (an empty scope is the whole database)."""
    schemas = ((manifest.get("scope") or {}).get("schemas")) or []
    if not schemas:
        return True
    return all(table.split(".", 1)[0] in schemas for table in migration.get("tables") or [] if "." in table)


def coverage_of(migration: Dict[str, Any], candidates: Sequence[Tuple[str, BackupEntry]], database: str) -> Dict[str, Any]:
    """The migration's coverage entry: ``covered``, the newest covering backup, or ``reason`` naming what is missing."""
    report = {
        "name": migration["name"],
        "state": migration.get("state"),
        "started_at": migration.get("started_at"),
        "completed_at": migration.get("completed_at"),
        "covered": False,
        "tenant": None,
        "backup_id": None,
        "reason": None,
    }
    if not candidates:
        report["reason"] = "no backup of database {0!r} in the store (no tenant with this database, or none backed up)".format(database)
        return report
    usable = [(tenant, entry) for tenant, entry in candidates if entry.mac_status == MAC_VERIFIED and provenance_of(entry.manifest)]
    before = [(tenant, entry) for tenant, entry in usable
              if in_scope(migration, entry.manifest or {}) and precedes_start(provenance_of(entry.manifest), migration["name"])]
    verified = [(tenant, entry) for tenant, entry in before if entry.verified_restorable]
    if verified:
        tenant, entry = max(verified, key=lambda pair: pair[1].backup_id)
        report.update(covered=True, tenant=tenant, backup_id=entry.backup_id)
        return report
    if not usable:
        report["reason"] = "none of the {0} backup(s) of database {1!r} has an authenticated manifest with provenance".format(len(candidates), database)
    elif not before:
        report["reason"] = "every backup with provenance ({0}) was taken after it started, or does not hold its tables".format(len(usable))
    else:
        newest = max(before, key=lambda pair: pair[1].backup_id)[1]
        outcome = (newest.verification or {}).get("outcome") or "never verified"
        report["reason"] = "{0} backup(s) precede its start, but none passed restore verification (newest {1}: {2})".format(
            len(before), newest.backup_id, outcome)
    return report


# -- reading the catalog and the store -----------------------------------------------------------------------------


def backup_coverage(conn: Any, request: CoverageRequest) -> List[Dict[str, Any]]:
    """One entry per migration that needs coverage (see the module docstring)."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT current_database(), now()")
        database, now = cursor.fetchone()
        migrations = catalog_migrations(cursor)
    wanted = [migration for migration in migrations if needs_coverage(migration, now, request.within_seconds)]
    if not wanted:
        return []
    candidates: List[Tuple[str, BackupEntry]] = []
    for tenant in request.tenants:
        if tenant.database != database:
            continue
        candidates += [(tenant.name, entry) for entry in list_backups(request.store, tenant.name, request.keys) if entry.published]
    return [coverage_of(migration, candidates, database) for migration in wanted]
