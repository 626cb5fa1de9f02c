#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tenant_key_info
short_description: Report the state of tenants' backup encryption keys
version_added: 0.1.0
description:
  - Reports the key-encryption key of one tenant (O(tenant)) or of every tenant in O(tenants), that is whether it exists,
    its versions, which one is current, and whether it was shredded. Never key material.
  - Read-only; creates and changes nothing, in the key provider or anywhere else. To create, rotate or shred keys, use
    M(keel.postgres.tenant_key).
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.key_provider
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to show.
options:
  tenant:
    description:
      - Report only this tenant; 1-63 lower-case letters, digits, C(-) or C(_), starting with a letter or digit.
      - When unset, every tenant in O(tenants) is reported.
    type: str
  tenants:
    description:
      - The tenants to report when O(tenant) is unset, normally the C(keel_tenants) inventory variable passed through
        unchanged. Only each entry's C(name) is used; the other fields (the backup policy) are ignored here.
      - Not used when O(tenant) is set.
    type: list
    elements: dict
seealso:
  - module: keel.postgres.tenant_key
  - module: keel.postgres.backup_info
"""

EXAMPLES = r"""
- name: Show a tenant's key versions
  keel.postgres.tenant_key_info:
    tenant: acme
    key_provider: {type: file, directory: /etc/keel/keys}
  register: acme_key

- name: Which tenants have no usable key?
  keel.postgres.tenant_key_info:
    tenants: "{{ keel_tenants }}"
    key_provider:
      type: aws_kms
      region: eu-west-1
  register: key_report

- name: Fail when a tenant would back up without a key
  ansible.builtin.assert:
    that: key_report.tenant_keys | rejectattr('exists') | list | length == 0
"""

RETURN = r"""
tenant_keys:
  description:
    - The key of each tenant reported, in the order asked (one entry when O(tenant) is set).
  returned: always
  type: list
  elements: dict
  contains:
    tenant:
      description: The tenant.
      type: str
      sample: acme
    provider:
      description: V(file) or V(aws_kms).
      type: str
      sample: file
    exists:
      description: Whether the tenant has a usable key.
      type: bool
      sample: true
    shredded:
      description: Whether the key was shredded.
      type: bool
      sample: false
    shredded_at:
      description: When it was shredded (ISO 8601 UTC), if known.
      type: str
      sample: null
    current_key_id:
      description: The version new backups are wrapped with (C(v<N>) for files, a KMS key ARN for KMS); null without a key.
      type: str
      sample: v2
    versions:
      description:
        - Every version, oldest first, with C(key_id), C(created_at) and C(current).
        - After shredding, versions whose destruction has not completed yet (normally none).
      type: list
      elements: dict
      sample: [{key_id: v1, created_at: "2026-11-25T02:00:00Z", current: false}, {key_id: v2, created_at: "2026-12-01T02:00:00Z", current: true}]
key:
  description: The key of O(tenant), the same dict as the single entry of RV(tenant_keys).
  returned: when O(tenant) is set
  type: dict
  sample: {tenant: acme, provider: file, exists: true, shredded: false, shredded_at: null, current_key_id: v1,
           versions: [{key_id: v1, created_at: "2026-11-25T02:00:00Z", current: true}]}
metrics:
  description:
    - Wall time of the run and its phases in milliseconds, and counters.
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
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.key_info import describe_keys
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule


def argument_spec():
    return dict(
        tenant=dict(type="str"),
        tenants=dict(type="list", elements="dict"),
        key_provider=key_provider_option(required=True),
    )


def tenant_key_info(module):
    return describe_keys(module.params, module.metrics)


def main():
    module = KeelModule("tenant_key_info", argument_spec(), uses_postgres=False, supports_check_mode=True,
                        required_one_of=[("tenant", "tenants")])
    module.run(tenant_key_info)


if __name__ == "__main__":
    main()
