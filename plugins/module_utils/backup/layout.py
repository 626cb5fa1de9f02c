# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where each object of a backup lives in a store, relative to the store's prefix.

    <tenant>/backups/<backup_id>/data.kbk            the encrypted stream
    <tenant>/backups/<backup_id>/manifest.json       written last: a backup without it does not exist
    <tenant>/backups/<backup_id>/keys/<key_id>.json  data key re-wrapped after a tenant key rotation
    <tenant>/verifications/<backup_id>/<at>.json     restore verification outcomes
    audit/<yyyy>/<mm>/<dd>/<at>-<action>-<rand>.json one audit event per object

Backup ids sort by time (``20261125T172200Z-3f9a1c2b``), so listing a tenant's
backups in key order lists them oldest first.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
from typing import Optional

DATA_NAME = "data.kbk"
MANIFEST_NAME = "manifest.json"
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_backup_id(now: datetime.datetime) -> str:
    return "{0}-{1}".format(now.strftime("%Y%m%dT%H%M%SZ"), secrets.token_hex(4))


def is_backup_id(text: str) -> bool:
    return bool(_BACKUP_ID.match(text))


def backups_prefix(tenant: str) -> str:
    return "{0}/backups/".format(tenant)


def backup_prefix(tenant: str, backup_id: str) -> str:
    return "{0}{1}/".format(backups_prefix(tenant), backup_id)


def data_key(tenant: str, backup_id: str) -> str:
    return backup_prefix(tenant, backup_id) + DATA_NAME


def manifest_key(tenant: str, backup_id: str) -> str:
    return backup_prefix(tenant, backup_id) + MANIFEST_NAME


def rewrap_prefix(tenant: str, backup_id: str) -> str:
    return backup_prefix(tenant, backup_id) + "keys/"


def rewrap_key(tenant: str, backup_id: str, key_id: str) -> str:
    # KMS key ids are ARNs (':' and '/'): name the object by a digest of the id instead.
    return "{0}{1}.json".format(rewrap_prefix(tenant, backup_id), hashlib.sha256(key_id.encode("utf-8")).hexdigest()[:32])


def verifications_prefix(tenant: str, backup_id: Optional[str] = None) -> str:
    base = "{0}/verifications/".format(tenant)
    return base + "{0}/".format(backup_id) if backup_id else base


def verification_key(tenant: str, backup_id: str, at: datetime.datetime) -> str:
    return "{0}{1}-{2}.json".format(verifications_prefix(tenant, backup_id), at.strftime("%Y%m%dT%H%M%S%fZ"), secrets.token_hex(3))


def audit_key(action: str, at: datetime.datetime) -> str:
    return "audit/{0}/{1}-{2}-{3}.json".format(at.strftime("%Y/%m/%d"), at.strftime("%Y%m%dT%H%M%S%fZ"), action, secrets.token_hex(4))


def backup_id_of(key: str) -> Optional[str]:
    """The backup id in ``<tenant>/backups/<id>/...``, or None for other keys."""
    parts = key.split("/")
    if len(parts) >= 4 and parts[1] == "backups" and is_backup_id(parts[2]):
        return parts[2]
    return None
