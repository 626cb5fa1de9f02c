from __future__ import annotations

import json
import os
import random
import stat

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import (
    DEFAULT_SEED,
    FORMAT,
    bootstrap_ratio_interval,
    build_document,
    compare,
    compare_samples,
    consecutive_blocks,
    delta_pct,
    p99_unreliable_queries,
    queries_of,
    query_summaries,
    read_baseline,
    write_baseline,
)
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import LatencyQuery, QuerySamples, SamplerSettings, round_order


def document(samples_by_name, runs=100, **overrides):
    results = [QuerySamples(query=LatencyQuery(name=name, sql="SELECT {0!r}".format(name)), samples_ms=list(samples), rows=1)
               for name, samples in samples_by_name.items()]
    built = build_document(results, SamplerSettings(runs=runs), "15.6", 150006, "app", measured_at="2025-01-31T12:00:00Z")
    built.update(overrides)
    return built


def noisy(seed, count=100, center=1.0, spread=0.1):
    rng = random.Random(seed)
    return [max(0.01, rng.gauss(center, spread)) for index in range(count)]


# -- documents and the file ---------------------------------------------------------------------------------------


def test_document_holds_rounded_samples_summaries_and_overall():
    built = document({"a": [1.000004, 2.0, 3.0], "b": [10.0]})
    assert built["format"] == FORMAT and built["format_version"] == 1
    assert built["settings"] == {"runs": 100, "warmup": 5, "allow_writes": False, "statement_timeout_ms": 30000, "interleaved": True}
    assert built["queries"][0]["samples_ms"] == [1.0, 2.0, 3.0]
    assert built["queries"][0]["summary"]["p50"] == 2.0
    assert built["overall"]["n"] == 4 and built["overall"]["max"] == 10.0
    summaries = query_summaries(built)
    assert summaries[0]["name"] == "a" and summaries[0]["rows"] == 1 and summaries[0]["n"] == 3
    assert "samples_ms" not in summaries[0]
    assert p99_unreliable_queries(built) == ["a", "b"]
    assert [(query.name, query.source) for query in queries_of(built)] == [("a", "baseline"), ("b", "baseline")]


def test_write_is_atomic_0644_and_read_round_trips(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text("old")
    old_umask = os.umask(0o077)
    try:
        written = write_baseline(str(path), document({"a": [1.0, 2.0]}))
    finally:
        os.umask(old_umask)
    assert written == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["baseline.json"]  # no temporary file left
    assert read_baseline(str(path))["queries"][0]["samples_ms"] == [1.0, 2.0]


def test_write_needs_an_existing_directory(tmp_path):
    with pytest.raises(InvalidOption, match="does not exist") as raised:
        write_baseline(str(tmp_path / "missing" / "baseline.json"), document({"a": [1.0]}))
    assert raised.value.field == "baseline_path"


def test_read_recomputes_summaries_from_the_samples(tmp_path):
    tampered = document({"a": [1.0, 2.0, 3.0]})
    tampered["queries"][0]["summary"]["p99"] = 0.001
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(tampered))
    assert read_baseline(str(path))["queries"][0]["summary"]["p99"] == pytest.approx(2.98)


def _broken(**changes):
    broken = document({"a": [1.0, 2.0]})
    for key, value in changes.items():
        if value is None:
            broken.pop(key)
        else:
            broken[key] = value
    return broken


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json {", "not valid JSON"),
        (json.dumps([1, 2]), "it holds a JSON list, not an object"),
        (json.dumps({"format": "pg_dump-report", "queries": []}), "format is 'pg_dump-report', expected 'keel.postgres/query_latency-baseline'"),
        (json.dumps(_broken(format_version=2)), "format_version 2 is not supported"),
        (json.dumps(_broken(format_version="1")), "format_version is missing or not an integer"),
        (json.dumps(_broken(database=None)), "database is missing or not a string"),
        (json.dumps(_broken(settings=[])), "settings is missing or not an object"),
        (json.dumps(_broken(queries=[])), "queries is missing or empty"),
        (json.dumps(_broken(queries=[{"name": "a", "sql": "SELECT 1", "samples_ms": [1.0, -2.0]}])),
         "queries[0].samples_ms[1] is -2.0, not a non-negative number of milliseconds"),
        (json.dumps(_broken(queries=[{"name": "a", "sql": "SELECT 1", "samples_ms": [True]}])), "queries[0].samples_ms[0] is True"),
        (json.dumps(_broken(queries=[{"name": "a", "sql": "SELECT 1", "samples_ms": []}])), "queries[0].samples_ms is missing or empty"),
        (json.dumps(_broken(queries=[{"name": "a", "sql": "SELECT 1", "samples_ms": [1]}, {"name": "a", "sql": "SELECT 2", "samples_ms": [1]}])),
         "queries[1].name 'a' appears twice"),
        (json.dumps(_broken(queries=[{"name": "a", "samples_ms": [1]}])), "queries[0].sql is missing or not a string"),
        (json.dumps(_broken(queries=[{"name": "a", "sql": "DELETE FROM t; COMMIT", "samples_ms": [1]}])),
         "queries[0].sql controls the transaction it would be measured in (COMMIT)"),
    ],
)
def test_read_names_what_is_wrong_with_the_file(tmp_path, content, problem):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(InvalidOption) as raised:
        read_baseline(str(path))
    assert raised.value.field == "baseline_path"
    assert str(path) in raised.value.message
    assert problem in raised.value.message


def test_read_of_a_missing_file_says_to_write_a_baseline_first(tmp_path):
    with pytest.raises(InvalidOption, match=r"no baseline file at .*; write one first with mode: baseline"):
        read_baseline(str(tmp_path / "nowhere.json"))


# -- comparing ----------------------------------------------------------------------------------------------------


def test_deltas_in_percent():
    assert delta_pct(2.0, 3.0) == 50.0
    assert delta_pct(4.0, 3.0) == -25.0
    assert delta_pct(0.0, 1.0) is None


def test_doubled_latency_gives_doubled_percentiles_and_a_significant_interval():
    base = [float(value) for value in range(1, 101)]
    entry = compare_samples(base, [2 * value for value in base])
    assert entry["p50_delta_pct"] == 100.0 and entry["p95_delta_pct"] == 100.0 and entry["p99_delta_pct"] == 100.0
    assert entry["p99_ratio"] == 2.0
    low, high = entry["p99_ratio_ci"]
    assert 1.0 < low <= 2.0 <= high
    assert entry["p99_delta_pct_ci"] == [round((low - 1) * 100, 2), round((high - 1) * 100, 2)]
    assert entry["significant"] is True and entry["p99_reliable"] is True


def test_identical_samples_give_an_interval_around_one_and_no_significance():
    samples = noisy(1)
    entry = compare_samples(samples, list(samples))
    low, high = entry["p99_ratio_ci"]
    assert entry["p99_ratio"] == 1.0 and entry["p99_delta_pct"] == 0.0
    assert low < 1.0 < high
    assert entry["significant"] is False


def test_constant_samples_give_a_degenerate_interval_at_one():
    assert bootstrap_ratio_interval([[5.0] * 50], [[5.0] * 50]) == (1.0, 1.0)


def test_same_distribution_is_not_significant_and_a_shift_is():
    base = noisy(1)
    same = compare_samples(base, noisy(2))
    assert same["significant"] is False
    assert same["p99_ratio_ci"][0] < 1.0 < same["p99_ratio_ci"][1]
    shifted = compare_samples(base, [value * 1.5 for value in noisy(2)])
    assert shifted["significant"] is True
    assert shifted["p99_ratio_ci"][0] > 1.2


def test_the_interval_is_deterministic_with_the_seed():
    base, current = noisy(3), noisy(4, center=1.1)
    first = bootstrap_ratio_interval([base], [current], seed=7)
    assert bootstrap_ratio_interval([base], [current], seed=7) == first
    assert bootstrap_ratio_interval([base], [current], seed=8) != first
    assert compare_samples(base, current) == compare_samples(base, current)


def test_bootstrap_refuses_nonsense_parameters():
    with pytest.raises(ValueError):
        bootstrap_ratio_interval([[1.0]], [[1.0]], resamples=0)
    with pytest.raises(ValueError):
        bootstrap_ratio_interval([[1.0]], [[1.0]], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_ratio_interval([[1.0]], [[1.0]], blocks=0)


def test_blocks_keep_the_order_and_cover_every_sample_once():
    samples = [float(value) for value in range(23)]
    blocks = consecutive_blocks(samples, 5)
    assert [value for block in blocks for value in block] == samples
    assert sorted({len(block) for block in blocks}) == [4, 5]
    assert consecutive_blocks([1.0, 2.0], 10) == [[1.0], [2.0]]
    assert consecutive_blocks([], 10) == []


def spell_of_noise(seed, spell_start):
    """300 samples around 1 ms with a spell of 20 consecutive slow ones (a noisy neighbour for a moment)."""
    samples = noisy(seed, count=300)
    for index in range(spell_start, spell_start + 20):
        samples[index] += 0.8
    return samples


def test_a_spell_of_noise_widens_the_block_interval_where_single_samples_would_call_it_significant():
    quiet, noisy_run = noisy(11, count=300), spell_of_noise(12, 140)
    per_sample = bootstrap_ratio_interval([quiet], [noisy_run], blocks=300)
    per_block = bootstrap_ratio_interval([quiet], [noisy_run])
    # One spell: per-sample resampling sees 20 independent slow executions and is sure p99 rose;
    # blocks see one slow stretch that a resample may or may not draw.
    assert per_sample[0] > 1.0
    assert per_block[0] < per_sample[0]
    assert per_block[0] <= 1.0


def test_a_spell_that_slows_every_query_at_once_is_not_called_significant_overall():
    # Rounds run every query, so a busy moment on the host slows all of them in the same rounds. The overall interval
    # must draw the same rounds for every query: drawn independently, four queries' spells would average out across
    # resamples and the pooled interval would sit far above 1.0 on a spell no single query can tell from noise.
    baseline = [noisy(10 + index, count=300) for index in range(4)]
    current = [spell_of_noise(20 + index, 140) for index in range(4)]
    per_query = [bootstrap_ratio_interval([base], [now]) for base, now in zip(baseline, current)]
    assert any(low <= 1.0 for low, high in per_query)
    low, high = bootstrap_ratio_interval(baseline, current)
    assert low <= 1.0 < high


def test_groups_with_different_block_counts_are_drawn_independently():
    interval = bootstrap_ratio_interval([noisy(1, count=100), noisy(2, count=3)], [noisy(3, count=100), noisy(4, count=3)])
    assert all(0.5 < bound < 2.0 for bound in interval)


def test_compare_matches_queries_by_name_and_reports_the_missing_ones():
    baseline = document({"kept": noisy(1), "slower": noisy(2), "gone": noisy(3)})
    current = document({"new": noisy(4), "slower": [value * 3 for value in noisy(5)], "kept": noisy(6)}, runs=50)
    result = compare(baseline, current)
    assert [entry["name"] for entry in result["queries"]] == ["slower", "kept"]  # in the current order
    assert result["missing_in_current"] == ["gone"]
    assert result["missing_in_baseline"] == ["new"]
    assert result["significant_increases"] == ["slower"]
    assert result["settings_differences"] == ["runs: baseline 100, now 50"]
    assert result["overall"]["queries"] == 2
    assert result["overall"]["baseline"]["n"] == 200  # only the queries measured on both sides
    assert result["overall"]["significant"] is True
    assert result["method"]["resamples"] == 1000 and result["method"]["seed"] == DEFAULT_SEED
    slower = result["queries"][0]
    assert slower["p99_delta_pct"] > 100 and slower["sql_changed"] is False


def test_compare_flags_changed_sql_and_server_differences():
    baseline = document({"a": noisy(1)})
    current = document({"a": noisy(2)}, server_version="16.2")
    current["queries"][0]["sql"] = "SELECT 2"
    result = compare(baseline, current)
    assert result["queries"][0]["sql_changed"] is True
    assert result["settings_differences"] == ["server_version: baseline 15.6, now 16.2"]


def test_compare_without_common_queries_has_no_overall():
    result = compare(document({"a": [1.0]}), document({"b": [1.0]}))
    assert result["queries"] == [] and result["overall"] is None


def test_rounds_rotate_the_query_order():
    assert [round_order(3, index) for index in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert round_order(0, 5) == []
