# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a shadow write's status says as metrics: rows on each side, drift, and the trigger's cost per write.

The trigger's cost is the server's own measurement, read from
``pg_stat_user_functions``: PostgreSQL times each call of the trigger function
when ``track_functions`` is ``pl`` (or ``all``) in the sessions that write. With
the default (``none``) nothing is measured and nothing is reported: a cost
this module did not see is never estimated.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

_DRIFT_GAUGES = (("drift_rows", "drift"), ("drift_missing_in_target", "missing_in_target"),
                 ("drift_extra_in_target", "extra_in_target"), ("drift_different", "different"))


def record_status(metrics: RunMetrics, status: Dict[str, Any]) -> None:
    """Gauges for the rows on each side, the changes waiting for a resume, and the drift found."""
    for name, value in (("source_rows", status["rows"]["source"]), ("target_rows", status["rows"]["target"]),
                        ("pending_changes", status["pending_changes"])):
        if value is not None:
            metrics.gauge(name, value)
    drift = status.get("drift")
    if drift:
        for name, key in _DRIFT_GAUGES:
            metrics.gauge(name, drift[key])


def trigger_cost(conn: Any, function_name: str, metrics: RunMetrics) -> Optional[Dict[str, Any]]:
    """Calls and time of trigger function ``keel.<function_name>`` since the statistics were reset, or None when
    the server did not measure it (``track_functions`` off in the writing sessions, or no write yet)."""
    try:
        row = conn.execute("SELECT calls, total_time, self_time FROM pg_stat_user_functions"
                           " WHERE schemaname = 'keel' AND funcname = %s", (function_name,)).fetchone()
    except Exception:  # statistics are a bonus; a shadow write never fails for them
        return None
    if row is None or not row[0]:
        return None
    calls, total_ms, self_ms = int(row[0]), float(row[1]), float(row[2])
    cost = {"calls": calls, "total_ms": round(total_ms, 3), "self_ms": round(self_ms, 3),
            "ms_per_write": round(total_ms / calls, 6)}
    metrics.gauge("trigger_calls", calls)
    metrics.gauge("trigger_total_ms", cost["total_ms"])
    metrics.gauge("trigger_ms_per_write", cost["ms_per_write"])
    return cost
