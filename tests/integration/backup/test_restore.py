"""keel.postgres.restore through ansible-playbook: round trips, refusals, damaged backups, parallel jobs."""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest

from tests.integration.backup.world import BackupWorld

pytestmark = pytest.mark.integration


@pytest.fixture
def world(world):
    world.add_tenant("acme")
    return world


@pytest.fixture
def target(pg_cluster):
    name = f"restored_{uuid.uuid4().hex[:10]}"
    yield name
    pg_cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plain_dump(pg_cluster, database: str) -> str:
    """pg_dump's plain SQL of a database, without the lines that differ on every run (\\restrict keys)."""
    pg_dump = str(pg_cluster.bindir / "pg_dump")
    output = subprocess.run([pg_dump, "--no-password", pg_cluster.dsn(database)], capture_output=True, text=True, check=True).stdout
    return re.sub(r"^\\(un)?restrict .*$", "", output, flags=re.MULTILINE)


def database_exists(pg_cluster, name: str) -> bool:
    return bool(pg_cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def restore(world: BackupWorld, target_db: str, check: bool = False, **options):
    return world.run("restore", check=check, tenant="acme", target_db=target_db, **world.connection, **options)


def test_restore_round_trip_reproduces_the_source_exactly(world, pg_cluster, target):
    backup = world.backup("acme")
    result, task = restore(world, target, create=True)
    assert result.rc == 0, task
    assert task["backup_id"] == backup["backup_id"] and task["created"] is True
    assert task["spooled_to_private_file"] is False
    assert task["dump_bytes"] == backup["sizes"]["raw"]
    assert task["audit"]["outcome"] == "succeeded"
    assert plain_dump(pg_cluster, target) == plain_dump(pg_cluster, world.database)


def test_check_mode_plans_and_creates_nothing(world, pg_cluster, target):
    backup = world.backup("acme")
    result, task = restore(world, target, check=True, create=True)
    assert result.rc == 0, task
    assert task["plan"]["backup_id"] == backup["backup_id"] and task["plan"]["create"] is True
    assert not database_exists(pg_cluster, target)


def test_missing_target_without_create_and_unknown_backup_are_refused(world, pg_cluster, target):
    world.backup("acme")
    result, task = restore(world, target)
    assert result.rc != 0 and task["field"] == "target_db" and "create" in task["msg"]
    result, task = restore(world, target, create=True, backup_id="20200101T000000Z-00000000")
    assert result.rc != 0 and task["field"] == "backup_id"
    result, task = restore(world, target, create=True, backup_id="yesterday")
    assert result.rc != 0 and task["field"] == "backup_id"
    assert not database_exists(pg_cluster, target)


def test_non_empty_target_is_refused_unless_clean(world, pg_cluster):
    world.backup("acme")
    pg_cluster.execute("UPDATE customers SET name = 'changed after the backup' WHERE id = 1", dbname=world.database)
    result, task = restore(world, world.database)
    assert result.rc != 0
    assert task["field"] == "target_db" and "not empty" in task["msg"] and "public.customers" in task["msg"]
    assert pg_cluster.execute("SELECT name FROM customers WHERE id = 1", dbname=world.database) == [("changed after the backup",)]

    result, task = restore(world, world.database, clean=True)
    assert result.rc == 0, task
    assert "public.customers" in task["replaced"]
    assert pg_cluster.execute("SELECT name FROM customers WHERE id = 1", dbname=world.database) == [("customer 1",)]


def test_parallel_restore_uses_a_private_file_that_is_always_removed(world, pg_cluster, target, tmp_path):
    world.backup("acme")
    spool_parent = tmp_path / "spool"
    spool_parent.mkdir()
    result, task = restore(world, target, create=True, jobs=2, temp_dir=str(spool_parent))
    assert result.rc == 0, task
    assert task["spooled_to_private_file"] is True and set(task["stages_ms"]) == {"spool", "restore"}
    assert list(spool_parent.iterdir()) == []
    assert plain_dump(pg_cluster, target) == plain_dump(pg_cluster, world.database)


def test_a_damaged_backup_restores_nothing(world, pg_cluster, target):
    backup = world.backup("acme", chunk_size="64KiB")
    client = world.s3_server.client()
    key = "pg/" + backup["object"]
    data = bytearray(client.get_object(Bucket=world.bucket, Key=key)["Body"].read())
    data[-100] ^= 0x01  # inside the final chunk: pg_restore has already restored most tables by then
    client.put_object(Bucket=world.bucket, Key=key, Body=bytes(data))

    result, task = restore(world, target, create=True)
    assert result.rc != 0
    assert task["error"] == "integrity_failed" and "failed authentication" in task["msg"]
    assert not database_exists(pg_cluster, target), "a target created for the restore is dropped again"

    pg_cluster.execute(f'CREATE DATABASE "{target}"')
    result, task = restore(world, target)
    assert result.rc != 0 and task["error"] == "integrity_failed"
    tables = pg_cluster.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", dbname=target)
    assert tables == [(0,)], "the single transaction never committed"


def test_restore_after_shredding_fails_with_key_shredded(world, target):
    world.backup("acme")
    world.keys().shred("acme")
    result, task = restore(world, target, create=True)
    assert result.rc != 0
    assert task["error"] == "key_shredded", task
    assert "shredded" in task["msg"]


def test_a_tenant_scoped_to_the_public_schema_restores_and_verifies(world, pg_cluster, target):
    # pg_dump -n public writes CREATE SCHEMA public, which every database made from template0 already has.
    world.add_tenant("storefront", schemas=["public"])
    backup = world.backup("storefront")
    result, task = world.run("restore", tenant="storefront", target_db=target, create=True, **world.connection)
    assert result.rc == 0, task
    assert task["backup_id"] == backup["backup_id"]
    restored = pg_cluster.execute("SELECT count(*) FROM public.customers", dbname=target)[0][0]
    assert restored == 2001
    assert not pg_cluster.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'globex'", dbname=target), "only the tenant's schema"
    result, task = world.run("restore_verify", tenant="storefront", backup_id=backup["backup_id"], **world.connection)
    assert result.rc == 0, task
    assert task["verifications"][0]["outcome"] == "passed", task["verifications"][0]
