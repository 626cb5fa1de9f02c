from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.preflight.gates import (
    GatePolicy,
    evaluate_gates,
    parse_gate_policy,
    summarize_failures,
)


def report(**overrides):
    base = {
        "server": {"in_recovery": False},
        "transactions": [],
        "tables": [],
        "replication": {"role": "primary", "standbys": [], "slots": [], "self": None},
        "pg_stat_statements": {"usable": True, "problem": None},
        "client_tools": [],
    }
    base.update(overrides)
    return base


def transaction(pid, age):
    return {"pid": pid, "age_seconds": age, "application_name": "psql", "backend_type": "client backend",
            "state": "idle in transaction"}


def test_parse_policy_reads_units():
    policy = parse_gate_policy({"max_transaction_age": "30s", "max_replication_lag": "2min",
                                "max_replication_lag_bytes": "16MB", "require_primary_key": True})
    assert policy.max_transaction_age == 30
    assert policy.max_replication_lag == 120
    assert policy.max_replication_lag_bytes == 16 * 1024**2
    assert policy.require_primary_key is True


def test_parse_policy_names_nested_field():
    with pytest.raises(InvalidOption) as caught:
        parse_gate_policy({"max_replication_lag_bytes": "lots"})
    assert caught.value.field == "fail_on.max_replication_lag_bytes"


def test_no_policy_means_nothing_fails_whatever_the_report():
    busy = report(transactions=[transaction(1, 9999)],
                  tables=[{"name": "public.t", "has_primary_key": False, "lock_sessions": [{"pid": 2}]}])
    assert evaluate_gates(GatePolicy(), busy) == []


def test_old_transaction_fails_with_value_and_threshold():
    failures = evaluate_gates(GatePolicy(max_transaction_age=30.0),
                              report(transactions=[transaction(4242, 65.24), transaction(7, 10.0)]))
    assert [f["subject"] for f in failures] == ["pid 4242"]
    assert failures[0]["value"] == 65.24 and failures[0]["threshold"] == 30.0
    assert "is 65.2 s old, threshold 30.0 s" in failures[0]["message"]


def test_replication_lag_in_seconds_and_bytes():
    standby = {"application_name": "replica1", "client_addr": "10.0.0.2", "lag_seconds": 12.0, "lag_bytes": 64 * 1024**2}
    failures = evaluate_gates(GatePolicy(max_replication_lag=5.0, max_replication_lag_bytes=16 * 1024**2),
                              report(replication={"standbys": [standby], "self": None}))
    assert {f["check"] for f in failures} == {"max_replication_lag", "max_replication_lag_bytes"}
    assert all(f["subject"] == "replica1" for f in failures)


def test_standby_reports_its_own_lag():
    failures = evaluate_gates(GatePolicy(max_replication_lag=1.0, require_primary=True),
                              report(server={"in_recovery": True},
                                     replication={"standbys": [], "self": {"lag_seconds": 3.0, "lag_bytes": 0}}))
    assert {f["check"] for f in failures} == {"max_replication_lag", "require_primary"}


def test_unknown_lag_does_not_fail():
    standby = {"application_name": "r", "client_addr": None, "lag_seconds": None, "lag_bytes": None}
    assert evaluate_gates(GatePolicy(max_replication_lag=1.0, max_replication_lag_bytes=1),
                          report(replication={"standbys": [standby], "self": None})) == []


def test_table_gates():
    tables = [{"name": "public.a", "has_primary_key": False, "lock_sessions": []},
              {"name": "public.b", "has_primary_key": True, "lock_sessions": [{"pid": 9}, {"pid": 9}, {"pid": 3}]}]
    failures = evaluate_gates(GatePolicy(require_primary_key=True, forbid_table_locks=True), report(tables=tables))
    assert [(f["check"], f["subject"]) for f in failures] == [
        ("require_primary_key", "public.a"),
        ("forbid_table_locks", "public.b"),
    ]
    assert "(pids 3, 9)" in failures[1]["message"]


def test_required_client_tool_problem_fails_but_reported_one_does_not():
    tool = {"name": "pg_dump", "version": "13.4", "server_version": "15.18", "compatible": False,
            "problem": "pg_dump 13.4 is older", "required": True}
    assert [f["check"] for f in evaluate_gates(GatePolicy(), report(client_tools=[tool]))] == ["client_tools"]
    assert evaluate_gates(GatePolicy(), report(client_tools=[dict(tool, required=False)])) == []


def test_summary_lists_every_failure():
    failures = evaluate_gates(GatePolicy(max_transaction_age=1.0),
                              report(transactions=[transaction(1, 5.0), transaction(2, 6.0)]))
    summary = summarize_failures(failures)
    assert summary.startswith("preflight failed 2 check(s): max_transaction_age: transaction of pid 1")
