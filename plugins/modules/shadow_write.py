#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: shadow_write
short_description: Mirror writes of a table into a shadow table, check drift, cut over and revert
version_added: 0.1.0
description:
  - For denormalization and format changes. The application keeps writing to O(source); a row trigger mirrors every
    INSERT, UPDATE and DELETE into O(target) through O(mapping); existing rows are copied in short batches.
  - V(paused) records changed keys instead of applying them; going back to V(enabled) resyncs each of them from the
    source's current row, so nothing written while paused is lost.
  - V(cutover) swaps the tables by rename in one short transaction under O(lock_timeout) with retries (the target
    takes the source's name) after a full drift check finds no difference, and installs a reverse trigger that keeps
    the old table in sync through O(reverse_mapping); V(reverted) swaps back without losing a write.
  - V(disabled) removes the trigger (or, after a cutover, the reverse trigger) and the change log; the tables stay.
  - Every run returns the status; the trigger state, rows on each side, pending changes and drift by primary key.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Validates the mapping (creating O(target_definition) in a rolled-back transaction) and reports status.
  diff_mode:
    support: full
    description: Definitions of the source and target tables before and after.
options:
  source:
    description: The table the application writes, optionally schema-qualified. It needs a primary key.
    type: str
    required: true
  target:
    description:
      - The shadow table. Its primary key columns must map to the source's primary key columns one to one.
    type: str
    required: true
  target_definition:
    description:
      - Column list to create O(target) with when it does not exist, for example
        C(id bigint primary key, amount_cents bigint not null).
    type: str
  mapping:
    description:
      - Target column -> source column name or SQL expression over the source row's columns.
      - Target NOT NULL columns without a default must be mapped.
    type: dict
    required: true
  reverse_mapping:
    description:
      - Source column -> expression over the target row, used after V(cutover) to keep the old table in sync.
        Key columns map back by themselves. Required for the source's NOT NULL columns without default.
    type: dict
    default: {}
  state:
    description: The state to reach.
    type: str
    choices: [ enabled, paused, disabled, cutover, reverted ]
    default: enabled
  drift_check:
    description:
      - V(full) compares every row, V(sample) one key range in ten, V(none) skips it.
      - V(cutover) always compares every row first and refuses to swap when any row differs.
    type: str
    choices: [ full, sample, none ]
    default: sample
  lock_timeout:
    description: How long a statement may wait for a table lock before retrying (PostgreSQL interval syntax).
    type: raw
    default: 500ms
  lock_retries:
    description: Retries of a statement that timed out waiting for its lock.
    type: int
    default: 50
  batch_size:
    description: Rows per backfill batch and per drift-check range.
    type: int
    default: 10000
notes:
  - Tables read by views, and a source and target in different schemas, are refused for V(cutover).
  - Each write to the source costs one more row write in the target while shadow writes are enabled.
seealso:
  - module: keel.postgres.schema_change
"""

EXAMPLES = r"""
- name: Keep orders_v2 (amounts in cents) in sync with orders
  keel.postgres.shadow_write:
    db: shop
    source: orders
    target: orders_v2
    target_definition: "id bigint primary key, amount_cents bigint not null, customer_id bigint"
    mapping: {id: id, amount_cents: "(amount * 100)::bigint", customer_id: customer_id}
    reverse_mapping: {amount: "amount_cents / 100.0", customer_id: customer_id}
    state: enabled
    drift_check: full
  register: shadow

- name: Switch the application's table name over to the new shape
  keel.postgres.shadow_write:
    db: shop
    source: orders
    target: orders_v2
    mapping: {id: id, amount_cents: "(amount * 100)::bigint", customer_id: customer_id}
    reverse_mapping: {amount: "amount_cents / 100.0", customer_id: customer_id}
    state: cutover
"""

RETURN = r"""
name:
  description: The shadow's name, C(<source>-><target>), schema-qualified.
  returned: always
  type: str
  sample: public.orders->public.orders_v2
state:
  description: The state after this run.
  returned: always
  type: str
  sample: enabled
previous_state:
  description: The state before this run.
  returned: always
  type: str
trigger:
  description: V(apply) (mirroring), V(log) (paused), V(reverse) (after cutover) or V(absent).
  returned: always
  type: str
pending_changes:
  description: Changes logged while paused and not yet applied (the change-log lag).
  returned: always
  type: int
rows:
  description: Row counts of the source and target tables (C(source), C(target)).
  returned: always
  type: dict
drift:
  description:
    - C(mode), C(rows_checked), C(missing_in_target), C(extra_in_target), C(different), C(batches) and their sum
      C(drift); null when not checked (V(none), or states where the tables are not meant to match).
  returned: always
  type: dict
trigger_cost:
  description:
    - What the active shadow trigger function cost the writing sessions, as the server measured it
      (C(pg_stat_user_functions), since the statistics were last reset) - C(calls) (rows the trigger mirrored or
      logged), C(total_ms), C(self_ms) and C(ms_per_write) (C(total_ms) / C(calls)).
    - Null unless C(track_functions) is V(pl) or V(all) in the sessions that write (for example
      C(ALTER DATABASE shop SET track_functions = 'pl')) and the trigger ran at least once; nothing is estimated.
  returned: always
  type: dict
  sample: {calls: 18250, total_ms: 912.4, self_ms: 640.2, ms_per_write: 0.049995}
metrics:
  description:
    - Wall time per phase in milliseconds, and counters such as C(rows_backfilled) and C(changes_replayed).
    - The same figures go to O(metrics_textfile) and, as spans, to O(otlp_endpoint); docs/observability.md lists
      them.
  returned: always
  type: dict
  contains:
    duration_ms:
      description: Wall time of the run in milliseconds.
      type: float
      returned: always
    phases_ms:
      description: Wall time per phase in milliseconds, repetitions added up.
      type: dict
      returned: always
    phases:
      description:
        - Per phase, C(duration_ms), C(repetitions), the C(counters) counted while it ran and C(rates)
          (C(<counter>_per_second) for counters of rows and bytes).
      type: dict
      returned: always
    counters:
      description:
        - Counts and sums of the run. Names carry their unit (C(_bytes), C(_ms), C(_seconds)); a name without one is a
          count. Counters named C(longest_*), C(peak_*) or C(max_*) keep the largest value seen.
      type: dict
      returned: always
    gauges:
      description: Readings of the run, such as sizes before and after, throughput or cost.
      type: dict
      returned: always
    series:
      description: Readings split by labels, each with C(name), C(labels) and C(value) (per tenant and tier, say).
      type: list
      elements: dict
      returned: always
    labels:
      description:
        - What the run worked on (C(db), C(schema), C(table), C(migration), C(tenant), C(tier), C(store)); the same
          labels go on the Prometheus series and the spans.
      type: dict
      returned: always
    exported:
      description:
        - Where the metrics went, C(textfile) (the path written, or null), C(trace_id) (32 hex digits, or null) and
          C(spans) (how many spans were sent).
      type: dict
      returned: always
"""

from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.module_options import (
    check_batch_size,
    lock_policy_from,
    table_diff,
)
from ansible_collections.keel.postgres.plugins.module_utils.shadow.engine import ShadowRequest, ShadowRun
from ansible_collections.keel.postgres.plugins.module_utils.shadow.spec import parse_spec


def argument_spec():
    return dict(
        source=dict(type="str", required=True),
        target=dict(type="str", required=True),
        target_definition=dict(type="str"),
        mapping=dict(type="dict", required=True),
        reverse_mapping=dict(type="dict", default={}),
        state=dict(type="str", choices=["enabled", "paused", "disabled", "cutover", "reverted"], default="enabled"),
        drift_check=dict(type="str", choices=["full", "sample", "none"], default="sample"),
        lock_timeout=dict(type="raw", default="500ms"),
        lock_retries=dict(type="int", default=50),
        batch_size=dict(type="int", default=10000),
    )


def request_from(params):
    policy = lock_policy_from(params, statement_timeout=0)
    batch_size = check_batch_size(params)
    return ShadowRequest(
        spec=parse_spec(params),
        state=params["state"],
        drift_check=params["drift_check"],
        policy=policy,
        backfill=BackfillSettings(batch_size=batch_size, pause_ratio=0.2, max_replication_lag=None,
                                  lag_wait_timeout=600),
    )


def shadow_write(module):
    request = request_from(module.params)
    conn = module.connect()
    try:
        result = ShadowRun(conn, request, module.metrics).run(module.check_mode)
    finally:
        conn.close()
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = table_diff(diff["before"], diff["after"])
    return result


def main():
    module = KeelModule("shadow_write", argument_spec(), supports_check_mode=True)
    module.run(shadow_write)


if __name__ == "__main__":
    main()
