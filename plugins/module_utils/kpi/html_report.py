# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A kpi_check evaluation as one self-contained HTML page.

No external resource (no script, stylesheet, font or image fetched): the
style is inline and the latency chart is inline SVG, so the file can be
mailed, archived or opened offline. Every value from the evaluation (query
names, tenants, reasons) is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any, List, Mapping, Optional, Sequence

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#1d1d1f;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:0.9em}
th{background:#f2f2f2}.pass{color:#106b21;font-weight:bold}.fail{color:#b00020;font-weight:bold}.doubt{color:#8a5a00;font-weight:bold}
.warn{color:#8a5a00}ul.warnings li{color:#8a5a00}.num{text-align:right;font-variant-numeric:tabular-nums}
"""

_BASE_COLOUR = "#7a8ca3"
_CURRENT_COLOUR = "#d9822b"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def number(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, (int, float)):
        return esc("{0:.{1}f}{2}".format(value, digits, suffix))
    return esc(value)


def verdict(passed: bool) -> str:
    return '<span class="pass">passed</span>' if passed else '<span class="fail">BREACHED</span>'


def latency_verdict(row: Mapping[str, Any]) -> str:
    if row.get("inconclusive") and not row["breached"]:
        return '<span class="doubt">inconclusive</span>'
    return verdict(not row["breached"])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` hold HTML already escaped."""
    head = "".join("<th>{0}</th>".format(esc(header)) for header in headers)
    body = "".join("<tr>" + "".join("<td>{0}</td>".format(cell) for cell in row) + "</tr>" for row in rows)
    return "<table><thead><tr>{0}</tr></thead><tbody>{1}</tbody></table>".format(head, body)


def latency_chart(rows: Sequence[Mapping[str, Any]]) -> str:
    """Inline SVG: a pair of horizontal bars (baseline, current p99 in ms) per query."""
    bars = [row for row in rows if row.get("baseline_p99_ms") is not None and row.get("current_p99_ms") is not None]
    if not bars:
        return "<p>No p99 to chart.</p>"
    label_width, chart_width, bar_height, gap = 220, 560, 14, 14
    top = 30
    height = top + len(bars) * (2 * bar_height + gap) + 10
    largest = max(max(row["baseline_p99_ms"], row["current_p99_ms"]) for row in bars) or 1.0
    parts: List[str] = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" role="img" aria-label="p99 latency before and after">'.format(
            label_width + chart_width + 120, height),
        '<rect x="{0}" y="6" width="12" height="12" fill="{1}"/><text x="{2}" y="16" font-size="12">baseline p99</text>'.format(
            label_width, _BASE_COLOUR, label_width + 16),
        '<rect x="{0}" y="6" width="12" height="12" fill="{1}"/><text x="{2}" y="16" font-size="12">current p99</text>'.format(
            label_width + 130, _CURRENT_COLOUR, label_width + 146),
    ]
    y = top
    for row in bars:
        name = row["name"] if row["scope"] == "query" else "(all queries)"
        short = name if len(name) <= 32 else name[:31] + "\u2026"
        parts.append('<text x="{0}" y="{1}" font-size="12" text-anchor="end"><title>{2}</title>{3}</text>'.format(
            label_width - 8, y + bar_height + 4, esc(name), esc(short)))
        for offset, key, colour in ((0, "baseline_p99_ms", _BASE_COLOUR), (bar_height, "current_p99_ms", _CURRENT_COLOUR)):
            width = max(1.0, chart_width * float(row[key]) / largest)
            parts.append('<rect x="{0}" y="{1}" width="{2:.1f}" height="{3}" fill="{4}"/>'.format(label_width, y + offset, width, bar_height - 1, colour))
            parts.append('<text x="{0:.1f}" y="{1}" font-size="11">{2}</text>'.format(
                label_width + width + 4, y + offset + bar_height - 3, esc("{0:.3f} ms".format(float(row[key])))))
        y += 2 * bar_height + gap
    parts.append("</svg>")
    return "".join(parts)


def _latency_section(kpi: Mapping[str, Any]) -> str:
    evidence = kpi["evidence"]
    rows = list(evidence["queries"]) + ([evidence["overall"]] if evidence["overall"] else [])
    cells = []
    for row in rows:
        cells.append([esc(row["name"] if row["scope"] == "query" else "(all queries)"), number(row["baseline_p99_ms"], 3),
                      number(row["current_p99_ms"], 3), number(row["p99_delta_pct"], 1, "%"), interval_text(row["p99_delta_pct_ci"]),
                      number(row.get("p99_net_delta_pct"), 1, "%"), interval_text(row.get("p99_net_delta_pct_ci") or []),
                      esc("yes" if row["p99_reliable"] else "no (too few samples)"), latency_verdict(row)])
    return "".join([
        latency_chart(rows),
        table(["query", "baseline p99 (ms)", "current p99 (ms)", "p99 change", "95% CI of change", "net of host reference", "95% CI net",
               "p99 reliable", "verdict"], cells),
        "<p>Baseline measured {0}, current measured {1}.</p>".format(
            esc(evidence.get("baseline_measured_at") or "?"), esc(evidence.get("current_measured_at") or "?")),
        _reference_paragraph(evidence.get("reference")),
    ])


def interval_text(interval: Sequence[Any]) -> str:
    if len(interval) != 2:
        return "&ndash;"
    return "{0} .. {1}".format(number(interval[0], 1, "%"), number(interval[1], 1, "%"))


def _reference_paragraph(reference: Optional[Mapping[str, Any]]) -> str:
    if not reference:
        return ""
    if not reference.get("usable"):
        return "<p>Not judged net of the host reference: {0}.</p>".format(esc(reference.get("reason")))
    return ("<p>Host reference <code>{0}</code>: p99 {1} ms before, {2} ms now, a change of {3} (95% CI {4}). It touches no table, so "
            "its change is the host's.</p>").format(esc(reference.get("sql")), number(reference.get("baseline_p99_ms"), 3),
                                                    number(reference.get("current_p99_ms"), 3), number(reference.get("p99_delta_pct"), 1, "%"),
                                                    interval_text(reference.get("p99_delta_pct_ci") or []))


def _mttr_section(kpi: Mapping[str, Any]) -> str:
    evidence = kpi["evidence"]
    rows = [[esc(item.get("name")), number(item.get("rollback_seconds"), 3), esc(item.get("rolled_back_at"))] for item in evidence["rollbacks"]]
    rows += [[esc("drill sample"), number(value, 3), "&ndash;"] for value in evidence["drill_samples"]]
    return "<p>Longest {0} s, mean {1} s over {2} rollback(s).</p>{3}".format(
        number(evidence["max_seconds"], 3), number(evidence["mean_seconds"], 3), esc(evidence["count"]),
        table(["migration", "rollback duration (s)", "rolled back at"], rows))


def _restore_section(kpi: Mapping[str, Any]) -> str:
    rows = []
    for group in kpi["evidence"]["groups"]:
        failures = ", ".join("{0} ({1})".format(item.get("backup_id"), item.get("outcome")) for item in group["failures"])
        rows.append([esc(group["tenant"]), esc(group["tier"]), number(group["total"], 0), number(group["passed"], 0),
                     number(group["success_pct"], 1, "%"), esc(failures)])
    return "<p>Verifications of the last {0:g} days.</p>{1}".format(
        kpi["evidence"]["window_seconds"] / 86400.0, table(["tenant", "tier", "verifications", "passed", "success rate", "failed backups"], rows))


_SECTIONS = {
    "latency": ("Query latency (p99 after vs before)", _latency_section),
    "rollback_mttr": ("Rollback MTTR", _mttr_section),
    "restore_success": ("Restore success rate", _restore_section),
}


def render(evaluation: Mapping[str, Any], title: Optional[str] = None) -> str:
    heading = title or "keel.postgres KPI check"
    summary_rows = [[esc(kpi["name"]), number(kpi["value"], 2), number(kpi["threshold"], 2), esc(kpi["unit"]), esc(kpi["breached_when"]),
                     verdict(kpi["passed"])] for kpi in evaluation["kpis"]]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>{0}</title><style>{1}</style></head><body>".format(esc(heading), _STYLE),
        "<h1>{0}</h1>".format(esc(heading)),
        "<p>Overall: {0}{1}</p>".format(verdict(evaluation["passed"]), " (warn only: the play was not failed)" if evaluation.get("warn_only") else ""),
        table(["KPI", "value", "threshold", "unit", "breached when", "verdict"], summary_rows),
    ]
    if evaluation["breaches"]:
        parts.append("<h2>Breaches</h2><ul>" + "".join('<li class="fail">{0}</li>'.format(esc(b["message"])) for b in evaluation["breaches"]) + "</ul>")
    if evaluation["warnings"]:
        parts.append('<h2>Warnings</h2><ul class="warnings">' + "".join("<li>{0}</li>".format(esc(w)) for w in evaluation["warnings"]) + "</ul>")
    for kpi in evaluation["kpis"]:
        section_title, section = _SECTIONS[kpi["name"]]
        parts.append("<h2>{0}: {1}</h2>".format(esc(section_title), verdict(kpi["passed"])))
        parts.append(section(kpi))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
