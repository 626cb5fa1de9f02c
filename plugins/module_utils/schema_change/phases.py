# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which phases take a migration from the phase the catalog recorded to the state a playbook asks for.

    started --complete--> completed --finalize--> finalized
       |                     |
    rollback               revert
       v                     v
    rolled_back           reverted

A completed migration keeps its old shape in sync until it is finalized, so it
can still be reverted; rolled back and reverted migrations left nothing behind
and may start again.
"""

from __future__ import annotations

from typing import List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog as c

START, COMPLETE, ROLLBACK, REVERT, FINALIZE = "start", "complete", "rollback", "revert", "finalize"
DESIRED_STATES = ("started", "completed", "finalized", "reverted", "rolled_back")

# phase -> (recorded while it runs, recorded when it is done)
PHASE_MARKS = {
    START: (c.STARTING, c.STARTED),
    COMPLETE: (c.COMPLETING, c.COMPLETED),
    ROLLBACK: (c.ROLLING_BACK, c.ROLLED_BACK),
    REVERT: (c.REVERTING, c.REVERTED),
    FINALIZE: (c.FINALIZING, c.FINALIZED),
}


class MigrationBusy(KeelError):
    kind = "migration_busy"


_FINISH = "{0} of this migration was interrupted; finish it with state: {1}"


def phases_to_run(phase: Optional[str], desired: str) -> List[str]:
    if desired not in DESIRED_STATES:
        raise InvalidOption("state", "must be one of {0}".format(", ".join(DESIRED_STATES)))
    _refuse_interrupted(phase, desired)
    fresh = phase is None or phase in c.UNDONE
    if desired == "started":
        return [START] if fresh or phase == c.STARTING else []
    if desired == "completed":
        return [step for step in _forward(phase, fresh) if step != FINALIZE]
    if desired == "finalized":
        return _forward(phase, fresh)
    if desired == "reverted":
        return _revert(phase)
    return _rollback(phase)


def _refuse_interrupted(phase: Optional[str], desired: str) -> None:
    if phase == c.ROLLING_BACK and desired != "rolled_back":
        raise MigrationBusy(_FINISH.format("a rollback", "rolled_back"))
    if phase == c.REVERTING and desired != "reverted":
        raise MigrationBusy(_FINISH.format("a revert", "reverted"))
    if phase == c.FINALIZING and desired != "finalized":
        raise MigrationBusy(_FINISH.format("finalizing", "finalized"))
    if phase == c.COMPLETING and desired in ("rolled_back", "reverted"):
        raise MigrationBusy("completion of this migration was interrupted and cannot be undone half-way; "
                            "finish it with state: completed, then revert it")


def _forward(phase: Optional[str], fresh: bool) -> List[str]:
    if fresh or phase == c.STARTING:
        return [START, COMPLETE, FINALIZE]
    if phase in (c.STARTED, c.COMPLETING):
        return [COMPLETE, FINALIZE]
    if phase in (c.COMPLETED, c.FINALIZING):
        return [FINALIZE]
    return []


def _revert(phase: Optional[str]) -> List[str]:
    if phase in (c.COMPLETED, c.REVERTING):
        return [REVERT]
    if phase == c.REVERTED:
        return []
    if phase == c.FINALIZED:
        raise MigrationBusy("this migration is finalized: its old shape is gone, so it cannot be reverted; "
                            "write a new migration that reverses it")
    raise InvalidOption("state", "reverted applies to a completed migration; this one is {0} (use state: "
                                 "rolled_back to undo a started one)".format(phase or "not started"))


def _rollback(phase: Optional[str]) -> List[str]:
    if phase in (c.STARTING, c.STARTED, c.ROLLING_BACK):
        return [ROLLBACK]
    if phase == c.COMPLETED:
        raise MigrationBusy("this migration is completed; undo it with state: reverted while it is not finalized")
    if phase == c.FINALIZED:
        raise MigrationBusy("this migration is finalized: its old shape is gone, so it cannot be rolled back; "
                            "write a new migration that reverses it")
    return []
