"""keel.postgres.backup and backup_info through ansible-playbook, against real PostgreSQL and SeaweedFS.

SeaweedFS enforces Object Lock, so the refusals asserted here are the store's own.
"""

from __future__ import annotations

import datetime
import json
import os
import stat

import psycopg
import pytest
from botocore.exceptions import ClientError

from tests.integration.backup.world import MARKER, make_locked_bucket

pytestmark = pytest.mark.integration


def table_counts(pg_cluster, database):
    rows = pg_cluster.execute("SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM globex.invoices)",
                              dbname=database)
    return {"public.customers": rows[0][0], "public.orders": rows[0][1], "globex.invoices": rows[0][2]}


def test_backup_to_s3_is_locked_encrypted_and_listed(world):
    world.add_tenant("acme", retention={"days": 2, "lock_mode": "compliance"})
    began = datetime.datetime.now(datetime.timezone.utc)
    backup = world.backup("acme")

    assert backup["changed"] is True
    assert backup["lock_mode"] == "COMPLIANCE"
    retain_until = datetime.datetime.fromisoformat(backup["retain_until"])
    assert began + datetime.timedelta(days=2) <= retain_until <= began + datetime.timedelta(days=2, minutes=5)
    assert backup["sizes"]["raw"] > backup["sizes"]["compressed"] > 0
    assert backup["sizes"]["stored"] == backup["sizes"]["object"]
    assert set(backup["stages_ms"]) == {"dump", "compress", "encrypt", "store"}
    assert backup["tables"] == 3
    assert backup["audit"]["outcome"] == "succeeded" and backup["audit"]["audit_object"]

    client = world.s3_server.client()
    data_key = "pg/" + backup["object"]
    head = client.head_object(Bucket=world.bucket, Key=data_key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] >= retain_until - datetime.timedelta(seconds=1)
    stored = client.get_object(Bucket=world.bucket, Key=data_key)["Body"].read()
    assert MARKER.encode() not in stored
    assert b"customer 1" not in stored

    manifest = json.loads(client.get_object(Bucket=world.bucket, Key="pg/" + backup["manifest"])["Body"].read())
    tables = {"{0}.{1}".format(t["schema"], t["name"]): t for t in manifest["tables"]}
    assert {name: t["rows"] for name, t in tables.items()} == table_counts(world.pg_cluster, world.database)
    assert all(t["fingerprint"] and t["fingerprint"] != "0" for t in tables.values())
    assert manifest["sha256"] and manifest["mac"]["algorithm"] == "HMAC-SHA256"
    assert "blob" in manifest["wrapped_key"] and manifest["wrapped_key"]["key_id"] == "v1"

    result, info = world.run("backup_info", tenant="acme", read_data=True)
    assert result.rc == 0, info
    assert info["changed"] is False
    [listed] = info["tenants"][0]["backups"]
    assert listed["backup_id"] == backup["backup_id"]
    assert listed["mac_status"] == "verified"
    assert listed["integrity"] == "ok"
    assert listed["lock_mode"] == "COMPLIANCE"
    assert info["tenants"][0]["latest_backup"] == backup["backup_id"]


def test_backup_of_a_schema_records_only_that_schema(world):
    world.add_tenant("globex", schemas=["globex"])
    backup = world.backup("globex")
    assert backup["tables"] == 1
    assert backup["lock_mode"] is None and backup["retain_until"] is None


def test_file_store_is_write_once_and_skip_if_newer_than_is_idempotent(world, tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = {"type": "file", "path": str(store_dir)}
    world.add_tenant("acme")
    first = world.backup("acme", store=store, skip_if_newer_than="1h")
    assert first["changed"] is True
    data_file = store_dir / first["object"]
    assert stat.S_IMODE(data_file.stat().st_mode) == 0o444
    assert MARKER.encode() not in data_file.read_bytes()

    second = world.backup("acme", store=store, skip_if_newer_than="1h")
    assert second["changed"] is False
    assert second["skipped_because"]["backup_id"] == first["backup_id"]

    third = world.backup("acme", store=store)
    assert third["backup_id"] != first["backup_id"]
    result, info = world.run("backup_info", store=store, read_data=True)
    assert result.rc == 0, info
    assert [b["integrity"] for b in info["tenants"][0]["backups"]] == ["ok", "ok"]


def test_check_mode_plans_and_writes_nothing(world):
    world.add_tenant("acme", retention={"days": 1, "lock_mode": "governance"})
    result, task = world.run("backup", check=True, tenant="acme")
    assert result.rc == 0, task
    assert task["changed"] is True
    assert task["plan"]["tables"] == 3 and task["plan"]["lock_mode"] == "GOVERNANCE"
    assert world.objects("") == {}


@pytest.mark.parametrize(
    "case, field, words",
    [
        ("unknown tenant", "tenant", "unknown tenant 'nobody'"),
        ("missing key", None, "no key"),
        ("bucket without object lock", "store.bucket", "object lock"),
        ("bad tenants entry", "tenants[0].retention.days", "positive whole number"),
        ("missing schema", "schemas", "no schema"),
        ("retention shorter than the bucket's default lock", "tenants.retention.days", "default lock"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(world, case, field, words):
    options = {"tenant": "acme"}
    if case == "unknown tenant":
        world.add_tenant("acme")
        options["tenant"] = "nobody"
    elif case == "missing key":
        world.add_tenant("acme", with_key=False)
    elif case == "bucket without object lock":
        world.bucket = make_locked_bucket(world.s3_server.client(), object_lock=False)
        world.add_tenant("acme", retention={"days": 1, "lock_mode": "compliance"})
    elif case == "bad tenants entry":
        world.add_tenant("acme", retention={"days": "thirty"})
    elif case == "missing schema":
        world.add_tenant("acme", schemas=["nope"])
    else:
        world.s3_server.client().put_object_lock_configuration(
            Bucket=world.bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}},
        )
        world.add_tenant("acme", retention={"days": 7, "lock_mode": "governance"})
    result, task = world.run("backup", **options)
    assert result.rc != 0
    assert task["error"] in ("invalid_option", "key_unavailable"), task
    assert words.lower() in task["msg"].lower(), task["msg"]
    if field:
        assert task.get("field") == field, task
    assert world.objects("") == {}, "nothing may be written on bad input"


def test_locked_versions_cannot_be_deleted_or_overwritten(world):
    world.add_tenant("acme", retention={"days": 1, "lock_mode": "compliance"})
    world.add_tenant("globex", retention={"days": 1, "lock_mode": "governance"})
    compliance = world.backup("acme")
    governance = world.backup("globex")
    client = world.s3_server.client()

    key = "pg/" + compliance["object"]
    original = client.head_object(Bucket=world.bucket, Key=key)
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=world.bucket, Key=key, VersionId=original["VersionId"])
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "ObjectLocked", "InvalidRequest")
    with pytest.raises(ClientError):
        client.delete_object(Bucket=world.bucket, Key=key, VersionId=original["VersionId"], BypassGovernanceRetention=True)
    # An "overwrite" in a versioned, locked bucket can only add a version: the locked one stays byte for byte.
    client.put_object(Bucket=world.bucket, Key=key, Body=b"tampered")
    kept = client.get_object(Bucket=world.bucket, Key=key, VersionId=original["VersionId"])
    assert kept["ContentLength"] == original["ContentLength"]

    gkey = "pg/" + governance["object"]
    gversion = client.head_object(Bucket=world.bucket, Key=gkey)["VersionId"]
    with pytest.raises(ClientError):
        client.delete_object(Bucket=world.bucket, Key=gkey, VersionId=gversion)
    client.delete_object(Bucket=world.bucket, Key=gkey, VersionId=gversion, BypassGovernanceRetention=True)


def test_secrets_never_reach_results_or_verbose_output(world, pg_cluster):
    password = "pg-" + os.urandom(8).hex()
    pg_cluster.execute(f"CREATE ROLE keel_backup LOGIN SUPERUSER PASSWORD '{password}'")
    try:
        world.add_tenant("acme", retention={"days": 1, "lock_mode": "governance"})
        args = {"login_user": "keel_backup", "login_password": password}
        result, task = world.run("backup", env={"ANSIBLE_VERBOSITY": "3"}, tenant="acme", **args)
        assert result.rc == 0, task
        output = result.stdout + result.stderr
        for secret in (password, world.s3_server.secret_key):
            assert secret not in output
            assert secret not in json.dumps(task)
        key_material = (world.key_dir / "acme" / "v1.key").read_bytes()
        assert key_material.hex() not in output
        audit = world.s3_server.client().get_object(Bucket=world.bucket, Key="pg/" + task["audit"]["audit_object"])["Body"].read().decode()
        assert password not in audit and world.s3_server.secret_key not in audit
    finally:
        pg_cluster.execute("DROP ROLE keel_backup")


def test_fingerprints_come_from_the_dump_snapshot(world, pg_cluster):
    """Rows committed while the dump runs are in neither the dump nor the recorded counts."""
    world.add_tenant("acme")
    holder = psycopg.connect(pg_cluster.dsn(world.database))
    holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    thread, outcome = world.run_in_background("backup", tenant="acme")
    try:
        _wait_for_backend(pg_cluster, world.database, "keel.postgres/backup pg_dump")
        # The snapshot is taken; commit more rows in another session before the dump can read orders.
        pg_cluster.execute("INSERT INTO customers VALUES (999999, 'late', NULL, now())", dbname=world.database)
    finally:
        holder.rollback()
        holder.close()
    thread.join(timeout=300)
    task = outcome["task"]
    assert outcome["result"].rc == 0, task
    manifest = json.loads(world.s3_server.client().get_object(Bucket=world.bucket, Key="pg/" + task["manifest"])["Body"].read())
    customers = next(t for t in manifest["tables"] if t["name"] == "customers")
    assert customers["rows"] == 2001


def _wait_for_backend(pg_cluster, database, application_name, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = pg_cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                                  (database, application_name))
        if rows[0][0]:
            return
        time.sleep(0.1)
    raise AssertionError(f"no backend {application_name!r} appeared")


def test_missing_crypto_libraries_on_the_module_host_are_a_clear_failure(world, tmp_path):
    import subprocess
    import sys

    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    world.add_tenant("acme")
    result = world.run_playbook(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: info\n      keel.postgres.backup_info: '{{ module_args }}'\n",
        extra_vars={"ansible_python_interpreter": str(bare / "bin" / "python"), "module_args": world.module_args()},
    )
    assert result.rc != 0
    assert "Failed to import the required Python library (cryptography)" in result.task("info")["result"]["msg"]


def test_fingerprints_use_the_record_hash_and_fall_back_to_text_for_unhashable_types(world, pg_cluster):
    pg_cluster.execute("CREATE TABLE shapes (id int PRIMARY KEY, at point, doc json); INSERT INTO shapes VALUES (1, '(1,2)', '{\"a\": 1}')",
                       dbname=world.database)
    world.add_tenant("acme")
    backup = world.backup("acme")
    manifest = json.loads(world.s3_server.client().get_object(Bucket=world.bucket, Key="pg/" + backup["manifest"])["Body"].read())
    assert manifest["fingerprint_method"] == "keel-rowhash-v2"
    row_hashes = {t["name"]: t["row_hash"] for t in manifest["tables"]}
    assert row_hashes == {"customers": "record", "orders": "record", "invoices": "record", "shapes": "text"}
    shapes = next(t for t in manifest["tables"] if t["name"] == "shapes")
    assert shapes["rows"] == 1 and shapes["fingerprint"] not in (None, "0")
