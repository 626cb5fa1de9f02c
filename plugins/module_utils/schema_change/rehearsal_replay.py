# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The read queries a rehearsal replays: before, during and after the migration, and their p99 deltas.

Before and after, the queries are timed by ``kpi.latency_sampler`` exactly as
``query_latency`` times them (interleaved rounds, one READ ONLY transaction
per execution, warmup rounds not recorded). During the migration they run on
a thread of their own, on a connection of their own, round after round until
the migration ends (at least one round), so they compete with the migration
for locks and I/O as the application's reads would. The deltas come from
``kpi.latency_baseline.compare``: the p99 change in percent with its block
bootstrap interval; with few samples (a fast migration gives few rounds
during it) ``p99_reliable`` is false and the figure is a hint only.

No row value is kept: only latencies and row counts.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import build_document, compare
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import (
    LatencyQuery,
    QuerySamples,
    SamplerSettings,
    run_round,
)


class ReplayDuring:
    """Replays the queries on ``conn`` (autocommit, used by this thread only) from ``start()`` until ``stop()``."""

    def __init__(self, conn: Any, queries: Sequence[LatencyQuery], settings: SamplerSettings) -> None:
        self.conn = conn
        self.queries = list(queries)
        self.settings = settings
        self.results = [QuerySamples(query=query, samples_ms=[]) for query in self.queries]
        self.error: Optional[KeelError] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._replay, name="keel-rehearsal-replay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> List[QuerySamples]:
        self._stop.set()
        self._thread.join()
        return self.results

    def _replay(self) -> None:
        round_index = 0
        try:
            while True:
                run_round(self.conn, self.queries, self.results, round_index, self.settings)
                round_index += 1
                if self._stop.is_set():
                    return
        except KeelError as exc:  # QueryFailed (by SQLSTATE only) or a query that ends its transaction
            self.error = exc


def latency_report(before: Sequence[QuerySamples], during: Sequence[QuerySamples], after: Optional[Sequence[QuerySamples]],
                   settings: SamplerSettings, server: Any) -> Dict[str, Any]:
    """Per query and overall: rows and p99 before / during / after, and the p99 deltas (percent, positive is slower)."""
    documents = {
        "before": _document(before, settings, server),
        "during": _document(during, settings, server),
        "after": _document(after, settings, server) if after else None,
    }
    during_cmp = compare(documents["before"], documents["during"])
    after_cmp = compare(documents["before"], documents["after"]) if documents["after"] else None
    by_name_after = {entry["name"]: entry for entry in (after_cmp or {}).get("queries", [])}
    rows_after = {result.query.name: result.rows for result in (after or [])}
    queries = []
    for result, entry in zip(before, during_cmp["queries"]):
        later = by_name_after.get(entry["name"])
        queries.append({
            "name": entry["name"],
            "rows_before": result.rows,
            "rows_after": rows_after.get(entry["name"]),
            "samples_during": entry["current"]["n"],
            "p99_ms_before": entry["baseline"]["p99"],
            "p99_ms_during": entry["current"]["p99"],
            "p99_ms_after": later["current"]["p99"] if later else None,
            "p99_delta_pct_during": entry["p99_delta_pct"],
            "p99_delta_pct_during_ci": entry["p99_delta_pct_ci"],
            "p99_delta_pct_after": later["p99_delta_pct"] if later else None,
            "p99_reliable": entry["p99_reliable"] and (later is None or later["p99_reliable"]),
        })
    overall_during = during_cmp["overall"] or {}
    overall_after = (after_cmp or {}).get("overall") or {}
    return {
        "queries": queries,
        "p99_delta_pct_during": overall_during.get("p99_delta_pct"),
        "p99_delta_pct_after": overall_after.get("p99_delta_pct"),
        "significant_during": bool(overall_during.get("significant")),
        "significant_after": bool(overall_after.get("significant")),
        "settings": settings.as_dict(),
    }


def _document(results: Sequence[QuerySamples], settings: SamplerSettings, server: Any) -> Dict[str, Any]:
    return build_document(results, settings, server["version"], server["version_num"], server["database"])
