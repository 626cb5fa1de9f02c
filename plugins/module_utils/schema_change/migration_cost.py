# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A migration's cost signals: WAL and temp bytes per phase, sizes before and after, extra storage held.

The extra storage a migration holds (a shadow copy, the old table kept for a
revert, a new column filled beside the old one) is measured, not guessed: the
size of the tables it touches plus the helper tables it created, against the
same sum taken before its first phase. That baseline is kept in the catalog,
so a migration started by one run and completed by another still compares
with the table as it was before anything began.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, suppress
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import server_signals as signals
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext

# operation_state key of the baseline; operations use their own keys.
STATE_KEY = "_cost"


class MigrationCost:
    def __init__(self, ctx: MigrationContext, metrics: RunMetrics, tables: List[str], operation_count: int) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self.tables = tables
        self.schemas = sorted({table.split(".", 1)[0] for table in tables})
        self.prefixes = [ctx.helper_prefix(index) for index in range(operation_count)]
        self.before: Dict[str, signals.TableSize] = {}
        self.footprint_before: Optional[int] = None
        self.baseline: Optional[int] = None
        self.peak_extra: Optional[int] = None
        self.wal_bytes: Optional[int] = None
        self.temp_bytes: Optional[int] = None
        self.began = time.monotonic()

    def begin(self) -> None:
        """Sizes before this run changes anything."""
        self.began = time.monotonic()
        self.before = signals.table_sizes(self.ctx.conn, self.tables)
        self.footprint_before = self._footprint(self.before)

    def keep_baseline(self, fresh: bool) -> None:
        """A fresh migration's sizes become its baseline; a resumed one reads the baseline its first run stored."""
        if fresh:
            self.baseline = self.footprint_before
            self.peak_extra = 0 if self.baseline is not None else None
            self._save()
            return
        state = self.ctx.load_state(STATE_KEY)
        self.baseline = state.get("baseline_bytes")
        self.peak_extra = state.get("peak_extra_bytes")

    @contextmanager
    def phase(self) -> Iterator[None]:
        """Count the WAL and temp bytes of the enclosing metrics phase; note the storage held at its end."""
        wal_before = signals.wal_position(self.ctx.conn)
        temp_before = signals.temp_bytes(self.ctx.conn)
        try:
            yield
        finally:
            self.wal_bytes = self._count("wal_bytes", self.wal_bytes, wal_before, signals.wal_position(self.ctx.conn))
            self.temp_bytes = self._count("temp_bytes", self.temp_bytes, temp_before, signals.temp_bytes(self.ctx.conn))
            self._note_held()

    def _count(self, name: str, total: Optional[int], before: Optional[int], after: Optional[int]) -> Optional[int]:
        if before is None or after is None:
            return total
        delta = max(0, after - before)
        self.metrics.count(name, delta)
        return (total or 0) + delta

    def _note_held(self) -> None:
        extra = self.extra_held()
        if extra is None:
            return
        if self.peak_extra is None or extra > self.peak_extra:
            self.peak_extra = extra
            self._save()

    def extra_held(self, sizes: Optional[Dict[str, signals.TableSize]] = None) -> Optional[int]:
        footprint = self._footprint(sizes if sizes is not None else signals.table_sizes(self.ctx.conn, self.tables))
        if footprint is None or self.baseline is None:
            return None
        return footprint - self.baseline

    def _footprint(self, sizes: Dict[str, signals.TableSize]) -> Optional[int]:
        helpers = signals.helper_bytes(self.ctx.conn, self.schemas, self.prefixes, self.tables)
        if helpers is None:
            return None
        return helpers + sum(size.table_bytes + size.index_bytes for size in sizes.values())

    def _save(self) -> None:
        # A lost catalog write costs the peak reading, never the migration.
        with suppress(Exception):
            self.ctx.save_state(STATE_KEY, {"baseline_bytes": self.baseline, "peak_extra_bytes": self.peak_extra})

    def finish(self, migration_seconds: Optional[float]) -> Dict[str, Any]:
        """The result's ``cost_signals`` and ``table_sizes``; the same figures become gauges."""
        after = signals.table_sizes(self.ctx.conn, self.tables)
        sizes = {}
        for table in self.tables:
            before = self.before.get(table, signals.TableSize(0, 0))
            now = after.get(table, signals.TableSize(0, 0))
            sizes[table] = {"table_bytes_before": before.table_bytes, "table_bytes_after": now.table_bytes,
                            "index_bytes_before": before.index_bytes, "index_bytes_after": now.index_bytes}
            for name, value in sizes[table].items():
                self.metrics.gauge(name, value, labels={"table": table})
        for name in ("table_bytes_before", "table_bytes_after", "index_bytes_before", "index_bytes_after"):
            self.metrics.gauge(name, sum(entry[name] for entry in sizes.values()))
        extra = self.extra_held(after)
        if extra is not None and (self.peak_extra is None or extra > self.peak_extra):
            self.peak_extra = extra
        cost = {
            "wal_bytes": self.wal_bytes,
            "temp_bytes": self.temp_bytes,
            "run_seconds": round(time.monotonic() - self.began, 3),
            "migration_seconds": None if migration_seconds is None else round(migration_seconds, 3),
            "extra_bytes_held": extra,
            "peak_extra_bytes_held": self.peak_extra,
            "size_before_bytes": sum(entry["table_bytes_before"] + entry["index_bytes_before"] for entry in sizes.values()),
            "size_after_bytes": sum(entry["table_bytes_after"] + entry["index_bytes_after"] for entry in sizes.values()),
        }
        for name in ("extra_bytes_held", "peak_extra_bytes_held", "migration_seconds"):
            if cost[name] is not None:
                self.metrics.gauge(name, cost[name])
        return {"cost_signals": cost, "table_sizes": sizes}
