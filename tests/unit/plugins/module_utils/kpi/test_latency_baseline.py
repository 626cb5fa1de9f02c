from __future__ import annotations

import json
import os
import random
import stat

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi.host_reference import reference_query, reference_sql
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import (
    DEFAULT_SEED,
    FORMAT,
    bootstrap_intervals,
    build_document,
    compare,
    compare_samples,
    consecutive_blocks,
    delta_pct,
    p99_unreliable_queries,
    queries_of,
    query_summaries,
    read_baseline,
    reference_of,
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
    assert bootstrap_intervals([[5.0] * 50], [[5.0] * 50])["raw"] == (1.0, 1.0)


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
    first = bootstrap_intervals([base], [current], seed=7)["raw"]
    assert bootstrap_intervals([base], [current], seed=7)["raw"] == first
    assert bootstrap_intervals([base], [current], seed=8)["raw"] != first
    assert compare_samples(base, current) == compare_samples(base, current)


def test_bootstrap_refuses_nonsense_parameters():
    with pytest.raises(ValueError):
        bootstrap_intervals([[1.0]], [[1.0]], resamples=0)
    with pytest.raises(ValueError):
        bootstrap_intervals([[1.0]], [[1.0]], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_intervals([[1.0]], [[1.0]], blocks=0)


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
    per_sample = bootstrap_intervals([quiet], [noisy_run], blocks=300)["raw"]
    per_block = bootstrap_intervals([quiet], [noisy_run])["raw"]
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
    per_query = [bootstrap_intervals([base], [now])["raw"] for base, now in zip(baseline, current)]
    assert any(low <= 1.0 for low, high in per_query)
    low, high = bootstrap_intervals(baseline, current)["raw"]
    assert low <= 1.0 < high


def test_groups_with_different_block_counts_are_drawn_independently():
    interval = bootstrap_intervals([noisy(1, count=100), noisy(2, count=3)], [noisy(3, count=100), noisy(4, count=3)])["raw"]
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


# -- the host reference -------------------------------------------------------------------------------------------


def with_reference(samples_by_name, reference_samples, series=131072):
    """A measurement document whose every round also timed the host reference (its samples last)."""
    results = [QuerySamples(query=LatencyQuery(name=name, sql="SELECT {0!r}".format(name)), samples_ms=list(samples), rows=1)
               for name, samples in samples_by_name.items()]
    results.append(QuerySamples(query=reference_query(series), samples_ms=list(reference_samples), rows=1))
    return build_document(results, SamplerSettings(runs=len(reference_samples)), "15.6", 150006, "app", measured_at="2025-01-31T12:00:00Z")


def slowed(samples, factor):
    return [value * factor for value in samples]


def test_the_reference_is_kept_apart_from_the_queries_and_read_back(tmp_path):
    built = with_reference({"a": noisy(1)}, noisy(2, center=5.0))
    assert [query["name"] for query in built["queries"]] == ["a"]
    assert built["reference"]["sql"] == reference_sql(131072) and built["reference"]["summary"]["n"] == 100
    assert built["overall"]["n"] == 100, "the reference is not a query and not in overall"
    assert reference_of(built).sql == reference_sql(131072)
    assert reference_of(document({"a": [1.0]})) is None
    path = tmp_path / "baseline.json"
    write_baseline(str(path), built)
    assert read_baseline(str(path))["reference"]["summary"] == built["reference"]["summary"]


def test_a_file_whose_reference_is_another_statement_is_refused(tmp_path):
    # compare executes the baseline's reference again: only the statement the module writes is accepted.
    built = with_reference({"a": noisy(1)}, noisy(2))
    built["reference"]["sql"] = "DELETE FROM accounts"
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(built))
    with pytest.raises(InvalidOption) as raised:
        read_baseline(str(path))
    assert raised.value.field == "baseline_path" and "reference is not the host reference query" in str(raised.value)
    built["reference"] = {"sql": reference_sql(1024), "samples_ms": [1.0, -2.0]}
    path.write_text(json.dumps(built))
    with pytest.raises(InvalidOption, match=r"reference\.samples_ms\[1\] is -2\.0"):
        read_baseline(str(path))


def test_a_host_slower_during_the_current_measurement_is_netted_out():
    # Every statement of the current measurement, the reference too, takes 1.6 times as long: the host, not the schema.
    base = with_reference({"lookup": noisy(1), "small": noisy(2)}, noisy(3, center=1.0))
    current = with_reference({"lookup": slowed(noisy(4), 1.6), "small": slowed(noisy(5), 1.6)}, slowed(noisy(6), 1.6))
    comparison = compare(base, current)
    assert comparison["reference"]["usable"] is True and comparison["reference"]["significant"] is True
    for entry in comparison["queries"] + [comparison["overall"]]:
        assert entry["significant"] is True and entry["p99_ratio_ci"][0] > 1.3, entry
        assert entry["net_significant"] is False and entry["p99_net_ratio_ci"][0] < 1.0 < entry["p99_net_ratio_ci"][1], entry
        assert abs(entry["p99_net_delta_pct"]) < 15


def test_a_slower_query_on_an_unchanged_host_stays_slower_net_of_the_reference():
    base = with_reference({"lookup": noisy(1), "small": noisy(2)}, noisy(3))
    current = with_reference({"lookup": slowed(noisy(4), 2.0), "small": noisy(5)}, noisy(6))
    entries = {entry["name"]: entry for entry in compare(base, current)["queries"]}
    assert entries["lookup"]["net_significant"] is True and entries["lookup"]["p99_net_ratio_ci"][0] > 1.5
    assert entries["small"]["net_significant"] is False


def test_the_raw_interval_does_not_depend_on_the_reference():
    samples = {"lookup": noisy(1), "small": noisy(2)}
    later = {"lookup": noisy(4, center=1.2), "small": noisy(5)}
    plain = compare(document(samples), document(later))
    referenced = compare(with_reference(samples, noisy(3)), with_reference(later, noisy(6)))
    for key in ("p99_ratio_ci", "p99_delta_pct_ci", "significant"):
        assert [entry[key] for entry in plain["queries"]] == [entry[key] for entry in referenced["queries"]]
        assert plain["overall"][key] == referenced["overall"][key]
    assert plain["queries"][0]["p99_net_ratio"] is None and plain["overall"]["net_significant"] is None
    assert plain["reference"] == {"sql": None, "usable": False, "reason": "the baseline was measured without a host reference"}


def test_references_of_near_sizes_are_compared_per_row_and_distant_ones_not_at_all():
    base = with_reference({"lookup": noisy(1)}, noisy(3, center=4.0), series=131072)
    twice = with_reference({"lookup": noisy(4)}, noisy(6, center=8.0), series=262144)  # twice the rows, twice the time
    comparison = compare(base, twice)
    assert comparison["reference"]["usable"] is True and comparison["reference"]["current_sql"] == reference_sql(262144)
    assert abs(comparison["reference"]["p50_delta_pct"]) < 10, "per row, the host ran at the same speed"
    far = compare(base, with_reference({"lookup": noisy(4)}, noisy(6, center=32.0), series=1048576))
    assert far["reference"]["usable"] is False and "more than 4-fold" in far["reference"]["reason"]
    assert far["queries"][0]["p99_net_ratio"] is None


def test_a_reference_not_timed_in_every_round_is_not_used():
    base = with_reference({"lookup": noisy(1)}, noisy(3))
    current = with_reference({"lookup": noisy(4)}, noisy(6, count=50))
    comparison = compare(base, current)
    assert comparison["reference"]["usable"] is False
    assert comparison["reference"]["reason"] == "the current measurement does not hold one host reference sample per round of its queries"
    assert comparison["overall"]["p99_net_ratio_ci"] is None
