# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which backup a restore or a verification means: an id, or ``latest``."""

from __future__ import annotations

from typing import List

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import MAC_KEY_SHREDDED, MAC_VERIFIED, BackupEntry, list_backups
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeyShredded

LATEST = "latest"


def check_backup_id(wanted: str, field: str = "backup_id") -> str:
    if wanted != LATEST and not layout.is_backup_id(wanted):
        raise InvalidOption(field, "{0!r} is neither 'latest' nor a backup id such as 20261125T020000Z-3f9a1c2b".format(wanted))
    return wanted


def published_backups(store: ObjectStore, keys: KeyProvider, tenant: str) -> List[BackupEntry]:
    return [entry for entry in list_backups(store, tenant, keys) if entry.published]


def resolve_backup(store: ObjectStore, keys: KeyProvider, tenant: str, wanted: str, field: str = "backup_id") -> BackupEntry:
    """The published backup ``wanted`` names; ``latest`` is the newest whose manifest authenticates."""
    entries = published_backups(store, keys, tenant)
    if wanted == LATEST:
        readable = [entry for entry in entries if entry.mac_status == MAC_VERIFIED]
        if readable:
            return readable[-1]
        if entries and all(entry.mac_status == MAC_KEY_SHREDDED for entry in entries):
            raise KeyShredded(entries[-1].problem or "tenant {0!r}'s key was shredded: its backups are unreadable by design".format(tenant))
        raise InvalidOption(field, "tenant {0!r} has no readable backup in the store ({1} published)".format(tenant, len(entries)))
    for entry in entries:
        if entry.backup_id == wanted:
            return entry
    raise InvalidOption(field, "tenant {0!r} has no backup {1} (it never completed, was deleted, or belongs to another tenant)".format(tenant, wanted))
