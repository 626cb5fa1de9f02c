"""The pagila sample database through backup, restore and restore_verify.

pagila exercises what a generated schema may not: an enum, a domain, arrays,
a tsvector column, bytea pictures, a partitioned table with its partitions,
views, functions and triggers. A restore must reproduce it exactly, and
every table's fingerprint must match the one taken at dump time.
"""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest

from tests.realworld.conftest import pagila_dir_or_skip

pagila_dir_or_skip()

from tests.integration.backup.world import BackupWorld, make_locked_bucket  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def world(pg_cluster, pagila, s3_server, tmp_path, run_playbook):
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    world = BackupWorld(pg_cluster, pagila.name, s3_server, key_dir, make_locked_bucket(s3_server.client()), run_playbook)
    world.add_tenant("pagila", retention={"days": 1, "lock_mode": "governance"})
    return world


def plain_dump(pg_cluster, database: str) -> str:
    pg_dump = str(pg_cluster.bindir / "pg_dump")
    output = subprocess.run([pg_dump, "--no-password", pg_cluster.dsn(database)], capture_output=True, text=True, check=True).stdout
    return re.sub(r"^\\(un)?restrict .*$", "", output, flags=re.MULTILINE)


def test_pagila_backup_restores_exactly_and_verifies(world, pg_cluster, pagila):
    backup = world.backup("pagila")
    # Tables that hold rows: the partitions of payment, not its partitioned parent.
    tables = int(pagila.value("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"))
    assert backup["tables"] == tables

    result, verified = world.run("restore_verify", tenant="pagila", **world.connection)
    assert result.rc == 0, verified
    [record] = verified["verifications"]
    assert record["outcome"] == "passed" and record["mismatches"] == [] and record["tables_checked"] == tables

    target = f"pagila_restored_{uuid.uuid4().hex[:8]}"
    try:
        result, restored = world.run("restore", tenant="pagila", target_db=target, create=True, **world.connection)
        assert result.rc == 0, restored
        assert plain_dump(pg_cluster, target) == plain_dump(pg_cluster, pagila.name)
    finally:
        pg_cluster.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_pagila_fingerprints_fall_back_to_row_text_only_where_a_type_cannot_hash(world):
    backup = world.backup("pagila")
    manifest = world.s3_server.client().get_object(Bucket=world.bucket, Key="pg/" + backup["manifest"])["Body"].read()
    import json

    row_hashes = {table["name"]: table["row_hash"] for table in json.loads(manifest)["tables"]}
    # film has a tsvector column (no hash function): row text; the plain tables hash their binary values.
    assert row_hashes["film"] == "text"
    assert row_hashes["rental"] == "record" and row_hashes["payment_p2022_01"] == "record"
