"""Every way a stored backup can be damaged or swapped is caught, with a message naming the problem.

The tenant has no store lock here, so a test can replace the current version
of an object the way an attacker with write access (or a faulty disk) would.
Checked through keel.postgres.backup_info with read_data, which reads and
authenticates every byte the way a restore does.
"""

from __future__ import annotations

import io

import pytest

from tests.harness.collection_path import ensure_collection_importable
from tests.integration.backup.world import BackupWorld

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import TAG_BYTES, read_header  # noqa: E402

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024


@pytest.fixture
def world(world):
    world.add_tenant("acme")
    world.add_tenant("globex")
    return world


class StoredBackup:
    def __init__(self, world: BackupWorld, backup: dict) -> None:
        self.world = world
        self.key = "pg/" + backup["object"]
        self.client = world.s3_server.client()
        self.original = self.client.get_object(Bucket=world.bucket, Key=self.key)["Body"].read()
        self.header = read_header(io.BytesIO(self.original))[1]

    def chunks(self) -> list[bytes]:
        body = self.original[len(self.header):]
        size = CHUNK + TAG_BYTES
        return [body[i:i + size] for i in range(0, len(body), size)]

    def replace(self, data: bytes) -> None:
        self.client.put_object(Bucket=self.world.bucket, Key=self.key, Body=data)


def integrity_of(world: BackupWorld, tenant: str = "acme") -> dict:
    result, info = world.run("backup_info", tenant=tenant, read_data=True)
    assert result.rc == 0, info
    [backup] = info["tenants"][0]["backups"]
    return backup


def flip_byte(stored: StoredBackup) -> bytes:
    data = bytearray(stored.original)
    data[len(stored.header) + CHUNK + TAG_BYTES + 100] ^= 0x01  # inside chunk 1
    return bytes(data)


def truncate(stored: StoredBackup) -> bytes:
    chunks = stored.chunks()
    return stored.header + b"".join(chunks[:-1])


def reorder(stored: StoredBackup) -> bytes:
    chunks = stored.chunks()
    chunks[1], chunks[2] = chunks[2], chunks[1]
    return stored.header + b"".join(chunks)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (flip_byte, "chunk 1 failed authentication"),
        (truncate, "truncated"),
        (reorder, "chunk 1 is out of order: it was sealed as chunk 2"),
    ],
)
def test_damaged_stream_is_named(world, damage, expected):
    stored = StoredBackup(world, world.backup("acme", chunk_size="64KiB"))
    assert len(stored.chunks()) >= 4, "the test data must span several chunks"
    assert integrity_of(world)["integrity"] == "ok"
    stored.replace(damage(stored))
    backup = integrity_of(world)
    assert backup["integrity_error"] == "integrity_failed"
    assert expected in backup["integrity"], backup["integrity"]


def test_swapped_header_is_named(world):
    first = StoredBackup(world, world.backup("acme", chunk_size="64KiB"))
    second = StoredBackup(world, world.backup("acme", chunk_size="64KiB"))
    first.replace(second.header + first.original[len(first.header):])
    result, info = world.run("backup_info", tenant="acme", read_data=True)
    assert result.rc == 0, info
    swapped = next(b for b in info["tenants"][0]["backups"] if b["backup_id"] in first.key)
    assert "header" in swapped["integrity"] and "does not match its manifest" in swapped["integrity"]


def test_another_tenants_key_does_not_open_a_backup(world):
    world.backup("acme", chunk_size="64KiB")
    acme_key = world.key_dir / "acme" / "v1.key"
    globex_key = (world.key_dir / "globex" / "v1.key").read_bytes()
    acme_key.chmod(0o600)
    acme_key.write_bytes(globex_key)
    backup = integrity_of(world)
    assert backup["mac_status"] == "failed"
    assert "does not unwrap" in backup["problem"], backup["problem"]
    assert backup["integrity_error"] == "integrity_failed"


def test_a_backup_copied_into_another_tenant_is_refused(world):
    backup = world.backup("acme", chunk_size="64KiB")
    client = world.s3_server.client()
    for name in ("object", "manifest"):
        source = "pg/" + backup[name]
        client.copy_object(Bucket=world.bucket, Key=source.replace("pg/acme/", "pg/globex/"), CopySource={"Bucket": world.bucket, "Key": source})
    copied = integrity_of(world, "globex")
    assert copied["mac_status"] == "failed"
    assert "tenant='acme', expected 'globex'" in copied["problem"], copied["problem"]
