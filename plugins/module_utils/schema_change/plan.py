# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The check-mode plan: every step a migration would take, and what it costs the application."""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

# Lock names as PostgreSQL's documentation calls them, with what they block.
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"  # blocks everything, even SELECT
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"  # blocks writes (ADD FOREIGN KEY, CREATE TRIGGER)
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"  # blocks other DDL only (VALIDATE, CONCURRENTLY)
ROW_EXCLUSIVE = "ROW EXCLUSIVE"  # ordinary writes
ACCESS_SHARE = "ACCESS SHARE"  # what a SELECT takes: conflicts only with ACCESS EXCLUSIVE
NO_TABLE_LOCK = "none"


class PlanStep(NamedTuple):
    phase: str  # start | complete | rollback
    operation: str  # e.g. "alter_column public.orders.amount"
    action: str
    lock: str
    lock_held: str  # brief | batches | scan | rewrite
    scans_table: bool
    rewrites_table: bool
    rows_estimate: Optional[int]
    warning: Optional[str] = None
    # What clients that read the tables directly (not through a version schema) will see.
    client_impact: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return self._asdict()


def step(phase: str, operation: str, action: str, lock: str, *, held: str = "brief", scans: bool = False,
         rewrites: bool = False, rows: Optional[int] = None, warning: Optional[str] = None,
         client_impact: Optional[str] = None) -> PlanStep:
    return PlanStep(phase, operation, action, lock, held, scans, rewrites, rows, warning, client_impact)
