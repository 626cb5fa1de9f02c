# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comment that remembers, on the table itself, what maintenance owes a detached partition.

A partition is marked before it is detached, so a run killed at any point
afterwards (detach cancelled half-way, archive failed, drop not reached)
leaves a table the next run recognises as its own and finishes: archive it
if it is not archived yet, drop it when asked. Tables detached by hand carry
no mark and are never archived or dropped by this module. The mark replaces
any comment the partition had.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List

from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_set import Partition, PartitionSet
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, run_in_guarded_transaction

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule before any of this runs
    sql = None

PREFIX = "keel.postgres/partition_maintenance "
DETACHED = "detached"
ARCHIVED = "archived"


@dataclass(frozen=True)
class DetachedTable:
    schema: str  # where it is now (a staging schema while it is being archived)
    name: str
    oid: int
    is_partition: bool  # still attached (a detach pending, or one that failed)
    record: Dict[str, Any]

    @property
    def qualified(self) -> str:
        return "{0}.{1}".format(self.schema, self.name)

    @property
    def home(self) -> str:
        """The schema it was detached in, where it returns after archiving."""
        return self.record.get("schema", self.schema)

    @property
    def archived(self) -> bool:
        return self.record.get("state") == ARCHIVED


def detach_record(parent: PartitionSet, partition: Partition) -> Dict[str, Any]:
    lower, upper = partition.as_dict()["from"], partition.as_dict()["to"]
    # The oid tells this table from a copy restored from its archive, which carries the same comment.
    return {"parent": parent.qualified, "schema": partition.schema, "oid": partition.oid, "from": lower, "to": upper,
            "state": DETACHED}


def write_mark(conn: Any, schema: str, name: str, record: Dict[str, Any], policy: LockPolicy, metrics: RunMetrics) -> None:
    # COMMENT takes SHARE UPDATE EXCLUSIVE: it waits for DDL, never for the application's reads and writes.
    text = PREFIX + json.dumps(record, sort_keys=True)
    statement = sql.SQL("COMMENT ON TABLE {0} IS {1}").format(sql.Identifier(schema, name), sql.Literal(text))
    run_in_guarded_transaction(conn, lambda c: c.execute(statement), policy, metrics, ["{0}.{1}".format(schema, name)],
                               "mark {0}.{1} for partition maintenance".format(schema, name))


def marked_tables(conn: Any, parent: PartitionSet) -> List[DetachedTable]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.oid, c.relispartition, d.description"
        " FROM pg_description d JOIN pg_class c ON c.oid = d.objoid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE d.classoid = 'pg_class'::regclass AND d.objsubid = 0 AND c.relkind = 'r' AND starts_with(d.description, %s)"
        " ORDER BY c.relname",
        (PREFIX,),
    ).fetchall()
    found = []
    for schema, name, oid, is_partition, description in rows:
        record = _parse(description)
        if record is not None and record.get("parent") == parent.qualified and record.get("oid") == oid:
            found.append(DetachedTable(schema, name, oid, is_partition, record))
    return found


def _parse(description: str) -> Any:
    try:
        record = json.loads(description[len(PREFIX):])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
