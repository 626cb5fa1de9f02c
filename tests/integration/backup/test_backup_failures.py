"""A backup that dies or loses its store publishes nothing, and retention cleans up after it.

The dump is held in place by a session that locks a table (pg_dump waits for
its ACCESS SHARE lock), so the failure lands mid-backup deterministically,
with the multipart upload already open, instead of by timing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.harness.processes import command_line, descendants
from tests.harness.s3_server import S3Server
from tests.integration.backup.world import MARKER, TENANT_SQL, new_world

pytestmark = pytest.mark.integration


class TableLock:
    """Holds ACCESS EXCLUSIVE on a table so pg_dump waits right after it started streaming."""

    def __init__(self, dsn: str, table: str) -> None:
        self.connection = psycopg.connect(dsn)
        self.connection.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        if not self.connection.closed:
            self.connection.rollback()
            self.connection.close()


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def module_processes(name: str) -> list[int]:
    """Our own descendants running keel.postgres.<name> (the AnsiballZ wrapper process)."""
    return [pid for pid in descendants(os.getpid()) if any(arg.endswith(f"AnsiballZ_{name}.py") for arg in command_line(pid))]


def pg_dump_sessions(pg_cluster, database: str) -> int:
    rows = pg_cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'keel.postgres/backup pg_dump'",
                              (database,))
    return rows[0][0]


def test_sigkill_mid_backup_publishes_nothing_and_retention_cleans_up(world, pg_cluster):
    world.add_tenant("acme", retention={"days": 1})
    lock = TableLock(pg_cluster.dsn(world.database), "orders")
    try:
        thread, outcome = world.run_in_background("backup", tenant="acme")
        wait_for(lambda: pg_dump_sessions(pg_cluster, world.database), "pg_dump to start")
        wait_for(lambda: world.s3_server.client().list_multipart_uploads(Bucket=world.bucket).get("Uploads"), "the multipart upload")
        [module_pid] = wait_for(lambda: module_processes("backup"), "the module process")
        os.kill(module_pid, signal.SIGKILL)
        thread.join(timeout=120)
    finally:
        lock.release()
    assert outcome["result"].rc != 0
    # pg_dump notices its reader is gone at its next write and exits; nothing is left holding the database.
    wait_for(lambda: pg_dump_sessions(pg_cluster, world.database) == 0, "pg_dump to exit")

    result, info = world.run("backup_info", tenant="acme")
    assert result.rc == 0, info
    [tenant] = info["tenants"]
    assert tenant["backups"] == [] and tenant["latest_backup"] is None
    assert tenant["incomplete_uploads"] == 1

    result, retention = world.run("backup_retention", check=True, orphan_grace="0s")
    assert result.rc == 0, retention
    assert len(retention["tenants"][0]["discarded_uploads"]) == 1
    assert world.s3_server.client().list_multipart_uploads(Bucket=world.bucket).get("Uploads")

    result, retention = world.run("backup_retention", orphan_grace="0s")
    assert result.rc == 0, retention
    assert retention["changed"] is True
    assert not world.s3_server.client().list_multipart_uploads(Bucket=world.bucket).get("Uploads")


def test_a_backup_without_manifest_does_not_exist_and_is_removed(world):
    world.add_tenant("acme", retention={"days": 1})
    backup = world.backup("acme")
    client = world.s3_server.client()
    manifest = "pg/" + backup["manifest"]
    for version in client.list_object_versions(Bucket=world.bucket, Prefix=manifest).get("Versions", []):
        client.delete_object(Bucket=world.bucket, Key=manifest, VersionId=version["VersionId"])

    result, info = world.run("backup_info", tenant="acme")
    assert result.rc == 0, info
    assert info["tenants"][0]["backups"] == []
    assert info["tenants"][0]["orphans"] == [backup["backup_id"]]

    result, young = world.run("backup_retention")
    assert result.rc == 0, young
    assert young["changed"] is False, "an orphan younger than orphan_grace may be a backup still running"

    result, retention = world.run("backup_retention", orphan_grace="0s")
    assert result.rc == 0, retention
    [deleted] = retention["tenants"][0]["deleted"]
    assert deleted["backup_id"] == backup["backup_id"] and deleted["published"] is False
    assert "pg/" + backup["object"] not in world.objects()


def test_s3_server_stopped_mid_upload_fails_clearly_and_publishes_nothing(pg_cluster, pg_db, tmp_path: Path, run_playbook, cleanup_server):
    server = cleanup_server(S3Server(tmp_path / "s3"))
    server.start()
    world = new_world(pg_cluster, pg_db, server, tmp_path, run_playbook, TENANT_SQL.format(marker=MARKER))
    world.add_tenant("acme", retention={"days": 1, "lock_mode": "governance"})
    lock = TableLock(pg_cluster.dsn(world.database), "orders")
    try:
        thread, outcome = world.run_in_background("backup", tenant="acme")
        wait_for(lambda: server.client().list_multipart_uploads(Bucket=world.bucket).get("Uploads"), "the multipart upload")
        server.stop()
    finally:
        lock.release()
    thread.join(timeout=300)
    task = outcome["task"]
    assert outcome["result"].rc != 0
    assert task["error"] == "store_failed", task
    assert "unreachable" in task["msg"]
    assert server.secret_key not in str(task)
    assert task["audit"]["outcome"] == "failed" and task["audit"]["audit_object"] is None

    server.start()
    world.s3_server = server
    assert not [key for key in world.objects("") if not key.startswith("pg/audit/")]
    result, info = world.run("backup_info", tenant="acme")
    assert result.rc == 0, info
    assert info["tenants"][0]["backups"] == []
