from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import (
    GB,
    TB,
    CostTable,
    StoredSet,
    TierPrice,
    early_deletion_charge,
    footprint,
    parse_cost_table,
    record_cost_gauges,
    request_cost,
    tier_report,
    what_if_archive,
)
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

TABLE = {
    "currency": "EUR",
    "archive_tier": "archive",
    "tiers": {
        "hot": {"price_gb_month": 0.02, "price_per_1000_put": 0.005, "price_per_1000_get": 0.0004,
                "kwh_per_tb_month": 1.0, "gco2e_per_kwh": 300},
        "archive": {"price_gb_month": 0.004, "price_per_1000_put": 0.02, "price_gb_retrieved": 0.01,
                    "min_storage_days": 90, "kwh_per_tb_month": 0.25, "gco2e_per_kwh": 300},
    },
}


def test_table_is_parsed_with_defaults_for_missing_prices():
    table = parse_cost_table(TABLE)
    assert table.currency == "EUR" and table.archive_tier == "archive"
    assert table.tiers["hot"] == TierPrice(price_gb_month=0.02, price_per_1000_put=0.005, price_per_1000_get=0.0004,
                                           kwh_per_tb_month=1.0, gco2e_per_kwh=300.0)
    assert table.tiers["archive"].price_per_1000_get == 0.0


def test_no_table_means_no_cost():
    assert parse_cost_table(None) is None
    assert parse_cost_table({}) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tiers": {"archive": {"price_gb_month": -1}}}, "cost_table.tiers.archive.price_gb_month"),
        ({"tiers": {"archive": {"price_gb_month": "cheap"}}}, "cost_table.tiers.archive.price_gb_month"),
        ({"tiers": {"archive": {"price_gb_month": True}}}, "cost_table.tiers.archive.price_gb_month"),
        ({"tiers": {"hot": {"price_gb_month": 1, "price_per_put": 1}}}, "cost_table.tiers.hot.price_per_put"),
        ({"tiers": {"hot": {"price_per_1000_put": 1}}}, "cost_table.tiers.hot.price_gb_month"),
        ({"tiers": {"hot": 0.02}}, "cost_table.tiers.hot"),
        ({"tiers": {}}, "cost_table.tiers"),
        ({"currency": ""}, "cost_table.currency"),
        ({"archive_tier": "glacier"}, "cost_table.archive_tier"),
        ({"price": 1}, "cost_table.price"),
    ],
)
def test_a_bad_table_is_refused_naming_the_field(change, field):
    table = dict(TABLE, **change)
    with pytest.raises(InvalidOption) as raised:
        parse_cost_table(table)
    assert raised.value.field == field


def test_footprint_is_bytes_times_price_and_energy_times_intensity():
    price = parse_cost_table(TABLE).tiers["hot"]
    figures = footprint(3 * GB, price)
    assert figures["monthly_cost"] == pytest.approx(0.06)
    assert figures["energy_kwh_per_month"] == pytest.approx(3 * GB / TB * 1.0)
    assert figures["carbon_grams_per_month"] == pytest.approx(3 * GB / TB * 300)


def test_requests_are_priced_by_billing_class_and_deletes_are_free():
    price = parse_cost_table(TABLE).tiers["hot"]
    counts = {"s3_put_requests": 2, "s3_part_uploads": 3, "s3_multipart_starts": 1, "s3_multipart_completes": 1,
              "s3_list_requests": 3, "s3_head_requests": 10, "s3_get_requests": 5, "s3_delete_requests": 100}
    assert request_cost(counts, price) == pytest.approx(10 / 1000 * 0.005 + 15 / 1000 * 0.0004)


def test_early_deletion_is_charged_for_the_missing_minimum_days():
    archive = parse_cost_table(TABLE).tiers["archive"]
    assert early_deletion_charge(GB, 30, archive) == pytest.approx(0.004 * 60 / 30)
    assert early_deletion_charge(GB, 120, archive) == 0


def test_tier_report_sums_per_tier_and_nulls_totals_for_an_unpriced_tier():
    table = parse_cost_table(TABLE)
    report = tier_report([StoredSet("hot", GB), StoredSet("hot", GB), StoredSet("archive", 2 * GB)], table)
    assert report["tiers"]["hot"]["bytes"] == 2 * GB and report["tiers"]["hot"]["backups"] == 2
    assert report["monthly_cost"] == pytest.approx(2 * 0.02 + 2 * 0.004)
    assert report["unpriced_tiers"] == []
    partial = tier_report([StoredSet("hot", GB), StoredSet("cold", GB)], table)
    assert partial["unpriced_tiers"] == ["cold"] and partial["monthly_cost"] is None
    assert partial["tiers"]["hot"]["monthly_cost"] == pytest.approx(0.02)


def test_what_if_moves_only_backups_older_than_the_threshold():
    table = parse_cost_table(TABLE)
    sets = [StoredSet("hot", GB, age_days=age, objects=2, delete_after_days=100) for age in (1, 10, 40, 70)]
    report = what_if_archive(sets, 30, table)
    assert report["moved_backups"] == 2 and report["moved_bytes"] == 2 * GB
    assert report["current"]["monthly_cost"] == pytest.approx(4 * 0.02)
    assert report["what_if"]["monthly_cost"] == pytest.approx(2 * 0.02 + 2 * 0.004)
    assert report["saving_percent"] == pytest.approx(40.0)
    assert report["energy_saving_percent"] == pytest.approx((4 - 2.5) / 4 * 100)
    assert report["transition_cost"] == pytest.approx(4 / 1000 * 0.02)
    # Each moved backup is deleted 70 days after moving: 20 days short of the archive tier's 90.
    assert report["early_deletion_cost"] == pytest.approx(2 * 0.004 * 20 / 30)
    assert report["lifecycle_rule"] == {"transition_days": 30, "storage_class": "archive"}


def test_what_if_needs_an_archive_tier():
    table = CostTable(currency="EUR", tiers={"hot": TierPrice(price_gb_month=0.02)})
    with pytest.raises(InvalidOption) as raised:
        what_if_archive([StoredSet("hot", GB)], 30, table)
    assert raised.value.field == "cost_table.archive_tier"


def test_gauges_carry_tenant_tier_and_currency_labels():
    metrics = RunMetrics()
    report = tier_report([StoredSet("hot", GB)], parse_cost_table(TABLE))
    record_cost_gauges(metrics, "acme", report)
    series = {(entry["name"], tuple(sorted(entry["labels"].items()))): entry["value"] for entry in metrics.series()}
    assert series[("storage_monthly_cost", (("currency", "EUR"), ("tenant", "acme"), ("tier", "hot")))] == pytest.approx(0.02)
    assert series[("storage_bytes", (("tenant", "acme"), ("tier", "hot")))] == GB
    assert ("storage_carbon_grams_per_month", (("tenant", "acme"), ("tier", "hot"))) in series
