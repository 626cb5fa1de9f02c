# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A kpi_check evaluation in the Prometheus text exposition format (version 0.0.4).

Meant for node_exporter's textfile collector: every family has ``# HELP`` and
``# TYPE gauge`` lines, label values are escaped (backslash, double quote,
newline), and nothing depends on the clock, so the same evaluation renders to
the same bytes and an unchanged file is not rewritten.

- ``keel_kpi_latency_p99_delta_ratio{query="..."}``: p99 change as a ratio
  (0.1 is 10% slower); the overall entry carries no ``query`` label.
- ``keel_kpi_latency_p99_delta_ratio_lower{query="..."}``: the lower bound of
  its 95% interval; the gate breaches when this reaches the threshold.
- ``keel_kpi_rollback_mttr_seconds`` (longest) and
  ``keel_kpi_rollback_mttr_mean_seconds``.
- ``keel_kpi_restore_success_ratio{tenant="...",tier="..."}``.
- ``keel_kpi_threshold{kpi="..."}`` and ``keel_kpi_breached{kpi="..."}`` (0 or 1)
  for every KPI evaluated.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.observe.exposition import escape_help, label_set, sample_line

Sample = Tuple[Dict[str, str], float]


def family(name: str, help_text: str, samples: Sequence[Sample]) -> List[str]:
    lines = ["# HELP {0} {1}".format(name, escape_help(help_text)), "# TYPE {0} gauge".format(name)]
    lines.extend(sample_line(name, label_set(labels), value) for labels, value in samples)
    return lines


def _percent_samples(rows: Sequence[Mapping[str, Any]], key: str) -> List[Sample]:
    """A percent field of each latency row that has one, as a ratio; no query label for the pooled row."""
    return [(_row_labels(row), row[key] / 100.0) for row in rows if row.get(key) is not None]


def _lower_bound_samples(rows: Sequence[Mapping[str, Any]], key: str) -> List[Sample]:
    return [(_row_labels(row), row[key][0] / 100.0) for row in rows if len(row.get(key) or []) == 2 and row[key][0] is not None]


def _row_labels(row: Mapping[str, Any]) -> Dict[str, str]:
    return {"query": row["name"]} if row["scope"] == "query" else {}


def render(evaluation: Mapping[str, Any]) -> str:
    """The whole exposition, ending with a newline."""
    kpis = {kpi["name"]: kpi for kpi in evaluation["kpis"]}
    lines: List[str] = []
    latency = kpis.get("latency")
    if latency:
        rows = list(latency["evidence"]["queries"]) + ([latency["evidence"]["overall"]] if latency["evidence"]["overall"] else [])
        lines += family("keel_kpi_latency_p99_delta_ratio",
                        "Change of p99 query latency after/before as a ratio (0.1 = 10% slower); no query label = all queries pooled.",
                        _percent_samples(rows, "p99_delta_pct"))
        lines += family("keel_kpi_latency_p99_delta_ratio_lower",
                        "Lower bound of the 95% block-bootstrap interval of that change; the gate breaches when it reaches the threshold.",
                        _lower_bound_samples(rows, "p99_delta_pct_ci"))
        net = _percent_samples(rows, "p99_net_delta_pct")
        if net:
            lines += family("keel_kpi_latency_p99_net_delta_ratio",
                            "The same change net of the host reference's (a statement no schema change can slow), as a ratio.", net)
            lines += family("keel_kpi_latency_p99_net_delta_ratio_lower",
                            "Lower bound of the 95% interval of the net change; a breach needs it at the threshold too.",
                            _lower_bound_samples(rows, "p99_net_delta_pct_ci"))
        reference = latency["evidence"].get("reference") or {}
        if reference.get("p99_delta_pct") is not None:
            lines += family("keel_kpi_latency_reference_p99_delta_ratio",
                            "Change of the host reference's p99 between the measurements, as a ratio: how much busier the host was.",
                            [({}, reference["p99_delta_pct"] / 100.0)])
    mttr = kpis.get("rollback_mttr")
    if mttr and mttr["value"] is not None:
        lines += family("keel_kpi_rollback_mttr_seconds", "Longest recorded rollback duration in the window, in seconds.", [({}, mttr["value"])])
        lines += family("keel_kpi_rollback_mttr_mean_seconds", "Mean recorded rollback duration in the window, in seconds.",
                        [({}, mttr["evidence"]["mean_seconds"])])
    restore = kpis.get("restore_success")
    if restore:
        samples = [({"tenant": group["tenant"], "tier": group["tier"]}, _ratio(group["success_ratio"])) for group in restore["evidence"]["groups"]]
        lines += family("keel_kpi_restore_success_ratio", "Share of restore verifications that passed in the window, per tenant and tier "
                        "(NaN: none in the window).", samples)
    lines += family("keel_kpi_threshold", "Threshold of the KPI (latency and restore_success in percent, rollback_mttr in seconds).",
                    [({"kpi": kpi["name"]}, float(kpi["threshold"])) for kpi in evaluation["kpis"]])
    lines += family("keel_kpi_breached", "1 when the KPI is breached, 0 when it passed.",
                    [({"kpi": kpi["name"]}, 0.0 if kpi["passed"] else 1.0) for kpi in evaluation["kpis"]])
    return "\n".join(lines) + "\n"


def _ratio(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)
