# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operation registry: the key in the playbook's operations list -> the class."""

from __future__ import annotations

from typing import Any, Dict, List, Type

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.add_check import AddCheck
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.add_column import AddColumn
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.add_foreign_key import AddForeignKey
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.alter_column import AlterColumn
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.create_index import CreateIndex
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.create_table import CreateTable
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.drop_column import DropColumn
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.drop_table import DropTable
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.partition_table import PartitionTable
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.raw_sql import RawSql
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.rename_column import RenameColumn
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.rename_table import RenameTable
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.rewrite_table import RewriteTable

OPERATIONS: Dict[str, Type[Operation]] = {
    cls.kind: cls
    for cls in (AddColumn, DropColumn, RenameColumn, AlterColumn, CreateIndex, AddForeignKey, AddCheck, RenameTable,
                CreateTable, DropTable, RawSql, RewriteTable, PartitionTable)
}


def parse_operations(specs: Any) -> List[Operation]:
    if not isinstance(specs, list) or not specs:
        raise InvalidOption("operations", "expected a non-empty list, e.g. [{add_column: {table: t, column: c, type: int}}]")
    operations = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict) or len(spec) != 1:
            raise InvalidOption("operations[{0}]".format(index), "each entry is a mapping with exactly one operation "
                                "name ({0})".format(", ".join(sorted(OPERATIONS))))
        (kind, options), = spec.items()
        if kind not in OPERATIONS:
            raise InvalidOption("operations[{0}]".format(index), "unknown operation {0!r}; known: {1}".format(
                kind, ", ".join(sorted(OPERATIONS))))
        operations.append(OPERATIONS[kind](options, index))
    return operations
