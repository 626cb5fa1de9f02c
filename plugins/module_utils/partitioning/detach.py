# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detaching expired partitions without stopping the application.

``DETACH PARTITION ... CONCURRENTLY`` takes only SHARE UPDATE EXCLUSIVE, then
waits for every transaction that could still see the partition. It refuses a
transaction block (25001, also for several statements in one query string), so
it is sent alone in autocommit, with ``lock_timeout`` set and no
``statement_timeout``: the wait for older snapshots is part of the job. If it
is cancelled after its first transaction, the partition stays "pending detach"
(``pg_inherits.inhdetachpending``) and a second DETACH fails (55000); the
pending detach is completed with ``DETACH ... FINALIZE``, which is what every
run does first and what a retry does after its own cancelled attempt.

PostgreSQL refuses CONCURRENTLY when the parent has a DEFAULT partition
(55000). For such parents a plain DETACH is used: ACCESS EXCLUSIVE on the
parent, but metadata-only and held for milliseconds, taken under the lock
guard so it never queues the application for longer than ``lock_timeout``.
"""

from __future__ import annotations

import datetime
from typing import Any, List

from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_set import Partition, PartitionSet
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import (
    LockPolicy,
    run_in_guarded_transaction,
    run_outside_transaction,
)

try:
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError:  # reported by KeelModule before any of this runs
    pg_errors = sql = None

CONCURRENT = "concurrently"
PLAIN = "plain"


def expired_partitions(parent: PartitionSet, now: Any, retention: float) -> List[Partition]:
    """Partitions whose whole range ends at or before now - retention, oldest first."""
    cutoff = retention_cutoff(now, retention)
    return [p for p in parent.ranged if p.upper is not None and p.upper <= cutoff]


def retention_cutoff(now: Any, retention: float) -> Any:
    return now - datetime.timedelta(seconds=retention)


def detach_method(parent: PartitionSet) -> str:
    return PLAIN if parent.default_partition is not None else CONCURRENT


def finalize_pending(conn: Any, parent: PartitionSet, partition: Partition, policy: LockPolicy, metrics: RunMetrics) -> None:
    statement = _detach(parent, partition, "FINALIZE")
    run_outside_transaction(conn, statement, policy, metrics, [parent.qualified, partition.qualified],
                            "finalize the pending detach of {0}".format(partition.qualified))
    metrics.count("pending_detaches_finalized")


def detach_partition(conn: Any, parent: PartitionSet, partition: Partition, policy: LockPolicy, metrics: RunMetrics) -> str:
    tables = [parent.qualified, partition.qualified]
    if detach_method(parent) == PLAIN:
        statement = _detach(parent, partition, "")
        run_in_guarded_transaction(conn, lambda c: c.execute(statement), policy, metrics, [*tables, parent.default_partition.qualified],
                                   "detach {0} (plain: the parent has a DEFAULT partition)".format(partition.qualified))
        metrics.count("partitions_detached")
        return PLAIN
    try:
        run_outside_transaction(conn, _detach(parent, partition, "CONCURRENTLY"), policy, metrics, tables,
                                "detach {0} concurrently".format(partition.qualified))
    except Exception as exc:
        # An attempt cancelled while it waited for older snapshots leaves the detach pending: finish that one.
        if not (pg_errors and isinstance(exc, pg_errors.ObjectNotInPrerequisiteState) and _pending(conn, partition)):
            raise
        finalize_pending(conn, parent, partition, policy, metrics)
    metrics.count("partitions_detached")
    return CONCURRENT


def _detach(parent: PartitionSet, partition: Partition, mode: str) -> Any:
    return sql.SQL("ALTER TABLE {0} DETACH PARTITION {1} {2}").format(
        parent.identifier, sql.Identifier(partition.schema, partition.name), sql.SQL(mode))


def _pending(conn: Any, partition: Partition) -> bool:
    row = conn.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
                       ('"{0}"."{1}"'.format(partition.schema, partition.name),)).fetchone()
    return bool(row and row[0])
