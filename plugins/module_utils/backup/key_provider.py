# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every tenant key provider (local key file, AWS KMS) offers the backup engine.

A tenant key (key-encryption key, KEK) never leaves its provider's control in
a backup: each backup gets a fresh 256-bit data key, and only that data key,
wrapped by the tenant's current KEK version, is stored. Versions are kept on
rotation so older backups stay readable; shredding destroys every version,
which makes every backup of that tenant unreadable (crypto-shredding).

``context`` binds a wrapped key to where it belongs (tenant and backup id):
it is the AAD of a local wrap and the EncryptionContext of a KMS call, so a
wrapped key copied into another backup does not unwrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, KeyShredded

try:
    from typing import Protocol
except ImportError:  # Python < 3.8 on an old managed node
    Protocol = object  # type: ignore[assignment,misc]

DATA_KEY_BYTES = 32


def key_shredded(tenant: str, shredded_at: Optional[str]) -> KeyShredded:
    """The one wording of "this tenant was crypto-shredded", whichever provider noticed."""
    return KeyShredded("tenant {0}'s key was shredded at {1}: its backups are unreadable by design".format(tenant, shredded_at or "an unrecorded time"))


def unwrap_failed(tenant: str, version: str) -> IntegrityFailed:
    """A wrapped key that fails authentication: never a reason to try harder, always a refusal."""
    return IntegrityFailed("data key does not unwrap with tenant {0}'s key {1}: wrong tenant or altered backup".format(tenant, version))


@dataclass(frozen=True)
class WrappedKey:
    """A data key wrapped by one version of a tenant key."""

    provider: str  # "file" or "aws_kms"
    key_id: str  # the KEK version that wrapped it, e.g. "v3" or a KMS key ARN
    blob: bytes  # opaque to everyone but the provider

    def as_dict(self) -> Dict[str, str]:
        import base64

        return {"provider": self.provider, "key_id": self.key_id, "blob": base64.b64encode(self.blob).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WrappedKey":
        import base64

        return cls(provider=str(data["provider"]), key_id=str(data["key_id"]), blob=base64.b64decode(str(data["blob"])))


@dataclass
class KeyVersion:
    key_id: str
    created_at: Optional[str] = None  # ISO 8601 UTC
    current: bool = False


@dataclass
class TenantKeyState:
    """What a provider knows of one tenant's key: safe to return in results (no material)."""

    tenant: str
    provider: str
    exists: bool
    shredded: bool = False
    shredded_at: Optional[str] = None
    versions: List[KeyVersion] = field(default_factory=list)

    @property
    def current(self) -> Optional[KeyVersion]:
        for version in self.versions:
            if version.current:
                return version
        return None

    def as_dict(self) -> Dict[str, Any]:
        current = self.current
        return {
            "tenant": self.tenant,
            "provider": self.provider,
            "exists": self.exists,
            "shredded": self.shredded,
            "shredded_at": self.shredded_at,
            "current_key_id": current.key_id if current else None,
            "versions": [{"key_id": v.key_id, "created_at": v.created_at, "current": v.current} for v in self.versions],
        }


class KeyProvider(Protocol):
    """Implemented by ``keys.file_keys.FileKeyProvider`` and ``keys.kms_keys.KmsKeyProvider``.

    Errors: ``KeyShredded`` when the tenant's key was shredded, ``KeyUnavailable``
    when it does not exist or the provider fails, ``IntegrityFailed`` when a
    wrapped key does not unwrap (another tenant's key, altered blob or context).
    """

    name: str

    def describe(self, tenant: str) -> TenantKeyState: ...

    def create(self, tenant: str, material: Optional[bytes] = None) -> TenantKeyState:
        """Create version 1 (from ``material`` when given, 32 bytes). Idempotent: an existing key is left alone."""

    def rotate(self, tenant: str) -> TenantKeyState:
        """Add a new current version; older versions stay usable for unwrapping."""

    def shred(self, tenant: str) -> TenantKeyState:
        """Destroy every version, irreversibly, and remember that it was shredded."""

    def wrap(self, tenant: str, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Wrap with the current version."""

    def unwrap(self, tenant: str, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes: ...
