# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an operation gets to work with: the connection and the safe ways to change things."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog, lock_guard, version_schema
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    require_table,
    resolve_table,
)


class BackfillSettings(NamedTuple):
    batch_size: int
    pause_ratio: float  # sleep this fraction of each batch's duration between batches
    max_replication_lag: Optional[float]  # seconds; None = do not watch standbys
    lag_wait_timeout: float


class MigrationContext:
    def __init__(self, conn: Any, name: str, policy: lock_guard.LockPolicy, backfill: BackfillSettings,
                 metrics: RunMetrics, revert_window: Optional[float] = None) -> None:
        self.conn = conn
        self.name = name
        self.policy = policy
        self.backfill_settings = backfill
        self.metrics = metrics
        # Columns that earlier operations of this migration add, so later ones can use them
        # in validation (an index on a column added by the same migration).
        self.planned_columns: Dict[str, Dict[str, str]] = {}
        # Seconds a completed migration stays revertible (None: until finalized explicitly).
        self.revert_window = revert_window

    # -- reading ---------------------------------------------------------------

    def table(self, table: TableName, field: str = "table") -> TableInfo:
        return require_table(self.conn, table, field)

    def maybe_table(self, table: TableName) -> Optional[TableInfo]:
        return resolve_table(self.conn, table)

    def plan_column(self, info: TableInfo, column: str, type_name: str) -> None:
        self.planned_columns.setdefault(info.qualified, {})[column] = type_name

    def planned(self, info: TableInfo) -> Dict[str, str]:
        return self.planned_columns.get(info.qualified, {})

    def require_column(self, info: TableInfo, column: str, field: str) -> None:
        """The column exists, or an earlier operation of this migration adds it."""
        if column not in info.columns and column not in self.planned(info):
            raise InvalidOption(field, "table {0} has no column {1!r}".format(info.qualified, column))

    def helper_name(self, op_index: int, purpose: str, base: str) -> str:
        """A deterministic name for an object this migration adds, unique per migration and operation.

        Deterministic so a resumed run finds what an interrupted one created.
        """
        return "{0}{1}_{2}".format(self.helper_prefix(op_index), purpose, base)[:63]

    def helper_prefix(self, op_index: int) -> str:
        """What every helper name of operation ``op_index`` starts with (the cost signals find them by it)."""
        digest = hashlib.sha1("{0}:{1}".format(self.name, op_index).encode()).hexdigest()[:6]
        return "_keel_{0}_".format(digest)

    # -- changing, always under the lock guard -----------------------------------

    def guarded(self, description: str, tables: List[str], work: Callable[[Any], None],
                long_running: bool = False) -> None:
        """One transaction under lock_timeout with retries; ``long_running`` lifts statement_timeout
        for steps that scan by design under a weak lock (VALIDATE CONSTRAINT)."""
        policy = self.policy._replace(statement_timeout=0) if long_running else self.policy
        lock_guard.run_in_guarded_transaction(self.conn, work, policy, self.metrics, tables, description)

    def concurrently(self, description: str, tables: List[str], statement: Any,
                     on_lock_timeout: Optional[Callable[[], None]] = None) -> None:
        lock_guard.run_outside_transaction(self.conn, statement, self.policy, self.metrics, tables, description,
                                           on_lock_timeout)

    # -- client-facing version views -------------------------------------------

    def repoint_views(self, conn: Any, from_oid: int, to_table: str) -> List[str]:
        """Point every keel version view that reads table ``from_oid`` at ``to_table`` instead.

        Same shape (names, order, types), so prepared statements on the views survive; to be
        called inside the guarded transaction that swaps the tables. Returns the views changed.
        """
        return version_schema.repoint_views(conn, from_oid, to_table)

    # -- remembering between phases and runs -----------------------------------

    def load_state(self, key: str) -> Dict[str, Any]:
        return catalog.load_operation_state(self.conn, self.name, key)

    def save_state(self, key: str, state: Dict[str, Any]) -> None:
        catalog.save_operation_state(self.conn, self.name, key, state)
