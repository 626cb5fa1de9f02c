# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ties a table to others: the facts that decide whether it can be swapped for a copy.

A table replaced by another (rewrite_table's copy, partition_table's parent)
leaves behind everything bound to its OID: other tables' foreign keys,
triggers, policies, inheritance. Operations that swap tables read these facts
here and refuse, each with its own reasons, before anything changes.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple


class TableRelations(NamedTuple):
    is_partition: bool
    in_inheritance: bool
    referenced_by: List[str]  # foreign keys of other tables on it, as "table.constraint"
    self_references: List[str]  # its own foreign keys that point at itself, as "table.constraint"
    foreign_keys: List[str]  # its own foreign keys (self-references included)
    exclusion_constraints: List[str]
    triggers: List[str]  # user triggers, keel's own helpers included
    has_policies: bool


def table_relations(conn: Any, oid: int) -> TableRelations:
    row = conn.execute(
        "SELECT c.relispartition,"
        " EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = c.oid OR inhrelid = c.oid),"
        " ARRAY(SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint"
        "   WHERE confrelid = c.oid AND conrelid <> c.oid AND contype = 'f' ORDER BY 1),"
        " ARRAY(SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint"
        "   WHERE confrelid = c.oid AND conrelid = c.oid AND contype = 'f' ORDER BY 1),"
        " ARRAY(SELECT conname FROM pg_constraint WHERE conrelid = c.oid AND contype = 'f' ORDER BY 1),"
        " ARRAY(SELECT conname FROM pg_constraint WHERE conrelid = c.oid AND contype = 'x' ORDER BY 1),"
        " ARRAY(SELECT tgname FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal ORDER BY 1),"
        " EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = c.oid)"
        " FROM pg_class c WHERE c.oid = %s", (oid,)).fetchone()
    return TableRelations(*row)


def user_triggers(relations: TableRelations) -> List[str]:
    """Triggers that are not keel's own helpers (named ``_keel_…``)."""
    return [name for name in relations.triggers if not name.startswith("_keel_")]
