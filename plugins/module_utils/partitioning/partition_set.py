# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A range-partitioned parent as the catalog describes it: its key, its partitions and their bounds.

Bounds come from ``pg_get_expr(relpartbound)``, and the quoted literals in it
are cast back to the key's type by the same session that rendered them, so a
``timestamptz`` bound round-trips exactly whatever the session's TimeZone.
Everything the module refuses about the parent (unknown, not partitioned, not
by range, a key of several columns or of an unsupported type) is refused here,
before anything changes, naming the ``table`` field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, regclass_text

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule before any of this runs
    sql = None

TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
INTEGER_TYPES = ("smallint", "integer", "bigint")
_RANGE_BOUND = re.compile(r"^FOR VALUES FROM \((?P<lower>.+)\) TO \((?P<upper>.+)\)$")


@dataclass(frozen=True)
class Partition:
    schema: str
    name: str
    lower: Any  # None for MINVALUE or for the DEFAULT partition
    upper: Any  # None for MAXVALUE or for the DEFAULT partition
    is_default: bool = False
    detach_pending: bool = False
    oid: int = 0

    @property
    def qualified(self) -> str:
        return "{0}.{1}".format(self.schema, self.name)

    def as_dict(self) -> dict:
        return {"name": self.qualified, "from": _show(self.lower), "to": _show(self.upper), "default": self.is_default}


@dataclass
class PartitionSet:
    schema: str
    name: str
    oid: int
    key_column: str
    key_type: str  # format_type() of the key column
    partitions: List[Partition] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return "{0}.{1}".format(self.schema, self.name)

    @property
    def identifier(self) -> Any:
        return sql.Identifier(self.schema, self.name)

    @property
    def is_time_key(self) -> bool:
        return self.key_type in TIME_TYPES

    @property
    def default_partition(self) -> Optional[Partition]:
        return next((p for p in self.partitions if p.is_default), None)

    @property
    def ranged(self) -> List[Partition]:
        """Attached range partitions (not DEFAULT, not pending detach), lowest first."""
        usable = [p for p in self.partitions if not p.is_default and not p.detach_pending]
        return sorted(usable, key=lambda p: (p.lower is not None, p.lower))

    @property
    def pending(self) -> List[Partition]:
        return [p for p in self.partitions if p.detach_pending]


def read_partition_set(conn: Any, table: TableName) -> PartitionSet:
    parent = _parent(conn, table)
    parent.partitions = _partitions(conn, parent)
    return parent


def key_now(conn: Any, parent: PartitionSet) -> Any:
    """Where "now" is on the key: the server's clock for a time key, max(key) for an integer key (None when empty)."""
    if parent.is_time_key:
        return conn.execute(sql.SQL("SELECT now()::{0}").format(sql.SQL(parent.key_type))).fetchone()[0]
    return conn.execute(sql.SQL("SELECT max({0}) FROM {1}").format(sql.Identifier(parent.key_column), parent.identifier)).fetchone()[0]


def _parent(conn: Any, table: TableName) -> PartitionSet:
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind, p.partstrat, p.partnatts,"
        "       (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = p.partattrs[0]),"
        "       (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = p.partattrs[0])"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_partitioned_table p ON p.partrelid = c.oid"
        " WHERE c.oid = to_regclass(%s)",
        (regclass_text(table.schema, table.name),),
    ).fetchone()
    if row is None:
        raise InvalidOption("table", "no table {0} in this database (searched {1})".format(
            table, "schema " + table.schema if table.schema else "the search_path"))
    oid, schema, name, relkind, strategy, key_columns, key_column, key_type = row
    qualified = "{0}.{1}".format(schema, name)
    if relkind != "p":
        raise InvalidOption("table", "{0} is not a partitioned table; convert it first (schema_change operation "
                                     "partition_table)".format(qualified))
    if strategy != "r":
        raise InvalidOption("table", "{0} is partitioned by {1}, not by range; only range partitions have a time or "
                                     "id window to premake and expire".format(qualified, {"l": "list", "h": "hash"}.get(strategy, strategy)))
    if key_columns != 1 or key_column is None:
        raise InvalidOption("table", "{0} has a partition key of several columns or an expression; only a single-column "
                                     "key is supported".format(qualified))
    if key_type not in TIME_TYPES + INTEGER_TYPES:
        raise InvalidOption("table", "{0} is partitioned on {1} of type {2}; supported key types are {3}".format(
            qualified, key_column, key_type, ", ".join(TIME_TYPES + INTEGER_TYPES)))
    return PartitionSet(schema=schema, name=name, oid=oid, key_column=key_column, key_type=key_type)


def _partitions(conn: Any, parent: PartitionSet) -> List[Partition]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending, c.oid"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE i.inhparent = %s ORDER BY c.relname",
        (parent.oid,),
    ).fetchall()
    partitions = []
    for schema, name, bound, pending, oid in rows:
        if bound == "DEFAULT":
            partitions.append(Partition(schema, name, None, None, is_default=True, detach_pending=pending, oid=oid))
            continue
        lower, upper = _range_literals(bound, "{0}.{1}".format(schema, name))
        partitions.append(Partition(schema, name, _cast(conn, lower, parent.key_type), _cast(conn, upper, parent.key_type),
                                    detach_pending=pending, oid=oid))
    return partitions


def _range_literals(bound: str, partition: str) -> tuple:
    match = _RANGE_BOUND.match(bound)
    if match is None:
        raise InvalidOption("table", "cannot read the bound of partition {0}: {1}".format(partition, bound))
    return match.group("lower"), match.group("upper")


def _cast(conn: Any, literal: str, key_type: str) -> Any:
    if literal in ("MINVALUE", "MAXVALUE"):
        return None
    # The literal was rendered by this session; let it parse it back rather than guessing its format in Python.
    return conn.execute(sql.SQL("SELECT {0}::{1}").format(sql.SQL(literal), sql.SQL(key_type))).fetchone()[0]


def _show(value: Any) -> Any:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else value
