# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tenant keys held by AWS KMS: the key material never leaves KMS.

One symmetric KMS key per tenant key version, found through aliases::

    alias/<alias_prefix>/<tenant>/v1, v2, ...   one per version, never moved
    alias/<alias_prefix>/<tenant>/current       the version new backups are wrapped with

Keys are tagged ``keel:tenant`` and ``keel:version`` so they can be found and
billed even without the aliases. Shredding tags ``keel:shredded-at``,
disables every version and schedules its deletion with the shortest pending
window KMS allows (7 days); KMS then deletes the keys and their aliases, and
every backup of the tenant stays unreadable for good. Until then an operator
with kms:CancelKeyDeletion could still undo it: that window is KMS's, not ours.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.aws_client import BOTO3_IMPORT_ERROR, aws_client
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import (
    DATA_KEY_BYTES,
    KeyVersion,
    TenantKeyState,
    WrappedKey,
    key_shredded,
    unwrap_failed,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption, KeyShredded, KeyUnavailable

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # KmsKeyProvider() reports the missing boto3 before any call could raise these

    class BotoCoreError(Exception):  # type: ignore[no-redef]
        """Stand-in: never raised without botocore."""

    class ClientError(Exception):  # type: ignore[no-redef]
        response: Mapping[str, Any] = {}

PROVIDER_NAME = "aws_kms"
PENDING_WINDOW_DAYS = 7  # the minimum KMS accepts
TAG_TENANT = "keel:tenant"
TAG_VERSION = "keel:version"
TAG_SHREDDED_AT = "keel:shredded-at"
UNUSABLE_STATES = ("Disabled", "PendingDeletion")
# Alias names allow [A-Za-z0-9/_-]; "aws/" is reserved for AWS managed keys.
_ALIAS_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
# Versions are probed v1, v2, ... until one is missing; this bounds a runaway loop.
_MAX_VERSIONS = 1000
_INTEGRITY_CODES = ("InvalidCiphertextException", "IncorrectKeyException")
_STATE_CODES = ("DisabledException", "KMSInvalidStateException")


def check_alias_prefix(prefix: object, field: str = "key_provider.alias_prefix") -> str:
    if not isinstance(prefix, str) or not _ALIAS_PREFIX.match(prefix) or prefix.lower().split("/")[0] == "aws":
        raise InvalidOption(field, "{0!r} is not a usable KMS alias prefix: use letters, digits, '_', '-' and '/', not starting with 'aws'".format(prefix))
    return prefix


def encryption_context(tenant: str, context: Mapping[str, str]) -> Dict[str, str]:
    """KMS EncryptionContext: every key prefixed ``keel:``, the tenant always present."""
    if context.get("tenant", tenant) != tenant:
        # The engine's context repeats the tenant; a different one would rebind the key: a bug, not user input.
        raise ValueError("context tenant {0!r} is not {1!r}".format(context["tenant"], tenant))
    merged = {TAG_TENANT: tenant}
    merged.update({"keel:" + name: str(value) for name, value in context.items()})
    return merged


def _iso(value: Any) -> Optional[str]:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KmsCallFailed(KeyUnavailable):
    """A KMS API call failed; ``code`` is AWS's error code, for the callers that expect some of them."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__("AWS KMS {0} failed: {1}".format(operation, code), cause=message or None)
        self.code = code


class KmsKeyProvider:
    """KeyProvider over AWS KMS (or an API-compatible endpoint)."""

    name = PROVIDER_NAME

    def __init__(self, options: Mapping[str, Any], client: Any = None) -> None:
        self.alias_prefix = check_alias_prefix(options.get("alias_prefix") or "keel")
        if client is None:
            if BOTO3_IMPORT_ERROR is not None:
                raise KeyUnavailable("key_provider.type aws_kms needs boto3 on the host running the module", cause=BOTO3_IMPORT_ERROR)
            client = aws_client("kms", options)
        self.kms = client

    # -- KMS calls, with errors translated -------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Dict[str, Any]:
        """One KMS API call; any failure becomes KeyUnavailable naming the operation and error code.

        Only the code and AWS's message are kept: they name keys and
        permissions, never credentials, which stay inside botocore.
        """
        try:
            return getattr(self.kms, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise KmsCallFailed(operation, str(error.get("Code", "ClientError")), str(error.get("Message", ""))) from None
        except BotoCoreError as exc:  # endpoint unreachable, credentials not found, ...
            raise KmsCallFailed(operation, type(exc).__name__, str(exc)) from None

    def _alias(self, tenant: str, suffix: str) -> str:
        return "alias/{0}/{1}/{2}".format(self.alias_prefix, check_tenant_name(tenant), suffix)

    def _describe_key(self, key_id: str) -> Optional[Dict[str, Any]]:
        """KeyMetadata of a key or alias, None when it does not exist."""
        try:
            return self._call("describe_key", KeyId=key_id)["KeyMetadata"]
        except KmsCallFailed as exc:
            if exc.code == "NotFoundException":
                return None
            raise

    def _versions(self, tenant: str) -> List[Tuple[int, Dict[str, Any]]]:
        """(number, KeyMetadata) of v1, v2, ... in order.

        Probing aliases costs one call per version but, unlike ListAliases,
        does not page through every alias in the account.
        """
        found = []
        for number in range(1, _MAX_VERSIONS + 1):
            metadata = self._describe_key(self._alias(tenant, "v{0}".format(number)))
            if metadata is None:
                break
            found.append((number, metadata))
        return found

    # -- KeyProvider ------------------------------------------------------------

    def describe(self, tenant: str) -> TenantKeyState:
        versions = self._versions(tenant)
        if not versions:
            # After the pending window KMS deletes keys and aliases alike: no trace is left here,
            # so a tenant shredded more than 7 days ago looks like one that never had a key.
            return TenantKeyState(tenant=tenant, provider=self.name, exists=False)
        if all(metadata["KeyState"] in UNUSABLE_STATES for _number, metadata in versions):
            # Versions not yet pending deletion are what a repeated shred still has to finish.
            leftovers = [KeyVersion(key_id=metadata["Arn"], created_at=_iso(metadata.get("CreationDate")))
                         for _number, metadata in versions if metadata["KeyState"] != "PendingDeletion"]
            return TenantKeyState(tenant=tenant, provider=self.name, exists=False, shredded=True,
                                  shredded_at=self._shredded_at(versions[-1][1]), versions=leftovers)
        current = self._describe_key(self._alias(tenant, "current"))
        current_arn = current["Arn"] if current else None
        return TenantKeyState(
            tenant=tenant,
            provider=self.name,
            exists=True,
            versions=[KeyVersion(key_id=metadata["Arn"], created_at=_iso(metadata.get("CreationDate")), current=metadata["Arn"] == current_arn)
                      for _number, metadata in versions],
        )

    def _shredded_at(self, metadata: Mapping[str, Any]) -> Optional[str]:
        tags = self._call("list_resource_tags", KeyId=metadata["KeyId"]).get("Tags", [])
        for tag in tags:
            if tag.get("TagKey") == TAG_SHREDDED_AT:
                return str(tag.get("TagValue"))
        return None  # disabled by hand, not by shred(): when is unknown

    def create(self, tenant: str, material: Optional[bytes] = None) -> TenantKeyState:
        if material is not None:
            raise InvalidOption("key_material", "is only for key_provider.type file: AWS KMS generates and keeps its own key material")
        state = self.describe(tenant)
        if state.shredded:
            raise key_shredded(tenant, state.shredded_at)
        if not state.exists:
            metadata = self._create_version(tenant, 1)
            self._point_current(tenant, metadata["KeyId"], exists=False)
        elif state.current is None:
            # An earlier run stopped between creating a version and pointing `current` at it.
            latest = self._versions(tenant)[-1][1]
            self._point_current(tenant, latest["KeyId"], exists=self._describe_key(self._alias(tenant, "current")) is not None)
        return self.describe(tenant)

    def rotate(self, tenant: str) -> TenantKeyState:
        state = self._usable_state(tenant)
        number = len(state.versions) + 1
        metadata = self._create_version(tenant, number)
        self._point_current(tenant, metadata["KeyId"], exists=self._describe_key(self._alias(tenant, "current")) is not None)
        return self.describe(tenant)

    def _usable_state(self, tenant: str) -> TenantKeyState:
        state = self.describe(tenant)
        if state.shredded:
            raise key_shredded(tenant, state.shredded_at)
        if not state.exists:
            raise KeyUnavailable("tenant {0} has no key in AWS KMS (no alias {1}); create it first (keel.postgres.tenant_key state=present)".format(
                tenant, self._alias(tenant, "v1")))
        return state

    def _create_version(self, tenant: str, number: int) -> Dict[str, Any]:
        metadata = self._call(
            "create_key",
            Description="keel.postgres key of tenant {0}, version {1}".format(tenant, number),
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
            Tags=[{"TagKey": TAG_TENANT, "TagValue": tenant}, {"TagKey": TAG_VERSION, "TagValue": str(number)}],
        )["KeyMetadata"]
        try:
            self._call("create_alias", AliasName=self._alias(tenant, "v{0}".format(number)), TargetKeyId=metadata["KeyId"])
        except KmsCallFailed:
            # Usually a concurrent run took this version number: don't leave an unreachable key behind.
            self._call("schedule_key_deletion", KeyId=metadata["KeyId"], PendingWindowInDays=PENDING_WINDOW_DAYS)
            raise
        return metadata

    def _point_current(self, tenant: str, key_id: str, exists: bool) -> None:
        operation = "update_alias" if exists else "create_alias"
        self._call(operation, AliasName=self._alias(tenant, "current"), TargetKeyId=key_id)

    def shred(self, tenant: str) -> TenantKeyState:
        """Tag, disable and schedule deletion of every version (tags first: KMS refuses them once pending)."""
        versions = self._versions(tenant)
        pending = [metadata for _number, metadata in versions if metadata["KeyState"] != "PendingDeletion"]
        if not pending:
            return self.describe(tenant)
        shredded_at = _now_iso()
        for metadata in pending:
            self._call("tag_resource", KeyId=metadata["KeyId"], Tags=[{"TagKey": TAG_SHREDDED_AT, "TagValue": shredded_at}])
        # Disabling is immediate; deletion waits out the window. Disable all before scheduling any,
        # so no new backup can be wrapped with a version while the others are being handled.
        for metadata in pending:
            if metadata["KeyState"] != "Disabled":
                self._call("disable_key", KeyId=metadata["KeyId"])
        for metadata in pending:
            self._call("schedule_key_deletion", KeyId=metadata["KeyId"], PendingWindowInDays=PENDING_WINDOW_DAYS)
        return self.describe(tenant)

    def _refuse_unusable(self, tenant: str, metadata: Mapping[str, Any]) -> None:
        """A disabled or deleted key: shredded if the whole tenant is, else a plain outage to fix."""
        state = self.describe(tenant)
        if state.shredded:
            raise key_shredded(tenant, state.shredded_at)
        raise KeyUnavailable("tenant {0}'s AWS KMS key {1} is {2}; enable it (or cancel its deletion) to use it".format(
            tenant, metadata.get("Arn"), metadata.get("KeyState")))

    def wrap(self, tenant: str, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError("a data key is {0} bytes, got {1}".format(DATA_KEY_BYTES, len(data_key)))
        encryption = encryption_context(tenant, context)
        metadata = self._describe_key(self._alias(tenant, "current"))
        if metadata is None:
            self._usable_state(tenant)  # shredded, or never created: say which
            raise KeyUnavailable("tenant {0} has versions but no alias {1}; run keel.postgres.tenant_key state=present to repair it".format(
                tenant, self._alias(tenant, "current")))
        if metadata["KeyState"] != "Enabled":
            self._refuse_unusable(tenant, metadata)
        try:
            response = self._call("encrypt", KeyId=metadata["Arn"], Plaintext=data_key, EncryptionContext=encryption)
        except KmsCallFailed as exc:
            if exc.code in _STATE_CODES:
                self._refuse_unusable(tenant, metadata)  # disabled between our check and the call
            raise
        return WrappedKey(provider=self.name, key_id=str(response.get("KeyId") or metadata["Arn"]), blob=response["CiphertextBlob"])

    def unwrap(self, tenant: str, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        if wrapped.provider != self.name:
            raise KeyUnavailable("this data key was wrapped by the {0!r} key provider, not {1!r}".format(wrapped.provider, self.name))
        encryption = encryption_context(tenant, context)
        metadata = self._describe_key(wrapped.key_id)
        if metadata is None:
            raise KeyShredded("tenant {0}'s AWS KMS key {1} no longer exists (deleted after shredding, or outside keel): "
                              "backups wrapped with it are unreadable by design".format(tenant, wrapped.key_id))
        version = self._version_of(tenant, metadata)
        if metadata["KeyState"] != "Enabled":
            # Checked here too because KMS API look-alikes (moto) decrypt with disabled keys.
            self._refuse_unusable(tenant, metadata)
        try:
            response = self._call("decrypt", CiphertextBlob=wrapped.blob, KeyId=metadata["Arn"], EncryptionContext=encryption)
        except KmsCallFailed as exc:
            if exc.code in _INTEGRITY_CODES:
                raise unwrap_failed(tenant, version) from None
            if exc.code in _STATE_CODES:
                self._refuse_unusable(tenant, metadata)
            raise
        return bytes(response["Plaintext"])

    def _version_of(self, tenant: str, metadata: Mapping[str, Any]) -> str:
        """``v<N>`` when the key is one of the tenant's versions; IntegrityFailed when it belongs to nobody or someone else."""
        prefix = self._alias(tenant, "v")
        aliases = self._call("list_aliases", KeyId=metadata["KeyId"]).get("Aliases", [])
        for alias in aliases:
            name = str(alias.get("AliasName", ""))
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                return "v" + name[len(prefix):]
        raise IntegrityFailed("data key was wrapped by AWS KMS key {0}, which is not one of tenant {1}'s key versions: "
                              "wrong tenant or altered backup".format(metadata.get("Arn"), tenant))
