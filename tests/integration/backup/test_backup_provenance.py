"""Backup provenance through ansible-playbook: recorded at dump time, shown, asserted, and used by preflight.

A keel migration is applied with keel.postgres.schema_change before the
backup, so the provenance names a real catalog entry. Everything is real:
PostgreSQL, SeaweedFS, the tenant key files.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.harness.collection_path import ensure_collection_importable
from tests.integration.backup.world import MARKER, MODULE_PLAYBOOK, TENANT_SQL, BackupWorld, new_world
from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import schema_fingerprint  # noqa: E402

pytestmark = pytest.mark.integration

ADD_VIP = [{"add_column": {"table": "customers", "column": "vip", "type": "boolean", "default": "false"}}]
ADD_NOTE = [{"add_column": {"table": "orders", "column": "memo", "type": "text"}}]


@pytest.fixture
def world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook):
    world = new_world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook, TENANT_SQL.format(marker=MARKER))
    world.add_tenant("acme")
    yield world
    assert scratch_databases(pg_cluster) == [], "every scratch database is dropped"


def scratch_databases(pg_cluster) -> list:
    return pg_cluster.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'keel\_verify\_%'")


def migrate(world: BackupWorld, name: str, operations: list, state: str = "completed") -> dict:
    args = dict(world.connection, db=world.database, name=name, operations=operations, state=state, batch_size=500)
    result = world.run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args})
    task = result.task("schema change")["result"]
    assert result.rc == 0, task
    return task


def backups(world: BackupWorld) -> list:
    result, task = world.run("backup_info", tenant="acme")
    assert result.rc == 0, task
    return task["tenants"][0]["backups"]


def verify(world: BackupWorld, check: bool = False, **options):
    return world.run("restore_verify", check=check, tenant="acme", **world.connection, **options)


def preflight(world: BackupWorld, **options):
    args = dict(world.connection, db=world.database, client_tools="skip", tenants=world.tenants, store=world.s3_store(),
                key_provider=world.key_provider, backup_coverage={}, **options)
    result = world.run_playbook(MODULE_PLAYBOOK.format(module="preflight"), extra_vars={"module_args": args})
    return result, result.task("module under test")


def live_fingerprint(world: BackupWorld, dbname: str, schemas=()) -> str:
    conninfo = "host={0} port={1} user={2} dbname={3}".format(world.pg_cluster.host, world.pg_cluster.port, world.pg_cluster.user, dbname)
    with psycopg.connect(conninfo) as conn, conn.transaction(), conn.cursor() as cursor:
        return schema_fingerprint(cursor, list(schemas))


def test_backup_records_provenance_and_backup_info_shows_it(world, pg_cluster):
    migrate(world, "add_vip", ADD_VIP)
    version_num = pg_cluster.execute("SELECT current_setting('server_version_num')::int", dbname=world.database)[0][0]
    before_lsn = pg_cluster.execute("SELECT pg_current_wal_insert_lsn()", dbname=world.database)[0][0]
    backup = world.backup("acme")

    [entry] = backups(world)
    assert entry["backup_id"] == backup["backup_id"] and entry["mac_status"] == "verified"
    provenance = entry["provenance"]
    assert provenance["server_version_num"] == version_num and provenance["server_version"]
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", provenance["snapshot_lsn"])
    lsn_after = pg_cluster.execute("SELECT %s::pg_lsn >= %s::pg_lsn", (provenance["snapshot_lsn"], str(before_lsn)), dbname=world.database)
    assert lsn_after[0][0] is True, "the snapshot LSN is read at dump time, after the migration's WAL"
    assert provenance["from_standby"] is False and provenance["schemas"] == []
    assert provenance["fingerprint_method"] == "keel-schema-v1"
    assert provenance["schema_fingerprint"] == live_fingerprint(world, world.database), "the dump saw the schema as it is now"
    [migration] = provenance["migrations"]
    assert (migration["name"], migration["state"], migration["schema"]) == ("add_vip", "completed", "public")
    assert migration["tables"] == ["public.customers"]
    assert migration["started_at"] and migration["completed_at"] and migration["finalized_at"] is None


def test_the_fingerprint_changes_with_the_schema_not_with_the_data(world, pg_cluster):
    first = live_fingerprint(world, world.database)
    pg_cluster.execute("INSERT INTO customers VALUES (99999, 'x', 'y', now()); DELETE FROM orders WHERE id < 100", dbname=world.database)
    assert live_fingerprint(world, world.database) == first
    pg_cluster.execute("CREATE INDEX customers_email ON customers (email)", dbname=world.database)
    assert live_fingerprint(world, world.database) != first


def test_restore_verify_proves_the_backup_holds_the_migration(world, pg_cluster):
    migrate(world, "add_vip", ADD_VIP)
    backup = world.backup("acme")

    result, task = verify(world, expect_migration={"name": "add_vip", "state": "completed"})
    assert result.rc == 0, task
    [record] = task["verifications"]
    assert record["outcome"] == "passed", record
    expected = backup_provenance(world)["schema_fingerprint"]
    assert record["schema_fingerprint"] == {"expected": expected, "found": expected, "match": True}, "stable across a restore"
    assert record["migrations_at_dump"] == {"add_vip": "completed"}
    assert "schema_fingerprint" in record["stages_ms"]
    assert record["backup_id"] == backup["backup_id"]

    result, task = verify(world, expect_migration={"name": "add_vip", "state": "any-applied"})
    assert result.rc == 0, task


def backup_provenance(world: BackupWorld) -> dict:
    return backups(world)[-1]["provenance"]


@pytest.mark.parametrize("expect, says", [
    ({"name": "add_note"}, "lists no migration 'add_note' in its provenance (migrations at dump time: add_vip)"),
    ({"name": "add_vip", "state": "finalized"}, "holds migration 'add_vip' in state 'completed', which is not finalized"),
])
def test_expect_migration_refuses_before_any_restore(world, pg_cluster, expect, says):
    migrate(world, "add_vip", ADD_VIP)
    backup = world.backup("acme")
    verifications_before = sorted(world.objects("pg/acme/verifications/"))

    for check in (True, False):
        result, task = verify(world, check=check, expect_migration=expect)
        assert result.rc != 0, task
        assert task["msg"].startswith("expect_migration:") or "expect_migration" in task["msg"], task["msg"]
        assert "backup {0} of tenant acme {1}".format(backup["backup_id"], says) in task["msg"], task["msg"]
        assert task.get("verifications") in (None, []), "nothing was verified"
    assert sorted(world.objects("pg/acme/verifications/")) == verifications_before, "nothing recorded"
    assert scratch_databases(pg_cluster) == []


def test_preflight_flags_a_migration_without_a_verified_backup_before_it(world):
    world.backup("acme")  # before the migration, but never verified
    migrate(world, "add_vip", ADD_VIP, state="started")
    world.backup("acme")  # verified, but taken after the migration started
    result, task = verify(world)
    assert result.rc == 0, task

    result, task = preflight(world)
    assert result.rc == 0, task["result"]
    [entry] = task["result"]["backup_coverage"]
    assert (entry["name"], entry["state"], entry["covered"]) == ("add_vip", "started", False)
    assert "1 backup(s) precede its start, but none passed restore verification" in entry["reason"]
    assert any("migration add_vip is not covered" in warning for warning in task["result"].get("warnings", [])), task["result"]

    result, task = preflight(world, fail_on={"require_backup_coverage": True})
    assert result.rc != 0
    [failure] = task["result"]["failed_checks"]
    assert (failure["check"], failure["subject"]) == ("require_backup_coverage", "add_vip")
    assert "not covered by a verified backup" in failure["message"]


def test_preflight_passes_once_a_backup_before_the_migration_is_verified(world):
    first = world.backup("acme")
    result, task = verify(world, backup_id=first["backup_id"])
    assert result.rc == 0, task
    migrate(world, "add_vip", ADD_VIP, state="completed")

    result, task = preflight(world, fail_on={"require_backup_coverage": True})
    assert result.rc == 0, task["result"]
    [entry] = task["result"]["backup_coverage"]
    assert entry["covered"] is True and entry["backup_id"] == first["backup_id"] and entry["tenant"] == "acme"
    assert entry["reason"] is None


def test_preflight_coverage_needs_the_store_options(world):
    args = dict(world.connection, db=world.database, client_tools="skip", backup_coverage={})
    result = world.run_playbook(MODULE_PLAYBOOK.format(module="preflight"), extra_vars={"module_args": args})
    task = result.task("module under test")["result"]
    assert result.rc != 0 and task["msg"].startswith("tenants:"), task["msg"]
