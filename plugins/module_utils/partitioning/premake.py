# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Future partitions: which are missing, whether the DEFAULT partition would object, and creating them.

``CREATE TABLE ... PARTITION OF`` locks the parent ACCESS EXCLUSIVE (and, when
a DEFAULT partition exists, that one too while it is scanned for rows of the
new range), so each partition is created in its own short transaction under
the lock guard: a lock not granted within ``lock_timeout`` gives the queue back
to the application and is retried later.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, List

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.interval import Interval, align_down
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_names import partition_name
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_set import PartitionSet
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import regclass_text
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, run_in_guarded_transaction

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule before any of this runs
    sql = None

MAX_NEW_PARTITIONS = 1000  # a parent left alone for years, or a tiny interval, must not create tables without end


@dataclass(frozen=True)
class NewPartition:
    schema: str
    name: str
    lower: Any
    upper: Any

    @property
    def qualified(self) -> str:
        return "{0}.{1}".format(self.schema, self.name)

    def as_dict(self) -> dict:
        return {"name": self.qualified, "from": _show(self.lower), "to": _show(self.upper), "default": False}


def plan_premake(parent: PartitionSet, interval: Interval, now: Any, premake: int, expire_before: Any = None) -> List[NewPartition]:
    """The partitions to add after the last one so that ``premake`` of them start after ``now``.

    A gap between the last partition and ``now`` (a parent nobody maintained for a while) is filled too, so the
    ranges stay contiguous, except cells that retention would detach straight away.
    """
    ranged = parent.ranged
    if ranged and ranged[-1].upper is None:
        if premake:
            raise InvalidOption("premake", "{0}'s last partition {1} ends at MAXVALUE: there is no room for future "
                                           "partitions".format(parent.qualified, ranged[-1].qualified))
        return []
    cursor = ranged[-1].upper if ranged else align_down(_reference(now, ranged), interval)
    _check_grid(cursor, interval)
    reference = _reference(now, ranged)
    ahead = len([p for p in ranged if p.lower is not None and p.lower > reference])
    planned: List[NewPartition] = []
    while ahead < premake or cursor <= reference:
        upper = interval.add(cursor)
        if expire_before is None or upper > expire_before:
            planned.append(NewPartition(parent.schema, partition_name(parent.name, cursor, interval), cursor, upper))
        if cursor > reference:
            ahead += 1
        cursor = upper
        if len(planned) > MAX_NEW_PARTITIONS:
            raise InvalidOption("premake", "more than {0} partitions would be created for {1} (interval {2}); check "
                                           "interval, or create the gap by hand".format(MAX_NEW_PARTITIONS, parent.qualified, interval.describe()))
    return planned


def refuse_default_overlap(conn: Any, parent: PartitionSet, planned: List[NewPartition]) -> None:
    """A new range holding rows of the DEFAULT partition would fail under the parent's lock: refuse it now."""
    default = parent.default_partition
    if default is None or not planned:
        return
    for new in planned:
        rows = conn.execute(
            sql.SQL("SELECT count(*) FROM (SELECT 1 FROM ONLY {0} WHERE {1} >= %s AND {1} < %s LIMIT 1000) s").format(
                sql.Identifier(default.schema, default.name), sql.Identifier(parent.key_column)),
            (new.lower, new.upper),
        ).fetchone()[0]
        if rows:
            raise InvalidOption("premake", "partition {0} FROM {1} TO {2} would overlap {3}{4} row(s) of the DEFAULT partition "
                                           "{5}; move those rows out of the DEFAULT partition first (nothing was changed)".format(
                                               new.qualified, _show(new.lower), _show(new.upper), rows, "+" if rows >= 1000 else "",
                                               default.qualified))


def refuse_taken_names(conn: Any, planned: List[NewPartition]) -> None:
    for new in planned:
        if conn.execute("SELECT to_regclass(%s)", (regclass_text(new.schema, new.name),)).fetchone()[0] is not None:
            raise InvalidOption("premake", "cannot create partition {0}: a relation of that name exists already and is not a "
                                           "partition of this table".format(new.qualified))


def create_partitions(conn: Any, parent: PartitionSet, planned: List[NewPartition], policy: LockPolicy,
                      metrics: RunMetrics) -> List[NewPartition]:
    created = []
    for new in planned:
        statement = sql.SQL("CREATE TABLE {0} PARTITION OF {1} FOR VALUES FROM ({2}) TO ({3})").format(
            sql.Identifier(new.schema, new.name), parent.identifier, sql.Literal(new.lower), sql.Literal(new.upper))
        locked = [parent.qualified] + ([parent.default_partition.qualified] if parent.default_partition else [])
        run_in_guarded_transaction(conn, lambda c, s=statement: c.execute(s), policy, metrics, locked,
                                   "create partition {0}".format(new.qualified))
        metrics.count("partitions_created")
        created.append(new)
    return created


def _reference(now: Any, ranged: list) -> Any:
    # An integer-keyed parent without rows has no max(key): its first partition stands for "now".
    if now is not None:
        return now
    bounded = [p.lower for p in ranged if p.lower is not None]
    return bounded[0] if bounded else 0


def _check_grid(anchor: Any, interval: Interval) -> None:
    if interval.months and (anchor.day != 1 or (isinstance(anchor, datetime.datetime) and anchor.time() != datetime.time(0))):
        raise InvalidOption("interval", "a month interval needs partitions that start at midnight on the first of a month; "
                                        "the last one ends at {0}".format(_show(anchor)))
    date_only = isinstance(anchor, datetime.date) and not isinstance(anchor, datetime.datetime)
    if date_only and interval.seconds and interval.seconds % 86400:
        raise InvalidOption("interval", "the partition key is a date: the interval must be whole days, got {0}".format(interval.describe()))


def _show(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
