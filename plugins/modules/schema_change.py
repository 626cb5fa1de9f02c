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
    V(completed) switches over but keeps the old shape, in sync, so the migration can still be V(reverted) without
    losing a write; V(finalized) drops the old shape for good (explicitly, or by the next run once
    O(revert_window) has passed); V(rolled_back) removes everything a started migration added.
  - "Each migration publishes a version schema when it starts: schema C(<table schema>_<migration name>) holding
    one plain view per table of that schema, in the new shape, with explicit column lists. Clients that choose a
    version by C(search_path) (for example C(options=-c search_path=public_2026_11_x,public)) never see a result
    shape change, so statements they prepared keep working through start, completion, revert and rollback.
    Published views are never replaced by another shape. Finalizing drops the versions before this one; a
    rollback or revert drops this one. See the client guide in C(docs/client_guide.md)."
  - Every statement that takes a table lock runs with a short O(lock_timeout) and is retried with jittered
    backoff, so a migration waits for the application and never the other way round. When the retries run
    out, the task fails naming the sessions in the way, and the migration stays resumable.
  - Each migration's phase, timings and backfill cursor are recorded in schema C(keel) of the database,
    so a killed run resumes where it stopped and a repeated run reports no change.
    Two runs can never migrate the same table at once, and a table that is part of an unfinished migration
    is refused to any other migration.
  - Check mode returns the plan (each step, the lock it takes, whether it scans or rewrites, estimated rows, and
    what clients reading the tables directly, not through a version schema, will see).
    Diff mode shows the affected tables' definitions before and after.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.backup_store
  - keel.postgres.key_provider.optional
  - keel.postgres.observability
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
      - "V(partition_table) C({table, key, strategy, method, interval, premake, values}) converts a live table into a
        partitioned one. C(strategy=range) (default) partitions by a time or integer C(key) every C(interval) (V(1 month),
        V(1 day), or an integer); C(strategy=list) by a tenant-like C(key), one partition per entry of C(values).
        C(method=attach) (default for range) keeps every row where it is: the table becomes the first partition, its
        bound added as a validated CHECK so that ATTACH does not scan, and at completion one short transaction attaches
        it, swaps the names and repoints the version views; C(premake) later partitions (default 4) follow. The first
        partition's bound lies beyond now plus O(revert_window), so a revert is a metadata-only DETACH.
        C(method=copy) (default for list) copies the rows into a new partitioned table (sync trigger, batched
        resumable copy, counts verified before the swap and again before the old table is dropped at finalize).
        Refused before any change: tables already partitioned or partitions, inheritance, incoming foreign keys,
        exclusion constraints, user triggers, row level security, views, unique indexes without the key, NULL keys,
        and list values that do not cover the rows. Partition upkeep afterwards is
        M(keel.postgres.partition_maintenance)."
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
      - The phase the migration should reach. Later states run the earlier phases first when needed.
      - V(reverted) undoes a completed migration that is not finalized yet, in one short lock per operation;
        every write made since completion is in the old shape. V(rolled_back) undoes a started one.
      - A finalized migration cannot be undone (its old shape is gone); write a new migration instead.
      - While a migration is completed and not finalized, its tables (and, with version schemas, its schema)
        are refused to other migrations.
    type: str
    choices: [ started, completed, finalized, reverted, rolled_back ]
    default: started
  revert_window:
    description:
      - How long a completed migration stays revertible. Once it has passed, the next M(keel.postgres.schema_change)
        run that touches the same tables or schema finalizes it first.
      - V(0) finalizes at once (C(state=completed) then behaves like C(state=finalized), and no revert guard is
        added). PostgreSQL interval syntax such as V(2h) or V(1d).
      - "A type change that narrows on the way back (C(int) to C(bigint), C(varchar(20)) to C(text)) gets a CHECK
        on the new column during the window, C(_keel_<hash>_rev_<column>), so a value the old type cannot hold
        is refused with that constraint's name instead of being lost on a revert."
    type: raw
    default: 24h
  version_schema:
    description:
      - Name of this migration's version schema, instead of C(<table schema>_<migration name>) (lower-cased, other
        characters turned into C(_)). A lower-case plain identifier of at most 63 bytes.
    type: str
  publish_views:
    description:
      - Publish the version schema. Without it clients can only read the tables directly, and the plan's
        C(client_impact) says what they will see.
    type: bool
    default: true
  verify_reads:
    description:
      - "Read queries to run through the old and the new version schema before completing, each C({name, query,
        key}). Both sides run in one C(REPEATABLE READ) snapshot; row counts and order-insensitive hashes of the
        rows must agree, or the task fails before completion with both counts and a sample of differing rows
        (their C(key) columns, default all)."
      - The old side is the previous version schema of the same schema, or the tables themselves when there is
        none. Results are recorded in C(keel.read_verifications).
    type: list
    elements: dict
  verify_reads_mask:
    description: Result columns of O(verify_reads) whose values are shown as C(***) in samples and errors.
    type: list
    elements: str
    default: []
  wait_for_old_readers:
    description:
      - Before finalizing drops the older version schemas, wait up to this long until no session visibly reads
        them (holds a lock on their views, or declares C(keel:<version schema>) in its C(application_name));
        when they remain, fail naming them and leave the migration completed.
      - An idle pooled connection that declares nothing cannot be seen; see the client guide.
    type: raw
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
  probe_query:
    description:
      - A read-only query standing for the application (for example its hottest lookup), run on a separate
        connection every O(probe_interval) while the migration runs. Its latency is reported as the metrics
        C(probe_latency_p50_ms), C(probe_latency_p99_ms), C(probe_latency_max_ms) and C(probe_samples), and in
        RV(probe).
      - The probe runs in a read-only transaction with a 10 s statement timeout. A probe that fails never fails the
        migration; it is counted in C(probe_errors).
      - Not run in check mode.
    type: str
  probe_interval:
    description: Time between two probe samples (for example V(500ms)); the first sample is taken at the start.
    type: raw
    default: 1s
  rehearse:
    description:
      - Rehearse the migration on a restored backup instead of running it. The backup O(rehearse.backup) of tenant
        O(rehearse.tenant) is restored (authenticated while it streams, as M(keel.postgres.restore_verify) does) into a
        scratch database C(keel_rehearse_<tenant>_<8 hex>) on the server of the connection options, the
        O(rehearse.masking) rules are applied, and the migration runs there to O(state) with this task's options, while
        O(rehearse.queries) replay on a connection of their own.
      - The scratch database is always dropped, also when the migration or a query fails. The real database (O(db)) is
        not even connected to, so the task reports C(changed=false); run the task again without O(rehearse) to migrate
        for real, with O(rehearsal_predictions) to compare.
      - The result RV(rehearsal) holds the predictions (duration per phase, WAL bytes, size change, lock waits, p99 delta
        of the replayed queries). A rehearsal that fails (the migration fails, a replayed query fails, the scratch
        database cannot be dropped) fails the task with RV(rehearsal) attached.
      - Needs O(store) and O(key_provider), and the C(CREATEDB) privilege for the login role. V(reverted) and
        V(rolled_back) cannot be rehearsed.
      - "WAL is shared by every database of the cluster: the WAL bytes predicted include whatever else the cluster wrote
        during the rehearsal. Rehearse on a quiet cluster, or read the figure as an upper bound."
    type: dict
    suboptions:
      backup:
        description: The backup to restore, V(latest) (the newest whose manifest authenticates) or a backup id.
        type: str
        default: latest
      tenant:
        description:
          - The tenant whose backup is restored. Defaults to the name of the database, O(db), for the common layout of
            one tenant per database.
        type: str
      masking:
        description:
          - "Rules applied right after the restore, before the migration and before any query, each
            C({table: ..., column: ..., expression: ...}), run as C(UPDATE table SET column = expression), in one
            transaction; populated materialized views are refreshed afterwards. The same rules as
            M(keel.postgres.restore_verify)'s C(masking)."
        type: list
        elements: dict
        default: []
      queries:
        description:
          - "Read queries to replay, each C({name: ..., sql: ...}), the same format as M(keel.postgres.query_latency)'s
            C(queries). They are timed before the migration (O(rehearse.runs) interleaved rounds after
            O(rehearse.warmup)), round after round during it on a connection of their own, and again after it, each
            execution in its own READ ONLY transaction. Only latencies and row counts come back, never rows."
        type: list
        elements: dict
        default: []
      runs:
        description: Timed rounds of O(rehearse.queries) before and after the migration.
        type: int
        default: 30
      warmup:
        description: Rounds run and not timed before each measurement.
        type: int
        default: 3
      statement_timeout:
        description: Longest run of one replayed query, for example V(30s).
        type: raw
        default: 30s
      maintenance_db:
        description:
          - The database connected to for creating and dropping the scratch database, and for the advisory lock that
            marks it as owned by this run (scratch databases left by a killed run are dropped by the next rehearsal).
        type: str
        default: postgres
      client_bin_dir:
        description: Directory of C(pg_restore). Defaults to the newest one found on PATH or in the usual per-version directories.
        type: path
  store:
    description:
      - Where the backups are, as for M(keel.postgres.backup). Only read. Required with O(rehearse).
    type: dict
    required: false
  key_provider:
    description:
      - Where the tenant keys are, as for M(keel.postgres.backup). Required with O(rehearse).
    type: dict
    required: false
  rehearsal_predictions:
    description:
      - "The C(predicted) dict of an earlier rehearsal's result (RV(rehearsal)), for example
        C({{ rehearsed.rehearsal.predicted }}). The real run then sets its own figures beside them in
        RV(prediction_vs_actual). Cannot be combined with O(rehearse)."
    type: dict
notes:
  - PostgreSQL 15 or later is needed for version schemas (the views are C(security_invoker), so row level
    security on the tables applies to their callers).
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

- name: Complete, verifying reads through both versions first, revertible for two hours
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_amount_bigint
    operations:
      - alter_column: {table: orders, column: amount, type: bigint}
    state: completed
    revert_window: 2h
    verify_reads:
      - name: revenue per customer
        query: SELECT customer_id, sum(amount) FROM orders GROUP BY customer_id
        key: [customer_id]

- name: Something went wrong after completion; go back without losing a write
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_amount_bigint
    operations:
      - alter_column: {table: orders, column: amount, type: bigint}
    state: reverted

- name: Drop the old shape once the old application version is gone
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_amount_bigint
    operations:
      - alter_column: {table: orders, column: amount, type: bigint}
    state: finalized
    wait_for_old_readers: 5m

- name: Partition events by month, online (the table becomes the first partition; no rows move)
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_events_monthly
    operations:
      - partition_table: {table: events, key: created_at, interval: 1 month, premake: 6}
    state: completed

- name: Split orders by tenant into list partitions (rows are copied in batches)
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_by_tenant
    operations:
      - partition_table:
          table: orders
          key: tenant
          strategy: list
          values: [acme, globex, initech]
    state: completed

- name: Undo a started migration
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_status
    operations: "{{ orders_status_operations }}"
    state: rolled_back

- name: Rehearse on last night's backup, with e-mail addresses masked, replaying the hottest reads
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_amount_bigint
    operations:
      - alter_column: {table: orders, column: amount, type: bigint}
    state: completed
    rehearse:
      backup: latest
      tenant: shop
      masking:
        - {table: public.customers, column: email, expression: "md5(email)"}
      queries:
        - {name: revenue per customer, sql: "SELECT customer_id, sum(amount) FROM orders GROUP BY customer_id"}
    store: {type: s3, bucket: shop-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}
  register: rehearsed

- name: Then migrate for real and compare with the rehearsal
  keel.postgres.schema_change:
    db: shop
    name: 2026_11_orders_amount_bigint
    operations:
      - alter_column: {table: orders, column: amount, type: bigint}
    state: completed
    rehearsal_predictions: "{{ rehearsed.rehearsal.predicted }}"
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
version_schema:
  description: The migration's version schema (null with O(publish_views=false)).
  returned: always
  type: str
  sample: public_2026_11_orders_amount_bigint
revertible_until:
  description: Until when the completed migration can be reverted (ISO 8601); null when it is not completed.
  returned: when phases ran
  type: str
read_verification:
  description: Per O(verify_reads) query, C(ok), row counts, hashes and milliseconds of both sides, and samples.
  returned: when O(verify_reads) ran
  type: list
  elements: dict
old_versions:
  description: On finalize, the older version schemas dropped (C(retired)) and who was waited for.
  returned: when the finalize phase ran
  type: dict
auto_finalized:
  description: Other migrations on the same tables or schema that this run finalized because their window ended.
  returned: when phases ran
  type: list
  elements: str
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
      description: What operators should know about the step, if anything.
      type: str
    client_impact:
      description: What clients reading the tables directly (not through a version schema) see at this step.
      type: str
sessions_holding_locks:
  description:
    - Other sessions holding locks on the tables when the run began (the first strong lock would wait for them).
      Same fields as RV(blockers). Empty when nothing is to be done.
  returned: when there are phases to run
  type: list
  elements: dict
cost_signals:
  description:
    - What the migration costs the server, measured by this run (docs/schema_change.md, section Metrics).
    - C(wal_bytes) WAL written during this run's phases (the server's WAL insert position difference, so the writes
      of other sessions in the same time are included); C(temp_bytes) temp file bytes of the database meanwhile.
    - C(run_seconds) this run's wall time; C(migration_seconds) the phases' wall time summed over all runs so far.
    - C(extra_bytes_held) the size of the touched tables plus the helper tables the migration made (shadow copy, old
      table kept for a revert) now, minus the same sum before the migration's first phase; C(peak_extra_bytes_held)
      the largest such difference seen at the end of a phase, over all runs.
    - C(size_before_bytes) and C(size_after_bytes) the touched tables with their indexes before and after this run.
    - Null values mean the server could not tell (a standby has no WAL insert position).
  returned: when phases ran (not in check mode)
  type: dict
  sample: {wal_bytes: 48513024, temp_bytes: 0, run_seconds: 12.4, migration_seconds: 12.1,
           extra_bytes_held: 4612096, peak_extra_bytes_held: 9224192, size_before_bytes: 4612096,
           size_after_bytes: 9224192}
table_sizes:
  description:
    - Per touched table, C(table_bytes_before), C(table_bytes_after) (pg_table_size, all partitions of a partitioned
      table), C(index_bytes_before) and C(index_bytes_after) (pg_indexes_size). A table that does not exist counts 0.
  returned: when phases ran (not in check mode)
  type: dict
  sample: {public.orders: {table_bytes_before: 4423680, table_bytes_after: 8839168, index_bytes_before: 1146880,
                           index_bytes_after: 1146880}}
probe:
  description:
    - The O(probe_query) samples, C(samples), C(errors), C(first_error) (the error's class name only), C(p50_ms),
      C(p99_ms) and C(max_ms).
  returned: when O(probe_query) is set and phases ran
  type: dict
  sample: {samples: 42, errors: 0, first_error: null, p50_ms: 0.41, p99_ms: 3.2, max_ms: 3.2}
rehearsal:
  description:
    - With O(rehearse), what the rehearsal did and measured (also attached when it fails). No row value is in it.
    - C(tenant), C(backup_id), C(outcome) (V(passed) or V(failed); V(planned) in check mode), C(reason) and C(message)
      (why it failed), C(scratch_database), C(scratch_dropped), C(stale_scratch_dropped) (scratch databases of killed
      runs dropped first), C(stages_ms) (C(restore), C(masking), C(measure_before), C(migrate), C(measure_after),
      C(drop_scratch)), C(masking) (per rule C(table), C(column) and C(rows) updated), C(migration) (C(phase),
      C(phases), C(tables), C(version_schema) reached on the scratch database), C(dump_bytes), C(scratch_metrics) (the
      scratch migration's own metrics, same shape as RV(metrics)) and C(wal_shared_with_cluster) (always true, see
      O(rehearse)).
    - C(predicted) (null when the migration failed) holds C(duration_ms) (the migration phases summed), C(phases_ms),
      C(phases_wal_bytes), C(wal_bytes), C(size_change_bytes) (table and index bytes of the touched tables after minus
      before), C(peak_extra_bytes_held), C(table_sizes), C(rows_backfilled), C(lock_attempts), C(lock_timeouts),
      C(longest_lock_attempt_ms), C(p99_delta_pct_during) and C(p99_delta_pct_after) (with O(rehearse.queries)),
      C(backup_id) and C(tenant). Pass it to O(rehearsal_predictions) of the real run.
    - C(latency) (with O(rehearse.queries)) per query C(name), C(rows_before), C(rows_after), C(samples_during),
      C(p99_ms_before), C(p99_ms_during), C(p99_ms_after), C(p99_delta_pct_during) with its bootstrap interval
      C(p99_delta_pct_during_ci), C(p99_delta_pct_after) and C(p99_reliable) (false when there were too few samples
      for a p99; a short migration gives few rounds during it); overall C(p99_delta_pct_during),
      C(p99_delta_pct_after), C(significant_during), C(significant_after) and the sampler C(settings).
  returned: when O(rehearse) is set
  type: dict
  sample: {tenant: acme, backup_id: 20261126T014700Z-526836b2, outcome: passed, scratch_dropped: true,
           predicted: {duration_ms: 192.4, phases_ms: {validate: 23.9, start: 149.2, complete: 19.3}, wal_bytes: 6750168,
                       size_change_bytes: 2334720, lock_attempts: 9, lock_timeouts: 0, longest_lock_attempt_ms: 27.1,
                       p99_delta_pct_during: 238.6, p99_delta_pct_after: 0.2}}
prediction_vs_actual:
  description:
    - With O(rehearsal_predictions), each figure of this run beside the rehearsal's prediction, as C(predicted),
      C(actual), C(difference) (actual minus predicted) and C(ratio) (actual / predicted; null when the prediction
      is 0 or missing), for C(duration_ms), C(wal_bytes), C(size_change_bytes), C(peak_extra_bytes_held),
      C(lock_attempts), C(lock_timeouts) and C(longest_lock_attempt_ms), and per phase under C(phases_ms);
      C(backup_id) names the backup the prediction was made on.
  returned: when O(rehearsal_predictions) is set and phases ran (not in check mode)
  type: dict
  sample: {duration_ms: {predicted: 192.4, actual: 189.7, difference: -2.7, ratio: 0.986},
           wal_bytes: {predicted: 6750168, actual: 8831552, difference: 2081384, ratio: 1.308}}
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

from ansible_collections.keel.postgres.plugins.module_utils import pg
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import key_provider_option
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_library_errors
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import store_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationRequest, MigrationRun
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.latency_probe import LatencyProbe, probe_settings
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.module_options import (
    check_batch_size,
    lock_policy_from,
    table_diff,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.prediction_report import (
    check_predictions,
    prediction_vs_actual,
    run_figures,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.read_verification import parse_verify_reads
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.rehearsal import rehearse, rehearse_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    return dict(
        name=dict(type="str", required=True),
        operations=dict(type="list", elements="dict", required=True),
        state=dict(type="str", choices=["started", "completed", "finalized", "reverted", "rolled_back"],
                   default="started"),
        revert_window=dict(type="raw", default="24h"),
        version_schema=dict(type="str"),
        publish_views=dict(type="bool", default=True),
        verify_reads=dict(type="list", elements="dict"),
        verify_reads_mask=dict(type="list", elements="str", default=[]),
        wait_for_old_readers=dict(type="raw"),
        lock_timeout=dict(type="raw", default="500ms"),
        lock_retries=dict(type="int", default=50),
        statement_timeout=dict(type="raw", default="30s"),
        batch_size=dict(type="int", default=10000),
        backfill_pause_ratio=dict(type="float", default=0.2),
        max_replication_lag=dict(type="raw"),
        replication_lag_timeout=dict(type="raw", default="10min"),
        probe_query=dict(type="str"),
        probe_interval=dict(type="raw", default="1s"),
        rehearse=dict(type="dict", options=rehearse_argument_spec()),
        store=dict(type="dict", options=store_argument_spec()),
        key_provider=key_provider_option(required=False),
        rehearsal_predictions=dict(type="dict"),
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
    wait = params["wait_for_old_readers"]
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
        revert_window=parse_duration(params["revert_window"], "revert_window"),
        version_schema=params["version_schema"],
        publish_views=params["publish_views"],
        verify_reads=parse_verify_reads(params["verify_reads"]) if params["verify_reads"] else None,
        verify_reads_mask=tuple(params["verify_reads_mask"]),
        wait_for_old_readers=None if wait is None else parse_duration(wait, "wait_for_old_readers"),
    )


def schema_change(module):
    request = request_from(module.params)
    if module.params["rehearse"] is not None:
        module.require_libraries(backup_library_errors())
        return rehearse(module.params, request, module.connect_to, lambda database: module.client_tool_connection(database, "pg_restore"),
                        module.metrics, module.check_mode)
    predictions = check_predictions(module.params["rehearsal_predictions"])
    probe = probe_settings(module.params["probe_query"], module.params["probe_interval"])
    conn = module.connect()
    try:
        if probe is None or module.check_mode:
            result = MigrationRun(conn, request, module.metrics).run(module.check_mode)
        else:
            # Its own connection, opened in the probe's thread (module.connect would time it as a phase of this one).
            def connect():
                return pg.connect(module.params, module.application_name + "/probe")

            with LatencyProbe(connect, probe, module.metrics) as running:
                result = MigrationRun(conn, request, module.metrics).run(False)
            result["probe"] = running.summary()
    finally:
        conn.close()
    if predictions is not None and "cost_signals" in result:
        result["prediction_vs_actual"] = prediction_vs_actual(predictions, run_figures(result, module.metrics.as_dict()))
    diff = result.pop("diff", None)
    if module._diff and diff:
        result["diff"] = table_diff(diff["before"], diff["after"])
    return result


def main():
    module = KeelModule("schema_change", argument_spec(), supports_check_mode=True)
    module.run(schema_change)


if __name__ == "__main__":
    main()
