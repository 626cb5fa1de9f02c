# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a backup back: manifest, then header, then chunks, each checked against the one before.

The manifest is authenticated first (its MAC needs the tenant key), and it
pins everything else: the header's digest (a swapped header fails here,
before any decryption), the stream's SHA-256 and the sizes. The yielded dump
bytes are authentic chunk by chunk; the stream as a whole is proven only when
iteration ends without error, so a consumer must not commit before that.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterator

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import unwrap_with_rewraps
from ansible_collections.keel.postgres.plugins.module_utils.backup.compression import CompressionError, new_decompressor
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import open_manifest
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import (
    StreamOpener,
    derive_manifest_mac_key,
    derive_record_mac_key,
    read_header,
)
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed


class _HashingReader:
    """Counts and hashes every byte read, so the whole object is checked against the manifest."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int) -> bytes:
        data = self._reader.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


class BackupReader:
    def __init__(self, store: ObjectStore, keys: KeyProvider, tenant: str, backup_id: str) -> None:
        self.store = store
        self.tenant = tenant
        self.backup_id = backup_id
        where = layout.manifest_key(tenant, backup_id)
        if store.head(where) is None:
            raise IntegrityFailed("backup {0} of tenant {1!r} has no manifest: it does not exist or never completed".format(backup_id, tenant))
        unwrap = unwrap_with_rewraps(store, keys, tenant, backup_id)
        self.manifest, self._data_key = open_manifest(
            store.get_bytes(where), where, unwrap, derive_manifest_mac_key, {"tenant": tenant, "backup_id": backup_id})
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.chunks = 0

    def record_mac_key(self) -> bytes:
        """The key that authenticates this backup's verification records (derived from the data key, never the data key)."""
        return derive_record_mac_key(self._data_key)

    def dump_bytes(self) -> Iterator[bytes]:
        """The pg_dump custom-format bytes, decompressed; raises IntegrityFailed at the first problem."""
        object_key = layout.data_key(self.tenant, self.backup_id)
        reader = self.store.open_reader(object_key)
        hashing = _HashingReader(reader)
        try:
            header, header_bytes = read_header(hashing)
            self._check_header(header, header_bytes)
            opener = StreamOpener(header, header_bytes, self._data_key)
            decompressor = new_decompressor()
            for plaintext in opener.iter_plaintext(hashing):
                data = decompressor.decompress(plaintext)
                self.raw_bytes += len(data)
                if data:
                    yield data
            self.chunks = opener.chunks
            self.stored_bytes = hashing.size
            self._check_totals(hashing)
        except CompressionError as exc:
            raise IntegrityFailed("the decrypted stream does not decompress ({0}): written by a faulty writer".format(exc)) from None
        finally:
            reader.close()

    def check(self) -> Dict[str, Any]:
        """Read and authenticate the whole backup without keeping any of it."""
        # Reading is the check: every chunk is authenticated as it goes by.
        for _block in self.dump_bytes():
            pass
        return {"backup_id": self.backup_id, "raw_bytes": self.raw_bytes, "stored_bytes": self.stored_bytes, "chunks": self.chunks}

    def _check_header(self, header: Any, header_bytes: bytes) -> None:
        expected = self.manifest["stream"]["header_sha256"]
        if hashlib.sha256(header_bytes).hexdigest() != expected:
            raise IntegrityFailed("the stream header of backup {0} does not match its manifest: the header was swapped or altered".format(self.backup_id))
        if header.tenant != self.tenant or header.backup_id != self.backup_id:
            raise IntegrityFailed("the stream header names tenant {0!r} backup {1}: it belongs to another backup".format(header.tenant, header.backup_id))

    def _check_totals(self, hashing: _HashingReader) -> None:
        if hashing.digest.hexdigest() != self.manifest["sha256"]:
            raise IntegrityFailed("backup {0}'s stored bytes do not match the SHA-256 in its manifest".format(self.backup_id))
        if self.raw_bytes != self.manifest["sizes"]["raw"]:
            raise IntegrityFailed("backup {0} decompresses to {1} bytes, its manifest says {2}".format(
                self.backup_id, self.raw_bytes, self.manifest["sizes"]["raw"]))
