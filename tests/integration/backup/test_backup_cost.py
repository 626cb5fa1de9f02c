"""Cost, energy and carbon in backup, backup_info and backup_retention results, priced by the example inventory's table.

The expected figures are computed here by hand from the listed object sizes
and the shipped example table, not by the engine under test.
"""

from __future__ import annotations

import pytest
import yaml

from tests.harness.collection_path import REPO_ROOT, ensure_collection_importable

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import parse_cost_table  # noqa: E402

pytestmark = pytest.mark.integration

EXAMPLE_VARS = yaml.safe_load((REPO_ROOT / "inventories" / "example" / "group_vars" / "all" / "main.yml").read_text(encoding="utf-8"))
TABLE = EXAMPLE_VARS["keel_cost_table"]
GB = 1024**3
TB = 1024**4


def series_of(metrics, name):
    return {tuple(sorted(entry["labels"].items())): entry["value"] for entry in metrics["series"] if entry["name"] == name}


def backup_bytes(world, tenant="acme"):
    """What the store lists under the tenant's backups: the bytes a provider bills."""
    return sum(item["Size"] for key, item in world.objects(f"pg/{tenant}/backups/").items())


def test_example_table_is_valid_and_prices_every_example_tenant_tier():
    table = parse_cost_table(TABLE)
    tenants = parse_tenants(EXAMPLE_VARS["keel_tenants"])
    tiers = {t.retention.tier for t in tenants} | {t.archive.storage_class for t in tenants if t.archive}
    assert tiers <= set(table.tiers)
    assert table.archive_tier in table.tiers


def test_backup_reports_the_monthly_cost_and_footprint_it_adds(world):
    world.add_tenant("acme")
    backup = world.backup("acme", cost_table=TABLE)
    hot = TABLE["tiers"]["hot"]
    stored = backup_bytes(world)
    assert stored == backup["sizes"]["object"] + backup["sizes"]["manifest"]

    cost = backup["cost"]
    assert cost["currency"] == "USD" and cost["unpriced_tiers"] == []
    assert cost["tiers"]["hot"]["bytes"] == stored
    assert cost["monthly_cost"] == pytest.approx(stored / GB * hot["price_gb_month"])
    energy = stored / TB * hot["kwh_per_tb_month"]
    assert cost["energy_kwh_per_month"] == pytest.approx(energy)
    assert cost["carbon_grams_per_month"] == pytest.approx(energy * hot["gco2e_per_kwh"])
    counters = backup["metrics"]["counters"]
    puts = sum(counters.get(name, 0) for name in ("s3_put_requests", "s3_multipart_starts", "s3_part_uploads", "s3_multipart_completes",
                                                  "s3_list_requests"))
    gets = counters.get("s3_get_requests", 0) + counters.get("s3_head_requests", 0)
    assert cost["requests_cost"] == pytest.approx(puts / 1000 * hot["price_per_1000_put"] + gets / 1000 * hot["price_per_1000_get"])

    labels = (("tenant", "acme"), ("tier", "hot"))
    metrics = backup["metrics"]
    assert series_of(metrics, "storage_monthly_cost")[(("currency", "USD"), *labels)] == pytest.approx(cost["monthly_cost"])
    assert series_of(metrics, "storage_energy_kwh_per_month")[labels] == pytest.approx(energy)
    assert series_of(metrics, "storage_carbon_grams_per_month")[labels] == pytest.approx(energy * hot["gco2e_per_kwh"])
    assert series_of(metrics, "storage_bytes")[labels] == stored


def test_backup_info_reports_cost_per_tenant_and_the_archive_what_if(world):
    world.add_tenant("acme")
    world.add_tenant("globex", schemas=["globex"], retention={"tier": "warm"})
    for tenant in ("acme", "globex"):
        world.backup(tenant)
        world.backup(tenant)
    acme, globex = backup_bytes(world, "acme"), backup_bytes(world, "globex")
    tiers = TABLE["tiers"]
    hot_cost, warm_cost = acme / GB * tiers["hot"]["price_gb_month"], globex / GB * tiers["warm"]["price_gb_month"]

    # Every backup is older than 0 days: the what-if moves them all to the archive tier.
    result, info = world.run("backup_info", cost_table=TABLE, what_if_archive_after_days=0)
    assert result.rc == 0, info
    by_tenant = {report["tenant"]: report for report in info["tenants"]}
    assert by_tenant["acme"]["cost"]["tiers"]["hot"]["bytes"] == acme == by_tenant["acme"]["stored_bytes"]
    assert by_tenant["acme"]["cost"]["monthly_cost"] == pytest.approx(hot_cost)
    assert by_tenant["globex"]["cost"]["tiers"]["warm"]["monthly_cost"] == pytest.approx(warm_cost)
    assert info["cost"]["monthly_cost"] == pytest.approx(hot_cost + warm_cost)
    energy = acme / TB * tiers["hot"]["kwh_per_tb_month"] + globex / TB * tiers["warm"]["kwh_per_tb_month"]
    assert info["cost"]["energy_kwh_per_month"] == pytest.approx(energy)

    what_if = info["what_if"]
    archived = (acme + globex) / GB * tiers["GLACIER_IR"]["price_gb_month"]
    assert what_if["archive_tier"] == "GLACIER_IR" and what_if["moved_backups"] == 4 and what_if["moved_bytes"] == acme + globex
    assert what_if["current"]["monthly_cost"] == pytest.approx(hot_cost + warm_cost)
    assert what_if["what_if"]["monthly_cost"] == pytest.approx(archived)
    assert what_if["saving_percent"] == pytest.approx(round((hot_cost + warm_cost - archived) / (hot_cost + warm_cost) * 100, 2))
    assert what_if["lifecycle_rule"] == {"transition_days": 0, "storage_class": "GLACIER_IR"}
    # Retention (1 day) deletes them long before the archive tier's 90 days: the minimum-storage charge is 89 days' worth.
    assert what_if["early_deletion_cost"] == pytest.approx(archived * 89 / 30)
    assert what_if["tenants"]["acme"]["moved_bytes"] == acme
    labels = (("currency", "USD"), ("tenant", "globex"), ("tier", "warm"))
    assert series_of(info["metrics"], "storage_monthly_cost")[labels] == pytest.approx(warm_cost)

    # Nothing is 30 days old yet: nothing would move, nothing saved.
    result, info = world.run("backup_info", cost_table=TABLE, what_if_archive_after_days=30)
    assert result.rc == 0, info
    assert info["what_if"]["moved_backups"] == 0 and info["what_if"]["saving_percent"] == 0.0


def test_retention_reports_kept_cost_and_refuses_a_bad_table_naming_the_field(world):
    world.add_tenant("acme")
    world.backup("acme")
    result, report = world.run("backup_retention", cost_table=TABLE)
    assert result.rc == 0, report
    kept = backup_bytes(world)
    [tenant] = report["tenants"]
    assert tenant["cost"]["bytes"] == kept
    assert tenant["cost"]["monthly_cost"] == pytest.approx(kept / GB * TABLE["tiers"]["hot"]["price_gb_month"])
    assert report["monthly_cost"] == pytest.approx(tenant["cost"]["monthly_cost"])
    assert report["cost"]["carbon_grams_per_month"] == pytest.approx(kept / TB * 1.4 * 300)
    assert tenant["deleted_cost"]["bytes"] == 0 and report["cost"]["early_deletion_cost"] == 0
    assert series_of(report["metrics"], "storage_monthly_cost")[(("currency", "USD"), ("tenant", "acme"), ("tier", "hot"))] > 0

    bad = {**TABLE, "tiers": {**TABLE["tiers"], "GLACIER_IR": {**TABLE["tiers"]["GLACIER_IR"], "price_gb_month": -1}}}
    for module in ("backup_retention", "backup_info"):
        result, failed = world.run(module, cost_table=bad)
        assert result.rc != 0
        assert failed["field"] == "cost_table.tiers.GLACIER_IR.price_gb_month", failed
        assert "non-negative number" in failed["msg"]
    result, failed = world.run("backup_retention", cost_table=TABLE, price_per_gib_month={"hot": 0.02})
    assert result.rc != 0 and failed["field"] == "price_per_gib_month"
    result, failed = world.run("backup", cost_table=bad, tenant="acme", **world.connection)
    assert result.rc != 0 and failed["field"] == "cost_table.tiers.GLACIER_IR.price_gb_month"


def test_backup_role_passes_the_cost_table_to_backups_and_retention(world):
    world.add_tenant("acme")
    playbook = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: keel.postgres.backup
"""
    role_vars = {
        "backup_tenants": world.tenants, "backup_store": world.s3_store(), "backup_key_provider": world.key_provider,
        "backup_connection": world.connection, "backup_cost_table": TABLE,
        # Ignored once a cost table is given: retention takes one price source.
        "backup_price_table": {"hot": 99},
    }
    result = world.run_playbook(playbook, extra_vars=role_vars)
    assert result.rc == 0, result.stdout
    report = result.task("Publish the backup report as backup_report")["result"]["ansible_facts"]["backup_report"]
    [tenant] = report["tenants"]
    stored = backup_bytes(world)
    assert tenant["status"] == "backed_up" and tenant["cost"]["tiers"]["hot"]["bytes"] == stored
    assert report["retention"]["cost"]["monthly_cost"] == pytest.approx(stored / GB * TABLE["tiers"]["hot"]["price_gb_month"])
    assert float(report["retention"]["monthly_cost"]) == pytest.approx(stored / GB * TABLE["tiers"]["hot"]["price_gb_month"])
