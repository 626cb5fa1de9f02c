"""keel.postgres.backup_retention through ansible-playbook, on backups made by the real engine.

Retention is about age, and a test cannot wait 30 days: the older backups are
made by the backup engine itself (the same code the module runs) with its
clock set back, for a tenant without a store lock, so they are real, complete,
MAC'd backups whose only difference is their creation time.
"""

from __future__ import annotations

import datetime

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from tests.harness.collection_path import ensure_collection_importable
from tests.integration.backup.world import BackupWorld

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils import pg  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup import layout  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_request import backup_request_from  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_run import BackupRun  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import open_store_and_keys  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import open_store  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.verification_record import seal_record  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics  # noqa: E402
from ansible_collections.keel.postgres.plugins.modules.backup import argument_spec as backup_argument_spec  # noqa: E402

pytestmark = pytest.mark.integration

NOW = datetime.datetime.now(datetime.timezone.utc)


def backdated_backup(world: BackupWorld, tenant: str, days_ago: int) -> str:
    """A complete backup made by the engine with its clock `days_ago` days back; returns its id."""
    spec = {**pg.connection_argument_spec(), **backup_argument_spec()}
    params = ArgumentSpecValidator(spec).validate({**world.connection, **world.module_args(tenant=tenant)}).validated_parameters
    request = backup_request_from(params)
    store, keys = open_store_and_keys(params)
    run = BackupRun(request, store, keys, connect=lambda database: pg.connect(dict(params, db=database), "keel-test", autocommit=True),
                    metrics=RunMetrics(), conn_kwargs=pg.connection_kwargs(dict(params, db=request.database), "keel-test"))
    return run.execute(NOW - datetime.timedelta(days=days_ago, minutes=1))["backup_id"]


def record_verification(world: BackupWorld, tenant: str, backup_id: str, outcome: str) -> None:
    """What restore verification leaves behind: the record, sealed with the backup's record key as restore_verify seals it."""
    params = ArgumentSpecValidator({"store": {"type": "dict", "options": backup_argument_spec()["store"]["options"]}}).validate(
        {"store": world.s3_store()}).validated_parameters
    store = open_store(params["store"])
    record = {"backup_id": backup_id, "tenant": tenant, "outcome": outcome, "at": NOW.isoformat()}
    mac_key = BackupReader(store, world.keys(), tenant, backup_id).record_mac_key()
    store.put_bytes(layout.verification_key(tenant, backup_id, NOW), seal_record(record, mac_key), Lock())


def ids(entries):
    return sorted(entry["backup_id"] for entry in entries)


def test_retention_deletes_only_what_every_rule_lets_go(world):
    world.add_tenant("acme", retention={"days": 30, "min_copies": 2, "tier": "hot"}, archive={"after_days": 20, "storage_class": "GLACIER_IR"})
    ages = {age: backdated_backup(world, "acme", age) for age in (60, 50, 40, 35)}
    fresh = world.backup("acme")["backup_id"]
    record_verification(world, "acme", ages[60], "passed")
    record_verification(world, "acme", ages[50], "failed")
    prices = {"hot": 0.023, "GLACIER_IR": 0.004}

    result, plan = world.run("backup_retention", check=True, price_per_gib_month=prices)
    assert result.rc == 0, plan
    [report] = plan["tenants"]
    assert ids(report["deleted"]) == sorted([ages[50], ages[40]])
    reasons = {entry["backup_id"]: entry["reason"] for entry in report["kept"]}
    assert reasons[fresh].startswith("within retention")
    assert "min_copies" in reasons[ages[35]]
    assert "passed restore verification" in reasons[ages[60]]
    assert plan["changed"] is True
    assert len(world.run("backup_info", tenant="acme")[1]["tenants"][0]["backups"]) == 5, "check mode deletes nothing"

    result, applied = world.run("backup_retention", price_per_gib_month=prices)
    assert result.rc == 0, applied
    [report] = applied["tenants"]
    assert ids(report["deleted"]) == sorted([ages[50], ages[40]])
    assert applied["deleted_bytes"] == report["deleted_bytes"] > 0
    assert report["audit"]["audit_object"].startswith("audit/")
    listed = world.run("backup_info", tenant="acme")[1]["tenants"][0]["backups"]
    assert ids(listed) == sorted([ages[60], ages[35], fresh])
    assert not [key for key in world.objects() if ages[50] in key], "verification records go with their backup"

    cost = report["cost"]
    assert set(cost["tiers"]) == {"hot", "GLACIER_IR"}
    assert cost["tiers"]["GLACIER_IR"]["backups"] == 2 and cost["tiers"]["hot"]["backups"] == 1
    expected = sum(tier["bytes"] / 2**30 * prices[name] for name, tier in cost["tiers"].items())
    assert cost["monthly_cost"] == pytest.approx(expected, rel=1e-3)

    result, again = world.run("backup_retention", price_per_gib_month=prices)
    assert result.rc == 0, again
    assert again["changed"] is False and again["tenants"][0]["deleted"] == []


def test_unpriced_tier_makes_the_total_unknown_not_zero(world):
    world.add_tenant("acme", retention={"days": 30, "tier": "warm"})
    world.backup("acme")
    result, report = world.run("backup_retention", check=True, price_per_gib_month={"hot": 0.023})
    assert result.rc == 0, report
    assert report["monthly_cost"] is None
    assert report["tenants"][0]["cost"]["unpriced_tiers"] == ["warm"]


def test_policy_shorter_than_existing_locks_is_refused_before_deleting(world):
    world.add_tenant("acme", retention={"days": 3, "lock_mode": "governance"})
    backup = world.backup("acme")
    world.tenants[0]["retention"]["days"] = 1

    result, refused = world.run("backup_retention")
    assert result.rc != 0
    assert refused["field"] == "tenants[0].retention.days"
    assert "shorter than the store lock" in refused["msg"] and "Nothing was deleted" in refused["msg"]

    result, accepted = world.run("backup_retention", accept_longer_locks=True)
    assert result.rc == 0, accepted
    assert [entry["backup_id"] for entry in accepted["tenants"][0]["kept"]] == [backup["backup_id"]]


def test_bad_policy_names_the_field(world):
    world.add_tenant("acme", retention={"days": 30, "lock_mode": "forever"})
    result, refused = world.run("backup_retention")
    assert result.rc != 0
    assert refused["field"] == "tenants[0].retention.lock_mode"
