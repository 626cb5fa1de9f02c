#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Read-only readiness report and gate before a migration or backup
version_added: 0.1.0
description:
  - Reads what decides whether a schema change or backup can run safely now, without changing anything.
  - Reports the server version and whether it is a standby; transactions older than a threshold;
    sessions holding or waiting for locks on given tables; replication lag per standby and retained WAL per slot;
    size, row estimate and primary key of given tables; whether C(pg_stat_statements) is usable;
    and whether C(pg_dump)/C(pg_restore) on the host running the module can serve this server.
  - With O(fail_on) it becomes a gate. The task fails with a message naming each failed check, the value
    found and the threshold, and the full report is still returned.
  - Client tools older than the server always fail the task unless O(client_tools=report) or O(client_tools=skip).
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
    description: The module only reads; check mode runs exactly the same queries.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
options:
  tables:
    description:
      - Tables the coming operation touches, optionally schema-qualified (V(shop.orders)).
      - Resolved like C(to_regclass) with the session's C(search_path); an unknown name fails before anything else is read.
    type: list
    elements: str
    default: []
  transaction_age_threshold:
    description:
      - Report open transactions at least this old.
      - A number of seconds or a duration with a PostgreSQL-style unit, for example V(500ms), V(30s), V(5min), V(1h).
    type: raw
    default: 1min
  query_max_length:
    description:
      - Characters of each reported session's query text to return. V(0) hides query text,
        which may be wise where queries carry personal data.
    type: int
    default: 200
  client_tools:
    description:
      - How to treat C(pg_dump) and C(pg_restore) on the host running the module.
      - V(required) fails when either is missing or older than the server, V(report) only reports, V(skip) does not look.
    type: str
    choices: [ required, report, skip ]
    default: required
  client_bin_dir:
    description:
      - Directory holding C(pg_dump) and C(pg_restore).
      - When unset, the newest copy among E(PATH), C(/usr/lib/postgresql/*/bin) and C(/usr/pgsql-*/bin) is used.
    type: path
  backup_coverage:
    description:
      - Check that every recent migration in the keel catalog of this database is covered by a verified backup, and
        report each in RV(backup_coverage). Needs O(tenants), O(store) and O(key_provider); only read from the store.
      - "Checked: every migration not rolled back or reverted that is not finalized (in flight, or completed and still
        revertible), and every finalized one completed within O(backup_coverage.within)."
      - "Covered: one backup of a tenant whose C(database) is this database, whose scope holds the migration's tables,
        whose manifest authenticates with the tenant's key and records provenance in which the migration is absent (or
        rolled back or reverted), so its snapshot was taken before the migration started, and whose latest restore
        verification (M(keel.postgres.restore_verify)) passed with an authenticated record."
      - An uncovered migration is a warning, or a failed check with O(fail_on.require_backup_coverage).
    type: dict
    suboptions:
      tenant:
        description: Only this tenant's backups (one of O(tenants)). By default every tenant whose C(database) is this database.
        type: str
      within:
        description: How long after completion a finalized migration is still checked, for example V(7d) or V(12h); a bare number is seconds.
        type: raw
        default: 7d
  tenants:
    description:
      - Every tenant's backup policy (the C(keel_tenants) inventory variable), as for M(keel.postgres.backup). Needed with
        O(backup_coverage).
    type: list
    elements: dict
  store:
    description:
      - Where the backups are, as for M(keel.postgres.backup). Needed with O(backup_coverage); only read.
    type: dict
    required: false
  fail_on:
    description:
      - Thresholds that turn the report into a gate. Unset checks are only reported.
    type: dict
    default: {}
    suboptions:
      max_transaction_age:
        description: Fail when any other transaction is older than this duration (seconds or V(30s), V(5min), ...).
        type: raw
      max_replication_lag:
        description: Fail when any standby replays more than this duration behind (or this server, if it is a standby).
        type: raw
      max_replication_lag_bytes:
        description: Fail when any standby is more than this much WAL behind (bytes or V(16MB), V(1GB), ...).
        type: raw
      require_primary_key:
        description: Fail when any table in O(tables) has no primary key (batched backfills need one).
        type: bool
        default: false
      forbid_table_locks:
        description:
          - Fail when any other session holds or waits for any lock on a table in O(tables).
          - Even a long C(SELECT) holds a lock that would queue an C(ALTER TABLE), and all traffic behind it.
        type: bool
        default: false
      require_primary:
        description: Fail when the server is a standby (in recovery).
        type: bool
        default: false
      require_pg_stat_statements:
        description: Fail when C(pg_stat_statements) cannot be read in this database.
        type: bool
        default: false
      require_backup_coverage:
        description:
          - Fail when a migration checked by O(backup_coverage) is not covered by a verified backup (one failed check per
            migration, naming it and why). Needs O(backup_coverage).
        type: bool
        default: false
seealso:
  - name: pg_stat_activity
    description: The view behind the transaction and lock reports.
    link: https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ACTIVITY-VIEW
  - name: Explicit locking
    description: Which lock each statement takes and what it conflicts with.
    link: https://www.postgresql.org/docs/current/explicit-locking.html
"""

EXAMPLES = r"""
- name: Gate a migration of shop.orders
  keel.postgres.preflight:
    login_host: db1.example.com
    db: shop
    tables: [shop.orders]
    fail_on:
      max_transaction_age: 30s
      max_replication_lag: 10s
      require_primary_key: true
      forbid_table_locks: true
      require_primary: true

- name: Report only, password from the environment (PGPASSWORD or ~/.pgpass), no query text
  keel.postgres.preflight:
    db: shop
    query_max_length: 0
    client_tools: report
  register: readiness

- name: Show transactions that would hold back the migration
  ansible.builtin.debug:
    msg: "{{ readiness.transactions | map(attribute='pid') | list }}"
"""

RETURN = r"""
passed:
  description: Whether every gate in O(fail_on) (and the client tools check) passed.
  returned: always
  type: bool
  sample: true
failed_checks:
  description: One entry per failed gate.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: The gate that failed, as named in O(fail_on), or V(client_tools).
      type: str
      sample: max_transaction_age
    subject:
      description: What failed it (a pid, a table, a standby, a tool).
      type: str
      sample: pid 4242
    value:
      description: The value found.
      type: raw
      sample: 65.2
    threshold:
      description: The threshold it was compared with (seconds or bytes, as parsed).
      type: raw
      sample: 30.0
    message:
      description: A readable sentence with value and threshold.
      type: str
      sample: "transaction of pid 4242 (psql, state 'idle in transaction') is 65.2 s old, threshold 30.0 s"
backup_coverage:
  description:
    - With O(backup_coverage), one entry per migration checked, with C(name), C(state), C(started_at), C(completed_at),
      C(covered), the newest covering backup (C(tenant), C(backup_id)) and, when not covered, C(reason). Empty otherwise.
  returned: always
  type: list
  elements: dict
  sample: [{name: add_vip, state: started, started_at: "2026-11-26T01:02:03+00:00", completed_at: null, covered: false,
            tenant: null, backup_id: null, reason: "1 backup(s) precede its start, but none passed restore verification"}]
server:
  description: Facts about the server and session.
  returned: always
  type: dict
  sample: {version: "15.18 (Debian 15.18-0+deb12u1)", version_num: 150018, in_recovery: false,
           database: shop, user: postgres, is_superuser: true}
transactions:
  description:
    - Other transactions at least O(transaction_age_threshold) old (or the gate's O(fail_on.max_transaction_age)
      if lower), oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{pid: 4242, user: app, application_name: psql, database: shop, state: idle in transaction,
            backend_type: client backend, age_seconds: 65.2, wait_event_type: Client, wait_event: ClientRead,
            query: "UPDATE orders SET ..."}]
tables:
  description: One entry per table in O(tables).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Schema-qualified name.
      type: str
      sample: public.orders
    requested_as:
      description: The name as given in O(tables).
      type: str
      sample: orders
    total_bytes:
      description: Table, indexes and TOAST (sum of leaf partitions for a partitioned table).
      type: int
    table_bytes:
      description: Main fork size.
      type: int
    index_bytes:
      description: Size of all indexes.
      type: int
    rows_estimate:
      description: Planner estimate (C(reltuples)); null when the table was never analyzed.
      type: int
    partitioned:
      description: Whether the table is partitioned.
      type: bool
    has_primary_key:
      description: Whether the table has a primary key.
      type: bool
    replica_identity:
      description: V(default), V(nothing), V(full) or V(index).
      type: str
    lock_sessions:
      description: Other sessions holding or waiting for a lock on the table.
      type: list
      elements: dict
      sample: [{pid: 4242, mode: RowExclusiveLock, granted: true, state: idle in transaction, user: app,
                application_name: psql, transaction_age_seconds: 65.2, blocked_by: [], query: "UPDATE ..."}]
replication:
  description: Replication seen from this server.
  returned: always
  type: dict
  contains:
    role:
      description: V(primary) or V(standby).
      type: str
    standbys:
      description: Connected standbys with C(lag_bytes) (WAL not yet replayed) and C(lag_seconds).
      type: list
      elements: dict
    slots:
      description: Replication slots with the WAL they retain (C(retained_bytes)); an inactive slot retains WAL forever.
      type: list
      elements: dict
    self:
      description: On a standby, its own C(lag_bytes) and C(lag_seconds); null on a primary.
      type: dict
pg_stat_statements:
  description: Whether latency baselines can be taken from C(pg_stat_statements).
  returned: always
  type: dict
  sample: {installed: true, version: "1.10", preloaded: true, usable: true, problem: null}
client_tools:
  description: C(pg_dump) and C(pg_restore) found on the host running the module; empty when O(client_tools=skip).
  returned: always
  type: list
  elements: dict
  sample: [{name: pg_dump, path: /usr/lib/postgresql/15/bin/pg_dump, version: "15.18", version_num: 150018,
            server_version: "15.18", compatible: true, problem: null, required: true}]
metrics:
  description:
    - Duration of the run and of each phase in milliseconds, and counters.
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
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.preflight.backup_coverage import coverage_request_from
from ansible_collections.keel.postgres.plugins.module_utils.preflight.gates import gate_options_spec, parse_gate_policy
from ansible_collections.keel.postgres.plugins.module_utils.preflight.report import PreflightRequest, run_preflight
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    return dict(
        tables=dict(type="list", elements="str", default=[]),
        transaction_age_threshold=dict(type="raw", default="1min"),
        query_max_length=dict(type="int", default=200),
        client_tools=dict(type="str", choices=["required", "report", "skip"], default="required"),
        client_bin_dir=dict(type="path"),
        fail_on=dict(type="dict", default={}, options=gate_options_spec()),
        backup_coverage=dict(type="dict", options=dict(tenant=dict(type="str"), within=dict(type="raw", default="7d"))),
        tenants=dict(type="list", elements="dict"),
        store=dict(type="dict", options=store_argument_spec()),
        key_provider=key_provider_option(required=False),
    )


def request_from(params):
    if params["query_max_length"] < 0:
        raise InvalidOption("query_max_length", "must be 0 (hide queries) or more")
    return PreflightRequest(
        tables=params["tables"],
        transaction_age_threshold=parse_duration(params["transaction_age_threshold"], "transaction_age_threshold"),
        query_max_length=params["query_max_length"],
        client_tools=params["client_tools"],
        client_bin_dir=params["client_bin_dir"],
        policy=parse_gate_policy(params["fail_on"]),
        backup_coverage=coverage_request_from(params),
    )


def preflight(module):
    request = request_from(module.params)  # every option is checked before connecting
    conn = module.connect()
    try:
        report = run_preflight(conn, request, module.metrics)
    finally:
        conn.close()
    for entry in report["backup_coverage"]:
        if not entry["covered"]:  # not gated (a gate would have failed the run): a warning
            module.warn("migration {0} is not covered by a verified backup: {1}".format(entry["name"], entry["reason"]))
    return report


def main():
    module = KeelModule("preflight", argument_spec(), supports_check_mode=True)
    if module.params.get("backup_coverage") is not None:
        module.require_libraries(backup_library_errors())
    module.run(preflight)


if __name__ == "__main__":
    main()
