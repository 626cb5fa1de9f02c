# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How far a migration's backfills are, and when they should end, from what the catalog recorded.

Rows done come from the batches' own commits (``keel.backfills.rows_done``);
the total is the planner's row estimate (``reltuples``) at the start or now,
whichever is larger, and never less than the rows already done; the rate is
rows done over the time between a backfill's first and latest batch. A
backfill interrupted and resumed later counts the gap in that time, so its
rate reads low and its ETA long: an estimate, never a promise.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional


def backfill_progress(conn: Any, backfills: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``percent``, ``rows_done``, ``rows_total_estimate``, ``rate_rows_per_second`` and ``eta_seconds`` over
    every backfill of a migration (``catalog.backfills_of``); the values are None when there is nothing to tell."""
    if not backfills:
        return {"percent": None, "rows_done": 0, "rows_total_estimate": None, "rate_rows_per_second": None,
                "eta_seconds": None}
    rows_done = sum(b["rows_done"] for b in backfills)
    total = sum(_total(conn, b) for b in backfills)
    finished = all(b["done"] for b in backfills)
    seconds = sum(_elapsed(b) for b in backfills)
    rate = rows_done / seconds if seconds > 0 and rows_done > 0 else None
    return {
        "percent": _percent(rows_done, total, finished),
        "rows_done": rows_done,
        "rows_total_estimate": total,
        "rate_rows_per_second": None if rate is None else round(rate, 1),
        "eta_seconds": 0.0 if finished else (None if rate is None else round(max(0, total - rows_done) / rate, 1)),
    }


def _total(conn: Any, backfill: Dict[str, Any]) -> int:
    if backfill["done"]:
        return backfill["rows_done"]
    now = _current_estimate(conn, backfill["table"])
    return max(backfill["rows_done"], backfill["rows_estimated"] or 0, now or 0)


def _current_estimate(conn: Any, table: str) -> Optional[int]:
    schema, _sep, name = table.partition(".")
    row = conn.execute("SELECT c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
    return None if row is None or row[0] < 0 else row[0]


def _elapsed(backfill: Dict[str, Any]) -> float:
    started = datetime.datetime.fromisoformat(backfill["started_at"])
    updated = datetime.datetime.fromisoformat(backfill["updated_at"])
    return max(0.0, (updated - started).total_seconds())


def _percent(rows_done: int, total: int, finished: bool) -> Optional[float]:
    if finished:
        return 100.0
    if not total:
        return None
    # Estimates come from the planner's statistics and can be low: an unfinished backfill never shows 100%.
    return min(99.9, round(100.0 * rows_done / total, 1))
