from __future__ import annotations

import datetime
import math

from ansible_collections.keel.postgres.plugins.module_utils.kpi import kpi_rules, prometheus_text
from prometheus_client.parser import text_string_to_metric_families

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
HOSTILE = 'say "hi" \\ back\nnext line'


def row(name, delta, significant):
    low, high = delta - 15, delta + 15
    return {"name": name, "baseline": {"p99": 1.0}, "current": {"p99": 1.0 + delta / 100}, "p99_delta_pct": delta, "p99_ratio": 1 + delta / 100,
            "p99_ratio_ci": [1 + low / 100, 1 + high / 100], "p99_delta_pct_ci": [low, high], "significant": significant, "p99_reliable": True}


def evaluation():
    at = (NOW - datetime.timedelta(days=1)).isoformat()
    return kpi_rules.summarize([
        kpi_rules.evaluate_latency({"queries": [row(HOSTILE, 35.0, True), row("small", -2.5, False)], "overall": row("overall", 12.0, True)}),
        kpi_rules.evaluate_mttr([{"name": "m", "rollback_seconds": 42.5, "rolled_back_at": at}], [17.5]),
        kpi_rules.evaluate_restore([
            {"name": "acme", "tier": "hot", "records": [{"outcome": "passed", "at": at}, {"outcome": "failed", "at": at}]},
            {"name": "idle", "tier": "cold", "records": []},
        ], NOW),
    ])


def parsed(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family):
    return {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}


def test_every_kpi_parses_with_the_prometheus_parser():
    text = prometheus_text.render(evaluation())
    families = parsed(text)
    assert set(families) == {
        "keel_kpi_latency_p99_delta_ratio", "keel_kpi_latency_p99_delta_ratio_lower", "keel_kpi_rollback_mttr_seconds",
        "keel_kpi_rollback_mttr_mean_seconds", "keel_kpi_restore_success_ratio", "keel_kpi_threshold", "keel_kpi_breached"}
    assert all(family.type == "gauge" and family.documentation for family in families.values())

    latency = samples(families["keel_kpi_latency_p99_delta_ratio"])
    assert latency == {(("query", HOSTILE),): 0.35, (("query", "small"),): -0.025, (): 0.12}, "label values round-trip through escaping"
    assert samples(families["keel_kpi_latency_p99_delta_ratio_lower"])[(("query", "small"),)] == -0.175
    assert samples(families["keel_kpi_rollback_mttr_seconds"]) == {(): 42.5}
    assert samples(families["keel_kpi_rollback_mttr_mean_seconds"]) == {(): 30.0}

    restore = samples(families["keel_kpi_restore_success_ratio"])
    assert restore[(("tenant", "acme"), ("tier", "hot"))] == 0.5
    assert math.isnan(restore[(("tenant", "idle"), ("tier", "cold"))])

    assert samples(families["keel_kpi_breached"]) == {(("kpi", "latency"),): 1.0, (("kpi", "rollback_mttr"),): 0.0, (("kpi", "restore_success"),): 1.0}
    assert samples(families["keel_kpi_threshold"]) == {(("kpi", "latency"),): 10.0, (("kpi", "rollback_mttr"),): 900.0,
                                                       (("kpi", "restore_success"),): 100.0}


def test_help_and_type_precede_each_family_and_the_text_ends_with_a_newline():
    text = prometheus_text.render(evaluation())
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert lines[index + 1] == "# TYPE {0} gauge".format(name)
            assert lines[index + 2].startswith(name)
    assert '\\"hi\\"' in text and "\\\\ back\\nnext line" in text


def test_rendering_is_deterministic_and_skips_what_was_not_measured():
    assert prometheus_text.render(evaluation()) == prometheus_text.render(evaluation())
    only_mttr = kpi_rules.summarize([kpi_rules.evaluate_mttr([], [])])
    families = parsed(prometheus_text.render(only_mttr))
    assert set(families) == {"keel_kpi_threshold", "keel_kpi_breached"}
    assert samples(families["keel_kpi_breached"]) == {(("kpi", "rollback_mttr"),): 0.0}


def test_the_change_net_of_the_host_reference_and_the_reference_itself_are_exported_when_measured():
    lookup = dict(row("lookup", 40.0, True), p99_net_delta_pct=4.0, p99_net_delta_pct_ci=[-6.0, 14.0])
    reference = {"sql": "SELECT 1", "usable": True, "reason": None, "p99_delta_pct": 35.0, "p99_delta_pct_ci": [20.0, 50.0]}
    families = parsed(prometheus_text.render(kpi_rules.summarize([
        kpi_rules.evaluate_latency({"queries": [lookup], "overall": None, "reference": reference})])))
    assert samples(families["keel_kpi_latency_p99_net_delta_ratio"]) == {(("query", "lookup"),): 0.04}
    assert samples(families["keel_kpi_latency_p99_net_delta_ratio_lower"]) == {(("query", "lookup"),): -0.06}
    assert samples(families["keel_kpi_latency_reference_p99_delta_ratio"]) == {(): 0.35}
    assert samples(families["keel_kpi_breached"]) == {(("kpi", "latency"),): 0.0}, "raw +25% at the lower bound, net -6%: inconclusive"
