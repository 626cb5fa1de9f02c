"""keel.postgres.restore_verify through ansible-playbook, on a Pagila-sized rental database.

Every run checks the two promises that hold whatever the outcome: the
scratch database is gone afterwards, and the outcome is recorded in the store.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from tests.harness.collection_path import ensure_collection_importable
from tests.harness.rental_schema import ROW_COUNTS, rental_sql
from tests.integration.backup.test_backup_tampering import StoredBackup, flip_byte, reorder, truncate
from tests.integration.backup.world import MARKER, BackupWorld, new_world

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_reader import BackupReader  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import open_store_and_keys  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_checks import check_tables  # noqa: E402
from ansible_collections.keel.postgres.plugins.modules.restore_verify import argument_spec  # noqa: E402

pytestmark = pytest.mark.integration

NO_READABLE_EMAIL = "SELECT bool_and(email NOT LIKE '%@%') FROM customer"


@pytest.fixture
def world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook):
    world = new_world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook, rental_sql(MARKER))
    world.add_tenant("acme")
    yield world
    assert scratch_databases(pg_cluster) == [], "every scratch database is dropped"


def scratch_databases(pg_cluster) -> list:
    return pg_cluster.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'keel\_verify\_%'")


def scratch_names(pg_cluster) -> list:
    return [row[0] for row in scratch_databases(pg_cluster)]


def verify(world: BackupWorld, check: bool = False, env: dict | None = None, **options):
    return world.run("restore_verify", check=check, env=env, **world.connection, **options)


def stored_json(world: BackupWorld, key: str) -> dict:
    body = world.s3_server.client().get_object(Bucket=world.bucket, Key="pg/" + key)["Body"].read()
    return json.loads(body)


def records_of(world: BackupWorld, tenant: str = "acme") -> list:
    return sorted(key for key in world.objects(f"pg/{tenant}/verifications/"))


def test_a_backup_restores_and_every_fingerprint_matches(world, pg_cluster):
    backup = world.backup("acme")
    assert backup["tables"] == len(ROW_COUNTS)

    result, planned = verify(world, check=True, tenant="acme")
    assert result.rc == 0, planned
    [plan] = planned["plan"]
    assert plan["backup_id"] == backup["backup_id"] and plan["mac_status"] == "verified" and plan["table_stats"] == "fingerprints"
    assert planned["verifications"] == [] and records_of(world) == [], "check mode restores and records nothing"

    result, task = verify(world, tenant="acme")
    assert result.rc == 0, task
    assert (task["passed_count"], task["failed_count"], task["success_rate"]) == (1, 0, 1.0)
    assert task["by_tier"] == {"hot": {"passed": 1, "failed": 0, "success_rate": 1.0}}
    [record] = task["verifications"]
    assert record["outcome"] == "passed" and record["reason"] is None, record
    assert record["backup_id"] == backup["backup_id"] and record["tier"] == "hot"
    assert record["tables_checked"] == len(ROW_COUNTS) and record["mismatches"] == []
    assert record["scratch_dropped"] is True and record["scratch_database"].startswith("keel_verify_acme_")
    assert {"fetch_restore", "stats", "drop_scratch"} <= set(record["stages_ms"]) and record["duration_ms"] > 0
    assert record["dump_bytes"] == backup["sizes"]["raw"]

    assert records_of(world) == ["pg/" + record["record_object"]]
    stored = stored_json(world, record["record_object"])
    assert stored.pop("mac")["algorithm"] == "HMAC-SHA256" and record["record_authenticated"] is True
    assert stored == {key: value for key, value in record.items() if key not in ("record_object", "record_error", "record_authenticated", "audit")}
    audit = stored_json(world, record["audit"]["audit_object"])
    assert audit["action"] == "restore_verify" and audit["outcome"] == "passed" and audit["verification_object"] == record["record_object"]

    result, info = world.run("backup_info", tenant="acme")
    assert result.rc == 0, info
    [listed] = info["tenants"][0]["backups"]
    assert listed["verification"]["outcome"] == "passed" and listed["verification"]["backup_id"] == backup["backup_id"]


def test_rows_changed_after_the_dump_are_mismatches(world, pg_cluster):
    """The comparison restore_verify runs, pointed at the source database after it changed (a restore never differs)."""
    backup = world.backup("acme")
    params = ArgumentSpecValidator(argument_spec()).validate(world.module_args()).validated_parameters
    manifest = BackupReader(*open_store_and_keys(params), "acme", backup["backup_id"]).manifest
    with psycopg.connect(pg_cluster.dsn(world.database), autocommit=True) as conn:
        assert check_tables(conn, manifest) == (len(ROW_COUNTS), [])
        conn.execute("UPDATE film SET rental_rate = rental_rate + 0.01 WHERE film_id = 7")
        conn.execute("DELETE FROM payment WHERE payment_id = 12")
        conn.execute("CREATE TABLE globex.late_arrival (id integer)")
        checked, mismatches = check_tables(conn, manifest)
    assert checked == len(ROW_COUNTS) + 1
    assert mismatches == [
        {"table": "globex.late_arrival", "problem": "not in the manifest", "rows_expected": None, "rows_found": 0, "fingerprint_match": False},
        {"table": "public.film", "problem": "fingerprint differs", "rows_expected": 1000, "rows_found": 1000, "fingerprint_match": False},
        {"table": "public.payment_p2026_01", "problem": "row count differs", "rows_expected": 2674, "rows_found": 2673, "fingerprint_match": False},
    ]


def test_each_damaged_backup_fails_with_its_reason_and_the_run_goes_on(world, pg_cluster):
    stored = {name: StoredBackup(world, world.backup("acme", chunk_size="64KiB")) for name in ("flip", "truncate", "reorder", "header", "intact")}
    assert len(stored["intact"].chunks()) >= 4, "the rental data must span several chunks"
    stored["flip"].replace(flip_byte(stored["flip"]))
    stored["truncate"].replace(truncate(stored["truncate"]))
    stored["reorder"].replace(reorder(stored["reorder"]))
    header = stored["header"]
    header.replace(stored["intact"].header + header.original[len(header.header):])

    result, task = verify(world, sample={"mode": "random", "count": 10})
    assert result.rc != 0 and task["error"] == "verification_failed", task
    assert (task["passed_count"], task["failed_count"], task["success_rate"]) == (1, 4, 0.2)
    outcomes = {entry["backup_id"]: entry for entry in task["verifications"]}
    expected = {
        "flip": "chunk 1 failed authentication",
        "truncate": "truncated",
        "reorder": "chunk 1 is out of order: it was sealed as chunk 2",
        "header": "does not match its manifest",
    }
    for name, damaged in stored.items():
        record = outcomes[damaged.key.split("/")[3]]
        assert record["scratch_dropped"] is True
        assert stored_json(world, record["record_object"])["outcome"] == record["outcome"]
        if name == "intact":
            assert record["outcome"] == "passed", record
            continue
        assert record["outcome"] == "failed" and record["reason"] == "integrity_failed", record
        assert expected[name] in record["message"], record["message"]
        assert expected[name] in task["msg"]
        assert record["scratch_database"].startswith("keel_verify_acme_"), "the damage shows while streaming into the scratch database"
    assert scratch_databases(pg_cluster) == []
    assert len(records_of(world)) == 5


def test_a_shredded_key_is_a_recorded_failure(world, pg_cluster):
    backup = world.backup("acme")
    world.keys().shred("acme")
    result, task = verify(world, tenant="acme")
    assert result.rc != 0 and task["error"] == "verification_failed", task
    [record] = task["verifications"]
    assert record["outcome"] == "failed" and record["reason"] == "key_shredded"
    assert "shredded" in record["message"] and "shredded" in task["msg"]
    assert stored_json(world, record["record_object"])["reason"] == "key_shredded"
    assert "scratch_database" not in record, "the manifest is refused before a scratch database is created"
    result, info = world.run("backup_info", tenant="acme")
    assert result.rc == 0, info
    [listed] = info["tenants"][0]["backups"]
    assert listed["backup_id"] == backup["backup_id"] and listed["verification"]["outcome"] == "failed"


def test_masked_values_never_reach_a_result_a_log_or_the_store(world, pg_cluster):
    world.backup("acme")
    masking = [{"table": "customer", "column": "email", "expression": "md5(email)"}]
    assertions = [
        {"name": "no readable e-mail", "sql": NO_READABLE_EMAIL},
        {"name": "materialized view refreshed", "sql": "SELECT bool_and(email NOT LIKE '%@%') FROM customer_contacts"},
        {"name": "every rental has its customer",
         "sql": "SELECT NOT EXISTS (SELECT 1 FROM rental r LEFT JOIN customer c USING (customer_id) WHERE c.customer_id IS NULL)"},
    ]
    result, task = verify(world, tenant="acme", masking=masking, assertions=assertions, env={"ANSIBLE_VERBOSITY": "3"})
    assert result.rc == 0, task
    [record] = task["verifications"]
    assert record["outcome"] == "passed", record
    assert record["mismatches"] == [], "fingerprints are taken before masking, on the data that was dumped"
    assert record["masking"] == [{"table": "public.customer", "column": "email", "rows": ROW_COUNTS["public.customer"]}]
    assert [entry["passed"] for entry in record["assertions"]] == [True, True, True]
    assert {"masking", "assertions"} <= set(record["stages_ms"])

    assert "<localhost> EXEC" in result.stdout, "the run really was verbose"
    assert MARKER not in result.stdout and MARKER not in result.stderr
    assert MARKER not in json.dumps(task)
    assert MARKER not in json.dumps(stored_json(world, record["record_object"]))
    assert MARKER not in json.dumps(stored_json(world, record["audit"]["audit_object"]))


def test_failing_assertions_report_why_without_a_value(world, pg_cluster):
    world.backup("acme")
    assertions = [
        {"name": "holds", "sql": "SELECT count(*) = 5000 FROM customer"},
        {"name": "no readable e-mail", "sql": NO_READABLE_EMAIL},
        {"name": "quotes a value in its error", "sql": "SELECT email::integer = 1 FROM customer WHERE customer_id = 1"},
        {"name": "returns the value", "sql": "SELECT email FROM customer WHERE customer_id = 1"},
        {"name": "divides by zero", "sql": "SELECT 1 / 0 = 1"},
        {"name": "writes", "sql": "WITH gone AS (DELETE FROM payment RETURNING 1) SELECT count(*) > 0 FROM gone"},
        {"name": "too slow", "sql": "SELECT (SELECT true FROM pg_sleep(5))"},
    ]
    result, task = verify(world, tenant="acme", assertions=assertions, statement_timeout="300ms", fail_on_failure=False)
    assert result.rc == 0, task
    assert (task["passed_count"], task["failed_count"]) == (0, 1)
    [record] = task["verifications"]
    assert record["outcome"] == "failed" and record["reason"] == "assertion_failed"
    assert record["mismatches"] == []
    verdicts = {entry["name"]: entry for entry in record["assertions"]}
    assert verdicts["holds"] == {"name": "holds", "passed": True}
    assert verdicts["no readable e-mail"]["problem"] == "returned false"
    assert verdicts["returns the value"]["problem"] == "returned a value of type str, not a boolean"
    conditions = {name: (verdicts[name]["sqlstate"], verdicts[name]["condition_class"]) for name in
                  ("quotes a value in its error", "divides by zero", "writes", "too slow")}
    assert conditions == {
        "quotes a value in its error": ("22P02", "data_exception"),
        "divides by zero": ("22012", "data_exception"),
        "writes": ("25006", "invalid_transaction_state"),
        "too slow": ("57014", "operator_intervention"),
    }
    assert verdicts["divides by zero"]["problem"] == "raised SQLSTATE 22012 (division_by_zero)"
    assert "6 of 7 assertions failed" in record["message"]
    assert MARKER not in json.dumps(task) and MARKER not in result.stdout

    rules = [{"table": "public.customer", "column": "e_mail", "expression": "md5(e_mail)"}]
    result, task = verify(world, tenant="acme", masking=rules, assertions=assertions[:1])
    assert result.rc != 0, task
    [record] = task["verifications"]
    assert record["reason"] == "masking_failed" and "masking[0].column" in record["message"], record
    assert record["assertions"] == [{"name": "holds", "passed": None, "problem": "not run: masking failed"}]
    assert len(records_of(world)) == 2


def test_a_sample_takes_the_newest_backup_of_every_tenant_and_tier(world, pg_cluster):
    world.add_tenant("globex", schemas=["globex"], retention={"days": 365, "tier": "cold"})
    world.add_tenant("initech")
    world.backup("acme")
    globex = world.backup("globex")
    result, task = verify(world, sample={"mode": "latest_per_tier"})
    assert result.rc == 0, task
    assert task["by_tier"] == {"hot": {"passed": 1, "failed": 0, "success_rate": 1.0}, "cold": {"passed": 1, "failed": 0, "success_rate": 1.0}}
    by_tenant = {entry["tenant"]: entry for entry in task["verifications"]}
    assert by_tenant["globex"]["backup_id"] == globex["backup_id"] and by_tenant["globex"]["tables_checked"] == 1
    assert by_tenant["acme"]["tables_checked"] == len(ROW_COUNTS)
    assert task["not_sampled"] == [{"tenant": "initech", "tier": "hot", "reason": "no published backup"}]


@pytest.mark.parametrize(
    "options, field",
    [
        ({"tenant": "acme", "masking": [{"table": "customer", "expression": "'***'"}]}, "masking[0].column"),
        ({"sample": {"mode": "newest"}}, "sample.mode"),
        ({"tenant": "acme", "backup_id": "20200101T000000Z-00000000"}, "backup_id"),
        ({"tenant": "initech"}, "tenant"),
        ({}, "tenant"),
        ({"tenant": "acme", "statement_timeout": "soon"}, "statement_timeout"),
    ],
)
def test_bad_input_is_refused_naming_the_field(world, options, field):
    result, task = verify(world, **options)
    assert result.rc != 0 and task.get("field") == field, task
    assert records_of(world) == []


def test_a_scratch_database_left_by_a_killed_run_is_dropped_but_not_one_in_use(world, pg_cluster):
    backup = world.backup("acme")
    orphan, in_use = "keel_verify_acme_0badf00d", "keel_verify_acme_0c0ffee0"
    for name in (orphan, in_use):
        pg_cluster.execute(f'CREATE DATABASE "{name}"')
    # A verification in progress elsewhere holds its scratch database's lock on its own session.
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(hashtext('keel.postgres/restore_verify'), hashtext(%s))", (in_use,))
        result, planned = verify(world, check=True, tenant="acme", backup_id=backup["backup_id"])
        assert result.rc == 0, planned
        assert planned["stale_scratch_dropped"] == [orphan] and orphan in scratch_names(pg_cluster), "check mode drops nothing"
        result, task = verify(world, tenant="acme", backup_id=backup["backup_id"])
        assert result.rc == 0, task
        assert task["stale_scratch_dropped"] == [orphan]
        assert task["verifications"][0]["outcome"] == "passed"
        assert scratch_names(pg_cluster) == [in_use], "the orphan is gone, the one in use is not, nor this run's own"
    pg_cluster.execute(f'DROP DATABASE "{in_use}"')
