# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification records that prove who wrote them.

restore_verify leaves one JSON record per verification beside the backup, and
the restore success KPI counts them. A bucket writer without the tenant key
could otherwise add records saying ``passed`` and lift the KPI. A record of a
backup whose manifest was opened carries an HMAC-SHA256 under a key derived
from that backup's data key (``derive_record_mac_key``), so only a holder of
the tenant key can write a record that checks. A record written without one
(the data key could not be obtained: key shredded, manifest damaged) is always
a failure, and a forged failure can only lower the KPI.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Dict, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import canonical_json
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError

MAC_ALGORITHM = "HMAC-SHA256"


def read_record(store: Any, key: str) -> Optional[Dict[str, Any]]:
    """The record stored at ``key``, or None when it cannot be read or is not a JSON object (it proves nothing)."""
    try:
        record = json.loads(store.get_bytes(key).decode("utf-8"))
    except (KeelError, ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def seal_record(record: Mapping[str, Any], mac_key: Optional[bytes]) -> bytes:
    """The record's stored bytes: canonical JSON, with a ``mac`` when ``mac_key`` is given."""
    sealed: Dict[str, Any] = {key: value for key, value in record.items() if key != "mac"}
    if mac_key is not None:
        sealed["mac"] = {"algorithm": MAC_ALGORITHM, "value": _mac(sealed, mac_key)}
    return canonical_json(sealed) + b"\n"


def record_is_authentic(record: Mapping[str, Any], mac_key: bytes) -> bool:
    """True when the record carries an HMAC that checks under ``mac_key`` (the record as read, other fields untouched)."""
    mac = record.get("mac")
    if not isinstance(mac, dict) or mac.get("algorithm") != MAC_ALGORITHM or not isinstance(mac.get("value"), str):
        return False
    body = {key: value for key, value in record.items() if key != "mac"}
    return hmac.compare_digest(mac["value"], _mac(body, mac_key))


def as_authenticated(record: Mapping[str, Any], mac_key: Optional[bytes]) -> Dict[str, Any]:
    """``record`` itself, or, for a ``passed`` record that cannot be proven, an ``unauthenticated`` failure in its place.

    ``mac_key`` None means the backup's key could not be had (shredded, manifest damaged): its passes prove nothing.
    Other outcomes are failures already and are returned as they are.
    """
    if record.get("outcome") != "passed" or (mac_key is not None and record_is_authentic(record, mac_key)):
        return dict(record)
    return {
        "outcome": "unauthenticated",
        "at": record.get("at"),
        "tier": record.get("tier"),
        "reason": "its MAC does not check under the backup's key" if mac_key is not None else "its backup's key cannot be read",
    }


def _mac(body: Mapping[str, Any], mac_key: bytes) -> str:
    return hmac.new(mac_key, canonical_json(body), hashlib.sha256).hexdigest()
