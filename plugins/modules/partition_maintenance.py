#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: partition_maintenance
short_description: Premake, expire, archive and drop the partitions of a range-partitioned table without blocking it
version_added: 0.2.0
description:
  - Keeps a range-partitioned table (a time key of type C(timestamptz), C(timestamp) or C(date), or an integer key)
    ready for the rows to come and rid of the rows past their retention, in this order.
  - First, partitions left I(pending detach) by a cancelled C(DETACH ... CONCURRENTLY) (C(pg_inherits.inhdetachpending))
    are completed with C(DETACH PARTITION ... FINALIZE); PostgreSQL refuses any other concurrent detach on the parent
    while one is pending.
  - Then the missing future partitions are created (C(CREATE TABLE ... PARTITION OF ... FOR VALUES FROM ... TO ...)),
    each in its own short transaction under O(lock_timeout), retried O(lock_retries) times, because it locks the parent.
  - Then the partitions whose whole range ends before now minus O(retention) are detached one at a time with
    C(DETACH PARTITION ... CONCURRENTLY), sent alone in autocommit with O(lock_timeout) and no statement timeout (it waits
    for transactions that started before it). A detach cancelled half-way is finished by the next run.
  - A parent with a DEFAULT partition cannot be detached concurrently (PostgreSQL error 55000); its partitions are detached
    with a plain C(DETACH PARTITION) under the lock guard instead, which holds ACCESS EXCLUSIVE on the parent for
    milliseconds and never waits longer than O(lock_timeout) for it.
  - Each detached partition is marked (a comment on the table), then, with O(archive), backed up to the store with
    the archive tenant's key like M(keel.postgres.backup) does, the backup is confirmed in the store, and, with
    O(drop_detached), the table is dropped. A run that stopped anywhere is finished by the next one.
  - Everything that can be refused (unknown table, not partitioned, not by range, an interval that cannot be inferred,
    a bad retention, a new partition that would take rows of the DEFAULT partition, the archive store or key) is refused
    before anything changes, with the name of the option at fault.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.backup_tenants
  - keel.postgres.backup_store
  - keel.postgres.key_provider.optional
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Reads the catalog and returns the plan (partitions to finalize, create, detach, archive and drop); nothing changes.
  diff_mode:
    support: full
    description: The parent's partitions and their bounds, before and after.
options:
  table:
    description:
      - The partitioned parent, for example V(events) or V(app.events). Plain identifiers only.
    type: str
    required: true
  premake:
    description:
      - How many partitions must exist beyond now. For a time key, now is the server's clock; for an integer key, the
        largest key in the table.
      - A gap between the last partition and now is filled as well, so the ranges stay contiguous (except ranges that
        O(retention) would detach at once). V(0) creates nothing.
    type: int
    default: 4
  interval:
    description:
      - The width of a new partition. For a time key V(1 month), V(3 months), V(1 year), V(1 week) or a duration such
        as V(1d) or V(6h); for an integer key a whole number such as V(100000).
      - When unset, it is inferred from the existing partitions, and must then be the same for all of them.
        Needed when the parent has no partition yet.
    type: raw
  retention:
    description:
      - Detach the partitions whose whole range ends before now minus this duration, for example V(90d) or V(12h).
      - Only for a time key. When unset, nothing is detached.
    type: raw
  archive:
    description:
      - Back up each detached partition before anything else happens to it, as an ordinary keel backup of the tenant
        O(archive.tenant) (store O(store), key from O(key_provider), retention and lock of that tenant).
      - The table is moved into a staging schema C(keel_archive_<oid>) for the dump and moved back once the data object
        and its manifest are found in the store; a restore brings it back in that staging schema.
      - Use a tenant kept for partition archives, so that C(latest) backups of your database tenants stay full backups.
    type: dict
    suboptions:
      tenant:
        description: The tenant (one of O(tenants)) whose store prefix, key and retention the archives get.
        type: str
        required: true
      table_stats:
        description: Row counts and fingerprints recorded in the manifest, as for M(keel.postgres.backup).
        type: str
        choices: [ fingerprints, row_counts, none ]
        default: fingerprints
      client_bin_dir:
        description: Directory of C(pg_dump). Defaults to the newest one found on PATH or in the usual per-version directories.
        type: path
  drop_detached:
    description:
      - V(false) keeps each detached partition as a plain table, V(true) drops it, with O(archive) only after its backup
        was confirmed in the store.
      - Only tables this module detached (and marked) are ever dropped.
    type: bool
    default: false
  lock_timeout:
    description:
      - How long any statement may wait for a lock before giving the lock queue back and retrying, for example V(500ms).
      - For C(DETACH ... CONCURRENTLY) this also bounds each wait for an older transaction; a detach cancelled that way is
        finalized by the next attempt.
    type: raw
    default: 500ms
  lock_retries:
    description: How many times a statement that timed out waiting for its lock is retried.
    type: int
    default: 50
  tenants:
    description:
      - Every tenant's backup policy (the C(keel_tenants) inventory variable), as for M(keel.postgres.backup).
        Needed with O(archive).
    type: list
    elements: dict
    required: false
  store:
    description:
      - Where the archives go, as for M(keel.postgres.backup). Needed with O(archive).
    type: dict
    required: false
notes:
  - Partitions are named C(<table>_p<YYYYMMDD>) (C(_p<YYYYMMDD_HHMMSS>) below a day, C(_p<lower bound>) for an integer key)
    in the parent's schema; they get the parent's columns, indexes and constraints, and are owned by O(login_user).
  - Month bounds are computed in the session's time zone offset.
  - An integer key's "now" is C(max(key)), read through the partitions' indexes; the partition key should be indexed.
  - The mark on a detached partition replaces its comment.
seealso:
  - module: keel.postgres.schema_change
  - module: keel.postgres.backup
  - module: keel.postgres.restore
  - ref: "Partition maintenance <https://github.com/keel-postgres/keel.postgres/blob/main/docs/partitioning.md>"
    description: How premake, detach, archive and drop work, and what each step locks.
"""

EXAMPLES = r"""
- name: Keep four monthly partitions ahead of now
  keel.postgres.partition_maintenance:
    login_host: db1.internal
    db: shop
    table: app.events
    premake: 4

- name: Keep 90 days, archive what expires to S3, then drop it
  keel.postgres.partition_maintenance:
    login_host: db1.internal
    db: shop
    table: app.events
    interval: 1d
    premake: 7
    retention: 90d
    archive:
      tenant: shop-partition-archive
    drop_detached: true
    tenants: "{{ keel_tenants }}"
    store:
      type: s3
      bucket: acme-backups
      region: eu-west-1
    key_provider:
      type: aws_kms
      region: eu-west-1

- name: See what would happen
  keel.postgres.partition_maintenance:
    db: shop
    table: app.events
    retention: 90d
  check_mode: true
  diff: true
  register: plan
"""

RETURN = r"""
table:
  description: The parent, schema-qualified.
  returned: always
  type: str
  sample: app.events
plan:
  description:
    - What the run decided before changing anything (in check mode, what it would do). C(key_now) is now on the key,
      C(finalize) the pending detaches, C(create) and C(detach) the partitions (name, from, to), C(archive) and C(drop)
      the detached tables.
  returned: always
  type: dict
created:
  description: Partitions created, each with C(name), C(from) and C(to).
  returned: always
  type: list
  elements: dict
  sample: [{name: app.events_p20261201, from: "2026-12-01T00:00:00+00:00", to: "2027-01-01T00:00:00+00:00", default: false}]
detached:
  description: Partitions detached, each with C(name), C(from), C(to) and C(method) (V(concurrently) or V(plain)).
  returned: always
  type: list
  elements: dict
finalized_pending:
  description: Partitions whose pending detach was finalized.
  returned: always
  type: list
  elements: str
archived:
  description:
    - Detached tables backed up, each with C(table), C(tenant), C(backup_id), C(object) and C(manifest) (keys relative to
      the store prefix), C(stored_bytes) and C(store) (where, without secrets).
  returned: always
  type: list
  elements: dict
dropped:
  description: Detached tables dropped.
  returned: always
  type: list
  elements: str
partitions:
  description:
    - The parent's partitions after the run (in check mode, as they would be), each with C(name), C(from), C(to) and
      C(default). C(from) or C(to) is null for C(MINVALUE), C(MAXVALUE) and the DEFAULT partition.
  returned: always
  type: list
  elements: dict
blockers:
  description: When a lock could not be taken after every retry, the sessions holding it.
  returned: on lock timeout failure
  type: list
  elements: dict
metrics:
  description:
    - Wall time per phase in milliseconds (C(plan), C(finalize), C(premake), C(detach), C(archive), C(drop)), and
      counters such as C(partitions_created), C(partitions_detached), C(pending_detaches_finalized),
      C(partitions_archived), C(partitions_dropped), C(lock_attempts) and C(lock_timeouts).
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

from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import key_provider_option
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_library_errors
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import store_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.archive import PartitionArchiver
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.maintenance_request import maintenance_request_from
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.maintenance_run import MaintenanceRun


def argument_spec():
    return dict(
        table=dict(type="str", required=True),
        premake=dict(type="int", default=4),
        interval=dict(type="raw"),
        retention=dict(type="raw"),
        archive=dict(type="dict", options=dict(
            tenant=dict(type="str", required=True),
            table_stats=dict(type="str", choices=["fingerprints", "row_counts", "none"], default="fingerprints"),
            client_bin_dir=dict(type="path"),
        )),
        drop_detached=dict(type="bool", default=False),
        lock_timeout=dict(type="raw", default="500ms"),
        lock_retries=dict(type="int", default=50),
        tenants=dict(type="list", elements="dict"),
        store=dict(type="dict", options=store_argument_spec()),
        key_provider=key_provider_option(required=False),
        audit_actor=dict(type="str"),
    )


def partition_maintenance(module):
    request = maintenance_request_from(module.params)
    if request.archive_tenant:
        module.require_libraries(backup_library_errors())
    conn = module.connect()
    try:
        archiver = None
        if request.archive_tenant:
            database = conn.execute("SELECT current_database()").fetchone()[0]
            archiver = PartitionArchiver(module.params, database, module.connect_to, module.client_tool_connection, module.metrics)
        result = MaintenanceRun(conn, request, module.metrics, archiver).run(module.check_mode)
    finally:
        conn.close()
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    return result


def main():
    module = KeelModule("partition_maintenance", argument_spec(), supports_check_mode=True)
    module.run(partition_maintenance)


if __name__ == "__main__":
    main()
