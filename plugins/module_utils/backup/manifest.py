# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup manifest: what a backup holds and how to read it, written last and MAC'd.

A backup exists only once its manifest does. The MAC (HMAC-SHA256) uses a
key derived from the backup's data key, which only the tenant key can
unwrap: so a manifest cannot be forged or edited without the tenant key, and
checking one proves the tenant key still opens the backup.

The MAC covers every key of the document but ``mac`` itself, so fields added
later (``provenance``, see backup/provenance.py) are authenticated the same
way, without a version bump: a manifest written before they existed simply
lacks them and reads as null.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed

MANIFEST_FORMAT = "keel-backup-manifest"
MANIFEST_VERSION = 1
MAC_ALGORITHM = "HMAC-SHA256"


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def compute_mac(document: Mapping[str, Any], mac_key: bytes) -> str:
    body = {key: value for key, value in document.items() if key != "mac"}
    return hmac.new(mac_key, canonical_json(body), hashlib.sha256).hexdigest()


def seal_manifest(document: Dict[str, Any], mac_key: bytes) -> bytes:
    """The manifest's stored bytes: the document plus its MAC, as canonical JSON."""
    sealed = dict(document, format=MANIFEST_FORMAT, version=MANIFEST_VERSION)
    sealed["mac"] = {"algorithm": MAC_ALGORITHM, "value": compute_mac(sealed, mac_key)}
    return canonical_json(sealed) + b"\n"


def parse_manifest(raw: bytes, where: str) -> Dict[str, Any]:
    """Parse without trusting it yet: enough to find the wrapped key that authenticates it."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise IntegrityFailed("manifest {0} is not valid JSON: corrupted or not a keel manifest".format(where)) from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise IntegrityFailed("manifest {0} is not a keel backup manifest".format(where))
    if document.get("version") != MANIFEST_VERSION:
        raise IntegrityFailed("manifest {0} has unsupported version {1!r}".format(where, document.get("version")))
    return document


def wrapped_key_of(document: Mapping[str, Any], where: str) -> WrappedKey:
    try:
        return WrappedKey.from_dict(document["wrapped_key"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityFailed("manifest {0} has no usable wrapped data key".format(where)) from None


def verify_manifest(document: Mapping[str, Any], mac_key: bytes, where: str) -> None:
    mac = document.get("mac")
    if not isinstance(mac, dict) or mac.get("algorithm") != MAC_ALGORITHM or not isinstance(mac.get("value"), str):
        raise IntegrityFailed("manifest {0} carries no {1} MAC".format(where, MAC_ALGORITHM))
    if not hmac.compare_digest(mac["value"], compute_mac(document, mac_key)):
        raise IntegrityFailed("manifest {0} fails its MAC check: it was altered, or does not belong to this tenant's key".format(where))


def open_manifest(raw: bytes, where: str, unwrap: Callable[[WrappedKey], bytes],
                  mac_key_from: Callable[[bytes], bytes], expect: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, Any], bytes]:
    """Parse, unwrap the data key and check the MAC; ``expect`` pins fields such as tenant and backup_id.

    Returns the authenticated document and the backup's data key.
    """
    document = parse_manifest(raw, where)
    for name, value in (expect or {}).items():
        if document.get(name) != value:
            raise IntegrityFailed("manifest {0} says {1}={2!r}, expected {3!r}: it was moved or swapped".format(where, name, document.get(name), value))
    data_key = unwrap(wrapped_key_of(document, where))
    verify_manifest(document, mac_key_from(data_key), where)
    return document, data_key


def provenance_of(document: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The manifest's schema provenance, or None for a manifest written before it was recorded (or none at all)."""
    provenance = (document or {}).get("provenance")
    return provenance if isinstance(provenance, dict) else None
