#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: schema_change
short_description: Change a PostgreSQL schema without blocking the application (expand/contract)
version_added: 0.1.0
description:
  - Applies a migration, described as a list of O(operations), in phases.
    V(started) expands (the new shape is added beside the old one, kept in sync by triggers, existing rows
    backfilled in short batches, indexes built concurrently, constraints added C(NOT VALID) then validated);
    V(completed) contracts (switch over, drop the old shape); V(rolled_back) removes everything the migration
    added and leaves the old shape untouched.
  - Every statement that takes a table lock runs with a short O(lock_timeout) and is retried with jittered
    backoff, so a migration waits for the application and never the other way round. When the retries run
    out, the task fails naming the sessions in the way, and the migration stays resumable.
  - Each migration's phase, timings and backfill cursor are recorded in schema C(keel) of the database,
    so a killed run resumes where it stopped and a repeated run reports no change.
    Two runs can never migrate the same table at once, and a table that is part of an unfinished migration
    is refused to any other migration.
  - Check mode returns the plan (each step, the lock it takes, whether it scans or rewrites, estimated rows).
    Diff mode shows the affected tables' definitions before and after.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
attributes:
  check_mode:
    support: full
    description: Validates everything against the server and returns the plan; nothing changes.
  diff_mode:
    support: full
    description: Table definitions (columns, constraints, indexes) before and after.
options:
  name:
    description:
      - Unique name of the migration, recorded in the catalog, for example V(2026_11_orders_amount_bigint).
    type: str
    required: true
  operations:
    description:
      - "The migration, a list of single-key mappings C({<operation>: {<options>}}), applied in order (rolled back in
        reverse order)."
      - "V(add_column) C({table, column, type, default, not_null, check, references: {table, column, on_delete}, up}).
        C(default), C(check) and C(up) are SQL expressions; C(up) fills existing rows and, until completion, rows the
        old application inserts without the column and updates that leave the column unchanged. C(not_null) needs
        C(default) or C(up). Operations later in the same migration may use the new column."
      - "V(drop_column) C({table, column}), dropped when the migration completes."
      - "V(rename_column) C({table, from, to}), renamed when the migration completes."
      - "V(alter_column) C({table, column, type, using, not_null, default, drop_default}). A type change goes through
        a new column, triggers, a batched backfill and a swap by rename at completion; C(using) is the conversion
        expression (default C(column::type)). C(not_null=true) is reached through a validated CHECK."
      - "V(create_index) C({table, name, columns, unique, method, where}), built C(CONCURRENTLY)."
      - "V(add_foreign_key) C({table, name, columns, references: {table, columns}, on_delete}) and V(add_check)
        C({table, name, check}), added C(NOT VALID) and then validated."
      - "V(create_table) C({table, columns: [{name, type, not_null, default, primary_key, unique}]}), V(drop_table)
        C({table}) (at completion), V(rename_table) C({table, to}) (at completion)."
      - "V(rewrite_table) C({table}) rebuilds a bloated table online (the pg_repack use case): a shadow copy kept in
        sync by a trigger, a batched copy, indexes built concurrently, and a swap by rename at completion. Tables read
        by views, referenced by or holding foreign keys, with user triggers, inheritance or row level security are
        refused."
      - "Partitioned tables: V(add_column), V(add_check) and V(create_index) (built on each partition concurrently,
        then attached) work; foreign keys, type changes and rewrites of the partitioned table are refused."
      - "V(raw_sql) C({up, down, tables}) runs your own statements under the lock guard; the plan flags statements
        that hold ACCESS EXCLUSIVE while they scan or rewrite."
      - "A constraint whose validation fails (rows that violate it) is removed again, so the application keeps
        writing, and the task fails saying which rule the rows break."
      - "Names must be plain identifiers (ASCII letters, digits, C(_), C($)); tables may be schema-qualified."
    type: list
    elements: dict
    required: true
  state:
    description:
      - The phase the migration should reach. V(completed) runs the start phase first if needed.
      - A completed migration cannot be rolled back (its old shape is gone); write a new migration instead.
    type: str
    choices: [ started, completed, rolled_back ]
    default: started
  lock_timeout:
    description:
      - How long any statement may wait for a table lock before giving the lock queue back and retrying.
        PostgreSQL interval syntax such as V(500ms) or V(1s).
    type: raw
    default: 500ms
  lock_retries:
    description: How many times a statement that timed out waiting for its lock is retried.
    type: int
    default: 50
  statement_timeout:
    description:
      - Upper bound for each short DDL statement and backfill batch; V(0) disables it. Concurrent index builds
        and constraint validation, which scan by design under weak locks, are not bounded.
    type: raw
    default: 30s
  batch_size:
    description: Rows per backfill batch (each batch is its own short transaction). Slow batches are halved.
    type: int
    default: 10000
  backfill_pause_ratio:
    description:
      - After each batch, pause for this fraction of the batch's duration, leaving room for the application.
    type: float
    default: 0.2
  max_replication_lag:
    description:
      - Pause the backfill while any standby replays more than this far behind (for example V(10s)).
    type: raw
  replication_lag_timeout:
    description: Fail (resumably) when the lag stays above O(max_replication_lag) for this long.
    type: raw
    default: 10min
notes:
  - Tables with a type change or a backfill need a primary key or a unique NOT NULL key.
  - A type change is refused (before any change) for primary-key, identity and view-referenced columns and for
    columns used by other constraints or by expression, partial or INCLUDE indexes.
seealso:
  - module: keel.postgres.migration_info
  - module: keel.postgres.preflight
"""

EXAMPLES = r"""
- name: Widen orders.amount without blocking the shop
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_amount_bigint
    operations:
      - alter_column: {table: orders, column: amount, type: bigint}
    state: completed
    lock_timeout: 500ms
    lock_retries: 50
    batch_size: 10000

- name: Expand only; deploy the new application before completing
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_status
    operations:
      - add_column: {table: orders, column: status, type: text, default: "'new'", not_null: true}
      - create_index: {table: orders, name: orders_status_idx, columns: [status]}
      - add_foreign_key:
          table: orders
          name: orders_customer_fk
          columns: [customer_id]
          references: {table: customers, columns: [id]}
    state: started

- name: Show the plan only
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_status
    operations: "{{ orders_status_operations }}"
    state: completed
  check_mode: true
  register: plan

- name: Undo a started migration
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_status
    operations: "{{ orders_status_operations }}"
    state: rolled_back
"""

RETURN = r"""
name:
  description: The migration's name.
  returned: always
  type: str
  sample: 2026_11_orders_amount_bigint
phase:
  description: The phase recorded in the catalog after this run (unchanged in check mode); null if never started.
  returned: always
  type: str
  sample: completed
previous_phase:
  description: The phase recorded before this run.
  returned: always
  type: str
  sample: started
phases:
  description: The phases this run executed (or would, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [start, complete]
tables:
  description: Schema-qualified tables the migration touches.
  returned: always
  type: list
  elements: str
  sample: [public.orders]
plan:
  description: Every step of the phases to run, with the lock it takes.
  returned: always
  type: list
  elements: dict
  contains:
    phase:
      description: V(start), V(complete) or V(rollback).
      type: str
    operation:
      description: The operation the step belongs to.
      type: str
    action:
      description: What the step does.
      type: str
    lock:
      description: The strongest table lock the step takes.
      type: str
      sample: SHARE UPDATE EXCLUSIVE
    lock_held:
      description: V(brief) (metadata only), V(batches) (short transactions), V(scan) or V(rewrite).
      type: str
    scans_table:
      description: Whether the step reads the whole table.
      type: bool
    rewrites_table:
      description: Whether the step rewrites the whole table.
      type: bool
    rows_estimate:
      description: Planner estimate of the table's rows.
      type: int
    warning:
      description: What clients or operators should know about the step, if anything.
      type: str
sessions_holding_locks:
  description:
    - Other sessions holding locks on the tables when the run began (the first strong lock would wait for them).
      Same fields as RV(blockers). Empty when nothing is to be done.
  returned: when there are phases to run
  type: list
  elements: dict
blockers:
  description: On a lock timeout after all retries, the sessions holding locks on the tables.
  returned: when the lock retries ran out
  type: list
  elements: dict
  sample: [{pid: 4242, mode: AccessShareLock, table: public.orders, state: idle in transaction,
            application_name: psql, transaction_age_seconds: 312.5, query: "SELECT ..."}]
metrics:
  description:
    - Wall time per phase in milliseconds, and counters such as C(rows_backfilled), C(backfill_batches),
      C(lock_attempts), C(lock_timeouts) and C(longest_lock_attempt_ms).
  returned: always
  type: dict
"""

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationRequest, MigrationRun
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.module_options import (
    check_batch_size,
    lock_policy_from,
    table_diff,
)
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    return dict(
        name=dict(type="str", required=True),
        operations=dict(type="list", elements="dict", required=True),
        state=dict(type="str", choices=["started", "completed", "rolled_back"], default="started"),
        lock_timeout=dict(type="raw", default="500ms"),
        lock_retries=dict(type="int", default=50),
        statement_timeout=dict(type="raw", default="30s"),
        batch_size=dict(type="int", default=10000),
        backfill_pause_ratio=dict(type="float", default=0.2),
        max_replication_lag=dict(type="raw"),
        replication_lag_timeout=dict(type="raw", default="10min"),
    )


def request_from(params):
    name = params["name"]
    if not name or len(name) > 200 or any(ch in name for ch in "\0\n\r"):
        raise InvalidOption("name", "expected a short single-line name, got {0!r}".format(name))
    policy = lock_policy_from(params, parse_duration(params["statement_timeout"], "statement_timeout"))
    batch_size = check_batch_size(params)
    if params["backfill_pause_ratio"] < 0:
        raise InvalidOption("backfill_pause_ratio", "must not be negative")
    lag = params["max_replication_lag"]
    return MigrationRequest(
        name=name,
        operations=params["operations"],
        state=params["state"],
        policy=policy,
        backfill=BackfillSettings(
            batch_size=batch_size,
            pause_ratio=params["backfill_pause_ratio"],
            max_replication_lag=None if lag is None else parse_duration(lag, "max_replication_lag"),
            lag_wait_timeout=parse_duration(params["replication_lag_timeout"], "replication_lag_timeout"),
        ),
    )


def schema_change(module):
    request = request_from(module.params)
    conn = module.connect()
    try:
        result = MigrationRun(conn, request, module.metrics).run(module.check_mode)
    finally:
        conn.close()
    diff = result.pop("diff", None)
    if module._diff and diff:
        result["diff"] = table_diff(diff["before"], diff["after"])
    return result


def main():
    module = KeelModule("schema_change", argument_spec(), supports_check_mode=True)
    module.run(schema_change)


if __name__ == "__main__":
    main()
