from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.kpi.host_reference import (
    MAX_SERIES,
    MIN_SERIES,
    PROBE_SERIES,
    SOURCE_REFERENCE,
    calibrated_series,
    reference_query,
    reference_sql,
    scale_to,
    series_of,
)


def test_the_statement_round_trips_and_nothing_else_is_taken_for_one():
    assert series_of(reference_sql(262144)) == 262144
    query = reference_query(4096)
    assert query.source == SOURCE_REFERENCE and query.field == "reference" and series_of(query.sql) == 4096
    for other in ("SELECT count(*) FROM generate_series(1, 10)", reference_sql(10) + "; DROP TABLE t", "SELECT 1",
                  reference_sql(10).replace("10", "010")):
        assert series_of(other) is None, other


def test_the_series_is_scaled_to_the_median_query_and_rounded_to_a_power_of_two():
    # The probe's 16384 rows took 1 ms; queries of 3, 8 and 40 ms have a median of 8 ms: 131072 rows.
    assert calibrated_series(1.0, [3.0, 40.0, 8.0]) == 131072
    # 5.5 ms wants 90112 rows: log2 is 16.46, so 65536.
    assert calibrated_series(1.0, [5.5]) == 65536
    # The same queries measured twice, a little faster or slower, mostly land on the same statement.
    assert calibrated_series(1.0, [7.0]) == calibrated_series(1.1, [8.5]) == 131072


def test_the_series_stays_within_its_bounds_and_falls_back_to_the_probe():
    assert calibrated_series(1.0, [0.001]) == MIN_SERIES
    assert calibrated_series(0.001, [60000.0]) == MAX_SERIES
    assert calibrated_series(0.0, [5.0]) == PROBE_SERIES
    assert calibrated_series(1.0, []) == PROBE_SERIES


@pytest.mark.parametrize(("series", "target", "expected"), [
    (131072, 131072, [2.0, 4.0]),
    (262144, 131072, [1.0, 2.0]),  # twice the rows: half the time each
    (65536, 131072, [4.0, 8.0]),
    (524288, 131072, [0.5, 1.0]),
    (1048576, 131072, None),  # eight times: too far apart to convert
    (16384, 131072, None),
])
def test_samples_convert_between_near_sizes_only(series, target, expected):
    assert scale_to([2.0, 4.0], series, target) == expected
