#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kpi_check
short_description: Evaluate the runbook KPIs against thresholds and fail the play on a breach
version_added: 0.1.0
description:
  - "Evaluates the runbook KPIs whose inputs are given, and fails with a message naming each breached KPI, its value and
    its threshold (O(warn_only) reports instead):"
  - "V(latency): the p99 latency change of a M(keel.postgres.query_latency) comparison. Breached, per query and overall,
    when the whole 95% interval of the p99 increase lies at or above O(latency_threshold_pct): the measurements show,
    beyond their own noise, an increase of at least the threshold. The interval is a block bootstrap over consecutive
    rounds, so a short spell of host noise widens it instead of passing for a regression. When both measurements timed
    the host reference (O(keel.postgres.query_latency#module:host_reference)), the interval of the change net of the
    reference's must lie there too: a rise the reference shares is a busier host's, not the schema's. When only the point
    estimate, or only one of the two intervals, reaches the threshold, the query is C(inconclusive): a warning, or a
    breach with O(latency_inconclusive=fail). A p99 from fewer than 100 samples is reported as a warning, never as evidence of a
    pass. The value is the largest p99 change in percent (point estimate)."
  - "V(rollback_mttr): the rollback durations recorded in the migration catalog (C(keel.migrations.rollback_seconds),
    written by M(keel.postgres.schema_change) when a rollback finishes) for rollbacks that finished within O(window),
    plus O(mttr_samples). Breached when the longest is at least O(mttr_threshold). The value is the longest duration in
    seconds; the mean is in the evidence."
  - "V(restore_success): the share of restore verifications (records written by M(keel.postgres.restore_verify) in
    the store) that passed within O(window), per tenant and tier. With O(key_provider), a V(passed) record counts only
    if its HMAC checks under a key derived from its backup's data key; one that does not (written by someone who can
    write to the store but holds no tenant key, or whose backup's key is shredded) counts as C(unauthenticated), a
    failure. Without O(key_provider), records count as they read, and a warning says so. Breached below
    O(restore_threshold_pct), and, with O(require_verification), for a tenant without any verification in the
    window. The value is the lowest rate, in percent."
  - Writes the evaluation as JSON (O(json_path)), in the Prometheus text exposition format for node_exporter's textfile
    collector (O(prometheus_path)) and as a self-contained HTML report with a before/after p99 chart (O(html_path)). A file
    is rewritten only when its content changes, atomically (temporary file in the same directory, then rename).
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.backup_store
  - keel.postgres.key_provider.optional
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Evaluates as usual (everything is read-only) but writes no file; C(changed) says whether one would change.
  diff_mode:
    support: none
    description: The report files are not diffed; RV(outputs) says which would change.
options:
  kpis:
    description:
      - The KPIs that must be evaluated; the module fails when the inputs of one of them are missing.
      - By default, every KPI whose inputs are given is evaluated, and at least one must be.
      - "Inputs: V(latency) needs O(latency_comparison) or O(latency_baseline) with O(latency_current); V(rollback_mttr)
        needs O(db) (the migrated database) or O(mttr_samples); V(restore_success) needs O(tenants) and O(store)."
    type: list
    elements: str
    choices: [latency, rollback_mttr, restore_success]
  latency_baseline:
    description:
      - A measurement file written by M(keel.postgres.query_latency) (the baseline, before the change). Used with
        O(latency_current); the two are compared as C(query_latency) V(compare) mode does.
    type: path
  latency_current:
    description: A second measurement file (after the change), written like O(latency_baseline).
    type: path
  latency_comparison:
    description:
      - The RV(keel.postgres.query_latency#module:comparison) result of a M(keel.postgres.query_latency) run in V(compare)
        mode. Mutually exclusive with O(latency_baseline) and O(latency_current).
    type: dict
  latency_threshold_pct:
    description: The p99 increase, in percent, that the lower bound of its 95% interval must reach for a breach.
    type: float
    default: 10
  latency_inconclusive:
    description:
      - What a query whose p99 increase reaches O(latency_threshold_pct) while its interval reaches below it, or whose
        raw and net-of-host-reference changes disagree, does to the gate. V(warn) passes with a warning that names it
        and why; V(fail) breaches, for teams that would rather re-measure than ship on doubt.
    type: str
    choices: [warn, fail]
    default: warn
  window:
    description:
      - How far back rollbacks and restore verifications count, for example V(90d), V(24h); a bare number is seconds.
    type: raw
    default: 90d
  mttr_threshold:
    description: The rollback duration at which the MTTR KPI is breached, for example V(15min), V(900); a bare number is seconds.
    type: raw
    default: 15min
  mttr_samples:
    description:
      - Further rollback durations in seconds, for example from a timed rollback drill on a sandbox copy. Counted with
        the catalog's.
    type: list
    elements: float
  tenants:
    description:
      - The tenants whose restore verifications are counted (the C(keel_tenants) inventory variable, as for
        M(keel.postgres.restore_verify)). A record without a C(tier) counts under the tenant's C(retention.tier).
    type: list
    elements: dict
  store:
    description:
      - Where the verification records are, as for M(keel.postgres.backup). Only read; nothing is written to the store.
    type: dict
    required: false
  restore_threshold_pct:
    description: The success rate, in percent, below which a tenant and tier breach the restore KPI.
    type: float
    default: 100
  require_verification:
    description: A tenant without any restore verification in O(window) breaches the restore KPI (otherwise it is a warning).
    type: bool
    default: true
  warn_only:
    description: Report breaches (as warnings and in the result) instead of failing.
    type: bool
    default: false
  json_path:
    description: Write the whole evaluation to this JSON file. Its directory must exist.
    type: path
  prometheus_path:
    description:
      - Write the KPIs in the Prometheus text exposition format to this file, for node_exporter's textfile collector
        (its name must end in C(.prom) to be collected). Its directory must exist.
      - "Metrics: C(keel_kpi_latency_p99_delta_ratio{query}) (0.1 is 10% slower; the overall entry has no C(query)
        label), C(keel_kpi_latency_p99_delta_ratio_lower{query}) (the lower bound of its 95% interval), C(keel_kpi_rollback_mttr_seconds),
        C(keel_kpi_rollback_mttr_mean_seconds), C(keel_kpi_restore_success_ratio{tenant,tier}),
        C(keel_kpi_threshold{kpi}) and C(keel_kpi_breached{kpi})."
    type: path
  html_path:
    description:
      - Write a self-contained HTML report (no external resources) to this file, with a bar chart of the before and
        after p99 per query and a table per KPI. Its directory must exist.
    type: path
notes:
  - The files contain no time of evaluation, so an unchanged evaluation leaves them untouched and C(changed) false.
  - A database connection is only opened to evaluate V(rollback_mttr) from the catalog.
seealso:
  - module: keel.postgres.query_latency
  - module: keel.postgres.migration_info
  - module: keel.postgres.restore_verify
"""

EXAMPLES = r"""
- name: Gate the migration on the runbook KPIs
  keel.postgres.kpi_check:
    db: app
    latency_comparison: "{{ latency.comparison }}"
    tenants: "{{ keel_tenants }}"
    store: "{{ keel_store }}"
    window: 90d
    prometheus_path: /var/lib/node_exporter/textfile/keel_kpi.prom
    html_path: /var/www/reports/kpi.html

- name: Compare two measurement files and only report
  keel.postgres.kpi_check:
    kpis: [latency]
    latency_baseline: /var/lib/keel/latency-before.json
    latency_current: /var/lib/keel/latency-after.json
    warn_only: true
    json_path: /var/lib/keel/kpi.json

- name: Rollback MTTR from the catalog and a timed drill
  keel.postgres.kpi_check:
    db: app
    kpis: [rollback_mttr]
    mttr_samples: "{{ [drill.metrics.phases.rollback / 1000] }}"
"""

RETURN = r"""
kpis:
  description:
    - One entry per KPI evaluated with C(name), C(value), C(threshold), C(unit), C(breached_when), C(passed),
      C(breaches), C(warnings) and C(evidence) (per query rows for V(latency); rollbacks and drill samples, C(max_seconds)
      and C(mean_seconds) for V(rollback_mttr); per tenant and tier C(groups) for V(restore_success)).
  returned: always
  type: list
  elements: dict
breaches:
  description: Each breach with C(kpi), C(value), C(threshold) and C(message).
  returned: always
  type: list
  elements: dict
passed:
  description: Whether no KPI was breached.
  returned: always
  type: bool
kpi_warnings:
  description: What weakens the evidence without being a breach (unreliable p99, no rollback in the window). Also shown as warnings.
  returned: always
  type: list
  elements: str
outputs:
  description: Per file written (C(json), C(prometheus), C(html)) its C(path), C(changed) and C(written) (false in check mode or when unchanged).
  returned: always
  type: dict
evaluated_at:
  description: When the evaluation ran (UTC, ISO 8601); not written to the files.
  returned: always
  type: str
metrics:
  description:
    - Wall time of the run and its phases in milliseconds, and counters.
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

import datetime
import json

from ansible_collections.keel.postgres.plugins.module_utils import pg
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import key_provider_option, open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import open_store, store_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants
from ansible_collections.keel.postgres.plugins.module_utils.errors import GateFailed, InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.kpi import html_report, kpi_rules, kpi_sources, prometheus_text
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import compare, read_baseline
from ansible_collections.keel.postgres.plugins.module_utils.kpi.report_files import write_report
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    spec = pg.connection_argument_spec()
    spec.update(
        kpis=dict(type="list", elements="str", choices=list(kpi_rules.KPI_NAMES)),
        latency_baseline=dict(type="path"),
        latency_current=dict(type="path"),
        latency_comparison=dict(type="dict"),
        latency_threshold_pct=dict(type="float", default=kpi_rules.DEFAULT_LATENCY_THRESHOLD_PCT),
        latency_inconclusive=dict(type="str", choices=list(kpi_rules.INCONCLUSIVE_CHOICES), default="warn"),
        window=dict(type="raw", default="90d"),
        mttr_threshold=dict(type="raw", default="15min"),
        mttr_samples=dict(type="list", elements="float"),
        tenants=dict(type="list", elements="dict"),
        store=dict(type="dict", options=store_argument_spec()),
        key_provider=key_provider_option(required=False),
        restore_threshold_pct=dict(type="float", default=kpi_rules.DEFAULT_RESTORE_THRESHOLD_PCT),
        require_verification=dict(type="bool", default=True),
        warn_only=dict(type="bool", default=False),
        json_path=dict(type="path"),
        prometheus_path=dict(type="path"),
        html_path=dict(type="path"),
    )
    return spec


def selected_kpis(params):
    """The KPIs to evaluate: the ones required by ``kpis``, else those whose inputs are given."""
    has_latency_files = params.get("latency_baseline") is not None or params.get("latency_current") is not None
    if has_latency_files and params.get("latency_comparison") is not None:
        raise InvalidOption("latency_comparison", "give either latency_comparison or latency_baseline with latency_current, not both")
    if has_latency_files and (params.get("latency_baseline") is None or params.get("latency_current") is None):
        missing = "latency_current" if params.get("latency_baseline") is not None else "latency_baseline"
        raise InvalidOption(missing, "latency_baseline and latency_current go together")
    given = {
        kpi_rules.LATENCY: has_latency_files or params.get("latency_comparison") is not None,
        kpi_rules.ROLLBACK_MTTR: params.get("db") is not None or params.get("mttr_samples") is not None,
        kpi_rules.RESTORE_SUCCESS: params.get("tenants") is not None or params.get("store") is not None,
    }
    needs = {
        kpi_rules.LATENCY: "latency_comparison, or latency_baseline with latency_current",
        kpi_rules.ROLLBACK_MTTR: "db (the database with the migration catalog) or mttr_samples",
        kpi_rules.RESTORE_SUCCESS: "tenants and store",
    }
    if params.get("kpis"):
        for name in params["kpis"]:
            if not given[name]:
                raise InvalidOption("kpis", "{0} is required but its input is missing: give {1}".format(name, needs[name]))
        chosen = [name for name in kpi_rules.KPI_NAMES if name in params["kpis"]]
    else:
        chosen = [name for name in kpi_rules.KPI_NAMES if given[name]]
    if not chosen:
        raise InvalidOption("kpis", "no KPI input given: give {0}".format("; or ".join(needs[name] for name in kpi_rules.KPI_NAMES)))
    if kpi_rules.RESTORE_SUCCESS in chosen and (params.get("tenants") is None or params.get("store") is None):
        raise InvalidOption("store" if params.get("tenants") is not None else "tenants", "restore_success needs both tenants and store")
    return chosen


def thresholds(params):
    window = parse_duration(params["window"], "window")
    if window <= 0:
        raise InvalidOption("window", "must be positive")
    mttr = parse_duration(params["mttr_threshold"], "mttr_threshold")
    if mttr <= 0:
        raise InvalidOption("mttr_threshold", "must be positive")
    if not 0 < params["restore_threshold_pct"] <= 100:
        raise InvalidOption("restore_threshold_pct", "must be above 0 and at most 100")
    for value in params.get("mttr_samples") or []:
        if value < 0:
            raise InvalidOption("mttr_samples", "durations cannot be negative, got {0}".format(value))
    return window, mttr


def kpi_check(module):
    params = module.params
    chosen = selected_kpis(params)
    window, mttr_threshold = thresholds(params)
    tenants = parse_tenants(params["tenants"]) if kpi_rules.RESTORE_SUCCESS in chosen else []
    now = datetime.datetime.now(datetime.timezone.utc)
    entries = []
    for name in chosen:
        with module.metrics.phase(name):
            if name == kpi_rules.LATENCY:
                entries.append(kpi_rules.evaluate_latency(latency_comparison(params), params["latency_threshold_pct"], params["latency_inconclusive"]))
            elif name == kpi_rules.ROLLBACK_MTTR:
                entries.append(kpi_rules.evaluate_mttr(rollbacks(module, window), params.get("mttr_samples") or [], mttr_threshold, window))
            else:
                store = open_store(params["store"])
                keys = open_key_provider(params["key_provider"]) if params.get("key_provider") else None
                if keys is None:
                    module.warn("restore_success: no key_provider, so verification records are counted as they read; anyone who can "
                                "write to the store could add passing ones")
                since = now - datetime.timedelta(seconds=window)
                evidence = [{"name": tenant.name, "tier": tenant.retention.tier,
                             "records": kpi_sources.verification_records(store, tenant.name, since, record_keys(store, keys, tenant.name))}
                            for tenant in tenants]
                entries.append(kpi_rules.evaluate_restore(evidence, now, window, params["restore_threshold_pct"], params["require_verification"]))
    evaluation = kpi_rules.summarize(entries, params["warn_only"])

    outputs = {}
    with module.metrics.phase("write"):
        for key, field, render in (("json", "json_path", _json_text), ("prometheus", "prometheus_path", prometheus_text.render),
                                   ("html", "html_path", html_report.render)):
            if params.get(field):
                outputs[key] = write_report(params[field], render(evaluation), field, module.check_mode)
    for warning in evaluation["warnings"]:
        module.warn(warning)
    result = {
        "changed": any(output["changed"] for output in outputs.values()),
        "kpis": evaluation["kpis"],
        "breaches": evaluation["breaches"],
        "passed": evaluation["passed"],
        "kpi_warnings": evaluation["warnings"],
        "outputs": outputs,
        "evaluated_at": now.isoformat(),
    }
    if not evaluation["passed"]:
        if params["warn_only"]:
            module.warn(kpi_rules.failure_message(evaluation) + " (warn_only: not failing)")
        else:
            raise GateFailed(kpi_rules.failure_message(evaluation), {key: value for key, value in result.items() if key != "changed"})
    return result


def record_keys(store, keys, tenant):
    """The record MAC key of each backup of ``tenant``, or None when the backup's manifest cannot be opened."""
    if keys is None:
        return None

    def record_key_of(backup_id):
        try:
            return BackupReader(store, keys, tenant, backup_id).record_mac_key()
        except KeelError:
            return None

    return record_key_of


def latency_comparison(params):
    if params.get("latency_comparison") is not None:
        comparison = params["latency_comparison"]
        if not isinstance(comparison.get("queries"), list):
            raise InvalidOption("latency_comparison", "is not a query_latency comparison (no queries list); pass the comparison of a compare run")
        return comparison
    return compare(read_baseline(params["latency_baseline"], "latency_baseline"), read_baseline(params["latency_current"], "latency_current"))


def rollbacks(module, window):
    if module.params.get("db") is None:
        return []
    if pg.PSYCOPG_IMPORT_ERROR is not None:
        module.require_libraries({"psycopg (version 3)": pg.PSYCOPG_IMPORT_ERROR})
    conn = module.connect(autocommit=True)
    try:
        return kpi_sources.rollback_durations(conn, window)
    finally:
        conn.close()


def _json_text(evaluation):
    return json.dumps({"format": "keel.postgres/kpi_check", "format_version": 1, **evaluation}, indent=1, sort_keys=True) + "\n"


def main():
    module = KeelModule("kpi_check", argument_spec(), uses_postgres=False, supports_check_mode=True)
    module.run(kpi_check)


if __name__ == "__main__":
    main()
