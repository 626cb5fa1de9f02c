# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every backup-family module takes: the tenants, the store, the key provider, the audit actor."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.compression import ZSTANDARD_IMPORT_ERROR
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import key_provider_option, open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import open_store, store_argument_spec
from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import CRYPTOGRAPHY_IMPORT_ERROR


def backup_family_spec() -> Dict[str, Dict[str, Any]]:
    return dict(
        tenants=dict(type="list", elements="dict", required=True),
        store=dict(type="dict", required=True, options=store_argument_spec()),
        key_provider=key_provider_option(required=True),
        audit_actor=dict(type="str"),
    )


def backup_library_errors() -> Dict[str, Optional[str]]:
    """The libraries every backup-family module needs on the host running it (boto3 only for S3 and KMS)."""
    return {"cryptography": CRYPTOGRAPHY_IMPORT_ERROR, "zstandard": ZSTANDARD_IMPORT_ERROR}


def open_store_and_keys(params: Mapping[str, Any]) -> Tuple[ObjectStore, KeyProvider]:
    return open_store(params["store"]), open_key_provider(params["key_provider"])
