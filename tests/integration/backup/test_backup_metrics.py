"""Metrics of backup, backup_info, restore_verify and backup_retention, through ansible-playbook against PostgreSQL and SeaweedFS.

Request counts are checked against what the store holds afterwards (every
object written is one PUT or one completed multipart upload), byte counters
against the listed object sizes: figures a provider's bill would agree with.
"""

from __future__ import annotations

import base64
import json
import math

import pytest

pytestmark = pytest.mark.integration

PART_SIZE = 5 * 1024 * 1024
# Random hex compresses about 2:1, so this table makes the stored stream span more than one 5 MiB part.
BULKY_SQL = "CREATE TABLE bulky AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS noise FROM generate_series(1, 300000) g"


def listing(world):
    return {key: item["Size"] for key, item in world.objects("pg/").items()}


def test_backup_counts_its_s3_requests_bytes_and_stages(world, tmp_path):
    world.pg_cluster.execute(BULKY_SQL, dbname=world.database)
    world.add_tenant("acme")
    before = listing(world)
    progress_file = tmp_path / "progress.json"
    backup = world.backup("acme", store=world.s3_store(part_size="5MiB"), progress_file=str(progress_file))
    after = listing(world)
    written = {key: size for key, size in after.items() if key not in before}
    metrics = backup["metrics"]
    counters = metrics["counters"]

    # Every object the run wrote: the data object, its manifest and the audit event.
    data_key, manifest_key = "pg/" + backup["object"], "pg/" + backup["manifest"]
    assert {data_key, manifest_key} <= set(written) and len(written) == 3
    assert counters["s3_put_requests"] + counters["s3_multipart_completes"] == len(written)
    assert counters["s3_multipart_starts"] == counters["s3_multipart_completes"] == 1
    assert counters["s3_part_uploads"] == math.ceil(written[data_key] / PART_SIZE) >= 2
    assert "s3_multipart_aborts" not in counters
    assert counters["s3_head_requests"] >= 3 and counters["s3_get_requests"] >= 1

    # Bytes: the stages' counters are what the store lists.
    assert counters["stored_bytes"] == backup["sizes"]["stored"] == written[data_key]
    assert counters["raw_bytes"] == backup["sizes"]["raw"] and counters["compressed_bytes"] == backup["sizes"]["compressed"]
    assert backup["sizes"]["manifest"] == written[manifest_key]
    phases = metrics["phases"]
    assert phases["dump"]["counters"]["raw_bytes"] == backup["sizes"]["raw"]
    assert phases["store"]["counters"]["stored_bytes"] == backup["sizes"]["stored"]
    assert phases["dump"]["rates"]["raw_bytes_per_second"] > 0
    assert set(backup["stages_ms"]) == {"dump", "compress", "encrypt", "store"}
    assert all(backup["stages_ms"][name] == phases[name]["duration_ms"] or
               abs(backup["stages_ms"][name] - phases[name]["duration_ms"]) < 0.01 for name in backup["stages_ms"])
    gauges = metrics["gauges"]
    assert gauges["throughput_raw_bytes_per_second"] > gauges["throughput_stored_bytes_per_second"] > 0
    assert gauges["compression_ratio"] == backup["compression_ratio"]
    assert metrics["labels"] == {"tenant": "acme", "db": world.database, "store": "s3", "tier": "hot"}
    assert backup["storage_class"] == "STANDARD" and backup["tier"] == "hot"

    # Progress: the file holds the final state, the same as the result's.
    assert json.loads(progress_file.read_text()) == backup["progress"]
    assert backup["progress"]["state"] == "done" and backup["progress"]["percent"] == 100.0
    assert backup["progress"]["raw_bytes_done"] == backup["sizes"]["raw"]
    assert backup["progress"]["expected_bytes"] > 0


def test_backup_under_async_leaves_progress_readable_while_it_runs(world, tmp_path):
    world.pg_cluster.execute(BULKY_SQL, dbname=world.database)
    world.add_tenant("acme")
    progress_file = tmp_path / "progress.json"
    args = {**world.connection, **world.module_args(tenant="acme", progress_file=str(progress_file))}
    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: start the backup
      keel.postgres.backup: "{{ module_args }}"
      async: 300
      poll: 0
      register: job
    - name: wait for it
      ansible.builtin.async_status:
        jid: "{{ job.ansible_job_id }}"
      register: done
      until: done.finished
      retries: 150
      delay: 2
    - name: read the progress file
      ansible.builtin.slurp:
        src: "{{ progress_file }}"
      register: progress
"""
    result = world.run_playbook(playbook, extra_vars={"module_args": args, "progress_file": str(progress_file)})
    assert result.rc == 0, result.stdout
    finished = result.task("wait for it")["result"]
    assert finished["changed"] is True and finished["progress"]["state"] == "done"
    slurped = json.loads(base64.b64decode(result.task("read the progress file")["result"]["content"]))
    assert slurped == finished["progress"]


def test_file_store_counts_files_written_and_reads_count_requests(world, tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = {"type": "file", "path": str(store_dir)}
    world.add_tenant("acme")
    backup = world.backup("acme", store=store)
    published = [path for path in store_dir.rglob("*") if path.is_file() and not path.name.startswith(".")]
    # Data object, manifest, audit event.
    assert backup["metrics"]["counters"]["file_objects_written"] == len(published) == 3
    assert backup["metrics"]["labels"]["store"] == "file"
    assert backup["storage_class"] is None

    result, info = world.run("backup_info", tenant="acme", store=store)
    assert result.rc == 0, info
    assert not any(name.startswith("s3_") or name == "file_objects_written" for name in info["metrics"]["counters"])


def test_backup_info_and_retention_count_reads_and_bytes_per_tier(world):
    world.add_tenant("acme")
    first = world.backup("acme")
    second = world.backup("acme")
    result, info = world.run("backup_info", tenant="acme", read_data=True)
    assert result.rc == 0, info
    counters = info["metrics"]["counters"]
    assert counters["s3_list_requests"] >= 1 and counters["s3_get_requests"] >= 2
    assert "s3_put_requests" not in counters
    assert counters["bytes_read"] == first["sizes"]["stored"] + second["sizes"]["stored"]
    assert info["metrics"]["labels"] == {"store": "s3", "tenant": "acme"}

    result, kept = world.run("backup_retention", tenant="acme")
    assert result.rc == 0, kept
    series = {(entry["name"], entry["labels"]["tier"]): entry["value"] for entry in kept["metrics"]["series"]}
    held = sum(size for key, size in listing(world).items() if key.startswith("pg/acme/backups/"))
    assert series[("retention_kept_bytes", "hot")] == held == kept["tenants"][0]["cost"]["bytes"]
    assert series[("retention_deleted_bytes", "hot")] == 0
    assert "s3_delete_requests" not in kept["metrics"]["counters"]


def test_restore_verify_times_its_stages_and_counts_rows_and_bytes_read(world):
    world.add_tenant("acme")
    backup = world.backup("acme")
    result, task = world.run("restore_verify", tenant="acme", **world.connection)
    assert result.rc == 0, task
    [record] = task["verifications"]
    assert record["outcome"] == "passed", record
    metrics = task["metrics"]
    phases = metrics["phases"]
    assert {"fetch_restore", "stats"} <= set(phases)
    assert phases["fetch_restore"]["counters"]["stored_bytes"] == backup["sizes"]["stored"]
    assert phases["fetch_restore"]["counters"]["dump_bytes"] == backup["sizes"]["raw"]
    rows = world.pg_cluster.execute(
        "SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM orders) + (SELECT count(*) FROM globex.invoices)", dbname=world.database)[0][0]
    assert phases["stats"]["counters"]["rows_verified"] == rows
    assert metrics["counters"]["tables_verified"] == 3
    assert metrics["counters"]["s3_get_requests"] >= 2
