#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tenant_key
short_description: Create, rotate, inspect and crypto-shred a tenant's backup encryption key
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
  - V(info) only reports the key's state.
  - Results carry the key's state and an audit event; never key material.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.key_provider
attributes:
  check_mode:
    support: full
    description: Reports what would change, with the predicted key state; creates, rotates and destroys nothing.
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
      - V(present) ensures a key exists, V(rotated) adds a version (always a change), V(shredded) destroys every
        version, V(info) reports only.
    type: str
    choices: [ present, rotated, shredded, info ]
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
  audit_actor:
    description:
      - Who is acting, recorded in the returned audit event, for example the AWX user and job id.
      - Defaults to C(user@host) of the process running the module.
    type: str
notes:
  - With O(key_provider.type=file), shredding overwrites each key file with random bytes before removing it and leaves
    a C(SHREDDED) tombstone. On SSDs, copy-on-write filesystems and snapshotted volumes the old bytes may survive
    overwriting; keep the key directory off snapshots and backups other than your key escrow.
  - With O(key_provider.type=aws_kms), shredding disables every version at once and schedules its deletion after the
    shortest window KMS allows (7 days). Until then KMS lets an administrator cancel the deletion; afterwards KMS keeps
    no trace of the tenant's keys, so keep the returned audit event.
seealso:
  - module: keel.postgres.backup
"""

EXAMPLES = r"""
- name: Make sure every tenant has a key in KMS
  keel.postgres.tenant_key:
    tenant: "{{ item.name }}"
    key_provider:
      type: aws_kms
      region: eu-west-1
  loop: "{{ keel_tenants }}"
  loop_control:
    label: "{{ item.name }}"

- name: Create a local key from material kept in ansible-vault
  keel.postgres.tenant_key:
    tenant: acme
    key_provider: {type: file, directory: /etc/keel/keys}
    key_material: "{{ vault_acme_key_b64 }}"

- name: Rotate the key of one tenant (changes on every run)
  keel.postgres.tenant_key:
    tenant: acme
    state: rotated
    key_provider: {type: file, directory: /etc/keel/keys}

- name: Crypto-shred a departed tenant; its backups become unreadable
  keel.postgres.tenant_key:
    tenant: initech
    state: shredded
    confirm_shred: initech
    key_provider:
      type: aws_kms
      region: eu-west-1
  register: shred

- name: Show a tenant's key versions
  keel.postgres.tenant_key:
    tenant: acme
    state: info
    key_provider: {type: file, directory: /etc/keel/keys}
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
audit:
  description:
    - The audit event of this run, for the audit log; C(outcome) is V(changed), V(unchanged), V(check_mode)
      (would change) or V(failed) (also returned with a failure).
  returned: always
  type: dict
  sample: {action: key_rotate, outcome: changed, tenant: acme, at: "2026-12-01T02:00:00+00:00", actor: "deploy@ops1", provider: file, key_id: v2}
metrics:
  description: Wall time of the run in milliseconds.
  returned: always
  type: dict
"""

import base64
import binascii
import datetime
from typing import Any, Callable, Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.audit import audit_event
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import (
    DATA_KEY_BYTES,
    KeyProvider,
    KeyVersion,
    TenantKeyState,
    key_shredded,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import key_provider_option, open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError, KeyUnavailable
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule

ACTIONS = {"present": "key_create", "rotated": "key_rotate", "shredded": "key_shred", "info": "key_info"}


def argument_spec() -> Dict[str, Any]:
    return dict(
        tenant=dict(type="str", required=True),
        state=dict(type="str", choices=list(ACTIONS), default="present"),
        key_provider=key_provider_option(required=True),
        key_material=dict(type="str", no_log=True),
        confirm_shred=dict(type="str"),
        audit_actor=dict(type="str"),
    )


def decode_material(params: Dict[str, Any]) -> Optional[bytes]:
    """The key material as bytes, or None; the value itself never appears in an error."""
    encoded = params.get("key_material")
    if encoded is None:
        return None
    if params["key_provider"]["type"] != "file":
        raise InvalidOption("key_material", "is only for key_provider.type file: AWS KMS generates and keeps its own key material")
    if params["state"] != "present":
        raise InvalidOption("key_material", "is only used with state present, to create version 1")
    try:
        material = base64.b64decode("".join(str(encoded).split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidOption("key_material", "is not valid base64") from None
    if len(material) != DATA_KEY_BYTES:
        raise InvalidOption("key_material", "must be base64 of {0} bytes, got {1} bytes".format(DATA_KEY_BYTES, len(material)))
    return material


def check_confirmation(params: Dict[str, Any]) -> None:
    """Shredding is irreversible: refuse before the provider is even opened unless the tenant is named twice."""
    if params["state"] == "shredded" and params.get("confirm_shred") != params["tenant"]:
        raise InvalidOption("confirm_shred", "must equal the tenant name ({0}) to shred its key: shredding makes every backup "
                            "of the tenant unreadable and cannot be undone".format(params["tenant"]))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _predicted_key_id(provider: KeyProvider, tenant: str, number: int) -> str:
    # A KMS ARN is only known once KMS creates the key; its alias is known now.
    if provider.name == "file":
        return "v{0}".format(number)
    return "alias/{0}/{1}/v{2}".format(getattr(provider, "alias_prefix", "keel"), tenant, number)


def _with_new_version(provider: KeyProvider, before: TenantKeyState) -> TenantKeyState:
    """What ``before`` becomes once one more version is added and made current (check mode)."""
    versions = [KeyVersion(key_id=v.key_id, created_at=v.created_at, current=False) for v in before.versions]
    versions.append(KeyVersion(key_id=_predicted_key_id(provider, before.tenant, len(versions) + 1), created_at=_now(), current=True))
    return TenantKeyState(tenant=before.tenant, provider=before.provider, exists=True, versions=versions)


def _with_latest_current(before: TenantKeyState) -> TenantKeyState:
    """A key whose `current` pointer was lost (an interrupted KMS run) gets its latest version back as current."""
    versions = [KeyVersion(key_id=v.key_id, created_at=v.created_at, current=index == len(before.versions) - 1)
                for index, v in enumerate(before.versions)]
    return TenantKeyState(tenant=before.tenant, provider=before.provider, exists=True, versions=versions)


def _shredded_state(before: TenantKeyState) -> TenantKeyState:
    return TenantKeyState(tenant=before.tenant, provider=before.provider, exists=False, shredded=True,
                          shredded_at=before.shredded_at or _now())


class TenantKeyRun:
    """One run of the module: decide from the key's state before, act unless in check mode."""

    def __init__(self, provider: KeyProvider, tenant: str, material: Optional[bytes], check_mode: bool) -> None:
        self.provider = provider
        self.tenant = tenant
        self.material = material
        self.check_mode = check_mode

    def run(self, state: str, before: TenantKeyState) -> TenantKeyState:
        handlers: Dict[str, Callable[[TenantKeyState], TenantKeyState]] = {
            "present": self._present,
            "rotated": self._rotated,
            "shredded": self._shredded,
            "info": lambda current: current,
        }
        return handlers[state](before)

    def _present(self, before: TenantKeyState) -> TenantKeyState:
        if before.shredded:
            raise key_shredded(self.tenant, before.shredded_at)
        if self.material is not None and isinstance(self.provider, FileKeyProvider):
            # Checked in check mode too: the real run would refuse different material.
            self.provider.check_material(self.tenant, self.material)
        if before.exists and before.current is not None:
            return before
        if self.check_mode:
            return _with_latest_current(before) if before.exists else _with_new_version(self.provider, before)
        return self.provider.create(self.tenant, self.material)

    def _rotated(self, before: TenantKeyState) -> TenantKeyState:
        if before.shredded:
            raise key_shredded(self.tenant, before.shredded_at)
        if not before.exists:
            raise KeyUnavailable("tenant {0} has no key to rotate; create it first with state present".format(self.tenant))
        if self.check_mode:
            return _with_new_version(self.provider, before)
        return self.provider.rotate(self.tenant)

    def _shredded(self, before: TenantKeyState) -> TenantKeyState:
        if not before.exists and not before.versions:
            return before  # already shredded (or never had a key): nothing left to destroy
        if self.check_mode:
            return _shredded_state(before)
        return self.provider.shred(self.tenant)


def key_changed(before: TenantKeyState, after: TenantKeyState) -> bool:
    return before.as_dict() != after.as_dict()


def tenant_key(module: KeelModule) -> Dict[str, Any]:
    params = module.params
    state = params["state"]
    tenant = params["tenant"]
    event: Dict[str, Any] = {"action": ACTIONS[state], "tenant": tenant, "actor": params.get("audit_actor")}
    try:
        check_tenant_name(tenant)
        check_confirmation(params)
        material = decode_material(params)
        provider = open_key_provider(params["key_provider"])
        event["provider"] = provider.name
        before = provider.describe(tenant)
        after = TenantKeyRun(provider, tenant, material, module.check_mode).run(state, before)
    except KeelError as exc:
        exc.details.setdefault("audit", _audit(event, "failed", error=exc.kind))
        raise
    changed = key_changed(before, after)
    outcome = ("check_mode" if module.check_mode else "changed") if changed else "unchanged"
    current = after.current
    result: Dict[str, Any] = {
        "changed": changed,
        "key": after.as_dict(),
        "audit": _audit(event, outcome, key_id=current.key_id if current else None),
    }
    if module._diff:
        result["diff"] = {"before": before.as_dict(), "after": after.as_dict(),
                          "before_header": "tenant key {0}".format(tenant), "after_header": "tenant key {0}".format(tenant)}
    return result


def _audit(event: Dict[str, Any], outcome: str, **facts: Any) -> Dict[str, Any]:
    details = {name: value for name, value in event.items() if name not in ("action", "tenant", "actor")}
    details.update(facts)
    return audit_event(event["action"], outcome, event["actor"], tenant=event["tenant"], **details)


def main() -> None:
    module = KeelModule("tenant_key", argument_spec(), uses_postgres=False, supports_check_mode=True)
    module.run(tenant_key)


if __name__ == "__main__":
    main()
