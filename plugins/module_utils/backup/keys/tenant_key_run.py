# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run of keel.postgres.tenant_key: check the request, act on the tenant's key, re-wrap, audit.

The module only declares its options; everything it decides lives here, as
plain Python the unit tests call directly:

* the request is checked before any provider or store is contacted
  (tenant name, shred confirmation, key material, ``rewrap`` needs ``store``);
* ``TenantKeyRun`` turns the key's state before into its state after, or in
  check mode into the predicted state, without touching the provider;
* ``rewrap`` re-wraps the tenant's backups with the current version
  (``keys.rewrap``);
* every run, failed ones included, yields one audit event, appended to the
  store as a write-once object when a store is given (never in check mode).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from typing import Any, Callable, Dict, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.audit import append_audit_event, audit_event
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import (
    DATA_KEY_BYTES,
    KeyProvider,
    KeyVersion,
    TenantKeyState,
    key_shredded,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.rewrap import Rewrapper, RewrapReport, report_facts
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import open_store
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError, KeyUnavailable
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

# state -> audit action
ACTIONS = {"present": "key_create", "rotated": "key_rotate", "shredded": "key_shred"}
STATES = tuple(ACTIONS)
REWRAP_STATES = ("present", "rotated")


# -- the request ------------------------------------------------------------------


def decode_material(encoded: Optional[str], provider_type: Optional[str], state: str) -> Optional[bytes]:
    """The key material as bytes, or None; the value itself never appears in an error."""
    if encoded is None:
        return None
    if provider_type != "file":
        raise InvalidOption("key_material", "is only for key_provider.type file: AWS KMS generates and keeps its own key material")
    if state != "present":
        raise InvalidOption("key_material", "is only used with state present, to create version 1")
    try:
        material = base64.b64decode("".join(str(encoded).split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidOption("key_material", "is not valid base64") from None
    if len(material) != DATA_KEY_BYTES:
        raise InvalidOption("key_material", "must be base64 of {0} bytes, got {1} bytes".format(DATA_KEY_BYTES, len(material)))
    return material


def check_confirmation(state: str, tenant: str, confirm_shred: Optional[str]) -> None:
    """Shredding is irreversible: refuse before the provider is even opened unless the tenant is named twice."""
    if state == "shredded" and confirm_shred != tenant:
        raise InvalidOption("confirm_shred", "must equal the tenant name ({0}) to shred its key: shredding makes every backup "
                            "of the tenant unreadable and cannot be undone".format(tenant))


def check_rewrap(rewrap: bool, state: str, has_store: bool) -> None:
    if not rewrap:
        return
    if state not in REWRAP_STATES:
        raise InvalidOption("rewrap", "is only used with state present or rotated, not {0}".format(state))
    if not has_store:
        raise InvalidOption("rewrap", "needs store: the re-wrapped data keys are written beside the backups in the store")


# -- predicted states (check mode) -----------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def predicted_key_id(provider: KeyProvider, tenant: str, number: int) -> str:
    # A KMS ARN is only known once KMS creates the key; its alias is known now.
    if provider.name == "file":
        return "v{0}".format(number)
    return "alias/{0}/{1}/v{2}".format(getattr(provider, "alias_prefix", "keel"), tenant, number)


def with_new_version(provider: KeyProvider, before: TenantKeyState) -> TenantKeyState:
    """What ``before`` becomes once one more version is added and made current (check mode)."""
    versions = [KeyVersion(key_id=v.key_id, created_at=v.created_at, current=False) for v in before.versions]
    versions.append(KeyVersion(key_id=predicted_key_id(provider, before.tenant, len(versions) + 1), created_at=_now(), current=True))
    return TenantKeyState(tenant=before.tenant, provider=before.provider, exists=True, versions=versions)


def with_latest_current(before: TenantKeyState) -> TenantKeyState:
    """A key whose `current` pointer was lost (an interrupted KMS run) gets its latest version back as current."""
    versions = [KeyVersion(key_id=v.key_id, created_at=v.created_at, current=index == len(before.versions) - 1)
                for index, v in enumerate(before.versions)]
    return TenantKeyState(tenant=before.tenant, provider=before.provider, exists=True, versions=versions)


def shredded_state(before: TenantKeyState) -> TenantKeyState:
    return TenantKeyState(tenant=before.tenant, provider=before.provider, exists=False, shredded=True,
                          shredded_at=before.shredded_at or _now())


def key_changed(before: TenantKeyState, after: TenantKeyState) -> bool:
    return before.as_dict() != after.as_dict()


class TenantKeyRun:
    """Decide from the key's state before, act unless in check mode; returns the state after (or predicted)."""

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
            return with_latest_current(before) if before.exists else with_new_version(self.provider, before)
        return self.provider.create(self.tenant, self.material)

    def _rotated(self, before: TenantKeyState) -> TenantKeyState:
        if before.shredded:
            raise key_shredded(self.tenant, before.shredded_at)
        if not before.exists:
            raise KeyUnavailable("tenant {0} has no key to rotate; create it first with state present".format(self.tenant))
        if self.check_mode:
            return with_new_version(self.provider, before)
        return self.provider.rotate(self.tenant)

    def _shredded(self, before: TenantKeyState) -> TenantKeyState:
        if not before.exists and not before.versions:
            return before  # already shredded (or never had a key): nothing left to destroy
        if self.check_mode:
            return shredded_state(before)
        return self.provider.shred(self.tenant)


# -- the audit event ----------------------------------------------------------------


class KeyAudit:
    """The one audit event of a run; appended to the store (write-once, no lock) when there is one and this is no check run."""

    def __init__(self, action: str, tenant: str, actor: Optional[str], check_mode: bool) -> None:
        self.action = action
        self.tenant = tenant
        self.actor = actor
        self.check_mode = check_mode
        self.store: Optional[ObjectStore] = None
        self.facts: Dict[str, Any] = {}

    def record(self, outcome: str, **facts: Any) -> Dict[str, Any]:
        details = dict(self.facts, **facts)
        event = audit_event(self.action, outcome, self.actor, tenant=self.tenant, **details)
        if self.store is None or self.check_mode:
            return event
        # tenant_key has no retention policy to take a lock from: write-once is the guarantee here.
        return append_audit_event(self.store, event, Lock())


# -- the run --------------------------------------------------------------------------


def run_tenant_key(params: Mapping[str, Any], check_mode: bool, diff: bool, metrics: Optional[RunMetrics] = None) -> Dict[str, Any]:
    """The whole module run; ``params`` are tenant_key's validated options. Raises KeelError with ``audit`` in details."""
    metrics = metrics or RunMetrics()
    state = params.get("state") or "present"
    tenant = params["tenant"]
    rewrap = bool(params.get("rewrap"))
    audit = KeyAudit(ACTIONS[state], tenant, params.get("audit_actor"), check_mode)
    provider_options = params["key_provider"]
    audit.facts["provider"] = provider_options.get("type")  # the provider's name, known before it is opened
    after: Optional[TenantKeyState] = None
    try:
        # The store first: once it is known to take objects, even a refused request is audited there.
        store = open_store(params["store"]) if params.get("store") else None
        if store is not None:
            # Before the key changes: an action whose audit event cannot be written does not happen.
            with metrics.phase("check_store"):
                store.check_ready(Lock())
            audit.store = store
        check_tenant_name(tenant)
        check_confirmation(state, tenant, params.get("confirm_shred"))
        material = decode_material(params.get("key_material"), provider_options.get("type"), state)
        check_rewrap(rewrap, state, store is not None)
        provider = open_key_provider(provider_options)
        with metrics.phase("describe"):
            before = provider.describe(tenant)
        with metrics.phase("key"):
            after = TenantKeyRun(provider, tenant, material, check_mode).run(state, before)
        report = _rewrap(store, provider, tenant, after, check_mode, metrics) if rewrap and store is not None else None
    except KeelError as exc:
        if after is not None and not check_mode:
            # The key action completed before the failure (listing backups to re-wrap): report what it did.
            current_version = after.current
            exc.details.setdefault("key", after.as_dict())
            audit.facts["key_id"] = current_version.key_id if current_version else None
        exc.details.setdefault("audit", audit.record("failed", error=exc.kind))
        raise
    changed = key_changed(before, after) or bool(report and report.changed)
    current = after.current
    facts: Dict[str, Any] = {"key_id": current.key_id if current else None}
    result: Dict[str, Any] = {"changed": changed, "key": after.as_dict()}
    if report is not None:
        result.update(report_facts(report))
        facts.update(rewrapped=list(report.rewrapped), rewrap_skipped=len(result["rewrap_skipped"]))
    if report is not None and report.failures:
        raise _rewrap_failed(report, result, audit, facts)
    outcome = ("check_mode" if check_mode else "changed") if changed else "unchanged"
    result["audit"] = audit.record(outcome, **facts)
    if diff:
        header = "tenant key {0}".format(tenant)
        result["diff"] = {"before": before.as_dict(), "after": after.as_dict(), "before_header": header, "after_header": header}
    return result


def _rewrap(store: ObjectStore, provider: KeyProvider, tenant: str, after: TenantKeyState, check_mode: bool,
            metrics: RunMetrics) -> RewrapReport:
    current = after.current
    if current is None:  # a present/rotated run always ends with a current version
        raise KeyUnavailable("tenant {0} has no current key version to re-wrap with".format(tenant))
    with metrics.phase("rewrap"):
        report = Rewrapper(store, provider, tenant, check_mode).run(current.key_id)
    metrics.count("rewrapped", len(report.rewrapped))
    return report


def _rewrap_failed(report: RewrapReport, result: Dict[str, Any], audit: KeyAudit, facts: Dict[str, Any]) -> KeelError:
    """Some authenticated backups could not be re-wrapped: the run fails, reporting what was done (the key action stands)."""
    first = report.failures[0]
    message = ("re-wrapping failed for {0} of tenant {1}'s backups (first, {2}: {3}); the key action itself completed, "
               "run again with state present and rewrap to finish")
    error = KeelError(message.format(len(report.failures), audit.tenant, first.backup_id, first.error.message))
    error.kind = first.error.kind
    error.details.update(result)
    error.details.pop("changed", None)
    error.details["audit"] = audit.record("failed", error=first.error.kind, **facts)
    return error
