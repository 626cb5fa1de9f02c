# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook KPIs as rules: evidence in, ``{name, value, threshold, passed, evidence}`` out.

Pure: no I/O, no clock (the caller passes ``now``), so a unit test gives the
same verdict as a playbook run. Each ``evaluate_*`` returns one KPI entry; a
breach is described by ``breaches`` (a list of readable strings naming the
KPI, the value and the threshold) and ``warnings`` say what weakens the
evidence without being a breach (too few samples for a p99, no data at all).

- ``latency``: per query and overall, breach when the whole confidence
  interval of the p99 increase lies at or above the threshold (percent): the
  measurements show, beyond their own noise, an increase of at least the
  threshold. When both measurements timed the host reference, the interval of
  the increase net of the reference's must lie there too: a rise the reference
  shares is the host's, not the query's. When only one of the two intervals,
  or only the point estimate, reaches the threshold the entry is
  ``inconclusive``: a warning, or a breach with ``inconclusive="fail"``. The
  KPI value is the largest p99 increase (point estimate), in percent.
- ``rollback_mttr``: the recorded rollback durations (seconds) in the window
  plus any drill samples; the value is the longest, breach when it is at or
  above the threshold. The mean is reported too.
- ``restore_success``: passed / all verification records in the window, per
  tenant and tier; the value is the lowest rate (percent), breach below the
  threshold, and (with ``require_verification``) for a tenant without any
  verification in the window.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

LATENCY = "latency"
ROLLBACK_MTTR = "rollback_mttr"
RESTORE_SUCCESS = "restore_success"
KPI_NAMES = (LATENCY, ROLLBACK_MTTR, RESTORE_SUCCESS)

DEFAULT_LATENCY_THRESHOLD_PCT = 10.0
DEFAULT_MTTR_THRESHOLD_SECONDS = 15 * 60.0
DEFAULT_RESTORE_THRESHOLD_PCT = 100.0
DEFAULT_WINDOW_SECONDS = 90 * 86400.0

PASSED = "passed"
INCONCLUSIVE_CHOICES = ("warn", "fail")


def kpi_entry(name: str, value: Optional[float], threshold: float, unit: str, comparison: str, evidence: Dict[str, Any],
              breaches: List[str], warnings: List[str]) -> Dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "unit": unit,
        "breached_when": comparison,
        "passed": not breaches,
        "breaches": breaches,
        "warnings": warnings,
        "evidence": evidence,
    }


# ---------------------------------------------------------------- latency


def evaluate_latency(comparison: Mapping[str, Any], threshold_pct: float = DEFAULT_LATENCY_THRESHOLD_PCT,
                     inconclusive: str = "warn") -> Dict[str, Any]:
    """The latency KPI from a query_latency ``comparison`` (``queries`` entries and ``overall``)."""
    entries: List[Mapping[str, Any]] = list(comparison.get("queries") or [])
    overall = comparison.get("overall")
    checked: List[Dict[str, Any]] = []
    breaches: List[str] = []
    warnings: List[str] = []
    for entry, scope in [(item, "query") for item in entries] + ([(overall, "overall")] if overall else []):
        row = _latency_row(entry, scope, threshold_pct)
        checked.append(row)
        label = "overall" if scope == "overall" else "query {0!r}".format(row["name"])
        rise = "latency: p99 of {0} rose {1:.1f}% (95% CI {2}{3}), threshold {4:g}%".format(
            label, row["p99_delta_pct"] or 0.0, _ci_text(row["p99_delta_pct_ci"]), _net_text(row), threshold_pct)
        if row["breached"]:
            breaches.append(rise)
        elif row["inconclusive"] and inconclusive == "fail":
            breaches.append(rise + "; inconclusive ({0}), failed as latency_inconclusive asks".format(_why_inconclusive(row, threshold_pct)))
        elif row["inconclusive"]:
            warnings.append(rise + "; inconclusive: {0}. Measure with more runs, or on a quieter host, to decide".format(
                _why_inconclusive(row, threshold_pct)))
        if not row["p99_reliable"]:
            warnings.append("latency: p99 of {0} is unreliable (fewer than 100 samples on a side): not evidence of a pass".format(label))
        if row["p99_delta_pct"] is None:
            warnings.append("latency: p99 change of {0} is undefined (baseline p99 is 0)".format(label))
    if not checked:
        warnings.append("latency: the comparison holds no query measured on both sides")
    reference = comparison.get("reference") or {}
    if reference.get("usable") and reference.get("significant"):
        warnings.append("latency: the host reference, which no schema change can slow, rose {0:.1f}% at p99 (95% CI {1}) between the "
                        "measurements: the host was busier during the current one, and the queries are judged net of it too".format(
                            reference.get("p99_delta_pct") or 0.0, _ci_text(reference.get("p99_delta_pct_ci") or [])))
    for name in comparison.get("missing_in_current") or []:
        warnings.append("latency: query {0!r} of the baseline was not measured now".format(name))
    deltas = [row["p99_delta_pct"] for row in checked if row["p99_delta_pct"] is not None]
    evidence = {
        "queries": [row for row in checked if row["scope"] == "query"],
        "overall": next((row for row in checked if row["scope"] == "overall"), None),
        "baseline_measured_at": comparison.get("baseline_measured_at"),
        "current_measured_at": comparison.get("current_measured_at"),
        "settings_differences": list(comparison.get("settings_differences") or []),
        "inconclusive": inconclusive,
        "reference": _reference_evidence(reference),
    }
    return kpi_entry(LATENCY, max(deltas) if deltas else None, threshold_pct, "percent",
                     "the 95% interval of the p99 increase lies at or above the threshold", evidence, breaches, warnings)


def _latency_row(entry: Mapping[str, Any], scope: str, threshold_pct: float) -> Dict[str, Any]:
    delta = entry.get("p99_delta_pct")
    interval = list(entry.get("p99_delta_pct_ci") or [])
    low = interval[0] if len(interval) == 2 else None
    baseline = entry.get("baseline") or {}
    current = entry.get("current") or {}
    net_delta = entry.get("p99_net_delta_pct")
    net_interval = list(entry.get("p99_net_delta_pct_ci") or [])
    net_low = net_interval[0] if len(net_interval) == 2 else None
    raw_breached = delta is not None and low is not None and low >= threshold_pct
    net_breached = None if net_delta is None else net_low is not None and net_low >= threshold_pct
    breached = raw_breached and net_breached is not False
    reaches = [value for value in (delta, net_delta) if value is not None and value >= threshold_pct]
    return {
        "name": str(entry.get("name", scope)),
        "scope": scope,
        "baseline_p99_ms": baseline.get("p99"),
        "current_p99_ms": current.get("p99"),
        "p99_delta_pct": delta,
        "p99_ratio": entry.get("p99_ratio"),
        "p99_ratio_ci": list(entry.get("p99_ratio_ci") or []),
        "p99_delta_pct_ci": interval,
        "significant": bool(entry.get("significant")),
        "p99_net_delta_pct": net_delta,
        "p99_net_delta_pct_ci": net_interval,
        "p99_reliable": bool(entry.get("p99_reliable")),
        "breached": breached,
        "raw_breached": raw_breached,
        "net_breached": net_breached,
        "inconclusive": not breached and (raw_breached or bool(net_breached) or bool(reaches)),
    }


def _net_text(row: Mapping[str, Any]) -> str:
    if row["p99_net_delta_pct"] is None:
        return ""
    return "; net of the host reference {0:+.1f}%, CI {1}".format(row["p99_net_delta_pct"], _ci_text(row["p99_net_delta_pct_ci"]))


def _why_inconclusive(row: Mapping[str, Any], threshold_pct: float) -> str:
    if row["raw_breached"] and row["net_breached"] is False:
        return ("the host reference rose with it: net of the reference the interval reaches below the threshold, so this rise cannot be "
                "told from a host that was busier during the current measurement")
    if row["net_breached"] and not row["raw_breached"]:
        return ("net of the host reference the whole interval is at or above {0:g}%, but not raw: the host was quieter during the "
                "current measurement, which can hide a regression".format(threshold_pct))
    return "the interval reaches below the threshold, so the measurements cannot tell this rise from their own noise"


def _reference_evidence(reference: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    if not reference:
        return None
    return {
        "sql": reference.get("sql"),
        "usable": bool(reference.get("usable")),
        "reason": reference.get("reason"),
        "baseline_p99_ms": (reference.get("baseline") or {}).get("p99"),
        "current_p99_ms": (reference.get("current") or {}).get("p99"),
        "p99_delta_pct": reference.get("p99_delta_pct"),
        "p99_delta_pct_ci": list(reference.get("p99_delta_pct_ci") or []),
    }


def _ci_text(interval: Sequence[Any]) -> str:
    if len(interval) != 2 or interval[0] is None or interval[1] is None:
        return "unknown"
    return "{0:+.1f}% .. {1:+.1f}%".format(interval[0], interval[1])


# ---------------------------------------------------------------- rollback MTTR


def evaluate_mttr(rollbacks: Sequence[Mapping[str, Any]], drill_samples: Sequence[float] = (),
                  threshold_seconds: float = DEFAULT_MTTR_THRESHOLD_SECONDS, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> Dict[str, Any]:
    """The rollback MTTR KPI from catalog rollbacks (``{name, rollback_seconds, rolled_back_at}``) and drill samples (seconds)."""
    durations = [float(item["rollback_seconds"]) for item in rollbacks] + [float(value) for value in drill_samples]
    breaches: List[str] = []
    warnings: List[str] = []
    worst = max(durations) if durations else None
    mean = sum(durations) / len(durations) if durations else None
    if worst is None:
        warnings.append("rollback_mttr: no rollback recorded in the window and no drill sample: nothing measured")
    elif worst >= threshold_seconds:
        source = _slowest(rollbacks, drill_samples, worst)
        breaches.append("rollback_mttr: longest rollback took {0:.1f}s ({1}), threshold {2:g}s".format(worst, source, threshold_seconds))
    evidence = {
        "max_seconds": _round(worst),
        "mean_seconds": _round(mean),
        "count": len(durations),
        "window_seconds": window_seconds,
        "rollbacks": [dict(item) for item in rollbacks],
        "drill_samples": [float(value) for value in drill_samples],
    }
    return kpi_entry(ROLLBACK_MTTR, _round(worst), threshold_seconds, "seconds", "longest rollback >= threshold", evidence, breaches, warnings)


def _slowest(rollbacks: Sequence[Mapping[str, Any]], drill_samples: Sequence[float], worst: float) -> str:
    for item in rollbacks:
        if float(item["rollback_seconds"]) == worst:
            return "migration {0!r}".format(item.get("name"))
    return "drill sample"


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------- restore success


def evaluate_restore(tenants: Sequence[Mapping[str, Any]], now: datetime.datetime, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                     threshold_pct: float = DEFAULT_RESTORE_THRESHOLD_PCT, require_verification: bool = True) -> Dict[str, Any]:
    """The restore success KPI.

    ``tenants``: ``{name, tier, records}``, ``tier`` the tenant's configured retention tier (used for records
    without one) and ``records`` its verification records (``outcome``, ``tier``, ``at``, ``backup_id``).
    Records outside ``[now - window, now]`` (or without a readable ``at``) are left out; any outcome but
    ``passed`` counts as a failure.
    """
    since = now - datetime.timedelta(seconds=window_seconds)
    groups: List[Dict[str, Any]] = []
    breaches: List[str] = []
    warnings: List[str] = []
    for tenant in tenants:
        in_window = []
        undated = 0
        for record in tenant.get("records") or []:
            at = parse_time(record.get("at"))
            if at is None:
                undated += 1
            elif since <= at <= now:
                in_window.append(record)
        if undated:
            warnings.append("restore_success: {0} verification record(s) of tenant {1!r} have no readable time and were left out".format(
                undated, tenant["name"]))
        if not in_window:
            groups.append(_restore_group(tenant["name"], str(tenant.get("tier") or ""), []))
            message = "restore_success: tenant {0!r} has no restore verification in the window".format(tenant["name"])
            if require_verification:
                breaches.append(message + " (require_verification)")
            else:
                warnings.append(message)
            continue
        by_tier: Dict[str, List[Mapping[str, Any]]] = {}
        for record in in_window:
            by_tier.setdefault(str(record.get("tier") or tenant.get("tier") or ""), []).append(record)
        for tier in sorted(by_tier):
            group = _restore_group(tenant["name"], tier, by_tier[tier])
            groups.append(group)
            if group["success_pct"] < threshold_pct:
                breaches.append("restore_success: tenant {0!r} tier {1!r} {2:.1f}% of {3} verification(s) passed, threshold {4:g}%".format(
                    tenant["name"], tier, group["success_pct"], group["total"], threshold_pct))
    rates = [group["success_pct"] for group in groups if group["success_pct"] is not None]
    # No clock value in the evidence: the same records give the same report, byte for byte.
    evidence = {"window_seconds": window_seconds, "groups": groups}
    return kpi_entry(RESTORE_SUCCESS, min(rates) if rates else None, threshold_pct, "percent", "success rate < threshold", evidence,
                     breaches, warnings)


def _restore_group(tenant: str, tier: str, records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    passed = sum(1 for record in records if record.get("outcome") == PASSED)
    failed = [{"backup_id": record.get("backup_id"), "outcome": record.get("outcome"), "at": record.get("at"), "reason": record.get("reason")}
              for record in records if record.get("outcome") != PASSED]
    total = len(records)
    return {
        "tenant": tenant,
        "tier": tier,
        "total": total,
        "passed": passed,
        "failed": total - passed,
        "success_pct": round(100.0 * passed / total, 3) if total else None,
        "success_ratio": round(passed / total, 6) if total else None,
        "failures": sorted(failed, key=lambda item: str(item.get("at"))),
    }


def parse_time(value: Any) -> Optional[datetime.datetime]:
    """An ISO 8601 time as an aware datetime (naive means UTC); None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------- the whole evaluation


def summarize(kpis: Iterable[Mapping[str, Any]], warn_only: bool = False) -> Dict[str, Any]:
    """The evaluation: ``kpis``, ``breaches`` (``{kpi, value, threshold, message}``), ``passed`` and ``warnings``."""
    entries = [dict(kpi) for kpi in kpis]
    breaches = [{"kpi": kpi["name"], "value": kpi["value"], "threshold": kpi["threshold"], "message": message}
                for kpi in entries for message in kpi["breaches"]]
    warnings = [message for kpi in entries for message in kpi["warnings"]]
    return {
        "kpis": entries,
        "breaches": breaches,
        "passed": not breaches,
        "warn_only": warn_only,
        "warnings": warnings,
    }


def failure_message(evaluation: Mapping[str, Any]) -> str:
    messages = [breach["message"] for breach in evaluation["breaches"]]
    return "KPI breached ({0}): {1}".format(len(messages), "; ".join(messages))
