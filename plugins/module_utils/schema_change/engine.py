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
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import (
    BackfillSettings,
    MigrationContext,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, parse_table_name
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, blocking_sessions
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.migration_cost import MigrationCost
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.migration_versions import MigrationVersions
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations import parse_operations
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import NotRevertible, Operation
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.phases import (
    COMPLETE,
    FINALIZE,
    PHASE_MARKS,
    REVERT,
    ROLLBACK,
    START,
    MigrationBusy,
    phases_to_run,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import describe, resolve_table
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import version_schema_name

# A completed migration stays revertible this long unless the playbook says otherwise.
DEFAULT_REVERT_WINDOW = 24 * 3600.0


class MigrationRequest(NamedTuple):
    name: str
    operations: List[Dict[str, Any]]
    state: str
    policy: LockPolicy
    backfill: BackfillSettings
    revert_window: Optional[float] = DEFAULT_REVERT_WINDOW  # None: until finalized on request; 0: finalize at once
    version_schema: Optional[str] = None  # name override
    publish_views: bool = True
    verify_reads: Optional[List[Any]] = None  # parsed ReadQuery entries
    verify_reads_mask: Tuple[str, ...] = ()
    wait_for_old_readers: Optional[float] = None  # seconds


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
        self.conn = conn
        self.request = request
        self.metrics = metrics
        self.operations = parse_operations(request.operations)
        check_conflicts(self.operations, lambda table: _qualify(conn, parse_table_name(table, "operations")))
        self.ctx = MigrationContext(conn, request.name, request.policy, request.backfill, metrics,
                                    revert_window=request.revert_window)
        self.tables = qualified_tables(conn, self.operations)
        self.recorded = self._record()  # as the run found it; the phases update the catalog, not this
        self.versions = self._versions()
        self._held_locks: List[str] = []
        self.cost = MigrationCost(self.ctx, metrics, self.tables, len(self.operations))

    def _versions(self) -> MigrationVersions:
        base_schemas = sorted({table.split(".", 1)[0] for table in self.tables})
        record = self.recorded
        if record is not None and record.phase not in catalog.UNDONE and record.base_schema:
            return MigrationVersions(self.request.name, record.base_schema, record.version_schema)
        if not self.request.publish_views:
            return MigrationVersions(self.request.name, base_schemas[0], None)
        if len(base_schemas) > 1:
            raise InvalidOption("operations", "the tables are in several schemas ({0}); a version schema covers one: "
                                "split the migration, or set publish_views: false".format(", ".join(base_schemas)))
        name = version_schema_name(base_schemas[0], self.request.name, self.request.version_schema,
                                   "version_schema" if self.request.version_schema else "name")
        return MigrationVersions(self.request.name, base_schemas[0], name)

    # -- planning ---------------------------------------------------------------------------

    def _record(self) -> Optional[catalog.MigrationRecord]:
        return catalog.load(self.conn, self.request.name)

    def plan(self, phases: List[str]) -> List[Dict[str, Any]]:
        steps = []
        for phase in phases:
            if phase in (ROLLBACK, REVERT) and self.versions.schema:
                steps.append(p.step(phase, "version schema", "DROP SCHEMA {0} CASCADE (clients on it get 42P01 "
                                    "from here on)".format(self.versions.schema), p.ACCESS_EXCLUSIVE).as_dict())
            if phase == FINALIZE and self.versions.schema:
                steps.append(p.step(phase, "version schema", "drop the version schemas before {0} once no session "
                                    "reads them".format(self.versions.schema), p.ACCESS_EXCLUSIVE).as_dict())
            ordered = reversed(self.operations) if phase in (ROLLBACK, REVERT) else self.operations
            for op in ordered:
                steps += [s.as_dict() for s in op.plan(self.ctx, phase)]
            if phase == START and self.versions.schema:
                steps.append(p.step(phase, "version schema", "CREATE SCHEMA {0}: a view per table of {1} with the "
                                    "new shape".format(self.versions.schema, self.versions.base_schema),
                                    p.ACCESS_SHARE).as_dict())
        return steps

    def describe_tables(self) -> Dict[str, str]:
        return {name: describe(resolve_table(self.conn, TableName(*name.split(".", 1)))) for name in self.tables}

    # -- running ----------------------------------------------------------------------------

    def run(self, check_mode: bool) -> Dict[str, Any]:
        self._label_metrics()
        record = self.recorded
        phase = record.phase if record else None
        self._refuse_changed_operations(record)
        desired = "finalized" if self.request.state == "completed" and self.request.revert_window == 0 \
            else self.request.state
        phases = self._expired_window(record, desired) or phases_to_run(phase, desired)
        result: Dict[str, Any] = {"name": self.request.name, "tables": self.tables, "phases": phases,
                                  "previous_phase": phase, "version_schema": self.versions.schema}
        if not phases:
            result.update(changed=False, phase=phase, plan=[])
            return result
        self._lock_tables()
        try:
            if not check_mode:
                result["auto_finalized"] = self._finalize_expired_others()
            self._refuse_other_migrations_in_flight()
            fresh = phase is None or phase in catalog.UNDONE
            if fresh:
                with self.metrics.phase("validate"):
                    for op in self.operations:
                        op.validate(self.ctx)
                self.versions.refuse_concurrent(self.conn)
            if REVERT in phases:
                self._refuse_not_revertible()
            result["plan"] = self.plan(phases)
            # Who would make the first strong lock wait right now: worth knowing before running, not only
            # after retries ran out.
            result["sessions_holding_locks"] = blocking_sessions(self.conn, self.tables)
            before = self.describe_tables()
            if check_mode:
                result.update(changed=True, phase=phase, diff={"before": before, "after": before})
                return result
            self.cost.begin()
            self._run_phases(phases, fresh, result)
            record = self._record()
            result.update(self.cost.finish(sum(record.phase_seconds.values())))
            until = record.revertible_until()
            result.update(changed=True, phase=record.phase, revertible_until=until.isoformat() if until else None,
                          diff={"before": before, "after": self.describe_tables()})
            return result
        finally:
            self._unlock_tables()

    def _label_metrics(self) -> None:
        """What the run is about; a migration this run finalizes on the way keeps the outer run's labels."""
        if "migration" in self.metrics.labels:
            return
        self.metrics.label(db=self.conn.info.dbname, schema=self.versions.base_schema, table=",".join(self.tables),
                           migration=self.request.name)

    def _expired_window(self, record: Optional[catalog.MigrationRecord], desired: str) -> List[str]:
        """A completed migration past its revert window is finalized by whatever run comes next."""
        if record is None or not catalog.window_ended(self.conn, record):
            return []
        if desired == "reverted":
            raise MigrationBusy("the revert window of this migration ended at {0}; it is finalized by this run's "
                                "request instead: run it with state: finalized".format(
                                    record.revertible_until().isoformat()))
        return [FINALIZE] if desired in ("started", "completed", "finalized") else []

    def _finalize_expired_others(self) -> List[str]:
        finalized = []
        for record in catalog.expired_completions(self.conn, self.tables, [self.versions.base_schema]):
            if record.name == self.request.name:
                continue
            request = self.request._replace(name=record.name, operations=record.operations, state="finalized",
                                            version_schema=record.version_schema,
                                            publish_views=bool(record.version_schema), verify_reads=None)
            MigrationRun(self.conn, request, self.metrics).run(check_mode=False)
            finalized.append(record.name)
        return finalized

    def _refuse_changed_operations(self, record: Optional[catalog.MigrationRecord]) -> None:
        if record is None or record.phase in catalog.UNDONE:
            return
        if record.operations != self.request.operations:
            raise InvalidOption("operations", "migration {0!r} was started with different operations; a migration "
                                "cannot change once started (roll it back, or use a new name)".format(record.name))

    def _refuse_not_revertible(self) -> None:
        refused = [op.describe() for op in self.operations if not op.revertible()]
        if refused:
            raise NotRevertible("cannot revert: {0} cannot be undone after completion; nothing was changed".format(
                ", ".join(refused)))

    def _refuse_other_migrations_in_flight(self) -> None:
        busy = catalog.in_flight_on_tables(self.conn, self.tables, self.request.name)
        if busy:
            hint = "finalize, revert" if busy[0].phase == catalog.COMPLETED else "complete"
            raise MigrationBusy("table(s) {0} are in migration {1} (phase {2}); {3} or roll it back first".format(
                ", ".join(sorted(set(busy[0].tables) & set(self.tables))), busy[0].name, busy[0].phase, hint))

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

    def _run_phases(self, phases: List[str], fresh: bool, result: Dict[str, Any]) -> None:
        catalog.ensure_catalog(self.conn)
        if fresh:
            catalog.create(self.conn, self.request.name, self.request.operations, self.tables,
                           self.versions.schema, self.versions.base_schema)
        self.cost.keep_baseline(fresh)
        for phase in phases:
            self._before_phase(phase, result)
            self._run_phase(phase)

    def _before_phase(self, phase: str, result: Dict[str, Any]) -> None:
        """Checks that must pass while the migration can still go back: nothing is recorded as begun yet."""
        if phase == COMPLETE:
            if self.request.verify_reads:
                result["read_verification"] = self._verify_reads()
            if self.request.revert_window != 0:
                for op in self.operations:
                    op.check_revertible(self.ctx)
        if phase == FINALIZE and self.versions.schema:
            result["old_versions"] = self.versions.retire_older(self.ctx, self.tables, self.request.wait_for_old_readers)

    def _verify_reads(self) -> List[Dict[str, Any]]:
        # Imported here: only migrations that verify reads need it.
        from ansible_collections.keel.postgres.plugins.module_utils.schema_change import read_verification

        old_path, new_path = self.versions.read_paths(self.conn)
        with self.metrics.phase("verify_reads"):
            outcomes = read_verification.compare_reads(self.conn, old_path, new_path, self.request.verify_reads,
                                                       masked_columns=self.request.verify_reads_mask)
        for outcome in outcomes:
            catalog.record_read_verification(self.conn, self.request.name, outcome.name, outcome.ok,
                                             outcome.as_dict())
        read_verification.require_matching_reads(outcomes)
        return [outcome.as_dict() for outcome in outcomes]

    def _run_phase(self, phase: str) -> None:
        running, done = PHASE_MARKS[phase]
        catalog.set_phase(self.conn, self.request.name, running)
        began = time.monotonic()
        try:
            with self.metrics.phase(phase), self.cost.phase():
                self._phase_body(phase)
        except Exception as exc:
            catalog.add_phase_seconds(self.conn, self.request.name, phase, time.monotonic() - began)
            catalog.record_error(self.conn, self.request.name, str(exc)[:2000])
            raise
        seconds = time.monotonic() - began
        catalog.add_phase_seconds(self.conn, self.request.name, phase, seconds)
        if phase == ROLLBACK:
            catalog.record_rollback_seconds(self.conn, self.request.name, seconds)
        if phase == REVERT:
            catalog.record_revert_seconds(self.conn, self.request.name, seconds)
        if phase == COMPLETE:
            catalog.record_completed(self.conn, self.request.name, self.request.revert_window)
        if phase == FINALIZE:
            catalog.record_finalized(self.conn, self.request.name)
        catalog.set_phase(self.conn, self.request.name, done)

    def _phase_body(self, phase: str) -> None:
        if phase in (ROLLBACK, REVERT):
            # The new version's views pin what the operations are about to remove.
            self.versions.drop_own(self.ctx, self.tables)
            for op in reversed(self.operations):
                getattr(op, phase)(self.ctx)
            return
        for op in self.operations:
            getattr(op, phase)(self.ctx)
        if phase == START:
            self.versions.publish(self.ctx, self._shape_views, self.tables)

    def _shape_views(self, shapes: List[Any]) -> List[Any]:
        for op in self.operations:
            shapes = op.shape_views(self.ctx, shapes)
        return shapes
