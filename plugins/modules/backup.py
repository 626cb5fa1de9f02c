#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup
short_description: Encrypted, write-once backup of a tenant's database or schemas
version_added: 0.1.0
description:
  - Streams C(pg_dump -Fc -Z0) through zstandard compression and chunked AES-256-GCM encryption into the store, without
    plaintext ever touching disk. Memory stays bounded by the chunk and part sizes, whatever the database size.
  - Each backup gets a fresh data key, wrapped by the tenant's key (see M(keel.postgres.tenant_key)); shredding that key
    makes every backup of the tenant unreadable.
  - On S3 the upload itself carries the tenant's Object Lock (mode and retain-until = now + C(retention.days)) and legal hold;
    on a file store objects are written once, read-only, and never overwritten.
  - Row counts and content fingerprints of every table are taken in the same snapshot as the dump and recorded in the manifest,
    so M(keel.postgres.restore_verify) can prove a restore matches what was dumped.
  - The manifest is written last and authenticated with a MAC, so a backup that failed or was killed has no manifest and does not exist.
  - Every run appends an audit event to the store and returns it.
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
    description: Checks the tenant, key, store and database and reports what would be backed up; writes nothing.
  diff_mode:
    support: none
    description: Nothing to compare; the result reports what was done.
options:
  tenant:
    description:
      - The tenant to back up; must be one of O(tenants).
      - The database dumped is the tenant's C(database), unless O(db) names another.
    type: str
    required: true
  schemas:
    description:
      - Dump only these schemas. Defaults to the tenant's C(schemas); when both are empty the whole database is dumped.
    type: list
    elements: str
  chunk_size:
    description: Plaintext bytes per encrypted chunk, between V(64KiB) and V(64MiB).
    type: str
    default: 4MiB
  compression_level:
    description:
      - zstandard level, 1 (fastest) to 19.
      - The default, 1, keeps the dump stream ahead of pg_dump on small hosts and its workers small (about 100 MB resident
        with two threads, against about 220 MB at level 3); higher levels save a few percent of storage for much more CPU.
    type: int
    default: 1
  compression_threads:
    description: zstandard worker threads; V(0) compresses in the module's own thread.
    type: int
    default: 2
  table_stats:
    description:
      - What to record per table at dump time. V(fingerprints) counts rows and hashes their content (one extra read of every
        table, in parallel with the dump), V(row_counts) only counts, V(none) records nothing (restore verification then checks less).
    type: str
    choices: [ fingerprints, row_counts, none ]
    default: fingerprints
  skip_if_newer_than:
    description:
      - Make no backup when the tenant already has a published backup younger than this (for example V(20h)), and report
        C(changed=false). Without it every run makes a new backup.
    type: str
  client_bin_dir:
    description: Directory of C(pg_dump). Defaults to the newest one found on PATH or in the usual per-version directories.
    type: path
  cost_table:
    description:
      - Prices and footprint factors per tier or storage class, to report C(cost) (see docs/cost.md for the format and units).
      - "C(currency), C(tiers) (tier name -> C(price_gb_month) (required), C(price_per_1000_put), C(price_per_1000_get),
        C(price_gb_retrieved), C(min_storage_days), C(kwh_per_tb_month), C(gco2e_per_kwh)) and optionally C(archive_tier)."
      - Without it no cost is reported.
    type: dict
  progress_file:
    description:
      - While the dump streams, rewrite this JSON file (atomically, at most every 2 seconds) with percent done, rate and
        ETA, for runs with Ansible C(async), whose job file only holds the result once the module exits.
      - The total is estimated from C(pg_database_size), so percent stays at most 99 until the stream ends.
      - A backup that fails leaves C(state) V(failed) in it; a killed one leaves V(running).
      - Its directory must exist.
    type: path
notes:
  - The password of the database role reaches pg_dump through its environment, never its command line.
  - Orphans of failed backups (incomplete uploads, data objects without manifest) are removed by M(keel.postgres.backup_retention).
seealso:
  - module: keel.postgres.tenant_key
  - module: keel.postgres.backup_info
  - module: keel.postgres.backup_retention
  - ref: "Backup stream format <https://github.com/keel-postgres/keel.postgres/blob/main/docs/backup_stream_format.md>"
    description: The byte layout, so a backup can be read without Ansible.
"""

EXAMPLES = r"""
- name: Nightly backup of each tenant, locked in S3 for its retention period
  keel.postgres.backup:
    tenant: "{{ item.name }}"
    tenants: "{{ keel_tenants }}"
    login_host: db1.internal
    login_user: backup
    store:
      type: s3
      bucket: acme-backups
      prefix: postgres/
      region: eu-west-1
    key_provider:
      type: aws_kms
      region: eu-west-1
    skip_if_newer_than: 20h
  loop: "{{ keel_tenants }}"
  loop_control:
    label: "{{ item.name }}"

- name: Back up one schema-per-tenant into a local write-once directory
  keel.postgres.backup:
    tenant: globex
    tenants: "{{ keel_tenants }}"
    store: {type: file, path: /srv/backups}
    key_provider: {type: file, directory: /etc/keel/keys}
  register: backup
"""

RETURN = r"""
backup_id:
  description: The new backup's id; ids sort by creation time.
  returned: when a backup was made
  type: str
  sample: 20261125T020000Z-3f9a1c2b
tenant:
  description: The tenant.
  returned: always
  type: str
object:
  description: Key of the encrypted stream, relative to the store prefix.
  returned: when a backup was made
  type: str
manifest:
  description: Key of the manifest, relative to the store prefix.
  returned: when a backup was made
  type: str
sizes:
  description:
    - Bytes dumped (C(raw)), after compression (C(compressed)), as stored with header and tags (C(stored), C(object)),
      and the manifest object's size (C(manifest)).
  returned: when a backup was made
  type: dict
compression_ratio:
  description: raw / compressed.
  returned: when a backup was made
  type: float
stages_ms:
  description: Time spent waiting for pg_dump (C(dump)), compressing, encrypting and writing to the store (C(store)).
  returned: when a backup was made
  type: dict
throughput_mib_s:
  description: Raw dump bytes per second, in MiB/s, over the whole stream.
  returned: when a backup was made
  type: float
tables:
  description: Number of tables counted (and fingerprinted) in the dump's snapshot.
  returned: when a backup was made
  type: int
key_id:
  description: The tenant key version that wrapped the data key.
  returned: when a backup was made
  type: str
lock_mode:
  description: V(COMPLIANCE), V(GOVERNANCE) or null.
  returned: when a backup was made
  type: str
retain_until:
  description: When the store lock lapses (ISO 8601, UTC), or null without lock.
  returned: when a backup was made
  type: str
legal_hold:
  description: Whether a legal hold was placed.
  returned: when a backup was made
  type: bool
storage_class:
  description: The storage class the store reports for the data object (V(STANDARD) when S3 omits it; null for a file store).
  returned: when a backup was made
  type: str
tier:
  description: The tenant's C(retention.tier), the tier the backup is priced in.
  returned: when a backup was made
  type: str
cost:
  description:
    - With O(cost_table), what the new backup adds per month, per tier (C(tiers) with C(bytes), C(backups), C(monthly_cost),
      C(energy_kwh_per_month), C(carbon_grams_per_month)) and in total, with C(currency), C(unpriced_tiers) and C(requests_cost)
      (the S3 requests of this run at the tier's request prices).
  returned: when a backup was made and O(cost_table) is set
  type: dict
progress:
  description: With O(progress_file), its final content (C(state), C(percent), C(raw_bytes_done), C(expected_bytes), C(eta_seconds)).
  returned: when a backup was made and O(progress_file) is set
  type: dict
skipped_because:
  description: The recent backup that made this run skip (see O(skip_if_newer_than)).
  returned: when skipped
  type: dict
plan:
  description: In check mode, what would be backed up (tables, database size, lock).
  returned: check mode
  type: dict
audit:
  description: The audit event written for this run (no secrets), with C(audit_object), its key in the store.
  returned: when a backup was attempted
  type: dict
metrics:
  description:
    - Wall time per phase in milliseconds and byte counters.
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

import datetime

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_request import backup_request_from
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_run import BackupRun
from ansible_collections.keel.postgres.plugins.module_utils.backup.cost_report import new_backup_cost
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import record_store_requests
from ansible_collections.keel.postgres.plugins.module_utils.backup.progress import check_progress_path
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_family_spec, backup_library_errors, open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import parse_cost_table


def argument_spec():
    spec = backup_family_spec()
    spec.update(
        tenant=dict(type="str", required=True),
        schemas=dict(type="list", elements="str"),
        chunk_size=dict(type="str", default="4MiB"),
        compression_level=dict(type="int", default=1),
        compression_threads=dict(type="int", default=2),
        table_stats=dict(type="str", choices=["fingerprints", "row_counts", "none"], default="fingerprints"),
        skip_if_newer_than=dict(type="str"),
        client_bin_dir=dict(type="path"),
        cost_table=dict(type="dict"),
        progress_file=dict(type="path"),
    )
    return spec


def backup(module):
    request = backup_request_from(module.params)
    table = parse_cost_table(module.params.get("cost_table"))
    progress_file = check_progress_path(module.params.get("progress_file"))
    store, keys = open_store_and_keys(module.params)
    run = BackupRun(
        request, store, keys,
        connect=module.connect_to,
        metrics=module.metrics,
        client_bin_dir=module.params.get("client_bin_dir"),
        conn_kwargs=module.client_tool_connection(request.database, "pg_dump"),
        progress_file=progress_file,
    )
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        recent = run.recent_backup(now)
        if recent is not None:
            return {"changed": False, "tenant": request.tenant.name, "skipped_because": recent}
        if module.check_mode:
            return {"changed": True, "tenant": request.tenant.name, "plan": run.plan(now)}
        result = run.execute(now)
        if table is not None:
            result["cost"] = new_backup_cost(table, result["tenant"], result["tier"], result["sizes"]["object"] + result["sizes"]["manifest"],
                                             store.requests.counts(), module.metrics)
        return result
    finally:
        record_store_requests(store, module.metrics)


def main():
    module = KeelModule("backup", argument_spec(), supports_check_mode=True)
    module.require_libraries(backup_library_errors())
    module.run(backup)


if __name__ == "__main__":
    main()
