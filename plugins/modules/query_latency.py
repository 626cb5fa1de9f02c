#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: query_latency
short_description: Measure query latency percentiles, save them as a baseline and compare later runs against it
version_added: 0.1.0
description:
  - Times a set of queries, given in O(queries) or taken from pg_stat_statements (O(top_statements)), and reports
    p50, p95, p99, max, min and mean per query and overall (all samples pooled), in milliseconds.
  - "Noise control: after O(warmup) unrecorded rounds, O(runs) rounds run every query once each, in an order rotated by
    one every round, so a disturbance on the server (a checkpoint, autovacuum, another workload) is shared by all queries
    instead of landing on one."
  - Percentiles use linear interpolation between closest ranks (as C(percentile_cont) and numpy). A p99 needs at least
    100 samples; with fewer, it is essentially the largest sample, and a warning says so.
  - Each execution runs in its own transaction, C(BEGIN READ ONLY) ... C(COMMIT) by default, so a query that writes fails
    with SQLSTATE 25006 before changing anything. With O(allow_writes) it runs in C(BEGIN) ... C(ROLLBACK) instead.
  - Each query is sent as is, never prepared, so every execution is parsed and planned anew and a schema change (a
    dropped index) shows in the next execution. The time measured covers executing the query and fetching all its rows;
    rows are counted and dropped, never returned.
  - "O(mode): V(measure) only reports. V(baseline) also writes the measurement, with its samples, to the JSON file
    O(baseline_path). V(compare) reads that file, measures again (by default the baseline's queries) and compares."
  - "The comparison gives, per query and overall, the p50/p95/p99 changes in percent and a 95% block-bootstrap
    confidence interval of the p99 ratio current/baseline (1000 resamples of 10 blocks of consecutive rounds per side,
    fixed seed, so reruns on the same samples give the same interval). Blocks, not single samples, because host noise
    comes in spells that slow many neighbouring executions at once. C(significant) means the whole interval is above
    1.0. M(keel.postgres.kpi_check) gates on it: a breach when the whole interval is at or above the threshold."
  - Failing queries are reported by name, SQLSTATE and condition, never with the server's message, which can quote row values.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description:
      - Measuring is read-only, so queries are timed in check mode too and V(compare) compares as usual.
      - V(baseline) measures but does not write O(baseline_path); C(changed) says that it would have been written.
      - With O(allow_writes), nothing is run in check mode (rolled-back writes still advance sequences and take row locks);
        the options and the baseline file are checked and RV(measured) is V(false).
  diff_mode:
    support: none
    description: Nothing to compare; the result holds the measurement and the comparison.
options:
  queries:
    description:
      - "The queries to time, each C({name: ..., sql: ...}). Names are unique and match the queries of a baseline in
        V(compare) mode."
      - Each C(sql) is one statement (or several separated by semicolons) without parameters. Transaction control
        (C(BEGIN), C(COMMIT), C(ROLLBACK), C(SAVEPOINT) ...) is refused.
      - Mutually exclusive with O(top_statements). In V(compare) mode, both default to the queries of the baseline file.
    type: list
    elements: dict
  top_statements:
    description:
      - Time the N statements of the connected database with the largest total execution time in C(pg_stat_statements).
      - Statements recorded with parameters (pg_stat_statements turns constants into C($1), C($2) ...), utility statements,
        and, without O(allow_writes), statements that write or lock rows are skipped and listed in RV(skipped_statements).
      - Each is named C(statement_) followed by a hash of its text, stable across servers.
      - Needs the C(pg_stat_statements) extension in the database and in C(shared_preload_libraries).
    type: int
  runs:
    description: Timed rounds; each round runs every query once. At least 100 for a reliable p99.
    type: int
    default: 100
  warmup:
    description: Rounds run before the timed ones and not recorded (caches, catalog lookups).
    type: int
    default: 5
  mode:
    description:
      - V(measure) reports the measurement. V(baseline) also writes it to O(baseline_path). V(compare) compares it with
        the baseline in O(baseline_path).
    type: str
    choices: [measure, baseline, compare]
    default: measure
  baseline_path:
    description:
      - The baseline file, written in V(baseline) mode (atomically, mode 0644, replacing an existing one) and read in
        V(compare) mode. Required in both. Its directory must exist.
    type: path
  allow_writes:
    description:
      - Run each execution in C(BEGIN) ... C(ROLLBACK) instead of a READ ONLY transaction, so statements that write can
        be timed. Their changes are rolled back, but sequences still advance, and row locks are held while each runs.
    type: bool
    default: false
  statement_timeout:
    description: Longest run of one execution, for example V(500ms), V(30s) or V(5min); a bare number is seconds.
    type: raw
    default: 30s
  host_reference:
    description:
      - "Also time, in every round, a statement that touches no table: SELECT count(*) FROM (SELECT generate_series(1, N)) AS series,
        with N sized after the warmup so that it lasts about as long as the median query. No schema change can slow it;
        a host that is busier during one measurement (another workload, a CI neighbour, CPU steal) slows it with the
        queries."
      - It is written to the baseline file, and V(compare) times the baseline's reference again, unchanged, when the
        baseline has one. The comparison then also gives every p99 change net of the reference's, and
        M(keel.postgres.kpi_check) breaches only when the raw and the net change agree.
      - Adds one execution per round, about as long as the median query.
    type: bool
    default: true
notes:
  - Run it from a host close to the server, and compare measurements taken from the same place with the same O(runs);
    the times include the network round trip. Differences in settings or server version are reported as warnings.
  - The measurement adds load while it runs (O(runs) + O(warmup) executions of every query), one at a time.
seealso:
  - module: keel.postgres.preflight
  - module: keel.postgres.schema_change
"""

EXAMPLES = r"""
- name: Record the latency of the critical queries before the migration
  keel.postgres.query_latency:
    db: app
    mode: baseline
    baseline_path: /var/lib/keel/latency-before.json
    queries:
      - name: order by id
        sql: SELECT * FROM orders WHERE id = 4242
      - name: open orders of a customer
        sql: SELECT count(*) FROM orders WHERE customer_id = 17 AND status = 'open'

- name: Migrate
  keel.postgres.schema_change: "{{ migration }}"

- name: Measure the same queries again and compare
  keel.postgres.query_latency:
    db: app
    mode: compare
    baseline_path: /var/lib/keel/latency-before.json
  register: latency

- name: Fail when a p99 grew by 10% or more, beyond noise
  keel.postgres.kpi_check:
    latency_comparison: "{{ latency.comparison }}"
    latency_threshold_pct: 10

- name: Time the ten most expensive re-runnable statements from pg_stat_statements
  keel.postgres.query_latency:
    db: app
    top_statements: 10
    runs: 200
"""

RETURN = r"""
mode:
  description: The mode the module ran in.
  returned: always
  type: str
measured:
  description: Whether queries were run (V(false) only in check mode with O(allow_writes)).
  returned: always
  type: bool
queries:
  description:
    - One entry per query timed, in the order given, with C(name), C(source) (V(queries), V(top_statements) or
      V(baseline)), C(sql), C(rows) (rows returned or affected by the last execution), and the summary in milliseconds
      C(n), C(min), C(p50), C(p95), C(p99), C(max), C(mean), and C(p99_reliable) (at least 100 samples).
  returned: always
  type: list
  elements: dict
overall:
  description: The same summary over every sample of every query pooled together; null when nothing was measured.
  returned: always
  type: dict
reference:
  description:
    - The host reference timed beside the queries (O(host_reference)), C(sql) and its summary in milliseconds; null
      when none was timed.
  returned: always
  type: dict
comparison:
  description:
    - "In V(compare) mode: C(queries), one entry per query measured on both sides (matched by name), and C(overall) (the
      queries on both sides pooled, resampled query by query). Each holds C(baseline) and C(current) summaries,
      C(p50_delta_pct), C(p95_delta_pct), C(p99_delta_pct) (percent, positive is slower), C(p99_ratio),
      C(p99_ratio_ci) and C(p99_delta_pct_ci) (the 95% bootstrap interval, low and high), C(significant) (the interval
      is entirely above 1.0), C(p99_reliable) and, per query, C(sql_changed)."
    - "Net of the host reference (see O(host_reference)), each entry also holds C(p99_net_ratio), C(p99_net_ratio_ci),
      C(p99_net_delta_pct), C(p99_net_delta_pct_ci) and C(net_significant): the p99 change divided by the reference's,
      from the same resampled rounds. They are null when the two measurements do not hold the same reference."
    - C(reference) says how the host reference changed (C(sql), C(usable), C(reason) when it is not, and its own
      C(baseline), C(current), C(p99_delta_pct) and C(p99_delta_pct_ci)).
    - C(significant_increases) names the queries whose p99 increase is significant; C(missing_in_current) and
      C(missing_in_baseline) name the queries measured on one side only; C(settings_differences) lists how the two
      measurements were taken differently; C(method) states the statistics used.
  returned: in compare mode, when measured
  type: dict
baseline_path:
  description: The absolute path of the baseline file written or read.
  returned: in baseline and compare modes
  type: str
baseline_written:
  description: Whether the baseline file was written (V(false) in check mode).
  returned: in baseline mode
  type: bool
skipped_statements:
  description: With O(top_statements), the pg_stat_statements entries passed over, with C(queryid), C(query), C(calls),
    C(total_exec_time_ms) and C(reason).
  returned: with top_statements
  type: list
  elements: dict
settings:
  description: C(runs), C(warmup), C(allow_writes), C(statement_timeout_ms) and C(interleaved).
  returned: always
  type: dict
server_version:
  description: The server version measured.
  returned: when measured
  type: str
database:
  description: The database measured.
  returned: when measured
  type: str
measured_at:
  description: When the measurement was taken (UTC, ISO 8601).
  returned: when measured
  type: str
latency_warnings:
  description:
    - What weakens the measurement or the comparison, for example too few samples for a p99, queries missing on one
      side, or settings that differ from the baseline's. Each is also shown as an Ansible warning.
  returned: always
  type: list
  elements: str
metrics:
  description:
    - Wall time per phase (C(connect), C(select_queries), C(warmup), C(calibrate), C(measure), C(compare), C(write)) in
      milliseconds and the count of C(executions).
    - The same figures go to O(metrics_textfile) and, as spans, to O(otlp_endpoint); docs/observability.md lists
      them.
  returned: always
  type: dict
  contains:
    duration_ms:
      description: Wall time of the run in milliseconds.
      type: float
      returned: always
    phases_ms:
      description: Wall time per phase in milliseconds, repetitions added up.
      type: dict
      returned: always
    phases:
      description:
        - Per phase, C(duration_ms), C(repetitions), the C(counters) counted while it ran and C(rates)
          (C(<counter>_per_second) for counters of rows and bytes).
      type: dict
      returned: always
    counters:
      description:
        - Counts and sums of the run. Names carry their unit (C(_bytes), C(_ms), C(_seconds)); a name without one is a
          count. Counters named C(longest_*), C(peak_*) or C(max_*) keep the largest value seen.
      type: dict
      returned: always
    gauges:
      description: Readings of the run, such as sizes before and after, throughput or cost.
      type: dict
      returned: always
    series:
      description: Readings split by labels, each with C(name), C(labels) and C(value) (per tenant and tier, say).
      type: list
      elements: dict
      returned: always
    labels:
      description:
        - What the run worked on (C(db), C(schema), C(table), C(migration), C(tenant), C(tier), C(store)); the same
          labels go on the Prometheus series and the spans.
      type: dict
      returned: always
    exported:
      description:
        - Where the metrics went, C(textfile) (the path written, or null), C(trace_id) (32 hex digits, or null) and
          C(spans) (how many spans were sent).
      type: dict
      returned: always
"""

import os

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.kpi.host_reference import calibrate
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import (
    build_document,
    compare,
    p99_unreliable_queries,
    queries_of,
    query_summaries,
    read_baseline,
    reference_of,
    write_baseline,
)
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import SamplerSettings, sample_latencies
from ansible_collections.keel.postgres.plugins.module_utils.kpi.percentiles import MIN_SAMPLES_FOR_P99
from ansible_collections.keel.postgres.plugins.module_utils.kpi.query_sources import parse_queries, top_statements
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    return dict(
        queries=dict(type="list", elements="dict"),
        top_statements=dict(type="int"),
        runs=dict(type="int", default=100),
        warmup=dict(type="int", default=5),
        mode=dict(type="str", choices=["measure", "baseline", "compare"], default="measure"),
        baseline_path=dict(type="path"),
        allow_writes=dict(type="bool", default=False),
        statement_timeout=dict(type="raw", default="30s"),
        host_reference=dict(type="bool", default=True),
    )


def settings_from(params):
    if params["runs"] < 1:
        raise InvalidOption("runs", "must be at least 1, got {0}".format(params["runs"]))
    if params["warmup"] < 0:
        raise InvalidOption("warmup", "must not be negative, got {0}".format(params["warmup"]))
    timeout_ms = int(parse_duration(params["statement_timeout"], "statement_timeout") * 1000)
    if timeout_ms < 1:
        raise InvalidOption("statement_timeout", "must be at least 1ms")
    return SamplerSettings(runs=params["runs"], warmup=params["warmup"], allow_writes=params["allow_writes"], statement_timeout_ms=timeout_ms)


def validated_request(params):
    """Everything that can be wrong with the options, checked before connecting."""
    mode = params["mode"]
    settings = settings_from(params)
    if mode in ("baseline", "compare") and not params.get("baseline_path"):
        raise InvalidOption("baseline_path", "is required with mode: {0}".format(mode))
    if params.get("queries") is not None and params.get("top_statements") is not None:
        raise InvalidOption("top_statements", "cannot be combined with queries; give one or the other")
    given = parse_queries(params["queries"]) if params.get("queries") is not None else None
    if params.get("top_statements") is not None and params["top_statements"] < 1:
        raise InvalidOption("top_statements", "must be at least 1, got {0}".format(params["top_statements"]))
    baseline = read_baseline(params["baseline_path"]) if mode == "compare" else None
    if given is None and params.get("top_statements") is None and baseline is None:
        raise InvalidOption("queries", "give the queries to time ({name, sql} entries) or top_statements")
    return mode, settings, given, baseline


def query_latency(module):
    params = module.params
    mode, settings, given, baseline = validated_request(params)
    result = {"changed": False, "mode": mode, "measured": False, "queries": [], "overall": None, "reference": None,
              "settings": settings.as_dict()}
    warnings = []
    if mode in ("baseline", "compare"):
        result["baseline_path"] = _absolute(params["baseline_path"])
    if module.check_mode and settings.allow_writes:
        warnings.append("check mode: no query was run, because allow_writes executes writing statements (rolled back, "
                        "but sequences advance and rows are locked)")
        if mode == "baseline":
            result.update(changed=True, baseline_written=False)
        return _finish(module, result, warnings)

    conn = module.connect(autocommit=True)
    try:
        with module.metrics.phase("select_queries"):
            if given is not None:
                queries = given
            elif params.get("top_statements") is not None:
                queries, skipped = top_statements(conn, params["top_statements"], settings.allow_writes)
                result["skipped_statements"] = skipped
            else:
                queries = queries_of(baseline)
        results = sample_latencies(conn, queries, settings, module.metrics, after_warmup=_reference_to_time(conn, queries, settings, params, baseline))
        document = build_document(results, settings, conn.info.parameter_status("server_version") or "", conn.info.server_version, conn.info.dbname)
    finally:
        conn.close()

    reference = document.get("reference")
    result.update(measured=True, queries=query_summaries(document), overall=document["overall"], server_version=document["server_version"],
                  database=document["database"], measured_at=document["measured_at"],
                  reference=dict(reference["summary"], sql=reference["sql"]) if reference else None)
    unreliable = p99_unreliable_queries(document)
    if unreliable:
        warnings.append("too few samples for a reliable p99 ({0} per query, at least {1} needed; with fewer, p99 is essentially the "
                        "largest sample): {2}".format(settings.runs, MIN_SAMPLES_FOR_P99, ", ".join(unreliable)))

    if mode == "baseline":
        if module.check_mode:
            result.update(changed=True, baseline_written=False)
        else:
            with module.metrics.phase("write"):
                result["baseline_path"] = write_baseline(params["baseline_path"], document)
            result.update(changed=True, baseline_written=True)
    elif mode == "compare":
        with module.metrics.phase("compare"):
            comparison = compare(baseline, document)
        result["comparison"] = comparison
        warnings.extend(_comparison_warnings(comparison))
    return _finish(module, result, warnings)


def _reference_to_time(conn, queries, settings, params, baseline):
    """What ``sample_latencies`` adds after the warmup: the baseline's reference again, a newly sized one, or nothing."""
    if not params["host_reference"]:
        return None
    if baseline is not None:
        reference = reference_of(baseline)
        return (lambda warm: [reference]) if reference is not None else None
    return lambda warm: [calibrate(conn, queries, settings, warm)]


def _comparison_warnings(comparison):
    warnings = []
    reference = comparison["reference"]
    if not reference["usable"]:
        warnings.append("no change is judged net of the host reference: {0}".format(reference["reason"]))
    if comparison["missing_in_current"]:
        warnings.append("queries of the baseline not measured now: {0}".format(", ".join(comparison["missing_in_current"])))
    if comparison["missing_in_baseline"]:
        warnings.append("queries measured now but not in the baseline: {0}".format(", ".join(comparison["missing_in_baseline"])))
    if comparison["settings_differences"]:
        warnings.append("measured differently from the baseline ({0}); the comparison is weaker".format("; ".join(comparison["settings_differences"])))
    changed_sql = [entry["name"] for entry in comparison["queries"] if entry["sql_changed"]]
    if changed_sql:
        warnings.append("the sql of these queries differs from the baseline's: {0}".format(", ".join(changed_sql)))
    return warnings


def _finish(module, result, warnings):
    for warning in warnings:
        module.warn(warning)
    result["latency_warnings"] = warnings
    return result


def _absolute(path):
    return os.path.abspath(path)


def main():
    module = KeelModule("query_latency", argument_spec(), supports_check_mode=True)
    module.run(query_latency)


if __name__ == "__main__":
    main()
