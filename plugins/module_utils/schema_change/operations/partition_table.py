# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""partition_table: turn a live table into a partitioned table while the application keeps writing.

``method: attach`` (range only) makes the table itself the first partition of a
new parent: nothing is copied, the swap holds its lock for about a millisecond
(partition_attach.py). ``method: copy`` splits the rows across new partitions
with a mirror trigger and a batched copy, for list partitioning or when the
existing rows must not stay in one partition (partition_copy.py). Both are
revertible after completion until finalized.

    - partition_table: {table: events, key: created_at, strategy: range, interval: 1 month, premake: 4}
    - partition_table: {table: orders, key: tenant, strategy: list, method: copy, values: [acme, globex]}
"""

from __future__ import annotations

from typing import Any, List, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import partition_bounds as bounds
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import partition_checks as checks
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import backfill_key
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.partition_attach import AttachMethod
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.partition_copy import CopyMethod

STRATEGIES = ("range", "list")
METHODS = ("attach", "copy")
DEFAULT_PREMAKE = 4
MAX_PREMAKE = 100


class PartitionTable(Operation):
    kind = "partition_table"
    required = ("table", "key")
    optional = ("strategy", "method", "interval", "premake", "values")

    def parse(self) -> None:
        self.table = self.table_option()
        self.key = self.identifier_option("key")
        self.strategy = self._choice("strategy", STRATEGIES, "range")
        self.method = self._choice("method", METHODS, "attach" if self.strategy == "range" else "copy")
        if self.method == "attach" and self.strategy != "range":
            raise InvalidOption(self.sub("method"), "attach makes the table one range partition; list partitioning "
                                                    "splits its rows: use method: copy")
        self.interval = self.spec.get("interval")
        if self.strategy == "range" and self.interval in (None, ""):
            raise InvalidOption(self.sub("interval"), "range partitioning needs an interval, e.g. '1 month', "
                                                      "'1 day', or a whole number for an integer key")
        self.premake = self._premake()
        self.values = self._values()

    def _choice(self, key: str, choices: tuple, default: str) -> str:
        value = self.spec.get(key, default)
        if value not in choices:
            raise InvalidOption(self.sub(key), "expected one of {0}, got {1!r}".format(", ".join(choices), value))
        return value

    def _premake(self) -> int:
        value = self.spec.get("premake", DEFAULT_PREMAKE)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PREMAKE:
            raise InvalidOption(self.sub("premake"), "expected a whole number from 0 to {0}, got {1!r}".format(
                MAX_PREMAKE, value))
        return value

    def _values(self) -> List[Any]:
        values = self.spec.get("values")
        if self.strategy == "range":
            if values is not None:
                raise InvalidOption(self.sub("values"), "values is for strategy: list")
            return []
        if not isinstance(values, list) or not values:
            raise InvalidOption(self.sub("values"), "list partitioning needs values: the key values, one partition "
                                                    "each")
        for position, value in enumerate(values):
            if isinstance(value, (bool, dict, list)) or value is None or str(value) == "":
                raise InvalidOption("{0}[{1}]".format(self.sub("values"), position),
                                    "expected a text or number value, got {0!r}".format(value))
        if len({str(v) for v in values}) != len(values):
            raise InvalidOption(self.sub("values"), "values repeat")
        return values

    @property
    def implementation(self) -> Any:
        return AttachMethod(self) if self.method == "attach" else CopyMethod(self)

    def describe(self) -> str:
        return "partition_table {0} by {1} ({2})".format(self.table, self.key, self.method)

    def targets(self) -> Set[Target]:
        return {(str(self.table), None)}

    def tables(self) -> List[TableName]:
        return [self.table]

    # -- validate ---------------------------------------------------------------------------------

    def validate(self, ctx: MigrationContext) -> None:
        field = self.sub("table")
        info = ctx.table(self.table, field)
        checks.refuse_unconvertible(ctx.conn, info, field)
        if self.key not in info.columns:
            raise InvalidOption(self.sub("key"), "table {0} has no column {1!r}".format(info.qualified, self.key))
        checks.refuse_keys_without(info, self.key, self.sub("key"))
        key_type = info.columns[self.key].type
        if self.strategy == "range":
            bounds.key_interval(self.interval, key_type, self.sub("interval"))
            checks.refuse_nulls(ctx.conn, info, self.key, self.sub("key"))
        else:
            checks.refuse_uncovered(ctx.conn, info, self.key, self.values, self.sub("values"))
        if self.method == "copy":
            backfill_key(info, field)
            checks.refuse_taken_names(ctx.conn, info.schema, self.implementation.partition_names(ctx, info),
                                      self.sub("table"))
        else:
            checks.refuse_taken_names(ctx.conn, info.schema, [bounds.first_partition_name(info.name)],
                                      self.sub("table"))

    # -- plan ---------------------------------------------------------------------------------------

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        info = ctx.maybe_table(self.table)
        rows = info.rows_estimate if info else None
        steps = self.implementation.plan(ctx, phase, rows, self.describe())
        warning = checks.lock_timeout_warning(ctx.conn, ctx.policy.lock_timeout)
        if warning and phase in ("complete", "revert"):
            steps = [s._replace(warning=warning) if s.lock == p.ACCESS_EXCLUSIVE and not s.warning else s
                     for s in steps]
        return steps

    # -- phases -------------------------------------------------------------------------------------

    def start(self, ctx: MigrationContext) -> None:
        self.implementation.start(ctx)

    def complete(self, ctx: MigrationContext) -> None:
        self.implementation.complete(ctx)

    def rollback(self, ctx: MigrationContext) -> None:
        self.implementation.rollback(ctx)

    def revert(self, ctx: MigrationContext) -> None:
        self.implementation.revert(ctx)

    def finalize(self, ctx: MigrationContext) -> None:
        self.implementation.finalize(ctx)
