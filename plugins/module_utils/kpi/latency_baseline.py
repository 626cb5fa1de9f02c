# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Latency measurements as documents: the baseline file, and comparing two measurements.

A measurement document (what ``mode: baseline`` writes, and what ``compare``
takes on both sides) is JSON::

    {"format": "keel.postgres/query_latency-baseline", "format_version": 1,
     "server_version": "15.6", "server_version_num": 150006, "database": "app",
     "measured_at": "2025-01-31T12:00:00Z",
     "settings": {"runs": 100, "warmup": 5, "allow_writes": false, "statement_timeout_ms": 30000, "interleaved": true},
     "queries": [{"name": ..., "sql": ..., "source": "queries", "rows": 1,
                  "samples_ms": [...], "summary": {"n": 100, "p50": ..., ...}}],
     "reference": {"sql": "SELECT count(*) FROM (SELECT generate_series(1, N)) AS series", "samples_ms": [...], "summary": {...}},
     "overall": {"n": ..., "p50": ..., ...}}

``reference`` (optional: files written before it existed have none) holds the
host reference timed in every round beside the queries (see
``host_reference``); it is not a query and is not in ``overall``.

Latencies are milliseconds. Samples are kept (rounded to 0.1 microsecond) so a
later comparison can compute a confidence interval; summaries are recomputed
from them when a file is read, so an edited summary cannot mislead a gate.

``compare`` reports, per query and overall, the p50/p95/p99 deltas in percent
and a bootstrap confidence interval of the p99 ratio current / baseline.
The resampling unit is a block of consecutive rounds, not a single sample:
each side's samples are cut into ``blocks`` (10) runs of rounds in the order
they were taken, and each resample draws that many blocks with replacement
(1000 times by default, with a fixed seed, so the same inputs always give the
same interval). Latency on a shared host comes in spells (a noisy neighbour
for a second or two adds the same delay to every query in it), so samples
next to each other are not independent; resampling single samples would
treat one spell as many independent events and give an interval far too
narrow. The interval is the 2.5th and 97.5th percentile of the resampled p99
ratios. ``significant`` means the whole interval lies above 1.0.

The overall interval keeps every query's weight and resamples the same
blocks of rounds for every query: round ``r`` ran every query at about the
same moment, so a spell of noise slows all of them together. Drawing each
query's blocks independently would let one query's slow spell be offset by
another's quiet one, and pooled over several queries the interval would come
out narrower than any single query's, strong enough to call a host that was
simply busier during one measurement a regression. When the queries of one
side do not have the same number of blocks (a hand-made file), their blocks
are drawn independently.

Net of the host reference: when both documents timed the same reference in
every round, each resample also draws the reference's blocks at the positions
drawn for the queries, and divides the queries' p99 ratio by the reference's
p90 ratio (how much slower the host was: see REFERENCE_PERCENTILE).
A host that was busier during one measurement slows the reference with the
queries, and the net ratio stays near 1.0; a slower plan leaves the reference
alone. ``kpi_rules`` breaches only when the raw and the net interval agree.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi.host_reference import (
    MAX_SCALE,
    PROBE_SERIES,
    SOURCE_REFERENCE,
    reference_query,
    reference_sql,
    scale_to,
    series_of,
)
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import (
    SOURCE_BASELINE,
    LatencyQuery,
    QuerySamples,
    SamplerSettings,
)
from ansible_collections.keel.postgres.plugins.module_utils.kpi.percentiles import DEFINITION, p99_reliable, percentile_of_sorted, summarize
from ansible_collections.keel.postgres.plugins.module_utils.kpi.query_sources import transaction_control
from ansible_collections.keel.postgres.plugins.module_utils.kpi.report_files import write_report

FORMAT = "keel.postgres/query_latency-baseline"
FORMAT_VERSION = 1
SAMPLE_DIGITS = 4
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 20250131
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BLOCKS = 10
# How much slower the host was is read from the reference's 90th percentile. Its median misses contention, which
# lands on the tail (one competing CPU-bound process: reference p50 +0%, p99 +43..67%), and its p99 is as noisy as
# a query's, which widens the net intervals (up to twice as wide). Measured at 50, 75, 90, 95 and 99: docs/kpi.md.
REFERENCE_PERCENTILE = 90
_COMPARED_SETTINGS = ("runs", "warmup", "allow_writes", "statement_timeout_ms")


# -- documents ------------------------------------------------------------------------------------------------------


def build_document(
    results: Sequence[QuerySamples],
    settings: SamplerSettings,
    server_version: str,
    server_version_num: int,
    database: str,
    measured_at: Optional[str] = None,
) -> Dict[str, Any]:
    """The measurement document of one run (see the module docstring); the same shape is written as a baseline."""
    queries = []
    reference = None
    for result in results:
        samples = [round(value, SAMPLE_DIGITS) for value in result.samples_ms]
        if result.query.source == SOURCE_REFERENCE:
            reference = {"sql": result.query.sql, "samples_ms": samples, "summary": summarize(samples)}
            continue
        queries.append({
            "name": result.query.name,
            "sql": result.query.sql,
            "source": result.query.source,
            "rows": result.rows,
            "samples_ms": samples,
            "summary": summarize(samples),
        })
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "server_version": server_version,
        "server_version_num": int(server_version_num),
        "database": database,
        "measured_at": measured_at or utc_now(),
        "settings": settings.as_dict(),
        "queries": queries,
    }
    if reference is not None:
        document["reference"] = reference
    document["overall"] = overall_summary(document)
    return document


def overall_summary(document: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The summary of every sample of every query pooled together, or None without samples."""
    pooled = [value for query in document["queries"] for value in query["samples_ms"]]
    return summarize(pooled) if pooled else None


def query_summaries(document: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Per query: name, source, sql, rows and the summary fields, without the samples (for a module result)."""
    summaries = []
    for query in document["queries"]:
        entry = {"name": query["name"], "source": query.get("source"), "sql": query["sql"], "rows": query.get("rows")}
        entry.update(query["summary"])
        summaries.append(entry)
    return summaries


def queries_of(document: Mapping[str, Any]) -> List[LatencyQuery]:
    """The queries a document measured, to measure the same ones again."""
    return [LatencyQuery(name=query["name"], sql=query["sql"], source=SOURCE_BASELINE, field="baseline queries[{0}]".format(index))
            for index, query in enumerate(document["queries"])]


def reference_of(document: Mapping[str, Any]) -> Optional[LatencyQuery]:
    """The host reference a document timed, to time the very same statement again; None when it has none."""
    reference = document.get("reference")
    if not reference:
        return None
    return reference_query(int(series_of(reference["sql"]) or PROBE_SERIES))


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the baseline file ----------------------------------------------------------------------------------------------


def write_baseline(path: str, document: Mapping[str, Any], field: str = "baseline_path") -> str:
    """Write ``document`` to ``path`` atomically (temporary file in the same directory, then rename), mode 0644.

    Readers never see a half-written file: they get the previous baseline or the new one. Returns the absolute path.
    """
    written = write_report(path, json.dumps(document, indent=1, sort_keys=False) + "\n", field)
    return str(written["path"])


def read_baseline(path: str, field: str = "baseline_path") -> Dict[str, Any]:
    """Read and validate a baseline file; every problem is an ``InvalidOption`` on ``field`` naming the file and what is wrong."""
    target = os.path.abspath(path)
    try:
        with open(target, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise InvalidOption(field, "no baseline file at {0}; write one first with mode: baseline".format(target)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidOption(field, "cannot read {0}: {1}".format(target, exc)) from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidOption(field, "{0} is not a query_latency baseline: not valid JSON ({1})".format(target, exc)) from None
    return validate_document(document, target, field)


def validate_document(document: Any, source: str = "baseline", field: str = "baseline_path") -> Dict[str, Any]:
    """Check a measurement document's shape; returns it with summaries recomputed from its samples."""

    def problem(what: str) -> InvalidOption:
        return InvalidOption(field, "{0} is not a valid query_latency baseline: {1}".format(source, what))

    if not isinstance(document, dict):
        raise problem("it holds a JSON {0}, not an object".format(type(document).__name__))
    if document.get("format") != FORMAT:
        raise problem("format is {0!r}, expected {1!r}".format(document.get("format"), FORMAT))
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise problem("format_version is missing or not an integer")
    if version != FORMAT_VERSION:
        raise problem("format_version {0} is not supported; this version of the module reads format_version {1}".format(version, FORMAT_VERSION))
    for key in ("server_version", "database", "measured_at"):
        if not isinstance(document.get(key), str):
            raise problem("{0} is missing or not a string".format(key))
    if not isinstance(document.get("settings"), dict):
        raise problem("settings is missing or not an object")
    queries = document.get("queries")
    if not isinstance(queries, list) or not queries:
        raise problem("queries is missing or empty")
    names = set()
    for index, query in enumerate(queries):
        where = "queries[{0}]".format(index)
        if not isinstance(query, dict):
            raise problem("{0} is not an object".format(where))
        for key in ("name", "sql"):
            if not isinstance(query.get(key), str) or not query[key]:
                raise problem("{0}.{1} is missing or not a string".format(where, key))
        if query["name"] in names:
            raise problem("{0}.name {1!r} appears twice".format(where, query["name"]))
        control = transaction_control(query["sql"])
        if control:
            raise problem("{0}.sql controls the transaction it would be measured in ({1})".format(where, control.upper()))
        names.add(query["name"])
        query["summary"] = summarize(_checked_samples(query.get("samples_ms"), where, problem))
    reference = document.get("reference")
    if reference is not None:
        # A comparison executes this statement again, so only the one statement the module writes is accepted.
        if not isinstance(reference, dict) or not isinstance(reference.get("sql"), str) or series_of(reference["sql"]) is None:
            raise problem("reference is not the host reference query this module writes ({0})".format(reference_sql(PROBE_SERIES)))
        reference["summary"] = summarize(_checked_samples(reference.get("samples_ms"), "reference", problem))
    document["overall"] = overall_summary(document)
    return document


def _checked_samples(samples: Any, where: str, problem: Any) -> List[float]:
    if not isinstance(samples, list) or not samples:
        raise problem("{0}.samples_ms is missing or empty".format(where))
    for position, value in enumerate(samples):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise problem("{0}.samples_ms[{1}] is {2!r}, not a non-negative number of milliseconds".format(where, position, value))
    return samples


# -- comparing two measurements -------------------------------------------------------------------------------------


def compare(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    blocks: int = DEFAULT_BLOCKS,
    reference_percentile: float = REFERENCE_PERCENTILE,
) -> Dict[str, Any]:
    """Compare two measurement documents, per query (matched by name) and overall (queries on both sides only).

    Each entry holds ``baseline`` and ``current`` summaries, ``p50_delta_pct``, ``p95_delta_pct``, ``p99_delta_pct``
    (percent, positive is slower; None when the baseline value is 0), ``p99_ratio``, ``p99_ratio_ci`` and
    ``p99_delta_pct_ci`` (the bootstrap interval, see the module docstring), ``significant`` (the whole interval is
    above 1.0) and ``p99_reliable`` (both sides have enough samples for a p99). The ``p99_net_*`` fields and
    ``net_significant`` are the same change net of the host reference's (see ``host_reference``), None when the two
    documents do not hold comparable references; ``reference`` says which, and how the reference itself changed.
    """
    base_queries = {query["name"]: query for query in baseline["queries"]}
    current_queries = {query["name"]: query for query in current["queries"]}
    common = [name for name in current_queries if name in base_queries]
    reference, reference_pair = reference_comparison(baseline, current, common, resamples, seed, confidence, blocks, reference_percentile)
    entries = []
    for name in common:
        entry = compare_groups([base_queries[name]["samples_ms"]], [current_queries[name]["samples_ms"]], resamples, seed, confidence, blocks,
                               reference_pair)
        entry["name"] = name
        entry["sql_changed"] = base_queries[name]["sql"] != current_queries[name]["sql"]
        entries.append(entry)
    overall = None
    if common:
        overall = compare_groups([base_queries[name]["samples_ms"] for name in common], [current_queries[name]["samples_ms"] for name in common],
                                 resamples, seed, confidence, blocks, reference_pair)
        overall["name"] = "overall"
        overall["queries"] = len(common)
    return {
        "queries": entries,
        "overall": overall,
        "reference": reference,
        "significant_increases": [entry["name"] for entry in entries if entry["significant"]],
        "missing_in_current": [name for name in base_queries if name not in current_queries],
        "missing_in_baseline": [name for name in current_queries if name not in base_queries],
        "settings_differences": settings_differences(baseline, current),
        "baseline_measured_at": baseline.get("measured_at"),
        "current_measured_at": current.get("measured_at"),
        "method": {
            "statistic": "p99 ratio current / baseline",
            "interval": "percentile bootstrap, {0:g}% two-sided".format(confidence * 100),
            "resampling_unit": "blocks of consecutive rounds, {0} per query and side".format(blocks),
            "resamples": resamples,
            "seed": seed,
            "overall_resampling": "the same blocks of rounds for every query",
            "net_of_reference": "p99 ratio of the queries / p{0:g} ratio of the host reference, from the same resampled blocks of rounds".format(
                reference_percentile),
            "percentile_definition": DEFINITION,
            "significant_when": "the lower bound of the p99 ratio interval is above 1.0",
        },
    }


@dataclass(frozen=True)
class ReferencePair:
    """The host reference's samples on both sides, and the percentile whose ratio says how much slower the host was."""

    baseline: Sequence[float]
    current: Sequence[float]
    percentile: float = REFERENCE_PERCENTILE

    def host_slowdown(self, baseline_sorted: Sequence[float], current_sorted: Sequence[float]) -> float:
        return _ratio(percentile_of_sorted(current_sorted, self.percentile), percentile_of_sorted(baseline_sorted, self.percentile))


def reference_comparison(baseline: Mapping[str, Any], current: Mapping[str, Any], common: Sequence[str], resamples: int = DEFAULT_RESAMPLES,
                         seed: int = DEFAULT_SEED, confidence: float = DEFAULT_CONFIDENCE, blocks: int = DEFAULT_BLOCKS,
                         percentile: float = REFERENCE_PERCENTILE) -> Tuple[Dict[str, Any], Optional[ReferencePair]]:
    """How the host reference changed, and its two sample sets when the queries can be judged net of it (else None).

    A current reference of another size (two measurements calibrated each on its own) is converted to the baseline's
    size first; ``current_sql`` then names the statement it ran.
    """
    base_reference = baseline.get("reference")
    current_reference = current.get("reference")
    current_samples = _current_reference_samples(base_reference, current_reference)
    reason = reference_unusable_reason(baseline, current, common, current_samples)
    entry: Dict[str, Any] = {"sql": (base_reference or current_reference or {}).get("sql"), "usable": reason is None, "reason": reason}
    if current_samples is not None:
        if current_reference["sql"] != base_reference["sql"]:
            entry["current_sql"] = current_reference["sql"]
        entry.update(compare_samples(base_reference["samples_ms"], current_samples, resamples, seed, confidence, blocks))
    if reason is not None or current_samples is None:
        return entry, None
    return entry, ReferencePair(base_reference["samples_ms"], current_samples, percentile)


def _current_reference_samples(base_reference: Optional[Mapping[str, Any]], current_reference: Optional[Mapping[str, Any]]) -> Optional[List[float]]:
    """The current reference's samples at the baseline reference's size, or None when there is nothing to compare."""
    if not base_reference or not current_reference:
        return None
    return scale_to(current_reference["samples_ms"], int(series_of(current_reference["sql"]) or 0) or 1,
                    int(series_of(base_reference["sql"]) or 0) or 1)


def reference_unusable_reason(baseline: Mapping[str, Any], current: Mapping[str, Any], common: Sequence[str],
                              current_samples: Optional[List[float]]) -> Optional[str]:
    """Why the queries cannot be judged net of the host reference, or None when they can; ``current_samples`` are the
    current reference's at the baseline's size (``_current_reference_samples``)."""
    if not baseline.get("reference"):
        return "the baseline was measured without a host reference"
    if not current.get("reference"):
        return "the current measurement has no host reference"
    if current_samples is None:
        return ("the host references differ in size more than {0:g}-fold ({1} and {2}): the queries' typical time changed that much; "
                "compare mode times the baseline's reference again".format(MAX_SCALE, baseline["reference"]["sql"], current["reference"]["sql"]))
    for side, document in (("baseline", baseline), ("current measurement", current)):
        rounds = len(document["reference"]["samples_ms"])
        queries = {query["name"]: query for query in document["queries"]}
        if any(len(queries[name]["samples_ms"]) != rounds for name in common):
            return "the {0} does not hold one host reference sample per round of its queries".format(side)
    return None


def compare_samples(baseline: Sequence[float], current: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                    confidence: float = DEFAULT_CONFIDENCE, blocks: int = DEFAULT_BLOCKS) -> Dict[str, Any]:
    """The comparison entry of one query's sample sets (without its name)."""
    return compare_groups([baseline], [current], resamples, seed, confidence, blocks)


def compare_groups(baseline_groups: Sequence[Sequence[float]], current_groups: Sequence[Sequence[float]], resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED, confidence: float = DEFAULT_CONFIDENCE, blocks: int = DEFAULT_BLOCKS,
                   reference: Optional[ReferencePair] = None) -> Dict[str, Any]:
    """A comparison entry over pooled groups of samples (one group per query), resampled group by group, net of ``reference`` too."""
    base_summary = summarize([value for group in baseline_groups for value in group])
    current_summary = summarize([value for group in current_groups for value in group])
    intervals = bootstrap_intervals(baseline_groups, current_groups, 99, resamples, seed, confidence, blocks, reference)
    low, high = intervals["raw"]
    ratio = _ratio(current_summary["p99"], base_summary["p99"])
    entry = {
        "baseline": base_summary,
        "current": current_summary,
        "p50_delta_pct": delta_pct(base_summary["p50"], current_summary["p50"]),
        "p95_delta_pct": delta_pct(base_summary["p95"], current_summary["p95"]),
        "p99_delta_pct": delta_pct(base_summary["p99"], current_summary["p99"]),
        "p99_ratio": _finite(ratio, 4),
        "p99_ratio_ci": [_finite(low, 4), _finite(high, 4)],
        "p99_delta_pct_ci": [_finite((low - 1.0) * 100.0, 2), _finite((high - 1.0) * 100.0, 2)],
        "significant": math.isfinite(low) and low > 1.0,
        "p99_reliable": bool(base_summary["p99_reliable"] and current_summary["p99_reliable"]),
    }
    entry.update(_net_fields(ratio, intervals["net"], reference))
    return entry


def _net_fields(ratio: float, interval: Optional[Tuple[float, float]], reference: Optional[ReferencePair]) -> Dict[str, Any]:
    if reference is None or interval is None:
        return {"p99_net_ratio": None, "p99_net_ratio_ci": None, "p99_net_delta_pct": None, "p99_net_delta_pct_ci": None, "net_significant": None}
    net = _ratio(ratio, reference.host_slowdown(sorted(reference.baseline), sorted(reference.current)))
    low, high = interval
    return {
        "p99_net_ratio": _finite(net, 4),
        "p99_net_ratio_ci": [_finite(low, 4), _finite(high, 4)],
        "p99_net_delta_pct": _finite((net - 1.0) * 100.0, 2),
        "p99_net_delta_pct_ci": [_finite((low - 1.0) * 100.0, 2), _finite((high - 1.0) * 100.0, 2)],
        "net_significant": math.isfinite(low) and low > 1.0,
    }


def bootstrap_intervals(
    baseline_groups: Sequence[Sequence[float]],
    current_groups: Sequence[Sequence[float]],
    q: float = 99,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    blocks: int = DEFAULT_BLOCKS,
    reference: Optional[ReferencePair] = None,
) -> Dict[str, Optional[Tuple[float, float]]]:
    """Block-bootstrap intervals of percentile_q(current) / percentile_q(baseline): ``raw``, and ``net`` of ``reference``.

    Every group (one query's samples, in the order they were taken) is cut into ``blocks`` consecutive runs; each
    resample draws, on both sides, as many blocks as a group has, with replacement, and takes the same block
    positions from every group of a side (groups are rounds of the same queries). ``reference`` (baseline and current
    samples of the host reference, one per round) is drawn at those same positions, and the ``net`` ratio of a
    resample is its raw ratio divided by the reference's p90 ratio; None without a reference or when the groups of a side have
    different numbers of blocks. The same ``seed`` gives the same intervals. ``blocks`` equal to the sample count is
    the plain per-sample bootstrap.
    """
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    if blocks < 1:
        raise ValueError("blocks must be at least 1")
    rng = random.Random(seed)
    baseline_blocks = [consecutive_blocks(group, blocks) for group in baseline_groups]
    current_blocks = [consecutive_blocks(group, blocks) for group in current_groups]
    reference_blocks = [consecutive_blocks(samples, blocks) for samples in (reference.baseline, reference.current)] if reference is not None else None
    raw: List[float] = []
    net: List[float] = []
    for _round in range(resamples):
        base, base_positions = _resample(rng, baseline_blocks)
        current, current_positions = _resample(rng, current_blocks)
        ratio = _ratio(percentile_of_sorted(current, q), percentile_of_sorted(base, q))
        raw.append(ratio)
        if reference_blocks is not None and base_positions is not None and current_positions is not None:
            host_slowdown = reference.host_slowdown(sorted(_taken(reference_blocks[0], base_positions)),
                                                    sorted(_taken(reference_blocks[1], current_positions)))
            net.append(_ratio(ratio, host_slowdown))
    return {"raw": _interval(raw, confidence), "net": _interval(net, confidence) if len(net) == resamples else None}


def _interval(values: List[float], confidence: float) -> Tuple[float, float]:
    values.sort()
    tail = (1.0 - confidence) / 2.0 * 100.0
    return percentile_of_sorted(values, tail), percentile_of_sorted(values, 100.0 - tail)


def consecutive_blocks(samples: Sequence[float], blocks: int) -> List[List[float]]:
    """``samples`` cut into ``blocks`` runs of consecutive values (sizes differ by at most one; fewer blocks than asked
    when there are fewer samples)."""
    count = min(blocks, len(samples))
    if count == 0:
        return []
    bounds = [len(samples) * index // count for index in range(count + 1)]
    return [list(samples[bounds[index]:bounds[index + 1]]) for index in range(count)]


def delta_pct(baseline: float, current: float) -> Optional[float]:
    """(current - baseline) / baseline in percent, rounded to 0.01; None when the baseline is 0."""
    if baseline == 0:
        return None
    return round((current - baseline) / baseline * 100.0, 2)


def settings_differences(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """Readable differences in how the two measurements were taken (they make the comparison weaker)."""
    differences = []
    base_settings = baseline.get("settings") or {}
    current_settings = current.get("settings") or {}
    for key in _COMPARED_SETTINGS:
        if key in base_settings and key in current_settings and base_settings[key] != current_settings[key]:
            differences.append("{0}: baseline {1}, now {2}".format(key, base_settings[key], current_settings[key]))
    for key in ("server_version", "database"):
        if baseline.get(key) and current.get(key) and baseline[key] != current[key]:
            differences.append("{0}: baseline {1}, now {2}".format(key, baseline[key], current[key]))
    return differences


def p99_unreliable_queries(document: Mapping[str, Any]) -> List[str]:
    """Names of the queries with too few samples for a meaningful p99."""
    return [query["name"] for query in document["queries"] if not p99_reliable(len(query["samples_ms"]))]


def _resample(rng: random.Random, grouped_blocks: Sequence[Sequence[Sequence[float]]]) -> Tuple[List[float], Optional[List[int]]]:
    """One resample of a side, sorted, and the block positions drawn for every group (None when they have different
    numbers of blocks and were drawn independently)."""
    counts = {len(group) for group in grouped_blocks}
    values: List[float] = []
    positions: Optional[List[int]] = None
    if len(counts) == 1:
        positions = rng.choices(range(counts.pop()), k=len(grouped_blocks[0]))
        for group in grouped_blocks:
            values.extend(_taken(group, positions))
    else:
        for group in grouped_blocks:
            for block in rng.choices(group, k=len(group)):
                values.extend(block)
    values.sort()
    return values, positions


def _taken(blocks: Sequence[Sequence[float]], positions: Sequence[int]) -> List[float]:
    """The values of ``blocks`` at ``positions``, in no order."""
    return [value for position in positions for value in blocks[position]]


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return 1.0 if numerator == 0 else math.inf


def _finite(value: float, digits: int) -> Optional[float]:
    return round(value, digits) if math.isfinite(value) else None
