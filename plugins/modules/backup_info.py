#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_info
short_description: List tenants' backups from the store, with locks, verification status and checked manifests
version_added: 0.1.0
description:
  - Lists the backups of one tenant (O(tenant)) or of every tenant in O(tenants), oldest first, as the store holds them, with
    id, creation time, sizes, lock mode, retain-until, legal hold, key version and the latest restore verification outcome.
  - Each manifest's MAC is checked with the tenant's key while listing (C(mac_status)); a manifest that fails is reported,
    and a tenant whose key was shredded is reported as such.
  - Objects of backups that never published a manifest (killed or failed runs) are not backups; they are counted as
    C(orphans) for M(keel.postgres.backup_retention) to remove.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.backup_tenants
  - keel.postgres.backup_store
  - keel.postgres.key_provider
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same.
  diff_mode:
    support: none
    description: Nothing to compare; the result reports what was done.
options:
  tenant:
    description: List only this tenant. By default every tenant in O(tenants) is listed.
    type: str
  check_macs:
    description: Authenticate every manifest (one key unwrap per backup, a KMS call with V(aws_kms)).
    type: bool
    default: true
  read_data:
    description:
      - Also read, decrypt and authenticate every byte of every listed backup, and check it against its manifest
        (header digest, chunk order and final chunk, SHA-256, sizes). Reports C(integrity) per backup.
      - Reads the whole backup set from the store; nothing is written anywhere.
    type: bool
    default: false
  cost_table:
    description:
      - Prices and footprint factors per tier or storage class, to report each tenant's C(cost) (see docs/cost.md for the
        format and units).
      - "C(currency), C(tiers) (tier name -> C(price_gb_month) (required), C(price_per_1000_put), C(price_per_1000_get),
        C(price_gb_retrieved), C(min_storage_days), C(kwh_per_tb_month), C(gco2e_per_kwh)) and optionally C(archive_tier)."
    type: dict
  what_if_archive_after_days:
    description:
      - With O(cost_table), also report C(what_if), the cost and footprint if every backup older than this many days were
        in the table's C(archive_tier), and the saving in percent.
      - It corresponds to an S3 lifecycle transition rule (Days = this value, StorageClass = the archive tier), which
        Object Lock allows on locked objects; see docs/cost.md.
    type: int
seealso:
  - module: keel.postgres.backup
  - module: keel.postgres.backup_retention
"""

EXAMPLES = r"""
- name: What backups does acme have, and are they intact?
  keel.postgres.backup_info:
    tenant: acme
    tenants: "{{ keel_tenants }}"
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}
  register: acme_backups

- name: Fail when any manifest was tampered with
  ansible.builtin.assert:
    that: acme_backups.tenants[0].backups | selectattr('mac_status', 'equalto', 'failed') | list | length == 0
"""

RETURN = r"""
tenants:
  description: One entry per tenant listed.
  returned: always
  type: list
  elements: dict
  contains:
    tenant:
      description: The tenant name.
      type: str
    backups:
      description:
        - Published backups, oldest first. Each has C(backup_id), C(created_at), C(completed_at), C(scope), C(sizes),
          C(stored_bytes), C(lock_mode), C(retain_until), C(legal_hold), C(key_id), C(tables), C(mac_status)
          (V(verified), V(failed), V(key_shredded), V(key_unavailable), V(not_checked)), C(problem) and C(verification)
          (the latest restore verification record, or null).
        - "C(provenance): the schema state the backup holds, as recorded at dump time in its (MAC-covered) manifest:
          C(server_version), C(server_version_num), C(from_standby), C(snapshot_lsn) (WAL position read in the dump's
          snapshot; every change the backup holds is at or before it), C(snapshot_at), C(schema_fingerprint) (SHA-256 of
          the dumped schemas' structure, method C(fingerprint_method)), C(schemas) and C(migrations) (each keel migration
          in the database's catalog with C(name), C(state), C(schema), C(version_schema), C(started_at), C(updated_at),
          C(completed_at), C(finalized_at); empty without a catalog). Null for backups made before provenance was
          recorded."
        - With O(read_data), also C(integrity) (V(ok) or the problem found) and C(integrity_error) (the error kind).
      type: list
      elements: dict
    orphans:
      description: Backup ids with objects but no manifest (not backups; removed by backup_retention).
      type: list
      elements: str
    incomplete_uploads:
      description: Multipart uploads (or partial files) that never completed.
      type: int
    latest_backup:
      description: The id of the newest backup whose manifest verified, or null.
      type: str
    stored_bytes:
      description: Bytes held by the tenant's published backups.
      type: int
    cost:
      description:
        - With O(cost_table), per tier (C(tiers) with C(bytes), C(backups), C(monthly_cost), C(energy_kwh_per_month),
          C(carbon_grams_per_month)) and in total, with C(currency) and C(unpriced_tiers) (tiers missing from the table,
          which make the totals null).
      type: dict
cost:
  description: With O(cost_table), C(currency), C(monthly_cost), C(energy_kwh_per_month) and C(carbon_grams_per_month) over all listed tenants.
  returned: when O(cost_table) is set
  type: dict
what_if:
  description:
    - With O(what_if_archive_after_days), C(current) and C(what_if) totals (C(bytes), C(monthly_cost), C(energy_kwh_per_month),
      C(carbon_grams_per_month)), C(moved_backups), C(moved_bytes), C(saving_percent), C(energy_saving_percent),
      C(carbon_saving_percent), the one-off C(transition_cost) and C(early_deletion_cost), C(lifecycle_rule) and the same
      per tenant in C(tenants).
  returned: when O(what_if_archive_after_days) is set
  type: dict
metrics:
  description:
    - Wall time per phase in milliseconds.
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

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_VERIFIED, list_backups
from ansible_collections.keel.postgres.plugins.module_utils.backup.cost_report import held_cost, summed, what_if
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import record_store_requests
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_family_spec, backup_library_errors, open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_selection import selected_tenants
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import parse_cost_table


def argument_spec():
    spec = backup_family_spec()
    spec.update(
        tenant=dict(type="str"),
        check_macs=dict(type="bool", default=True),
        read_data=dict(type="bool", default=False),
        cost_table=dict(type="dict"),
        what_if_archive_after_days=dict(type="int"),
    )
    return spec


def read_and_check(store, keys, entry, metrics):
    report = entry.as_dict()
    try:
        with metrics.phase("read_data"):
            checked = BackupReader(store, keys, entry.tenant, entry.backup_id).check()
    except KeelError as exc:
        report.update(integrity=exc.message, integrity_error=exc.kind)
        return report
    metrics.count("bytes_read", checked["stored_bytes"])
    report.update(integrity="ok", integrity_error=None)
    return report


def describe_tenant(store, keys, tenant, params, metrics):
    """The tenant's report, and its published backups (for cost)."""
    entries = list_backups(store, tenant.name, keys, check_macs=params["check_macs"] or params["read_data"])
    published = [entry for entry in entries if entry.published]
    verified = [entry for entry in published if entry.mac_status == MAC_VERIFIED]
    describe = (lambda entry: read_and_check(store, keys, entry, metrics)) if params["read_data"] else (lambda entry: entry.as_dict())
    backups = [describe(entry) for entry in published]
    return {
        "tenant": tenant.name,
        "backups": backups,
        "orphans": [entry.backup_id for entry in entries if not entry.published],
        "incomplete_uploads": len(store.incomplete_uploads(layout.backups_prefix(tenant.name))),
        "latest_backup": verified[-1].backup_id if verified else None,
        "stored_bytes": sum(entry.stored_bytes for entry in published),
    }, published


def backup_info(module):
    tenants = selected_tenants(module.params)[0]
    table = parse_cost_table(module.params.get("cost_table"))
    if module.params.get("what_if_archive_after_days") is not None and table is None:
        raise InvalidOption("what_if_archive_after_days", "needs cost_table, with an archive_tier")
    store, keys = open_store_and_keys(module.params)
    module.metrics.label(store=store.kind, tenant=module.params.get("tenant"))
    try:
        with module.metrics.phase("list"):
            described = [describe_tenant(store, keys, tenant, module.params, module.metrics) for tenant in tenants]
    finally:
        record_store_requests(store, module.metrics)
    reports = [report for report, _published in described]
    module.metrics.count("backups", sum(len(report["backups"]) for report in reports))
    result = {"changed": False, "tenants": reports}
    if table is not None:
        now = datetime.datetime.now(datetime.timezone.utc)
        listings = {tenant.name: published for tenant, (_report, published) in zip(tenants, described)}
        for tenant, report in zip(tenants, reports):
            report["cost"] = held_cost(table, tenant, listings[tenant.name], now, module.metrics)
        result["cost"] = summed([report["cost"] for report in reports], table.currency)
        what_if_report = what_if(table, tenants, listings, now, module.params.get("what_if_archive_after_days"))
        if what_if_report is not None:
            result["what_if"] = what_if_report
    return result


def main():
    module = KeelModule("backup_info", argument_spec(), uses_postgres=False, supports_check_mode=True)
    module.require_libraries(backup_library_errors())
    module.run(backup_info)


if __name__ == "__main__":
    main()
