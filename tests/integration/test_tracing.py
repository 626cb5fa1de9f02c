"""OpenTelemetry traces from real module runs, received by a loopback OTLP/HTTP receiver that decodes the protobuf.

No OpenTelemetry collector installs from the package registries this project reaches (PyPI, Debian, npm), so the
receiver in tests/harness/otlp_receiver.py stands in for one: it is a real HTTP server and decodes the payloads with
opentelemetry-proto's message classes, so what it checks is what a collector would get.
"""

from __future__ import annotations

import socket

import pytest

from tests.harness.otlp_receiver import OtlpReceiver
from tests.integration.conftest import SCHEMA_CHANGE_PLAYBOOK

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = "00-{0}-{1}-01".format(TRACE_ID, PARENT_ID)
SECRET = "hunter2-otlp-never-sent"
ROW_VALUE = "row-value-never-sent-7c1e"
MIGRATION = [{"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}}]


@pytest.fixture
def receiver():
    started = OtlpReceiver().start()
    yield started
    started.stop()


@pytest.fixture
def orders(pg_cluster, pg_db):
    pg_cluster.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 0, note text)", dbname=pg_db)
    pg_cluster.execute("INSERT INTO orders (amount, note) SELECT g, %s FROM generate_series(1, 2000) g", (ROW_VALUE,), dbname=pg_db)
    pg_cluster.execute("ANALYZE orders", dbname=pg_db)
    return "orders"


def migrate(run_playbook, connection, env=None, **options):
    args = dict(connection, login_password=SECRET, name="add_status", operations=MIGRATION, state="completed", batch_size=300,
                revert_window=0, **options)
    result = run_playbook(SCHEMA_CHANGE_PLAYBOOK, extra_vars={"module_args": args}, env=env)
    return result.task("schema change")


def test_a_migration_sends_one_span_tree_under_the_given_parent_with_labels_and_counters_and_nothing_secret(
        run_playbook, connection, orders, receiver, pg_db):
    task = migrate(run_playbook, connection, otlp_endpoint=receiver.endpoint, traceparent=TRACEPARENT)
    assert task["status"] == "changed", task["result"]
    assert receiver.paths == ["/v1/traces"], "one export request per run"
    (root,) = receiver.named("keel.postgres.schema_change")
    assert root.trace_id == TRACE_ID and root.parent_span_id == PARENT_ID
    assert task["result"]["metrics"]["exported"]["trace_id"] == TRACE_ID
    assert task["result"]["metrics"]["exported"]["spans"] == len(receiver.spans)
    assert root.resource["service.name"] == "keel.postgres"
    assert root.attributes["keel.module"] == "schema_change" and root.attributes["db.namespace"] == pg_db
    assert root.attributes["keel.migration"] == "add_status"
    assert root.attributes["keel.rows_backfilled"] == 2000
    by_id = {span.span_id: span for span in receiver.spans}
    for span in receiver.spans:
        assert span.trace_id == TRACE_ID
        assert span is root or span.parent_span_id in by_id, "every phase hangs under the run's span"
        assert span.start_ns <= span.end_ns
        assert root.start_ns <= span.start_ns and span.end_ns <= root.end_ns
    phases = {span.name: span for span in receiver.spans if span is not root}
    assert set(task["result"]["metrics"]["phases_ms"]) == set(phases)
    # Batches are aggregated: one span for the backfill, however many batches ran.
    backfill = [span for span in receiver.spans if span is not root and span.attributes.get("keel.rows_backfilled")]
    assert backfill and all(span.attributes["keel.repetitions"] >= 1 for span in backfill)
    assert sum(1 for span in receiver.spans if span.name == "backfill") <= 1
    payload = b"".join(receiver.requests)
    for forbidden in (SECRET, ROW_VALUE, "ALTER TABLE", "UPDATE "):
        assert forbidden.encode() not in payload, forbidden


def test_the_parent_comes_from_traceparent_in_the_environment_and_the_endpoint_from_otel_variables(
        run_playbook, connection, orders, receiver):
    task = migrate(run_playbook, connection, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "TRACEPARENT": TRACEPARENT,
                                                  "OTEL_SERVICE_NAME": "payments-migrations"})
    assert task["status"] == "changed", task["result"]
    (root,) = receiver.named("keel.postgres.schema_change")
    assert root.trace_id == TRACE_ID and root.parent_span_id == PARENT_ID
    assert root.resource["service.name"] == "payments-migrations"


def test_without_an_endpoint_nothing_is_sent(run_playbook, connection, orders, receiver):
    task = migrate(run_playbook, connection, env={"TRACEPARENT": TRACEPARENT})
    assert task["status"] == "changed"
    assert receiver.requests == []
    assert task["result"]["metrics"]["exported"] == {"textfile": None, "trace_id": None, "spans": 0}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("collector", ["down", "refusing"])
def test_a_dead_or_refusing_collector_warns_once_and_the_task_succeeds(run_playbook, connection, orders, receiver, collector):
    if collector == "refusing":
        receiver.status = 503
        endpoint = receiver.endpoint
    else:
        endpoint = "http://127.0.0.1:{0}".format(closed_port())
    task = migrate(run_playbook, connection, env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}, otlp_endpoint=endpoint)
    assert task["status"] == "changed", task["result"]
    warnings = [warning for warning in task["result"].get("warnings", []) if "tracing" in warning]
    assert len(warnings) == 1 and "could not be sent" in warnings[0], task["result"].get("warnings")
    assert task["result"]["phase"] == "finalized"


@pytest.mark.parametrize(("option", "value"), [("otlp_endpoint", "grpc://127.0.0.1:4317"), ("traceparent", "00-" + "0" * 32 + "-" + PARENT_ID + "-01"),
                                               ("traceparent", "not-a-traceparent")])
def test_bad_tracing_options_fail_naming_the_field_before_anything_changes(run_playbook, connection, orders, pg_cluster, pg_db, option, value):
    task = migrate(run_playbook, connection, **{option: value})
    assert task["status"] == "failed"
    assert task["result"]["field"] == option and task["result"]["error"] == "invalid_option"
    (column_type,) = pg_cluster.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass "
                                        "AND attname = 'amount'", dbname=pg_db)[0]
    assert column_type == "integer"
    assert pg_cluster.execute("SELECT to_regnamespace('keel') IS NULL", dbname=pg_db)[0][0] is True, "not even the catalog was created"
