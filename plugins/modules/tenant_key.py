#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tenant_key
short_description: Create, rotate and crypto-shred a tenant's backup encryption key; re-wrap backups after a rotation
version_added: 0.1.0
description:
  - Manages the key-encryption key of one tenant in a local key directory or in AWS KMS (see O(key_provider)).
    M(keel.postgres.backup) wraps each backup's fresh data key with the tenant's current key version.
  - V(present) creates version 1 unless the tenant has a key; an existing key is never replaced.
  - V(rotated) adds a new current version. Older versions are kept, so every existing backup stays readable.
    It changes something on every run, by design; run it on a schedule or on demand, not in an idempotent baseline play.
  - V(shredded) destroys every version of the key, which makes every backup of the tenant unreadable for good
    (crypto-shredding), wherever copies of the backups are. It is irreversible and needs O(confirm_shred).
    A tenant that has no key is left alone.
    A shredded tenant never gets a new key silently; V(present) and V(rotated) then fail.
  - With O(rewrap), the data keys of the tenant's backups are re-wrapped with the current version and stored beside
    the backups, so a backup stays readable once the version that first wrapped it is retired.
    Locked backup data and manifests are never touched.
  - Every run yields an audit event, returned and, with O(store), appended to the store as a write-once object,
    failed runs included.
  - Results carry the key's state and the audit event; never key material.
    To only look at keys, use M(keel.postgres.tenant_key_info).
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.key_provider
  - keel.postgres.backup_store
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description:
      - Reports what would change, with the predicted key state and the backups that would be re-wrapped;
        creates, rotates, destroys and writes nothing.
  diff_mode:
    support: full
    description: The key's state (versions, current version, shredded) before and after; never key material.
options:
  tenant:
    description:
      - The tenant whose key is managed; 1-63 lower-case letters, digits, C(-) or C(_), starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(present) ensures a key exists, V(rotated) adds a version (always a change), V(shredded) destroys every version.
      - To report a key's state without changing it, use M(keel.postgres.tenant_key_info).
    type: str
    choices: [ present, rotated, shredded ]
    default: present
  key_material:
    description:
      - Base64 of exactly 32 bytes to use as version 1 of a new key, for example a secret kept in ansible-vault so the
        key can be recreated on another host.
      - Only with O(key_provider.type=file) and O(state=present). When the tenant already has a key, it must equal
        version 1, else the task fails; an existing key is never replaced.
      - Rotated versions are always generated on the host running the module.
    type: str
  confirm_shred:
    description:
      - Required with O(state=shredded) and must equal O(tenant), as a guard against shredding the wrong tenant.
        Shredding cannot be undone.
    type: str
  store:
    description:
      - The store holding the tenant's backups, as given to M(keel.postgres.backup). Optional here.
      - When set, the audit event of every run, failed runs included, is appended to it as a write-once JSON object
        under C(audit/) (not in check mode), and the store must be reachable before the key is changed.
      - Needed by O(rewrap), which writes the re-wrapped data keys into it.
      - When unset, the audit event is only returned.
    type: dict
    required: false
  rewrap:
    description:
      - After the key action (with O(state=present) or O(state=rotated)), re-wrap the data key of every backup of the
        tenant in O(store) that the current key version cannot unwrap yet, and store it as a write-once object
        C(<tenant>/backups/<backup_id>/keys/<digest>.json) beside the backup, with the lock mode and retain-until date
        of the backup's data object. Backup data and manifests are never changed.
      - Only backups whose manifest authenticates are re-wrapped; the others are reported in RV(rewrap_skipped).
      - Idempotent; a run that was interrupted, or whose re-wrap failed, is finished with O(state=present) and O(rewrap=true).
      - Needs O(store). With V(aws_kms), one C(kms:Decrypt) per backup listed and one C(kms:Decrypt) and C(kms:Encrypt) per
        backup re-wrapped.
    type: bool
    default: false
  audit_actor:
    description:
      - Who is acting, recorded in the audit event, for example the AWX user and job id.
      - Defaults to C(user@host) of the process running the module.
    type: str
notes:
  - With O(key_provider.type=file), shredding overwrites each key file with random bytes before removing it and leaves
    a C(SHREDDED) tombstone. On SSDs, copy-on-write filesystems and snapshotted volumes the old bytes may survive
    overwriting; keep the key directory off snapshots and backups other than your key escrow.
  - With O(key_provider.type=aws_kms), shredding disables every version at once and schedules its deletion after the
    shortest window KMS allows (7 days). Until then KMS lets an administrator cancel the deletion; afterwards KMS keeps
    no trace of the tenant's keys, so keep the audit event (pass O(store)).
  - A version may be retired (its key file or KMS key removed) once a run with O(rewrap) re-wrapped every backup it wrapped;
    M(keel.postgres.backup_info) with O(keel.postgres.backup_info#module:read_data=true) proves those backups still read.
seealso:
  - module: keel.postgres.tenant_key_info
  - module: keel.postgres.backup
  - module: keel.postgres.backup_info
"""

EXAMPLES = r"""
- name: Make sure every tenant has a key in KMS
  keel.postgres.tenant_key:
    tenant: "{{ item.name }}"
    key_provider:
      type: aws_kms
      region: eu-west-1
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
  loop: "{{ keel_tenants }}"
  loop_control:
    label: "{{ item.name }}"

- name: Create a local key from material kept in ansible-vault
  keel.postgres.tenant_key:
    tenant: acme
    key_provider: {type: file, directory: /etc/keel/keys}
    key_material: "{{ vault_acme_key_b64 }}"

- name: Rotate the key of one tenant (changes on every run) and re-wrap its backups' data keys
  keel.postgres.tenant_key:
    tenant: acme
    state: rotated
    rewrap: true
    key_provider: {type: file, directory: /etc/keel/keys}
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    audit_actor: "{{ awx_user_name | default('ops') }}"
  register: rotation

- name: Finish re-wrapping after an interrupted rotation (idempotent)
  keel.postgres.tenant_key:
    tenant: acme
    rewrap: true
    key_provider: {type: file, directory: /etc/keel/keys}
    store: {type: s3, bucket: acme-backups, region: eu-west-1}

- name: Crypto-shred a departed tenant; its backups become unreadable
  keel.postgres.tenant_key:
    tenant: initech
    state: shredded
    confirm_shred: initech
    key_provider:
      type: aws_kms
      region: eu-west-1
    store: {type: s3, bucket: initech-backups, region: eu-west-1}
  register: shred
"""

RETURN = r"""
key:
  description: The tenant's key after this run (predicted in check mode). Never includes key material.
  returned: always
  type: dict
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
      description: The version new backups are wrapped with (C(v<N>) for files, a KMS key ARN for KMS).
      type: str
      sample: v2
    versions:
      description:
        - Every version, oldest first, with C(key_id), C(created_at) and C(current).
        - After shredding, versions whose destruction has not completed yet (normally none).
      type: list
      elements: dict
      sample: [{key_id: v1, created_at: "2026-11-25T02:00:00Z", current: false}, {key_id: v2, created_at: "2026-12-01T02:00:00Z", current: true}]
rewrapped:
  description:
    - Ids of the backups whose data key was re-wrapped with the current version by this run (would be, in check mode),
      oldest first. Backups the current version can already unwrap are not listed.
  returned: when O(rewrap=true)
  type: list
  elements: str
  sample: ["20261125T020000Z-3f9a1c2b"]
rewrap_skipped:
  description:
    - Backups that were not re-wrapped, with C(backup_id) and C(reason), for example a manifest that does not
      authenticate (C(mac_status) of M(keel.postgres.backup_info)) or a failed write.
  returned: when O(rewrap=true)
  type: list
  elements: dict
  sample: [{backup_id: "20261120T020000Z-0a1b2c3d", reason: "manifest not authenticated (key_unavailable): tenant acme has no key v1"}]
audit:
  description:
    - The audit event of this run; C(outcome) is V(changed), V(unchanged), V(check_mode) (would change) or V(failed)
      (also returned with a failure, with C(error), the error kind).
    - With O(store) and not in check mode, C(audit_object) is the event's key in the store, or C(audit_error) says
      why it could not be written.
  returned: always
  type: dict
  sample: {action: key_rotate, outcome: changed, tenant: acme, at: "2026-12-01T02:00:00+00:00", actor: "deploy@ops1", provider: file,
           key_id: v2, rewrapped: ["20261125T020000Z-3f9a1c2b"], rewrap_skipped: 0,
           audit_object: "audit/2026/12/01/20261201T020000000000Z-key_rotate-9f8e7d6c.json"}
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
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.tenant_key_run import STATES, run_tenant_key
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import store_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule


def argument_spec():
    return dict(
        tenant=dict(type="str", required=True),
        state=dict(type="str", choices=list(STATES), default="present"),
        key_provider=key_provider_option(required=True),
        key_material=dict(type="str", no_log=True),
        confirm_shred=dict(type="str"),
        store=dict(type="dict", required=False, options=store_argument_spec()),
        rewrap=dict(type="bool", default=False),
        audit_actor=dict(type="str"),
    )


def tenant_key(module):
    return run_tenant_key(module.params, module.check_mode, module._diff, module.metrics)


def main():
    module = KeelModule("tenant_key", argument_spec(), uses_postgres=False, supports_check_mode=True)
    module.run(tenant_key)


if __name__ == "__main__":
    main()
