# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The figures a migration run is judged by, read the same way in a rehearsal and in the real run.

A rehearsal (``rehearsal.py``) takes them from the migration it runs on a
scratch database restored from a backup and returns them as ``predicted``;
the real run, given those predictions back (option ``rehearsal_predictions``),
takes the same figures from its own run and sets each beside its prediction.

Every figure comes from what the engine measures anyway, never from a second
measurement: the run's metrics (wall time and WAL bytes per phase, the lock
guard's counters) and its ``cost_signals`` (``migration_cost``):

- duration: wall time per migration phase (validate, start, complete,
  finalize) and their sum;
- WAL bytes: the WAL insert position delta around each phase. WAL is shared by
  every database of the cluster, so other work on the cluster during the run
  is counted too: on a busy cluster it is an upper bound, and a rehearsal on a
  scratch database of the production cluster counts the production's WAL of
  the same minutes;
- size change: table plus index bytes of the migration's tables after minus
  before (a table gone afterwards counts 0), and the peak extra storage held;
- lock waits: ``lock_attempts``, ``lock_timeouts`` and
  ``longest_lock_attempt_ms`` (counted by the lock guard).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

MIGRATION_PHASES = ("validate", "start", "complete", "finalize", "rollback", "revert")
LOCK_COUNTERS = ("lock_attempts", "lock_timeouts", "longest_lock_attempt_ms")
COMPARED = ("duration_ms", "wal_bytes", "size_change_bytes", "peak_extra_bytes_held", *LOCK_COUNTERS)


def run_figures(result: Mapping[str, Any], metrics_record: Mapping[str, Any]) -> Dict[str, Any]:
    """The figures of a migration run from its result (``cost_signals``, ``table_sizes``) and its metrics (``as_dict()``)."""
    cost = result.get("cost_signals") or {}
    details = metrics_record.get("phases") or {}
    phases = {name: round(value, 3) for name, value in (metrics_record.get("phases_ms") or {}).items() if name in MIGRATION_PHASES}
    counters = metrics_record.get("counters") or {}
    before, after = cost.get("size_before_bytes"), cost.get("size_after_bytes")
    figures: Dict[str, Any] = {
        "duration_ms": round(sum(phases.values()), 3),
        "phases_ms": phases,
        "phases_wal_bytes": {name: (details.get(name) or {}).get("counters", {}).get("wal_bytes") for name in phases},
        "wal_bytes": cost.get("wal_bytes"),
        "size_change_bytes": None if before is None or after is None else after - before,
        "peak_extra_bytes_held": cost.get("peak_extra_bytes_held"),
        "table_sizes": result.get("table_sizes") or {},
        "rows_backfilled": counters.get("rows_backfilled", 0),
    }
    for name in LOCK_COUNTERS:
        figures[name] = counters.get(name, 0)
    return figures


def check_predictions(value: Any, field: str = "rehearsal_predictions") -> Optional[Dict[str, Any]]:
    """The ``predicted`` dict of a rehearsal's result; refused (naming the field) when it is not one."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidOption(field, "must be the predicted dict of a rehearsal's result (rehearsal.predicted)")
    missing = [name for name in COMPARED if name not in value]
    if missing:
        raise InvalidOption(field, "is not a rehearsal's predictions: {0} missing (pass rehearsal.predicted of the "
                            "rehearsing task)".format(", ".join(missing)))
    for name in COMPARED:
        if value[name] is not None and (not isinstance(value[name], (int, float)) or isinstance(value[name], bool)):
            raise InvalidOption("{0}.{1}".format(field, name), "must be a number or null")
    return value


def prediction_vs_actual(predicted: Mapping[str, Any], actual: Mapping[str, Any]) -> Dict[str, Any]:
    """Each figure as ``{predicted, actual, difference, ratio}`` (ratio actual / predicted; null when predicted is 0),
    and per phase the same for the phases either side ran."""
    compared = {name: _pair(predicted.get(name), actual.get(name)) for name in COMPARED}
    predicted_phases = predicted.get("phases_ms") or {}
    actual_phases = actual.get("phases_ms") or {}
    names: List[str] = [name for name in MIGRATION_PHASES if name in predicted_phases or name in actual_phases]
    compared["phases_ms"] = {name: _pair(predicted_phases.get(name), actual_phases.get(name)) for name in names}
    compared["backup_id"] = predicted.get("backup_id")
    return compared


def _pair(predicted: Any, actual: Any) -> Dict[str, Any]:
    difference = None if predicted is None or actual is None else round(actual - predicted, 3)
    ratio = None if not predicted or actual is None else round(actual / predicted, 3)
    return {"predicted": predicted, "actual": actual, "difference": difference, "ratio": ratio}
