"""RunMetrics: phases nest and aggregate, counters land in the innermost phase, maxima stay maxima."""

from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics


def test_repeated_phases_under_one_parent_are_one_record_with_their_counters_and_rates():
    metrics = RunMetrics()
    with metrics.phase("start"):
        for batch in range(3):
            with metrics.phase("backfill", table="orders"):
                metrics.count("rows_backfilled", 100)
                metrics.maximum("longest_lock_attempt_ms", [5, 9, 2][batch])
    assert [(record.name, record.parent, record.repetitions) for record in metrics.records] == [("start", None, 1), ("backfill", 0, 3)]
    backfill = metrics.records[1]
    assert backfill.counters == {"rows_backfilled": 300, "longest_lock_attempt_ms": 9}
    assert backfill.attributes == {"table": "orders"}
    assert backfill.started_ns <= backfill.ended_ns
    result = metrics.as_dict()
    assert result["counters"] == {"rows_backfilled": 300, "longest_lock_attempt_ms": 9}
    assert result["phases"]["backfill"]["repetitions"] == 3
    assert result["phases"]["backfill"]["counters"] == {"rows_backfilled": 300, "longest_lock_attempt_ms": 9}
    assert set(result["phases"]["backfill"].get("rates", {})) == {"rows_backfilled_per_second"}
    assert metrics.maxima == ("longest_lock_attempt_ms",)
    assert metrics.phase_counters("backfill") == {"rows_backfilled": 300, "longest_lock_attempt_ms": 9}


def test_a_failing_phase_is_marked_and_closed():
    metrics = RunMetrics()
    with pytest.raises(RuntimeError), metrics.phase("copy"):
        raise RuntimeError("boom")
    assert metrics.records[0].failed is True and metrics.records[0].ended_ns > 0
    with metrics.phase("after"):
        pass
    assert metrics.records[1].parent is None, "the failed phase was popped"


def test_gauges_series_and_labels():
    metrics = RunMetrics()
    metrics.gauge("table_bytes_before", 8192)
    metrics.gauge("storage_monthly_cost", 1.5, labels={"tenant": "acme", "tier": "archive"})
    metrics.label(db="app", tenant="acme", table=None)
    result = metrics.as_dict()
    assert result["gauges"] == {"table_bytes_before": 8192}
    assert result["series"] == [{"name": "storage_monthly_cost", "labels": {"tenant": "acme", "tier": "archive"}, "value": 1.5}]
    assert result["labels"] == {"db": "app", "tenant": "acme"}
    with pytest.raises(ValueError):
        metrics.label(password="x")


def test_span_attributes_keep_only_plain_values():
    metrics = RunMetrics()
    with metrics.phase("dump", tenant="acme", rows=3, ratio=0.5, ok=True, blob={"a": 1}, missing=None):
        pass
    assert metrics.records[0].attributes == {"tenant": "acme", "rows": 3, "ratio": 0.5, "ok": True}
