# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving a migration to the requested state, one phase at a time.

The engine never special-cases an operation: it validates, plans and runs
phases through the ``Operation`` interface, records each phase in the
catalog before and after it runs, and holds an advisory lock per table so
two runs can never migrate the same table at once.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import (
    BackfillSettings,
    MigrationContext,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, parse_table_name
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, blocking_sessions
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations import parse_operations
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import describe, resolve_table

START, COMPLETE, ROLLBACK = "start", "complete", "rollback"
DESIRED_STATES = ("started", "completed", "rolled_back")


class MigrationRequest(NamedTuple):
    name: str
    operations: List[Dict[str, Any]]
    state: str
    policy: LockPolicy
    backfill: BackfillSettings


class MigrationBusy(KeelError):
    kind = "migration_busy"


def phases_to_run(phase: Optional[str], desired: str) -> List[str]:
    """Which phases take a migration from its recorded phase to the desired state."""
    fresh = phase in (None, catalog.ROLLED_BACK)
    if desired == "started":
        if fresh or phase == catalog.STARTING:
            return [START]
        if phase == catalog.ROLLING_BACK:
            raise MigrationBusy("a rollback of this migration was interrupted; finish it with state: rolled_back")
        return []
    if desired == "completed":
        if fresh or phase == catalog.STARTING:
            return [START, COMPLETE]
        if phase in (catalog.STARTED, catalog.COMPLETING):
            return [COMPLETE]
        if phase == catalog.ROLLING_BACK:
            raise MigrationBusy("a rollback of this migration was interrupted; finish it with state: rolled_back")
        return []
    if phase in (catalog.STARTING, catalog.STARTED, catalog.ROLLING_BACK):
        return [ROLLBACK]
    if phase == catalog.COMPLETING:
        raise MigrationBusy("completion of this migration was interrupted and cannot be undone half-way; "
                            "finish it with state: completed")
    if phase == catalog.COMPLETED:
        raise MigrationBusy("this migration is completed: its old shape is gone, so it cannot be rolled back; "
                            "write a new migration that reverses it")
    return []


def check_conflicts(operations: List[Operation], qualify: Callable[[str], str] = str) -> None:
    """Two operations on the same column (or on a table another one creates, drops or renames) conflict.

    Table names are compared after ``qualify`` (schema-qualified as the server
    resolves them), so ``items`` and ``public.items`` are the same table.
    """
    claimed: Dict[Any, int] = {}
    whole_tables: Dict[str, int] = {}
    for op in operations:
        for table, column in op.targets():
            if column is None:
                whole_tables[qualify(table)] = op.index
    for op in operations:
        for table_as_given, column in op.targets():
            table = qualify(table_as_given)
            target = (table, column)
            owner = whole_tables.get(table)
            if owner is not None and owner != op.index:
                raise InvalidOption("operations[{0}]".format(op.index), "conflicts with operations[{0}], which "
                                    "creates, drops or renames table {1}; use two migrations".format(owner, table))
            if target in claimed and claimed[target] != op.index:
                raise InvalidOption("operations[{0}]".format(op.index), "conflicts with operations[{0}]: both change "
                                    "{1}.{2}; use two migrations".format(claimed[target], table, column))
            claimed[target] = op.index


def qualified_tables(conn: Any, operations: List[Operation]) -> List[str]:
    names = []
    for op in operations:
        for table in op.tables():
            names.append(_qualify(conn, table))
    return sorted(set(names))


def _qualify(conn: Any, table: TableName) -> str:
    info = resolve_table(conn, table)
    if info is not None:
        return info.qualified
    schema = table.schema or conn.execute("SELECT current_schema()").fetchone()[0]
    return "{0}.{1}".format(schema, table.name)


class MigrationRun:
    def __init__(self, conn: Any, request: MigrationRequest, metrics: RunMetrics) -> None:
        if request.state not in DESIRED_STATES:
            raise InvalidOption("state", "must be one of {0}".format(", ".join(DESIRED_STATES)))
        self.conn = conn
        self.request = request
        self.metrics = metrics
        self.operations = parse_operations(request.operations)
        check_conflicts(self.operations, lambda table: _qualify(conn, parse_table_name(table, "operations")))
        self.ctx = MigrationContext(conn, request.name, request.policy, request.backfill, metrics)
        self.tables = qualified_tables(conn, self.operations)
        self._held_locks: List[str] = []

    # -- planning ---------------------------------------------------------------------------

    def _record(self) -> Optional[catalog.MigrationRecord]:
        return catalog.load(self.conn, self.request.name)

    def plan(self, phases: List[str]) -> List[Dict[str, Any]]:
        steps = []
        for phase in phases:
            ordered = reversed(self.operations) if phase == ROLLBACK else self.operations
            for op in ordered:
                steps += [s.as_dict() for s in op.plan(self.ctx, phase)]
        return steps

    def describe_tables(self) -> Dict[str, str]:
        return {name: describe(resolve_table(self.conn, TableName(*name.split(".", 1)))) for name in self.tables}

    # -- running ----------------------------------------------------------------------------

    def run(self, check_mode: bool) -> Dict[str, Any]:
        record = self._record()
        phase = record.phase if record else None
        self._refuse_changed_operations(record)
        phases = phases_to_run(phase, self.request.state)
        result: Dict[str, Any] = {"name": self.request.name, "tables": self.tables, "phases": phases,
                                  "previous_phase": phase}
        if not phases:
            result.update(changed=False, phase=phase, plan=[])
            return result
        self._lock_tables()
        try:
            self._refuse_other_migrations_in_flight()
            if phase in (None, catalog.ROLLED_BACK):
                with self.metrics.phase("validate"):
                    for op in self.operations:
                        op.validate(self.ctx)
            result["plan"] = self.plan(phases)
            # Who would make the first strong lock wait right now: worth knowing before running, not only
            # after retries ran out.
            result["sessions_holding_locks"] = blocking_sessions(self.conn, self.tables)
            before = self.describe_tables()
            if check_mode:
                result.update(changed=True, phase=phase, diff={"before": before, "after": before})
                return result
            self._run_phases(phases, fresh=phase in (None, catalog.ROLLED_BACK))
            result.update(changed=True, phase=self._record().phase,
                          diff={"before": before, "after": self.describe_tables()})
            return result
        finally:
            self._unlock_tables()

    def _refuse_changed_operations(self, record: Optional[catalog.MigrationRecord]) -> None:
        if record is None or record.phase == catalog.ROLLED_BACK:
            return
        if record.operations != self.request.operations:
            raise InvalidOption("operations", "migration {0!r} was started with different operations; a migration "
                                "cannot change once started (roll it back, or use a new name)".format(record.name))

    def _refuse_other_migrations_in_flight(self) -> None:
        busy = catalog.in_flight_on_tables(self.conn, self.tables, self.request.name)
        if busy:
            raise MigrationBusy("table(s) {0} are in migration {1} (phase {2}); complete or roll it back first".format(
                ", ".join(sorted(set(busy[0].tables) & set(self.tables))), busy[0].name, busy[0].phase))

    def _lock_tables(self) -> None:
        for table in self.tables:
            got = self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", ("keel.table:" + table,)).fetchone()[0]
            if not got:
                raise MigrationBusy("another keel.postgres run is migrating {0} right now; try again when it has "
                                    "finished".format(table))
            self._held_locks.append(table)

    def _unlock_tables(self) -> None:
        while self._held_locks:
            table = self._held_locks.pop()
            self.conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", ("keel.table:" + table,))

    def _run_phases(self, phases: List[str], fresh: bool) -> None:
        catalog.ensure_catalog(self.conn)
        if fresh:
            catalog.create(self.conn, self.request.name, self.request.operations, self.tables)
        for phase in phases:
            self._run_phase(phase)

    def _run_phase(self, phase: str) -> None:
        running, done = {START: (catalog.STARTING, catalog.STARTED),
                         COMPLETE: (catalog.COMPLETING, catalog.COMPLETED),
                         ROLLBACK: (catalog.ROLLING_BACK, catalog.ROLLED_BACK)}[phase]
        catalog.set_phase(self.conn, self.request.name, running)
        began = time.monotonic()
        try:
            with self.metrics.phase(phase):
                ordered = list(reversed(self.operations)) if phase == ROLLBACK else self.operations
                for op in ordered:
                    getattr(op, phase)(self.ctx)
        except Exception as exc:
            catalog.add_phase_seconds(self.conn, self.request.name, phase, time.monotonic() - began)
            catalog.record_error(self.conn, self.request.name, str(exc)[:2000])
            raise
        seconds = time.monotonic() - began
        catalog.add_phase_seconds(self.conn, self.request.name, phase, seconds)
        if phase == ROLLBACK:
            catalog.record_rollback_seconds(self.conn, self.request.name, seconds)
        catalog.set_phase(self.conn, self.request.name, done)
