from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.prediction_report import (
    check_predictions,
    prediction_vs_actual,
    run_figures,
)

RESULT = {
    "cost_signals": {"wal_bytes": 6000, "size_before_bytes": 1000, "size_after_bytes": 1500, "peak_extra_bytes_held": 900},
    "table_sizes": {"public.orders": {"table_bytes_before": 800, "table_bytes_after": 1200, "index_bytes_before": 200,
                                      "index_bytes_after": 300}},
}
METRICS = {
    "phases_ms": {"connect": 5.0, "validate": 1.0, "start": 100.0, "complete": 20.0, "batch": 70.0},
    "phases": {"start": {"counters": {"wal_bytes": 5900}}, "complete": {"counters": {"wal_bytes": 100}}},
    "counters": {"lock_attempts": 4, "longest_lock_attempt_ms": 12.5, "rows_backfilled": 300},
}


def test_figures_count_only_migration_phases_and_read_the_engines_cost_signals():
    figures = run_figures(RESULT, METRICS)
    assert figures["phases_ms"] == {"validate": 1.0, "start": 100.0, "complete": 20.0}
    assert figures["duration_ms"] == 121.0
    assert figures["phases_wal_bytes"] == {"validate": None, "start": 5900, "complete": 100}
    assert figures["wal_bytes"] == 6000
    assert figures["size_change_bytes"] == 500
    assert figures["peak_extra_bytes_held"] == 900
    assert figures["lock_attempts"] == 4 and figures["lock_timeouts"] == 0 and figures["longest_lock_attempt_ms"] == 12.5
    assert figures["rows_backfilled"] == 300


def test_figures_without_cost_signals_are_unknown_not_zero():
    figures = run_figures({}, METRICS)
    assert figures["wal_bytes"] is None and figures["size_change_bytes"] is None


def test_prediction_vs_actual_pairs_each_figure_and_phase():
    predicted = dict(run_figures(RESULT, METRICS), backup_id="20261126T014700Z-526836b2")
    actual = dict(run_figures(RESULT, METRICS), duration_ms=242.0, lock_timeouts=1,
                  phases_ms={"validate": 2.0, "start": 200.0, "complete": 40.0})
    compared = prediction_vs_actual(check_predictions(predicted), actual)
    assert compared["duration_ms"] == {"predicted": 121.0, "actual": 242.0, "difference": 121.0, "ratio": 2.0}
    assert compared["lock_timeouts"] == {"predicted": 0, "actual": 1, "difference": 1, "ratio": None}
    assert compared["phases_ms"]["start"]["ratio"] == 2.0
    assert compared["backup_id"] == "20261126T014700Z-526836b2"


@pytest.mark.parametrize("value, field", [
    ("fast", "rehearsal_predictions"),
    ({"duration_ms": 1}, "rehearsal_predictions"),
    (dict(run_figures(RESULT, METRICS), wal_bytes="lots"), "rehearsal_predictions.wal_bytes"),
])
def test_predictions_that_are_not_a_rehearsals_are_refused_by_field(value, field):
    with pytest.raises(InvalidOption) as raised:
        check_predictions(value)
    assert raised.value.field == field
