#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_info
short_description: Report keel.postgres migrations, their progress, timings and rollback times
version_added: 0.1.0
description:
  - Reads the migration catalog (schema C(keel)) that M(keel.postgres.schema_change) keeps in the database.
  - For each migration, its phase, tables and operations, wall time per phase, backfill progress
    (rows backfilled against the planner's estimate) and how long its rollback took (the rollback MTTR KPI),
    how long a revert after completion took, and the version schemas with who still reads the old ones.
  - Read-only. A database where no migration ever ran reports an empty list.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  name:
    description: Report only this migration.
    type: str
seealso:
  - module: keel.postgres.schema_change
"""

EXAMPLES = r"""
- name: Watch a long backfill (run the migration with async, poll this)
  keel.postgres.migration_info:
    db: shop
    name: 2026_11_orders_amount_bigint
  register: info

- name: Show progress
  ansible.builtin.debug:
    msg: "{{ info.migrations[0].phase }}: {{ info.migrations[0].progress.percent }}%"
"""

RETURN = r"""
migrations:
  description: Migrations, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Migration name.
      type: str
    phase:
      description:
        - V(started), V(completed), V(rolled_back), or V(starting), V(completing), V(rolling_back)
          when a run was interrupted in that phase (re-run the same task to resume); V(finalized), V(reverted),
          V(finalizing) and V(reverting) likewise.
      type: str
    in_flight:
      description: Whether the migration is unfinished (its tables are refused to other migrations).
      type: bool
    tables:
      description: Schema-qualified tables it touches.
      type: list
      elements: str
    operations:
      description: The operations as given.
      type: list
      elements: dict
    created_at:
      description: When the migration was first started (ISO 8601).
      type: str
    updated_at:
      description: Last change of its record.
      type: str
    phase_seconds:
      description: Wall time spent per phase (V(start), V(complete), V(rollback)), summed over runs.
      type: dict
      sample: {start: 84.2, complete: 0.4}
    rollback_seconds:
      description: Duration of the rollback, null if never rolled back.
      type: float
    revert_seconds:
      description: Duration of the revert after completion, null if never reverted (the rollback MTTR KPI reads it).
      type: float
    completed_at:
      description: When the migration completed (ISO 8601), null before.
      type: str
    revertible_until:
      description:
        - Until when a completed migration can be reverted; the next M(keel.postgres.schema_change) run on its
          tables or schema after that finalizes it. Null unless completed.
      type: str
    finalized_at:
      description: When the old shape was dropped (ISO 8601), null before.
      type: str
    version_schema:
      description: The migration's version schema, null when it publishes none.
      type: str
    version_schema_drift:
      description:
        - Views of the migration's version schema whose columns or types no longer match what was published
          (someone replaced them by hand). Clients of that version may then see shape changes; empty normally.
      type: list
      elements: str
    old_versions:
      description:
        - "Older version schemas of the same schema that finalizing this migration would drop (C(schemas)), and the
          sessions visibly reading them (C(readers): C(active) ones hold locks on their views right now; C(declared)
          ones name C(keel:<version schema>) in their C(application_name)). An idle connection that declares
          nothing cannot be seen."
      type: dict
    read_verification:
      description: The latest O(keel.postgres.schema_change#module:verify_reads) outcome per query.
      type: list
      elements: dict
    last_error:
      description: Why the last run stopped, if it failed.
      type: str
    progress:
      description:
        - Backfill progress over all backfills of the migration, from the catalog the batches commit to.
        - C(percent) done (100 once every backfill finished; an unfinished one shows at most 99.9; null when the
          table has no row estimate), C(rows_done), C(rows_total_estimate) (the planner's C(reltuples) at the
          backfill's start or now, whichever is larger, never less than the rows done),
          C(rate_rows_per_second) (rows done over the time between each backfill's first and latest batch, so a
          backfill interrupted and resumed later reads slower), C(eta_seconds) (rows left at that rate; 0 when
          done, null without a rate).
        - Also C(rows_backfilled) and C(rows_estimated) (the estimate recorded at the start), and C(backfills_done).
      type: dict
      sample: {percent: 41.3, rows_done: 413000, rows_total_estimate: 1000000, rate_rows_per_second: 9800.0,
               eta_seconds: 59.9, rows_backfilled: 413000, rows_estimated: 1000000, backfills_done: false}
    backfills:
      description: Each backfill step with rows, batches and timestamps.
      type: list
      elements: dict
metrics:
  description:
    - Duration of the run in milliseconds.
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
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.report import (
    migration_reports,
    record_progress_metrics,
)


def migration_info(module):
    conn = module.connect()
    try:
        module.metrics.label(db=conn.info.dbname, migration=module.params["name"])
        with module.metrics.phase("read"):
            migrations = migration_reports(conn, module.params["name"])
        if len(migrations) == 1:
            module.metrics.label(table=",".join(migrations[0]["tables"]))
        record_progress_metrics(module.metrics, migrations)
        return {"migrations": migrations}
    finally:
        conn.close()


def main():
    module = KeelModule("migration_info", dict(name=dict(type="str")), supports_check_mode=True)
    module.run(migration_info)


if __name__ == "__main__":
    main()
