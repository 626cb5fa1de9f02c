from __future__ import annotations

import datetime
import os
import random

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi import html_report, kpi_rules, kpi_sources
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import build_document, compare
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import LatencyQuery, QuerySamples, SamplerSettings
from ansible_collections.keel.postgres.plugins.module_utils.kpi.report_files import write_report

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


def measurement(samples_by_name, runs=100):
    results = [QuerySamples(query=LatencyQuery(name=name, sql="SELECT {0!r}".format(name)), samples_ms=list(samples), rows=1)
               for name, samples in samples_by_name.items()]
    return build_document(results, SamplerSettings(runs=runs), "15.6", 150006, "app", measured_at="2025-01-31T12:00:00Z")


def noisy(seed, count=100, center=1.0, spread=0.05):
    rng = random.Random(seed)
    return [max(0.01, rng.gauss(center, spread)) for index in range(count)]


# -- latency ---------------------------------------------------------------------------------------------------------


def test_a_significant_p99_increase_at_the_threshold_breaches_per_query_and_overall():
    comparison = compare(measurement({"lookup": noisy(1), "small": noisy(2)}),
                         measurement({"lookup": noisy(3, center=3.0), "small": noisy(4)}))
    kpi = kpi_rules.evaluate_latency(comparison, 10)
    rows = {row["name"]: row for row in kpi["evidence"]["queries"]}
    assert rows["lookup"]["breached"] is True and rows["lookup"]["significant"] is True
    assert rows["small"]["breached"] is False
    assert kpi["evidence"]["overall"]["breached"] is True
    assert kpi["passed"] is False and kpi["value"] == rows["lookup"]["p99_delta_pct"] > 100
    assert len(kpi["breaches"]) == 2
    assert kpi["breaches"][0].startswith("latency: p99 of query 'lookup' rose ") and "threshold 10%" in kpi["breaches"][0]


def test_unchanged_latency_passes():
    comparison = compare(measurement({"lookup": noisy(1)}), measurement({"lookup": noisy(1)}))
    kpi = kpi_rules.evaluate_latency(comparison)
    assert kpi["passed"] is True and kpi["value"] == 0.0 and kpi["warnings"] == []


def entry(name, delta, low, high=None, reliable=True):
    high = delta + 20.0 if high is None else high
    return {"name": name, "baseline": {"p99": 1.0}, "current": {"p99": 1.0 + delta / 100}, "p99_delta_pct": delta, "p99_ratio": 1 + delta / 100,
            "p99_ratio_ci": [1 + low / 100, 1 + high / 100], "p99_delta_pct_ci": [low, high], "significant": low > 0, "p99_reliable": reliable}


@pytest.mark.parametrize(("delta", "low", "breached", "inconclusive"), [
    (30.0, 10.0, True, False),  # the whole interval at or above the threshold
    (30.0, 9.99, False, True),  # the point estimate is, the interval reaches below: cannot tell from noise
    (12.0, 2.0, False, True),
    (9.99, 5.0, False, False),
    (-20.0, -30.0, False, False),
])
def test_breach_needs_the_whole_interval_at_or_above_the_threshold(delta, low, breached, inconclusive):
    kpi = kpi_rules.evaluate_latency({"queries": [entry("q", delta, low)], "overall": None}, 10)
    (row,) = kpi["evidence"]["queries"]
    assert (row["breached"], row["inconclusive"]) == (breached, inconclusive)
    assert kpi["passed"] is (not breached)
    assert any("inconclusive" in warning for warning in kpi["warnings"]) is inconclusive


def test_inconclusive_fails_when_asked():
    kpi = kpi_rules.evaluate_latency({"queries": [entry("q", 30.0, 2.0)], "overall": None}, 10, inconclusive="fail")
    assert kpi["passed"] is False and "latency_inconclusive" in kpi["breaches"][0] and "rose 30.0%" in kpi["breaches"][0]


def netted(name, delta, low, net_delta, net_low):
    """A comparison entry with its change net of the host reference."""
    row = entry(name, delta, low)
    row.update({"p99_net_delta_pct": net_delta, "p99_net_delta_pct_ci": [net_low, net_delta + 20.0], "p99_net_ratio": 1 + net_delta / 100,
                "p99_net_ratio_ci": [1 + net_low / 100, 1 + (net_delta + 20.0) / 100], "net_significant": net_low > 0})
    return row


@pytest.mark.parametrize(("raw", "net", "breached", "why"), [
    ((30.0, 12.0), (28.0, 11.0), True, None),  # a regression: the reference did not move
    ((60.0, 40.0), (2.0, -8.0), False, "the host reference rose with it"),  # the host was busier: raw only
    ((8.0, -5.0), (25.0, 11.0), False, "the host was quieter"),  # a regression hidden by a quieter host: net only
    ((5.0, -5.0), (4.0, -6.0), False, None),
])
def test_a_breach_needs_the_raw_and_the_net_change_beyond_the_threshold(raw, net, breached, why):
    kpi = kpi_rules.evaluate_latency({"queries": [netted("q", raw[0], raw[1], net[0], net[1])], "overall": None}, 10)
    (row,) = kpi["evidence"]["queries"]
    assert row["breached"] is breached and kpi["passed"] is (not breached)
    assert row["p99_net_delta_pct"] == net[0] and row["net_breached"] is (net[1] >= 10)
    assert row["inconclusive"] is (why is not None)
    if why:
        assert any(why in warning for warning in kpi["warnings"]), kpi["warnings"]
        assert "net of the host reference {0:+.1f}%".format(net[0]) in kpi["warnings"][0]
        strict = kpi_rules.evaluate_latency({"queries": [netted("q", raw[0], raw[1], net[0], net[1])], "overall": None}, 10, inconclusive="fail")
        assert strict["passed"] is False and why in strict["breaches"][0]
    if breached:
        assert "net of the host reference +28.0%, CI +11.0% .. +48.0%" in kpi["breaches"][0]


def test_a_host_reference_that_rose_is_named_in_the_warnings_and_the_evidence():
    reference = {"sql": "SELECT 1", "usable": True, "reason": None, "baseline": {"p99": 10.0}, "current": {"p99": 16.0}, "p99_delta_pct": 60.0,
                 "p99_delta_pct_ci": [41.0, 75.0], "significant": True}
    kpi = kpi_rules.evaluate_latency({"queries": [netted("q", 55.0, 35.0, 1.0, -9.0)], "overall": None, "reference": reference}, 10)
    assert kpi["passed"] is True
    assert kpi["evidence"]["reference"] == {"sql": "SELECT 1", "usable": True, "reason": None, "baseline_p99_ms": 10.0, "current_p99_ms": 16.0,
                                            "p99_delta_pct": 60.0, "p99_delta_pct_ci": [41.0, 75.0]}
    assert any("the host reference, which no schema change can slow, rose 60.0% at p99 (95% CI +41.0% .. +75.0%)" in warning
               for warning in kpi["warnings"])
    page = html_report.render(kpi_rules.summarize([kpi]), "t")
    assert "Host reference <code>SELECT 1</code>" in page and "net of host reference" in page


def test_an_unreliable_p99_is_a_warning_not_a_silent_pass():
    kpi = kpi_rules.evaluate_latency({"queries": [entry("q", 2.0, -5.0, reliable=False)], "overall": entry("overall", 2.0, -5.0, reliable=False)})
    assert kpi["passed"] is True
    assert any("'q' is unreliable" in warning for warning in kpi["warnings"])
    assert any("overall is unreliable" in warning for warning in kpi["warnings"])


def test_an_empty_comparison_warns():
    kpi = kpi_rules.evaluate_latency({"queries": [], "overall": None, "missing_in_current": ["gone"]})
    assert kpi["value"] is None and kpi["passed"] is True
    assert any("no query measured on both sides" in warning for warning in kpi["warnings"])
    assert any("'gone'" in warning for warning in kpi["warnings"])


# -- rollback MTTR ---------------------------------------------------------------------------------------------------


def test_mttr_is_the_longest_rollback_with_drill_samples_counted():
    rollbacks = [{"name": "a", "rollback_seconds": 30.0, "rolled_back_at": "x"}, {"name": "b", "rollback_seconds": 90.0, "rolled_back_at": "y"}]
    kpi = kpi_rules.evaluate_mttr(rollbacks, [60.0], 900)
    assert kpi["value"] == 90.0 and kpi["passed"] is True
    assert kpi["evidence"]["mean_seconds"] == 60.0 and kpi["evidence"]["count"] == 3


def test_mttr_at_the_threshold_breaches_naming_the_migration():
    kpi = kpi_rules.evaluate_mttr([{"name": "slow", "rollback_seconds": 900.0, "rolled_back_at": None}], [], 900)
    assert kpi["passed"] is False
    assert kpi["breaches"] == ["rollback_mttr: longest rollback took 900.0s (migration 'slow'), threshold 900s"]
    drill = kpi_rules.evaluate_mttr([], [1200.0], 900)
    assert "drill sample" in drill["breaches"][0]


def test_no_rollback_is_a_warning():
    kpi = kpi_rules.evaluate_mttr([], [])
    assert kpi["value"] is None and kpi["passed"] is True and "nothing measured" in kpi["warnings"][0]


# -- restore success -------------------------------------------------------------------------------------------------


def record(outcome, days_ago, tier=None, backup_id="b1"):
    item = {"outcome": outcome, "at": (NOW - datetime.timedelta(days=days_ago)).isoformat(), "backup_id": backup_id}
    if tier:
        item["tier"] = tier
    return item


def test_restore_rate_per_tenant_and_tier_within_the_window():
    tenants = [
        {"name": "acme", "tier": "hot", "records": [record("passed", 1), record("failed", 2, backup_id="bad"), record("passed", 3, tier="cold"),
                                                    record("failed", 200)]},
        {"name": "beta", "tier": "hot", "records": [record("passed", 5)]},
    ]
    kpi = kpi_rules.evaluate_restore(tenants, NOW, 90 * 86400)
    groups = {(group["tenant"], group["tier"]): group for group in kpi["evidence"]["groups"]}
    assert groups[("acme", "hot")]["success_pct"] == 50.0 and groups[("acme", "hot")]["total"] == 2
    assert groups[("acme", "hot")]["failures"][0]["backup_id"] == "bad"
    assert groups[("acme", "cold")]["success_pct"] == 100.0
    assert groups[("beta", "hot")]["success_ratio"] == 1.0
    assert kpi["value"] == 50.0 and kpi["passed"] is False
    assert kpi["breaches"] == ["restore_success: tenant 'acme' tier 'hot' 50.0% of 2 verification(s) passed, threshold 100%"]


def test_a_tenant_without_verification_breaches_only_when_required():
    tenants = [{"name": "acme", "tier": "hot", "records": [record("passed", 100)]}]
    required = kpi_rules.evaluate_restore(tenants, NOW, 90 * 86400)
    assert required["passed"] is False and "no restore verification in the window" in required["breaches"][0]
    optional = kpi_rules.evaluate_restore(tenants, NOW, 90 * 86400, require_verification=False)
    assert optional["passed"] is True and optional["warnings"]


def test_unreadable_and_undated_records():
    tenants = [{"name": "acme", "tier": "hot", "records": [record("passed", 1), {"outcome": "unreadable", "at": record("x", 1)["at"]},
                                                           {"outcome": "passed", "at": "not a time"}]}]
    kpi = kpi_rules.evaluate_restore(tenants, NOW, 90 * 86400)
    assert kpi["value"] == 50.0
    assert "have no readable time" in kpi["warnings"][0]


def test_parse_time():
    assert kpi_rules.parse_time("2025-03-01T12:00:00Z") == NOW
    assert kpi_rules.parse_time("2025-03-01T12:00:00") == NOW
    assert kpi_rules.parse_time("nope") is None and kpi_rules.parse_time(None) is None


# -- summary, sources, files, html -----------------------------------------------------------------------------------


def test_summary_lists_every_breach_with_value_and_threshold():
    evaluation = kpi_rules.summarize([kpi_rules.evaluate_mttr([], [1000.0], 900), kpi_rules.evaluate_mttr([], [1.0], 900)])
    assert evaluation["passed"] is False
    assert evaluation["breaches"] == [{"kpi": "rollback_mttr", "value": 1000.0, "threshold": 900,
                                       "message": "rollback_mttr: longest rollback took 1000.0s (drill sample), threshold 900s"}]
    assert kpi_rules.failure_message(evaluation).startswith("KPI breached (1): rollback_mttr: longest rollback took 1000.0s")


class FakeObject:
    def __init__(self, key):
        self.key = key


class FakeStore:
    def __init__(self, objects):
        self.objects = objects
        self.read = []

    def list(self, prefix):
        return iter([FakeObject(key) for key in sorted(self.objects) if key.startswith(prefix)])

    def get_bytes(self, key):
        self.read.append(key)
        return self.objects[key]


def test_verification_records_reads_every_record_skipping_old_keys():
    store = FakeStore({
        "acme/verifications/b1/20250228T000000000000Z-aaaaaa.json": b'{"outcome": "passed", "at": "2025-02-28T00:00:00+00:00", "tier": "hot"}',
        "acme/verifications/b1/20250301T000000000000Z-bbbbbb.json": b"not json",
        "acme/verifications/b0/20240101T000000000000Z-cccccc.json": b'{"outcome": "failed"}',
        "acme/verifications/stray.json": b"{}",
        "acme2/verifications/b1/20250228T000000000000Z-aaaaaa.json": b'{"outcome": "failed"}',
    })
    records = kpi_sources.verification_records(store, "acme", NOW - datetime.timedelta(days=90))
    assert [(item["backup_id"], item["outcome"]) for item in records] == [("b1", "passed"), ("b1", "unreadable")]
    assert records[1]["at"] == "2025-03-01T00:00:00+00:00"
    assert not any("20240101" in key for key in store.read)


def test_report_files_change_only_when_content_changes(tmp_path):
    path = str(tmp_path / "kpi.prom")
    assert write_report(path, "a 1\n", "prometheus_path", check_mode=True) == {"path": path, "changed": True, "written": False}
    assert not os.path.exists(path)
    assert write_report(path, "a 1\n", "prometheus_path")["written"] is True
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert write_report(path, "a 1\n", "prometheus_path") == {"path": path, "changed": False, "written": False}
    assert write_report(path, "a 2\n", "prometheus_path")["changed"] is True
    assert os.listdir(str(tmp_path)) == ["kpi.prom"], "no temporary file left behind"
    with pytest.raises(InvalidOption) as raised:
        write_report(str(tmp_path / "missing" / "x"), "", "html_path")
    assert raised.value.field == "html_path"


def test_html_report_is_self_contained_and_escaped():
    hostile = '<script>alert("x")</script>'
    comparison = compare(measurement({hostile: noisy(1), "small": noisy(2)}), measurement({hostile: noisy(3, center=2.0), "small": noisy(4)}))
    evaluation = kpi_rules.summarize([
        kpi_rules.evaluate_latency(comparison),
        kpi_rules.evaluate_mttr([{"name": "<b>m</b>", "rollback_seconds": 3.5, "rolled_back_at": "t"}], [2.0]),
        kpi_rules.evaluate_restore([{"name": "acme", "tier": "hot&cold", "records": [record("failed", 1)]}], NOW),
    ])
    page = html_report.render(evaluation)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<b>m</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "hot&amp;cold" in page
    assert page.count("<svg") == 1 and page.count('fill="#d9822b"') == 4  # the legend, then a bar per query and overall
    for external in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert external not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count("BREACHED") >= 3
