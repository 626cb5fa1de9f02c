"""Retention decisions and cost on synthetic catalog entries: every rule, one at a time."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_FAILED, MAC_KEY_SHREDDED, MAC_VERIFIED, BackupEntry
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import IncompleteUpload, StoredObject
from ansible_collections.keel.postgres.plugins.module_utils.backup.retention import (
    DELETE,
    KEEP,
    decide,
    locks_longer_than_policy,
    stale_uploads,
    storage_cost,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc)
GRACE = datetime.timedelta(hours=6)


def tenant(**retention):
    policy = {"days": 30}
    policy.update(retention)
    return parse_tenants([{"name": "acme", "database": "db", "retention": policy}])[0]


def entry(days_ago, published=True, mac=MAC_VERIFIED, lock=None, lock_days=0, hold=False, verified=None, size=100):
    created = NOW - datetime.timedelta(days=days_ago)
    backup_id = layout.new_backup_id(created)
    retain = created + datetime.timedelta(days=lock_days) if lock else None
    objects = {layout.data_key("acme", backup_id): StoredObject(layout.data_key("acme", backup_id), size, lock_mode=lock, retain_until=retain, legal_hold=hold)}
    if published:
        key = layout.manifest_key("acme", backup_id)
        objects[key] = StoredObject(key, 10, lock_mode=lock, retain_until=retain, legal_hold=hold)
    result = BackupEntry("acme", backup_id, objects, manifest={"created_at": created.isoformat()} if published else None, mac_status=mac)
    if verified:
        result.verification = {"outcome": verified}
    return result


def actions(decisions):
    return [(d.action, d.reason) for d in decisions]


def test_young_backups_stay_and_old_unlocked_ones_go():
    old, young = entry(40), entry(5)
    decisions = decide(tenant(), [old, young], NOW, GRACE)
    assert [d.action for d in decisions] == [DELETE, KEEP]
    assert decisions[1].reason.startswith("within retention")


def test_min_copies_counts_only_readable_backups():
    shredded, tampered, old, older = entry(60, mac=MAC_KEY_SHREDDED), entry(55, mac=MAC_FAILED), entry(50), entry(45)
    decisions = decide(tenant(min_copies=2), [shredded, tampered, old, older], NOW, GRACE)
    assert [d.action for d in decisions] == [DELETE, KEEP, KEEP, KEEP]
    assert "MAC" in decisions[1].reason
    assert "min_copies" in decisions[2].reason and "min_copies" in decisions[3].reason


def test_newest_verified_backup_is_kept_even_when_expired():
    verified_old, verified_newer, failed = entry(90, verified="passed"), entry(80, verified="passed"), entry(70, verified="failed")
    decisions = decide(tenant(), [verified_old, verified_newer, failed, entry(1)], NOW, GRACE)
    assert [d.action for d in decisions] == [DELETE, KEEP, DELETE, KEEP]
    assert "verification" in decisions[1].reason


@pytest.mark.parametrize(
    "mode, bypass, action",
    [("COMPLIANCE", False, KEEP), ("COMPLIANCE", True, KEEP), ("GOVERNANCE", False, KEEP), ("GOVERNANCE", True, DELETE)],
)
def test_unlapsed_locks_block_deletion_unless_governance_is_bypassed(mode, bypass, action):
    locked = entry(40, lock=mode, lock_days=60)
    decision = decide(tenant(), [locked, entry(1)], NOW, GRACE, bypass_governance=bypass)[0]
    assert decision.action == action
    if action == KEEP:
        assert decision.reason.startswith(mode + " lock until")


def test_legal_hold_always_wins():
    decision = decide(tenant(), [entry(400, hold=True), entry(1)], NOW, GRACE, bypass_governance=True)[0]
    assert (decision.action, decision.reason) == (KEEP, "legal hold")


def test_orphans_go_after_the_grace_period_and_their_lock():
    running, orphan = entry(0.1, published=False), entry(2, published=False)
    locked_orphan = entry(2, published=False, lock="COMPLIANCE", lock_days=30)
    decisions = decide(tenant(), [running, orphan, locked_orphan], NOW, GRACE)
    assert [d.action for d in decisions] == [KEEP, DELETE, KEEP]
    assert "may still be running" in decisions[0].reason
    assert "orphan" in decisions[1].reason


def test_locks_longer_than_the_policy_are_found():
    assert locks_longer_than_policy(tenant(days=30), [entry(1, lock="COMPLIANCE", lock_days=30)]) == []
    long_lock = entry(1, lock="COMPLIANCE", lock_days=365)
    assert locks_longer_than_policy(tenant(days=30), [long_lock]) == [long_lock]


def test_stale_uploads_respect_the_grace_period():
    uploads = [IncompleteUpload("a", "1", NOW - datetime.timedelta(hours=7)), IncompleteUpload("b", "2", NOW - datetime.timedelta(minutes=5))]
    assert [u.key for u in stale_uploads(uploads, NOW, GRACE)] == ["a"]


def test_cost_prices_archived_backups_at_their_storage_class():
    policy = parse_tenants([{"name": "acme", "database": "db", "retention": {"days": 90, "tier": "hot"},
                             "archive": {"after_days": 30, "storage_class": "GLACIER_IR"}}])[0]
    gib = 2**30
    kept = [entry(60, size=gib - 10), entry(10, size=2 * gib - 10)]
    cost = storage_cost(policy, kept, NOW, {"hot": 0.02, "GLACIER_IR": 0.004})
    assert cost["tiers"]["GLACIER_IR"] == {"bytes": gib, "backups": 1, "monthly_cost": pytest.approx(0.004)}
    assert cost["tiers"]["hot"]["monthly_cost"] == pytest.approx(0.04)
    assert cost["monthly_cost"] == pytest.approx(0.044)
    assert storage_cost(policy, kept, NOW, {"hot": 0.02})["monthly_cost"] is None
