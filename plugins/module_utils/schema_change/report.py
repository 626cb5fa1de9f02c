# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migrations as ``migration_info`` reports them: phase, progress, timings, rollback MTTR."""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import version_schema as vs
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill_progress import backfill_progress
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.migration_versions import MigrationVersions
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.old_readers import old_readers


def migration_reports(conn: Any, name: Optional[str] = None) -> List[Dict[str, Any]]:
    return [_report(conn, record) for record in catalog.list_migrations(conn, name)]


def _report(conn: Any, record: catalog.MigrationRecord) -> Dict[str, Any]:
    backfills = catalog.backfills_of(conn, record.name)
    done = sum(b["rows_done"] for b in backfills)
    estimated = sum(b["rows_estimated"] or 0 for b in backfills)
    return {
        "name": record.name,
        "phase": record.phase,
        "in_flight": record.phase in catalog.IN_FLIGHT,
        "tables": list(record.tables),
        "operations": record.operations,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "phase_seconds": {phase: round(seconds, 3) for phase, seconds in record.phase_seconds.items()},
        "rollback_seconds": None if record.rollback_seconds is None else round(record.rollback_seconds, 3),
        "revert_seconds": None if record.revert_seconds is None else round(record.revert_seconds, 3),
        "completed_at": _iso(record.completed_at),
        "revertible_until": _iso(record.revertible_until()),
        "finalized_at": _iso(record.finalized_at),
        "version_schema": record.version_schema,
        "version_schema_drift": _drift(conn, record),
        "old_versions": _old_versions(conn, record),
        "read_verification": catalog.latest_read_verifications(conn, record.name),
        "last_error": record.last_error,
        "progress": dict(backfill_progress(conn, backfills), rows_backfilled=done, rows_estimated=estimated or None,
                         backfills_done=all(b["done"] for b in backfills)),
        "backfills": backfills,
    }


def _iso(value: Any) -> Optional[str]:
    return None if value is None else value.isoformat()


def _old_versions(conn: Any, record: catalog.MigrationRecord) -> Dict[str, Any]:
    """The versions older than this migration's that are still published, and who visibly reads them:
    what finalizing would drop (``wait_for_old_readers`` waits on the same lists)."""
    if not record.version_schema or record.phase in catalog.UNDONE or record.phase == catalog.FINALIZED:
        return {"schemas": [], "readers": {"active": [], "declared": []}}
    older = MigrationVersions(record.name, record.base_schema, record.version_schema).older(conn)
    return {"schemas": older, "readers": old_readers(conn, older)}


def _drift(conn: Any, record: catalog.MigrationRecord) -> List[str]:
    """Views of this migration's version whose columns differ from what was published: edited by hand."""
    if not record.version_schema or not vs.schema_exists(conn, record.version_schema):
        return []
    return vs.shape_drift(conn, record.version_schema)


def record_progress_metrics(metrics: Any, migrations: List[Dict[str, Any]]) -> None:
    """Per migration, series a dashboard or a "migration stuck" alert can read (labelled by migration)."""
    for report in migrations:
        labels = {"migration": report["name"]}
        progress = report["progress"]
        metrics.gauge("migration_in_flight", 1 if report["in_flight"] else 0, labels=labels)
        metrics.gauge("migration_rows_done", progress["rows_done"], labels=labels)
        for name, key in (("migration_progress_percent", "percent"), ("migration_eta_seconds", "eta_seconds"),
                          ("migration_rate_rows_per_second", "rate_rows_per_second")):
            if progress[key] is not None:
                metrics.gauge(name, progress[key], labels=labels)
        updated = datetime.datetime.fromisoformat(report["updated_at"])
        metrics.gauge("migration_updated_timestamp_seconds", round(updated.timestamp(), 3), labels=labels)
        if report["in_flight"]:
            # How long it has been unfinished, by phase: "started for six hours" is a stuck migration,
            # "completed for six hours" is a revert window doing its job.
            created = datetime.datetime.fromisoformat(report["created_at"])
            age = (datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()
            metrics.gauge("unfinished_migration_age_seconds", round(max(age, 0.0), 3), labels=dict(labels, phase=report["phase"]))
