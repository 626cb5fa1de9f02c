# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The interface every operation implements, and parsing of its options.

An operation is data from the playbook (``{alter_column: {table: orders, ...}}``)
turned into an object with five steps: ``validate`` (against the server,
before anything changes), ``plan`` (for check mode), ``start`` (expand: add
the new shape beside the old), ``complete`` (contract: switch over, drop the
old shape) and ``rollback`` (remove what start added). Every step must be
safe to run again after an interruption: it checks what exists first.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import (
    TableName,
    check_identifier,
    parse_table_name,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.plan import PlanStep
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.version_schema import ViewShape


class NotRevertible(KeelError):
    kind = "not_revertible"


# What an operation touches, for conflict detection: (table, column) or (table, None) for the whole table.
Target = Tuple[str, Optional[str]]


class Operation:
    kind = ""
    required: Tuple[str, ...] = ()
    optional: Tuple[str, ...] = ()

    def __init__(self, spec: Dict[str, Any], index: int) -> None:
        self.index = index
        self.field = "operations[{0}].{1}".format(index, self.kind)
        self.spec = self._check_keys(spec)
        self.parse()

    # -- parsing helpers ---------------------------------------------------------

    def parse(self) -> None:
        """Read and statically check ``self.spec``; raise InvalidOption naming the field."""

    def _check_keys(self, spec: Any) -> Dict[str, Any]:
        if not isinstance(spec, dict):
            raise InvalidOption(self.field, "expected a mapping of options, got {0!r}".format(spec))
        unknown = sorted(set(spec) - set(self.required) - set(self.optional))
        if unknown:
            raise InvalidOption(self.field, "unknown option(s) {0}; allowed: {1}".format(
                ", ".join(unknown), ", ".join(sorted(self.required + self.optional))))
        missing = [key for key in self.required if spec.get(key) in (None, "")]
        if missing:
            raise InvalidOption(self.field, "missing required option(s) {0}".format(", ".join(missing)))
        return spec

    def sub(self, key: str) -> str:
        return "{0}.{1}".format(self.field, key)

    def table_option(self, key: str = "table") -> TableName:
        return parse_table_name(self.spec.get(key), self.sub(key))

    def identifier_option(self, key: str) -> str:
        return check_identifier(self.spec.get(key), self.sub(key))

    def identifier_list_option(self, key: str) -> List[str]:
        values = self.spec.get(key)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            raise InvalidOption(self.sub(key), "expected a non-empty list of column names")
        return [check_identifier(value, "{0}[{1}]".format(self.sub(key), i)) for i, value in enumerate(values)]

    def text_option(self, key: str, default: Optional[str] = None) -> Optional[str]:
        value = self.spec.get(key, default)
        if value is None:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvalidOption(self.sub(key), "expected text, got {0!r}".format(value))
        return str(value)

    def bool_option(self, key: str, default: bool = False) -> bool:
        value = self.spec.get(key, default)
        if not isinstance(value, bool):
            raise InvalidOption(self.sub(key), "expected true or false, got {0!r}".format(value))
        return value

    # -- the interface ---------------------------------------------------------------

    def describe(self) -> str:
        raise NotImplementedError

    def targets(self) -> Set[Target]:
        raise NotImplementedError

    def tables(self) -> List[TableName]:
        raise NotImplementedError

    def validate(self, ctx: MigrationContext) -> None:
        """Check against the server before the migration starts."""

    def plan(self, ctx: MigrationContext, phase: str) -> List[PlanStep]:
        raise NotImplementedError

    def start(self, ctx: MigrationContext) -> None:
        """Expand. Default: nothing to do before the switch-over."""

    def complete(self, ctx: MigrationContext) -> None:
        """Contract. Default: nothing to do after start."""

    def rollback(self, ctx: MigrationContext) -> None:
        """Undo start. Default: start changed nothing."""

    def shape_views(self, ctx: MigrationContext, shapes: List[ViewShape]) -> List[ViewShape]:
        """How this migration's version schema shows the tables: each view's name and columns.

        Given the shapes as the tables are now (after ``start``); default: unchanged.
        """
        return shapes

    def check_revertible(self, ctx: MigrationContext) -> None:
        """Before ``complete``: refuse (raise, naming the field) when a revert could not keep every write.

        Default: nothing could be lost.
        """

    # True when completion only switched over, so undoing it is undoing start.
    reverts_by_rollback = False

    def revertible(self) -> bool:
        return self.reverts_by_rollback or type(self).revert is not Operation.revert

    def revert(self, ctx: MigrationContext) -> None:
        """Undo ``complete`` while the old shape is still kept: back to the old shape, every write since kept."""
        if not self.reverts_by_rollback:
            raise NotRevertible("{0} cannot be reverted after completion".format(self.describe()))
        self.rollback(ctx)

    def finalize(self, ctx: MigrationContext) -> None:
        """Drop what ``complete`` kept so the migration could be reverted. Default: nothing was kept."""

    # -- shaping views, for operations on one table ----------------------------------------

    def _is_my_table(self, ctx: MigrationContext, shape: ViewShape, table: TableName) -> bool:
        info = ctx.maybe_table(table)
        return info is not None and (shape.table_schema, shape.table) == (info.schema, info.name)

    def _map_columns(self, ctx: MigrationContext, shapes: List[ViewShape], table: TableName,
                     change: Any) -> List[ViewShape]:
        """Apply ``change(columns) -> columns`` to the view of ``table``."""
        return [shape._replace(columns=change(list(shape.columns))) if self._is_my_table(ctx, shape, table) else shape
                for shape in shapes]

    @property
    def state_key(self) -> str:
        return str(self.index)
