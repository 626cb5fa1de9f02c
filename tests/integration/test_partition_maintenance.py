"""keel.postgres.partition_maintenance through real ansible-playbook runs against a real PostgreSQL (and SeaweedFS S3)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

from tests.integration.backup.world import make_locked_bucket

pytestmark = pytest.mark.integration

TASK = """
    - name: {name}
      keel.postgres.{module}: "{{{{ {name} }}}}"
      ignore_errors: true
"""


def playbook(names_and_modules: list[tuple[str, str]]) -> str:
    tasks = "".join(TASK.format(name=name, module=module) for name, module in names_and_modules)
    return "- hosts: localhost\n  gather_facts: false\n  tasks:\n" + tasks


@pytest.fixture
def maintain(run_playbook, connection):
    """Run partition_maintenance once with ``args`` (connection added); returns the task record."""

    def run(check: bool = False, diff: bool = False, **args: Any) -> dict[str, Any]:
        result = run_playbook(playbook([("maintain", "partition_maintenance")]),
                              extra_vars={"maintain": {**connection, **args}}, check=check, diff=diff)
        return result.task("maintain")

    return run


def partitions(pg_cluster, pg_db, parent: str = "events") -> list[str]:
    rows = pg_cluster.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass ORDER BY 1",
        (parent,), dbname=pg_db)
    return [row[0] for row in rows]


def monthly_events(pg_cluster, pg_db, months_back: int, months_ahead: int) -> None:
    """events partitioned by month on created_at, partitions from months_back before this month to months_ahead after."""
    statements = ["CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL, payload text,"
                  " PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"]
    for offset in range(-months_back, months_ahead + 1):
        statements.append(
            "DO $$ DECLARE lo timestamptz := date_trunc('month', now()) + interval '{0} month'; BEGIN"
            " EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',"
            " 'events_m' || to_char(lo, 'YYYYMM'), lo, lo + interval '1 month'); END $$".format(offset))
    pg_cluster.execute(";".join(statements), dbname=pg_db)


def daily_events(pg_cluster, pg_db, days_back: int, days_ahead: int, default: bool = False) -> None:
    statements = ["CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL, payload text,"
                  " PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"]
    for offset in range(-days_back, days_ahead + 1):
        statements.append(
            "DO $$ DECLARE lo timestamptz := date_trunc('day', now()) + interval '{0} day'; BEGIN"
            " EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',"
            " 'events_d' || to_char(lo, 'YYYYMMDD'), lo, lo + interval '1 day'); END $$".format(offset))
    if default:
        statements.append("CREATE TABLE events_default PARTITION OF events DEFAULT")
    statements.append("INSERT INTO events (created_at, payload) SELECT now() - g * interval '1 hour', 'row ' || g"
                      " FROM generate_series(0, {0} * 24) g".format(days_back))
    pg_cluster.execute(";".join(statements), dbname=pg_db)


def test_premake_check_mode_diff_and_idempotence(maintain, pg_cluster, pg_db):
    monthly_events(pg_cluster, pg_db, months_back=2, months_ahead=1)
    before = partitions(pg_cluster, pg_db)

    planned = maintain(check=True, diff=True, table="public.events", premake=4)
    assert planned["status"] == "changed", planned
    assert len(planned["result"]["plan"]["create"]) == 3  # one exists ahead already
    assert partitions(pg_cluster, pg_db) == before, "check mode changed the table"
    assert planned["result"]["diff"]["after"].count("\n") == len(before) + 3

    done = maintain(diff=True, table="public.events", premake=4)
    assert done["status"] == "changed", done
    created = done["result"]["created"]
    assert [c["name"] for c in created] == [p["name"] for p in planned["result"]["plan"]["create"]]
    assert all(c["name"].startswith("public.events_p") for c in created)
    assert len(partitions(pg_cluster, pg_db)) == len(before) + 3
    assert done["result"]["metrics"]["counters"]["partitions_created"] == 3
    # The new partitions follow the inferred calendar-month grid and take rows.
    pg_cluster.execute("INSERT INTO events (created_at) VALUES (date_trunc('month', now()) + interval '4 month 3 day')", dbname=pg_db)

    again = maintain(table="events", premake=4)
    assert again["status"] == "ok" and again["result"]["changed"] is False, again


def test_errors_name_the_field_before_anything_changes(run_playbook, connection, pg_cluster, pg_db):
    pg_cluster.execute(
        "CREATE TABLE plain (id int); CREATE TABLE by_list (k text) PARTITION BY LIST (k);"
        "CREATE TABLE uneven (k int) PARTITION BY RANGE (k);"
        "CREATE TABLE uneven_a PARTITION OF uneven FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE uneven_b PARTITION OF uneven FOR VALUES FROM (10) TO (30)", dbname=pg_db)
    cases = {
        "unknown": ({"table": "nosuch"}, "table", "no table nosuch"),
        "plain": ({"table": "plain"}, "table", "not a partitioned table"),
        "by_list": ({"table": "by_list"}, "table", "not by range"),
        "uneven": ({"table": "uneven"}, "interval", "do not all have the same width"),
        "bad_retention": ({"table": "uneven", "premake": 0, "retention": "ninety days"}, "retention", "duration"),
        "int_retention": ({"table": "uneven", "premake": 0, "retention": "90d"}, "retention", "needs a time key"),
        "bad_name": ({"table": "a;b"}, "table", "plain identifier"),
    }
    result = run_playbook(playbook([(name, "partition_maintenance") for name in cases]),
                          extra_vars={name: {**connection, **args} for name, (args, _field, _words) in cases.items()})
    for name, (_args, field, words) in cases.items():
        record = result.task(name)
        task = record["result"]
        assert record["status"] == "failed" and task.get("field") == field and words in task["msg"], (name, task)
    assert partitions(pg_cluster, pg_db, "uneven") == ["uneven_a", "uneven_b"]


def test_retention_detaches_concurrently_while_a_writer_inserts(maintain, pg_cluster, pg_db):
    daily_events(pg_cluster, pg_db, days_back=8, days_ahead=3)
    stop = threading.Event()
    outcome: dict[str, Any] = {"rows": 0, "errors": []}

    def writer() -> None:
        with psycopg.connect(pg_cluster.dsn(pg_db), autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute("INSERT INTO events (created_at, payload) VALUES (now(), 'live')")
                    outcome["rows"] += 1
                except psycopg.Error as exc:  # any error fails the test below
                    outcome["errors"].append(str(exc))
                time.sleep(0.002)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        done = maintain(table="events", premake=3, retention="5d")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert done["status"] == "changed", done
    detached = done["result"]["detached"]
    assert len(detached) == 3 and all(d["method"] == "concurrently" for d in detached), detached
    assert outcome["errors"] == [] and outcome["rows"] > 50, outcome
    remaining = partitions(pg_cluster, pg_db)
    assert not any(d["name"].split(".")[1] in remaining for d in detached)
    # Kept (drop_detached is false), marked, with the rows it had.
    kept = detached[-1]["name"]  # a whole day of hourly rows
    assert pg_cluster.execute("SELECT count(*) FROM {0}".format(kept), dbname=pg_db)[0][0] == 24
    comment = pg_cluster.execute("SELECT obj_description(%s::regclass, 'pg_class')", (kept,), dbname=pg_db)[0][0]
    assert json.loads(comment.split(" ", 1)[1])["parent"] == "public.events"

    again = maintain(table="events", premake=3, retention="5d")
    assert again["result"]["changed"] is False, again


def test_pending_detach_is_finalized_by_the_next_run(maintain, pg_cluster, pg_db):
    daily_events(pg_cluster, pg_db, days_back=3, days_ahead=3)
    oldest = partitions(pg_cluster, pg_db)[0]
    # How many rows the oldest day holds depends on the time of day the test runs.
    rows = pg_cluster.execute("SELECT count(*) FROM " + oldest, dbname=pg_db)[0][0]
    assert rows >= 1
    with psycopg.connect(pg_cluster.dsn(pg_db)) as reader:
        reader.execute("SELECT count(*) FROM events").fetchone()  # an open transaction that read the parent
        with psycopg.connect(pg_cluster.dsn(pg_db), autocommit=True) as detacher:
            detacher.execute("SET statement_timeout = '1s'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                detacher.execute("ALTER TABLE events DETACH PARTITION {0} CONCURRENTLY".format(oldest))
        reader.rollback()
    pending = pg_cluster.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass", (oldest,), dbname=pg_db)
    assert pending == [(True,)]

    done = maintain(table="events", premake=3)
    assert done["status"] == "changed", done
    assert done["result"]["finalized_pending"] == ["public." + oldest]
    assert oldest not in partitions(pg_cluster, pg_db)
    assert pg_cluster.execute("SELECT count(*) FROM " + oldest, dbname=pg_db) == [(rows,)]  # a table of its own, with its rows


def test_default_partition(maintain, pg_cluster, pg_db):
    daily_events(pg_cluster, pg_db, days_back=6, days_ahead=1, default=True)
    pg_cluster.execute("INSERT INTO events (created_at, payload) VALUES (date_trunc('day', now()) + interval '2 day 1 hour', 'early')",
                       dbname=pg_db)
    before = partitions(pg_cluster, pg_db)

    refused = maintain(table="events", premake=3, retention="3d")
    assert refused["status"] == "failed" and refused["result"]["field"] == "premake", refused
    assert "DEFAULT partition public.events_default" in refused["result"]["msg"]
    assert partitions(pg_cluster, pg_db) == before, "a refused run changed the table"

    pg_cluster.execute("DELETE FROM events_default", dbname=pg_db)
    done = maintain(table="events", premake=3, retention="3d")
    assert done["status"] == "changed", done
    assert len(done["result"]["created"]) == 2
    assert [d["method"] for d in done["result"]["detached"]] == ["plain"] * 3


def test_archive_to_s3_then_drop(run_playbook, connection, pg_cluster, pg_db, s3_server, tmp_path):
    from tests.integration.backup.world import FileKeyProvider

    daily_events(pg_cluster, pg_db, days_back=4, days_ahead=3)
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    FileKeyProvider(str(key_dir)).create("events-archive")
    bucket = make_locked_bucket(s3_server.client(), object_lock=False)
    backup_family = {
        "tenants": [{"name": "events-archive", "database": pg_db, "retention": {"days": 30, "tier": "archive"}}],
        "store": {"type": "s3", "bucket": bucket, "prefix": "pg/", "endpoint_url": s3_server.endpoint_url, "region": "us-east-1",
                  "access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
        "key_provider": {"type": "file", "directory": str(key_dir)},
    }
    maintain_args = {**connection, **backup_family, "table": "events", "premake": 3, "retention": "2d",
                     "archive": {"tenant": "events-archive"}, "drop_detached": True}
    info_args = {**backup_family, "tenant": "events-archive"}
    result = run_playbook(playbook([("maintain", "partition_maintenance"), ("listing", "backup_info")]),
                          extra_vars={"maintain": maintain_args, "listing": info_args})
    task = result.task("maintain")
    assert task["status"] == "changed", task
    archived, dropped = task["result"]["archived"], task["result"]["dropped"]
    assert len(archived) == 2 and dropped == [a["table"] for a in archived]
    assert s3_server.secret_key not in json.dumps(task["result"])
    stored = {item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="pg/").get("Contents", [])}
    for entry in archived:
        assert "pg/" + entry["object"] in stored and "pg/" + entry["manifest"] in stored, (entry, stored)
        assert pg_cluster.execute("SELECT to_regclass(%s)", (entry["table"],), dbname=pg_db) == [(None,)]
    assert pg_cluster.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'keel_archive_%'", dbname=pg_db) == [(0,)]
    listed = result.task("listing")["result"]["tenants"][0]
    assert {b["backup_id"] for b in listed["backups"]} == {a["backup_id"] for a in archived}, listed
    assert all(b["mac_status"] == "verified" and b["tables"] == 1 for b in listed["backups"]), listed
