#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_retention
short_description: Apply each tenant's retention policy to its backups and report storage cost
version_added: 0.1.0
description:
  - For every tenant in O(tenants) (or only O(tenant)), deletes the backups its C(retention) policy lets go, and reports why
    every other backup is kept.
  - A backup is deleted only when it is older than C(retention.days), has no legal hold, its store lock has lapsed,
    it is not among the newest C(retention.min_copies) readable backups, and it is not the newest backup whose restore
    verification passed. A backup whose manifest fails its MAC check is never deleted automatically.
  - Also removes what failed backups left behind, once older than O(orphan_grace) and unlocked, that is data objects without a
    manifest and incomplete multipart uploads.
  - Refuses, before deleting anything, a policy whose C(days) is shorter than the lock already placed on existing backups
    (unless O(accept_longer_locks)).
  - Reports the bytes kept per tenant and tier and an estimated monthly cost from O(price_per_gib_month); backups older
    than C(archive.after_days) are priced at C(archive.storage_class).
  - Every tenant where something was deleted gets an audit event.
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
    description: Lists what would be deleted and the cost after it; deletes nothing.
  diff_mode:
    support: none
    description: Nothing to compare; the result reports what was done.
options:
  tenant:
    description: Apply only this tenant's policy. By default every tenant in O(tenants).
    type: str
  orphan_grace:
    description:
      - How old an unpublished backup or incomplete upload must be before it is removed; younger ones may belong to a
        backup that is still running.
    type: str
    default: 6h
  bypass_governance:
    description:
      - Let GOVERNANCE-locked backups that the policy no longer needs go before their lock lapses (needs the
        C(s3:BypassGovernanceRetention) permission). COMPLIANCE locks can never be bypassed.
    type: bool
    default: false
  accept_longer_locks:
    description:
      - Carry on when a tenant's C(retention.days) is shorter than locks already placed; those backups are deleted when
        their lock lapses instead of on the policy's schedule.
    type: bool
    default: false
  price_per_gib_month:
    description:
      - "Price table for the cost estimate, tier or storage class name -> price per GiB-month, for example
        C({hot: 0.023, GLACIER_IR: 0.004}). Tiers missing from it are reported in C(unpriced_tiers) and make the total null."
    type: dict
    default: {}
  cost_table:
    description:
      - Prices and footprint factors per tier or storage class (see docs/cost.md for the format and units); replaces
        O(price_per_gib_month), which must then be empty.
      - "C(currency), C(tiers) (tier name -> C(price_gb_month) (required), C(price_per_1000_put), C(price_per_1000_get),
        C(price_gb_retrieved), C(min_storage_days), C(kwh_per_tb_month), C(gco2e_per_kwh)) and optionally C(archive_tier)."
      - Each tenant's C(cost) then also carries C(currency), C(energy_kwh_per_month) and C(carbon_grams_per_month), and
        C(deleted_cost) prices what was deleted, with the C(early_deletion_cost) of removing backups before a tier's
        C(min_storage_days).
    type: dict
seealso:
  - module: keel.postgres.backup
  - module: keel.postgres.backup_info
"""

EXAMPLES = r"""
- name: Show what retention would delete
  keel.postgres.backup_retention:
    tenants: "{{ keel_tenants }}"
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}
    price_per_gib_month: {hot: 0.023, GLACIER_IR: 0.004}
  check_mode: true
  register: plan

- name: Apply retention
  keel.postgres.backup_retention:
    tenants: "{{ keel_tenants }}"
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}
    price_per_gib_month: {hot: 0.023, GLACIER_IR: 0.004}
"""

RETURN = r"""
tenants:
  description: One report per tenant.
  returned: always
  type: list
  elements: dict
  contains:
    tenant:
      description: The tenant name.
      type: str
    backups:
      description: Published backups before this run.
      type: int
    kept:
      description: Backups kept, each with C(backup_id), C(reason), C(created_at), C(stored_bytes), C(retain_until).
      type: list
      elements: dict
    deleted:
      description: Backups (and orphans) deleted, or that would be in check mode, each with its C(reason).
      type: list
      elements: dict
    deleted_bytes:
      description: Bytes freed.
      type: int
    discarded_uploads:
      description: Incomplete uploads removed.
      type: list
      elements: dict
    cost:
      description: C(tiers) (per tier C(bytes), C(backups), C(monthly_cost)), C(bytes), C(monthly_cost), C(unpriced_tiers).
      type: dict
    deleted_cost:
      description:
        - With O(cost_table), the deleted backups per tier (C(tiers), C(bytes), C(monthly_cost), C(energy_kwh_per_month),
          C(carbon_grams_per_month)) and C(early_deletion_cost), the minimum-storage charge for deleting them.
      type: dict
    audit:
      description: The audit event written, when something was deleted.
      type: dict
cost:
  description:
    - With O(cost_table), C(currency), C(monthly_cost), C(energy_kwh_per_month) and C(carbon_grams_per_month) of what is
      kept over all tenants, and C(early_deletion_cost) of what was deleted.
  returned: when O(cost_table) is set
  type: dict
deleted_bytes:
  description: Bytes freed over all tenants.
  returned: always
  type: int
monthly_cost:
  description: Estimated monthly storage cost of what is kept, over all tenants; null if a tier has no price.
  returned: always
  type: float
failures:
  description: Deletions the store refused; the module fails when there is any.
  returned: always
  type: list
  elements: dict
metrics:
  description:
    - Wall time per phase in milliseconds, C(backups_deleted) and C(bytes_deleted).
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

from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import record_store_requests
from ansible_collections.keel.postgres.plugins.module_utils.backup.retention_run import RetentionRun, RetentionSettings
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_family_spec, backup_library_errors, open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_selection import selected_tenants
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule
from ansible_collections.keel.postgres.plugins.module_utils.observe.cost import parse_cost_table
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def argument_spec():
    spec = backup_family_spec()
    spec.update(
        tenant=dict(type="str"),
        orphan_grace=dict(type="str", default="6h"),
        bypass_governance=dict(type="bool", default=False),
        accept_longer_locks=dict(type="bool", default=False),
        price_per_gib_month=dict(type="dict", default={}),
        cost_table=dict(type="dict"),
    )
    return spec


def price_table(prices):
    table = {}
    for tier, price in prices.items():
        try:
            table[str(tier)] = float(price)
        except (TypeError, ValueError):
            raise InvalidOption("price_per_gib_month.{0}".format(tier), "must be a number, not {0!r}".format(price)) from None
        if table[str(tier)] < 0:
            raise InvalidOption("price_per_gib_month.{0}".format(tier), "must not be negative")
    return table


def settings_from(params, check_mode):
    table = parse_cost_table(params.get("cost_table"))
    if table is not None and params["price_per_gib_month"]:
        raise InvalidOption("price_per_gib_month", "give either price_per_gib_month or cost_table, not both")
    return RetentionSettings(
        orphan_grace=datetime.timedelta(seconds=parse_duration(params["orphan_grace"], "orphan_grace")),
        bypass_governance=params["bypass_governance"],
        accept_longer_locks=params["accept_longer_locks"],
        prices=price_table(params["price_per_gib_month"]),
        actor=params.get("audit_actor"),
        dry_run=check_mode,
        cost_table=table,
    )


def backup_retention(module):
    tenants, positions = selected_tenants(module.params)
    settings = settings_from(module.params, module.check_mode)
    store, keys = open_store_and_keys(module.params)
    module.metrics.label(store=store.kind, tenant=module.params.get("tenant"))
    run = RetentionRun(tenants, positions, store, keys, settings, module.metrics)
    try:
        result = run.execute(datetime.datetime.now(datetime.timezone.utc))
    finally:
        record_store_requests(store, module.metrics)
    if result["failures"]:
        error = KeelError("the store refused {0} deletion(s): {1}".format(
            len(result["failures"]), "; ".join(failure["error"] for failure in result["failures"])))
        error.details = result
        raise error
    return result


def main():
    module = KeelModule("backup_retention", argument_spec(), uses_postgres=False, supports_check_mode=True)
    module.require_libraries(backup_library_errors())
    module.run(backup_retention)


if __name__ == "__main__":
    main()
