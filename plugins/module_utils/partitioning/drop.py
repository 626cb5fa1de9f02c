# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dropping a detached partition, once nothing more is owed to it (its archive confirmed, when archiving)."""

from __future__ import annotations

from typing import Any

from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, run_in_guarded_transaction

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule before any of this runs
    sql = None


def drop_table(conn: Any, qualified: str, policy: LockPolicy, metrics: RunMetrics) -> None:
    # A detached table is nobody's partition any more, but a report may still read it: its lock wait is bounded too.
    schema, name = qualified.split(".", 1)
    statement = sql.SQL("DROP TABLE {0}").format(sql.Identifier(schema, name))
    run_in_guarded_transaction(conn, lambda c: c.execute(statement), policy, metrics, [qualified],
                               "drop detached partition {0}".format(qualified))
    metrics.count("partitions_dropped")
