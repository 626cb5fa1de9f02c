#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: restore_verify
short_description: Prove that tenants' backups restore and hold what was dumped
version_added: 0.1.0
description:
  - Verifies one backup (O(tenant) and O(backup_id)) or a O(sample) of backups across tenants, end to end, and records
    each outcome in the store beside the backup.
  - "For each backup: the manifest is authenticated with the tenant's key; a scratch database named
    C(keel_verify_<tenant>_<8 hex>) is created from C(template0); the stream is restored into it with C(pg_restore) in a
    single transaction, every chunk authenticated while it streams (MAC, header, chunk order, final chunk, SHA-256)."
  - The row count and fingerprint of every table are computed on the restored data with the method the manifest
    recorded (C(keel-rowhash-v1)) and compared with the manifest. A table missing after the restore, or one the manifest
    does not list, is a mismatch too.
  - O(masking) rules are applied next, before any assertion runs, so no assertion and no report sees raw personal data.
    They come after the comparison because the fingerprints must be those of the data that was dumped; fingerprints are
    hashes and no row value leaves the database while they are computed.
  - O(assertions) run last, each in its own READ ONLY transaction under O(statement_timeout).
  - The scratch database is always dropped, with the C(FORCE) option of C(DROP DATABASE), also when a step fails.
  - Each outcome (V(passed) or V(failed) with its reason), its duration per stage and the mismatches found are written as
    a write-once object C(<tenant>/verifications/<backup_id>/<time>.json) and an audit event. M(keel.postgres.backup_info)
    shows the latest one per backup, and M(keel.postgres.backup_retention) never deletes the newest backup whose
    verification passed.
  - A backup that fails is recorded and the run goes on with the next one; the task fails at the end when any failed
    (see O(fail_on_failure)), with every record attached.
  - Results and records never hold row data. An SQL error in an assertion or masking rule is reported by SQLSTATE and
    condition only, because a server message can quote row values; lines of C(pg_restore) output that can quote rows are
    left out of its message.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.backup_tenants
  - keel.postgres.backup_store
  - keel.postgres.key_provider
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Chooses the backups, authenticates their manifests, finds C(pg_restore) and reports the plan; restores and records nothing.
  diff_mode:
    support: none
    description: Nothing to compare; the result holds one verification record per backup.
options:
  tenant:
    description:
      - The tenant whose backup is verified; must be one of O(tenants).
      - Required without O(sample). With O(sample) it limits the sample to this tenant; by default every tenant in O(tenants) is sampled.
    type: str
  backup_id:
    description:
      - The backup to verify, or V(latest) (the default when O(sample) is not given) for the newest published backup.
      - V(latest) is the newest published backup even when its manifest fails to authenticate; that is then a recorded
        failure, not a reason to verify an older backup instead.
    type: str
  sample:
    description:
      - Verify a sample instead of one backup, for example for a quarterly validation across retention tiers.
      - "C(mode: latest_per_tier): the newest published backup of each selected tenant, reported with the tenant's
        C(retention.tier)."
      - "C(mode: random): C(count) (default 1) published backups per tenant drawn at random among those created within the
        last C(within_days) days (by default all of them). C(seed) (a number or a string) makes the draw repeatable."
      - Tenants with nothing to sample are listed in RV(not_sampled) and do not fail the task.
      - Mistakes are reported with their path, for example C(sample.mode), before anything is done.
    type: dict
  assertions:
    description:
      - "Checks on the restored data, each C({name: ..., sql: ...}): one SQL query that must return exactly one row holding
        one boolean V(true), for example V(SELECT count(*\\) > 0 FROM orders)."
      - Each runs in its own READ ONLY transaction under O(statement_timeout), after O(masking). A failing assertion is
        reported by name with why it failed (false, NULL, wrong shape, or the SQLSTATE of its error), never with a value.
    type: list
    elements: dict
    default: []
  masking:
    description:
      - "Rules applied right after the restore and the comparison, before any assertion, each
        C({table: ..., column: ..., expression: ...}), each run as C(UPDATE table SET column = expression). C(table) is
        C(schema.table) or C(table) (found through the search path); C(expression) is SQL over the row, for example
        V(md5(email\\)) or V('***')."
      - All rules apply in one transaction, then every populated materialized view is refreshed so none keeps raw values.
      - A rule naming a table or column the restored backup does not have, or an expression that fails, is a recorded
        failure with reason V(masking_failed); the assertions then do not run.
      - Triggers on the masked tables fire as for any UPDATE. Copies of the same values in other columns or tables need
        rules of their own.
    type: list
    elements: dict
    default: []
  statement_timeout:
    description: Longest run of each assertion, for example V(500ms), V(60s) or V(5min); a bare number is seconds.
    type: raw
    default: 60s
  fail_on_failure:
    description:
      - Fail the task when any backup fails verification. With V(false) failures are still recorded and returned, and the
        task fails only when a scratch database could not be dropped or an outcome could not be recorded.
    type: bool
    default: true
  client_bin_dir:
    description: Directory of C(pg_restore). Defaults to the newest one found on PATH or in the usual per-version directories.
    type: path
  expect_migration:
    description:
      - Assert that every backup verified holds this keel migration (the schema version it made), from the C(provenance)
        its manifest recorded at dump time (see M(keel.postgres.backup_info)).
      - Checked before anything is restored, also in check mode. A backup whose authenticated provenance does not list the
        migration in the expected state, or that has no provenance, fails the task with an error naming
        C(expect_migration); nothing is restored or recorded.
      - After the restore, the schema fingerprint of the restored database must equal the manifest's (this is checked for
        every backup with provenance, with or without this option); a difference is a recorded failure with reason
        V(schema_mismatch). Together they prove the backup holds that schema version.
    type: dict
    suboptions:
      name:
        description: The migration's name, as given to M(keel.postgres.schema_change).
        type: str
        required: true
      state:
        description:
          - V(completed) accepts a migration completed or finalized at dump time, V(finalized) only a finalized one,
            V(any-applied) any migration whose change was in place (started, completed, finalized, or being completed,
            finalized or reverted).
        type: str
        choices: [ completed, finalized, any-applied ]
        default: completed
notes:
  - The connection options reach the server the scratch databases are created on; O(db) is only the database connected to
    for creating and dropping them (default V(postgres)). The login role needs C(CREATEDB).
  - Restores use C(--no-owner --no-privileges), so the backup's roles need not exist on the verification server.
  - A module run that is killed can leave a C(keel_verify_*) database behind; drop it by hand.
  - The password reaches C(pg_restore) through its environment, never its command line.
seealso:
  - module: keel.postgres.backup
  - module: keel.postgres.restore
  - module: keel.postgres.backup_info
"""

EXAMPLES = r"""
- name: Prove acme's newest backup restores, with personal data masked before the checks
  keel.postgres.restore_verify:
    tenant: acme
    tenants: "{{ keel_tenants }}"
    login_host: verify-db.internal
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}
    masking:
      - {table: public.customers, column: email, expression: "md5(email)"}
      - {table: customers, column: name, expression: "'***'"}
    assertions:
      - name: every order has a customer
        sql: SELECT NOT EXISTS (SELECT 1 FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)
      - name: no readable e-mail address is left
        sql: SELECT bool_and(email NOT LIKE '%@%') FROM customers

- name: Quarterly validation - three random backups of the last 90 days of every tenant
  keel.postgres.restore_verify:
    tenants: "{{ keel_tenants }}"
    sample: {mode: random, count: 3, within_days: 90, seed: "2026-Q4"}
    login_host: verify-db.internal
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}
    fail_on_failure: false
  register: quarterly

- name: Report the success rate per tier
  ansible.builtin.debug:
    msg: "{{ quarterly.by_tier }}"
"""

RETURN = r"""
verifications:
  description:
    - One record per backup verified, as written to the store, plus C(record_object) (its key, or null when it could not be
      written), C(record_error), C(record_authenticated) (the stored record carries an HMAC under a key derived from the
      backup's data key, which M(keel.postgres.kpi_check) checks; false when the data key could not be had, and such a
      record is always a failure) and C(audit) (the audit event).
    - "A record has C(tenant), C(backup_id), C(tier), C(backup_created_at), C(outcome) (V(passed) or V(failed)), C(reason)
      (null, V(mismatch), V(assertion_failed), V(masking_failed), or the error kind such as V(integrity_failed),
      V(key_shredded), V(client_tool)), C(message), C(at), C(duration_ms), C(stages_ms) (C(fetch_restore), C(stats),
      C(masking), C(assertions), C(drop_scratch)), C(table_stats) (the manifest's method), C(tables_checked), C(mismatches)
      (C(table), C(problem), C(rows_expected), C(rows_found), C(fingerprint_match)), C(masking) (C(table), C(column),
      C(rows) updated), C(assertions) (C(name), C(passed), C(problem), and for an SQL error C(sqlstate), C(condition),
      C(condition_class)), C(actor), C(scratch_database), C(scratch_dropped), C(dump_bytes) and C(stored_bytes)."
    - "For a backup whose manifest has C(provenance): C(schema_fingerprint) (C(expected), the manifest's; C(found), the
      restored database's; C(match)), stage C(schema_fingerprint) in C(stages_ms), reason V(schema_mismatch) when they
      differ, and C(migrations_at_dump) (each keel migration's name and state at dump time). Both are null without
      provenance."
  returned: always
  type: list
  elements: dict
passed_count:
  description: Backups that passed verification in this run.
  returned: always
  type: int
failed_count:
  description: Backups that failed verification in this run (not C(failed), which Ansible reserves for the task's own failure).
  returned: always
  type: int
success_rate:
  description: RV(passed_count) divided by the backups verified, or null when none was.
  returned: always
  type: float
by_tier:
  description: C(passed), C(failed) and C(success_rate) per retention tier.
  returned: always
  type: dict
stale_scratch_dropped:
  description:
    - Scratch databases (C(keel_verify_*)) left behind by runs that were killed, dropped before this run started (in
      check mode, those it would drop). A run holds a session advisory lock on its scratch database's name for as long
      as the database exists, so a database whose lock can be taken belongs to no live run; one in use by a verification
      on another host is left alone.
  returned: always
  type: list
  elements: str
not_sampled:
  description: With O(sample), the tenants that had no backup to verify, with C(tenant), C(tier) and C(reason).
  returned: always
  type: list
  elements: dict
plan:
  description: In check mode, the backups that would be verified, with C(tenant), C(backup_id), C(tier), C(created_at),
    C(mac_status), C(problem), C(table_stats) and C(tables).
  returned: check mode
  type: list
  elements: dict
metrics:
  description:
    - Wall time per phase in milliseconds, and counters (C(passed), C(failed), C(stored_bytes)).
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

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_selection import check_backup_id
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import record_store_requests
from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import EXPECT_STATES
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_family_spec, backup_library_errors, open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_selection import selected_tenants
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_options import VerifyRequest, parse_assertions, parse_expect_migration, parse_masking
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_run import VerifyRun
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_sample import parse_sample
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    spec = backup_family_spec()
    spec.update(
        tenant=dict(type="str"),
        backup_id=dict(type="str"),
        sample=dict(type="dict"),
        assertions=dict(type="list", elements="dict", default=[]),
        masking=dict(type="list", elements="dict", default=[]),
        statement_timeout=dict(type="raw", default="60s"),
        fail_on_failure=dict(type="bool", default=True),
        client_bin_dir=dict(type="path"),
        expect_migration=dict(type="dict", options=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=list(EXPECT_STATES), default="completed"),
        )),
    )
    return spec


def request_from(params):
    sample = parse_sample(params.get("sample"))
    if sample is None and not params.get("tenant"):
        raise InvalidOption("tenant", "name the tenant whose backup is verified, or give a sample to verify several tenants")
    if sample is not None and params.get("backup_id"):
        raise InvalidOption("backup_id", "cannot be combined with sample: sample chooses the backups")
    if params.get("backup_id"):
        check_backup_id(params["backup_id"])
    timeout_ms = int(parse_duration(params["statement_timeout"], "statement_timeout") * 1000)
    if timeout_ms < 1:
        raise InvalidOption("statement_timeout", "must be at least 1ms")
    return VerifyRequest(
        tenants=selected_tenants(params)[0],
        backup_id=params.get("backup_id"),
        sample=sample,
        assertions=parse_assertions(params.get("assertions")),
        masking=parse_masking(params.get("masking")),
        statement_timeout_ms=timeout_ms,
        fail_on_failure=params["fail_on_failure"],
        actor=params.get("audit_actor"),
        maintenance_db=params.get("db") or "postgres",
        client_bin_dir=params.get("client_bin_dir"),
        expect_migration=parse_expect_migration(params.get("expect_migration")),
    )


def restore_verify(module):
    request = request_from(module.params)
    store, keys = open_store_and_keys(module.params)
    run = VerifyRun(
        request, store, keys,
        connect=module.connect_to,
        conn_kwargs=lambda database: module.client_tool_connection(database, "pg_restore"),
        metrics=module.metrics,
    )
    module.metrics.label(store=store.kind, tenant=module.params.get("tenant"))
    try:
        if module.check_mode:
            return run.plan()
        return run.execute()
    finally:
        record_store_requests(store, module.metrics)


def main():
    module = KeelModule("restore_verify", argument_spec(), supports_check_mode=True)
    module.require_libraries(backup_library_errors())
    module.run(restore_verify)


if __name__ == "__main__":
    main()
