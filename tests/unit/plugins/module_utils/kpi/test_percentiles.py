from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.kpi.percentiles import (
    MIN_SAMPLES_FOR_P99,
    p99_reliable,
    percentile,
    percentile_of_sorted,
    summarize,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        # h = (n - 1) * q / 100; x[floor(h)] + frac(h) * (x[floor(h) + 1] - x[floor(h)])
        ([1, 2, 3, 4], 50, 2.5),  # h = 1.5
        ([1, 2, 3, 4], 25, 1.75),  # h = 0.75
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([15, 20, 35, 40, 50], 95, 48.0),  # h = 3.8: 40 + 0.8 * 10
        ([15, 20, 35, 40, 50], 50, 35.0),  # h = 2: an exact rank
        ([4, 1, 3, 2], 50, 2.5),  # order of the input does not matter
        ([7.5], 99, 7.5),
        (list(range(1, 101)), 99, 99.01),  # h = 98.01
        (list(range(1, 101)), 50, 50.5),  # h = 49.5
        (list(range(1, 21)), 99, 19.81),  # n = 20: h = 18.81, between the two largest values
    ],
)
def test_percentile_is_linear_interpolation_between_closest_ranks(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_sorted_agrees_and_does_not_copy_or_check():
    ordered = [0.5, 1.0, 2.0, 8.0]
    assert percentile_of_sorted(ordered, 75) == percentile(ordered, 75) == pytest.approx(3.5)  # h = 2.25


def test_percentile_refuses_empty_samples_and_bad_ranks():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1, 2], 101)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1, 2], -1)


def test_p99_needs_one_hundred_samples():
    assert MIN_SAMPLES_FOR_P99 == 100
    assert p99_reliable(99) is False
    assert p99_reliable(100) is True
    assert p99_reliable(0) is False


def test_summary_fields_and_rounding():
    summary = summarize([3.0, 1.0, 2.0, 4.0, 10.123456])
    assert summary == {
        "n": 5,
        "min": 1.0,
        "p50": 3.0,
        "p95": 8.8988,  # h = 3.8: 4 + 0.8 * 6.123456, rounded to 4 digits
        "p99": 9.8785,  # h = 3.96: 4 + 0.96 * 6.123456
        "max": 10.1235,
        "mean": 4.0247,
        "p99_reliable": False,
    }


def test_summary_of_enough_samples_marks_p99_reliable_and_orders_percentiles():
    summary = summarize([float(value % 37) for value in range(250)])
    assert summary["n"] == 250 and summary["p99_reliable"] is True
    assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        summarize([])
