from __future__ import annotations

import datetime

from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_FAILED, MAC_VERIFIED, BackupEntry
from ansible_collections.keel.postgres.plugins.module_utils.preflight.backup_coverage import coverage_of, in_scope, needs_coverage
from ansible_collections.keel.postgres.plugins.module_utils.preflight.gates import GatePolicy, evaluate_gates

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.timezone.utc)
DAY = 86400.0
MIGRATION = {"name": "add_vip", "state": "started", "tables": ["public.customers"], "started_at": "2026-11-26T10:00:00+00:00",
             "completed_at": None}


def backup(backup_id, migrations=(), verified=True, mac=MAC_VERIFIED, with_provenance=True, schemas=()):
    manifest = {"scope": {"database": "shop", "schemas": list(schemas)}}
    if with_provenance:
        manifest["provenance"] = {"migrations": [{"name": name, "state": state} for name, state in migrations]}
    verification = {"outcome": "passed"} if verified else None
    return "acme", BackupEntry(tenant="acme", backup_id=backup_id, manifest=manifest, mac_status=mac, verification=verification)


def test_which_migrations_need_coverage():
    assert needs_coverage({"state": "started"}, NOW, DAY)
    assert needs_coverage({"state": "completed", "completed_at": "2026-01-01T00:00:00+00:00"}, NOW, DAY), "still revertible"
    assert not needs_coverage({"state": "rolled_back"}, NOW, DAY)
    assert not needs_coverage({"state": "reverted"}, NOW, DAY)
    assert needs_coverage({"state": "finalized", "completed_at": "2026-11-26T00:00:00+00:00"}, NOW, DAY)
    assert not needs_coverage({"state": "finalized", "completed_at": "2026-11-24T00:00:00+00:00"}, NOW, DAY)


def test_the_newest_verified_backup_from_before_the_start_covers():
    covered = coverage_of(MIGRATION, [backup("20261101T000000Z-aa"), backup("20261120T000000Z-bb"),
                                      backup("20261126T110000Z-cc", [("add_vip", "started")])], "shop")
    assert covered["covered"] is True and covered["backup_id"] == "20261120T000000Z-bb" and covered["reason"] is None


def test_a_rolled_back_then_restarted_migration_is_covered_by_a_backup_showing_the_rollback():
    assert coverage_of(MIGRATION, [backup("b1", [("add_vip", "rolled_back")])], "shop")["covered"] is True


def test_uncovered_migrations_say_why():
    assert "no backup of database 'shop'" in coverage_of(MIGRATION, [], "shop")["reason"]
    assert "has an authenticated manifest with provenance" in coverage_of(MIGRATION, [backup("b1", mac=MAC_FAILED)], "shop")["reason"]
    assert "has an authenticated manifest with provenance" in coverage_of(MIGRATION, [backup("b1", with_provenance=False)], "shop")["reason"]
    after = coverage_of(MIGRATION, [backup("b1", [("add_vip", "started")])], "shop")
    assert after["covered"] is False and "taken after it started" in after["reason"]
    unverified = coverage_of(MIGRATION, [backup("b1", verified=False)], "shop")
    assert unverified["reason"] == "1 backup(s) precede its start, but none passed restore verification (newest b1: never verified)"


def test_a_backup_of_other_schemas_does_not_cover():
    assert not in_scope(MIGRATION, {"scope": {"schemas": ["globex"]}})
    assert in_scope(MIGRATION, {"scope": {"schemas": []}})
    assert coverage_of(MIGRATION, [backup("b1", schemas=["globex"])], "shop")["covered"] is False


def test_the_gate_fails_per_uncovered_migration_only_when_asked():
    coverage = [dict(coverage_of(MIGRATION, [], "shop")), dict(MIGRATION, name="other", covered=True, reason=None)]
    base = {"server": {"in_recovery": False}, "transactions": [], "tables": [], "client_tools": [],
            "replication": {"standbys": [], "self": None}, "pg_stat_statements": {"usable": True}, "backup_coverage": coverage}
    assert evaluate_gates(GatePolicy(), base) == []
    [failure] = evaluate_gates(GatePolicy(require_backup_coverage=True), base)
    assert (failure["check"], failure["subject"], failure["value"], failure["threshold"]) == ("require_backup_coverage", "add_vip", False, True)
    assert failure["message"].startswith("migration add_vip (started, started 2026-11-26T10:00:00+00:00) is not covered by a verified backup: no backup")
