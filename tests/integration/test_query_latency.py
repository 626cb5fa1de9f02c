"""keel.postgres.query_latency through ansible-playbook against the session's PostgreSQL cluster.

Several module runs share one playbook where the steps need no SQL in between,
to keep the file fast: each task takes its options from ``module_args.<key>``.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict, List

import pytest

from tests.harness.collection_path import ensure_collection_importable

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.kpi.host_reference import series_of  # noqa: E402

pytestmark = pytest.mark.integration

LOOKUP = {"name": "lookup by code", "sql": "SELECT id, payload FROM items WHERE code = 123457"}
SMALL = {"name": "count small", "sql": "SELECT count(*) FROM small"}


def playbook(*tasks: Dict[str, Any]) -> str:
    """A playbook with one keel.postgres.query_latency task per entry: {key, check_mode?, ignore_errors?}."""
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
    for task in tasks:
        lines.append("    - name: {0}".format(task["key"]))
        lines.append('      keel.postgres.query_latency: "{{{{ module_args.{0} }}}}"'.format(task["key"]))
        if task.get("check_mode"):
            lines.append("      check_mode: true")
        if task.get("ignore_errors"):
            lines.append("      ignore_errors: true")
    return "\n".join(lines) + "\n"


@pytest.fixture
def latency(run_playbook, connection):
    """Run the given tasks ({key, options, check_mode?, ignore_errors?}); returns (playbook result, {key: task record})."""

    def run(*tasks: Dict[str, Any]):
        module_args = {task["key"]: dict(connection, **task["options"]) for task in tasks}
        result = run_playbook(playbook(*tasks), extra_vars={"module_args": module_args}, timeout=300)
        return result, {task["key"]: result.task(task["key"]) for task in tasks}

    return run


def by_name(entries: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def test_baseline_then_compare_unchanged_and_after_dropping_the_index(latency, items, pg_cluster, pg_db, tmp_path):
    path = str(tmp_path / "latency-before.json")
    result, tasks = latency(
        {"key": "baseline", "options": {"mode": "baseline", "baseline_path": path, "queries": [LOOKUP, SMALL]}},
        {"key": "unchanged", "options": {"mode": "compare", "baseline_path": path}},
    )
    result.assert_ok()
    baseline = tasks["baseline"]
    assert baseline["status"] == "changed"
    assert baseline["result"]["baseline_written"] is True
    assert baseline["result"]["baseline_path"] == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    with open(path, encoding="utf-8") as stream:
        document = json.load(stream)
    assert document["format"] == "keel.postgres/query_latency-baseline"
    assert [query["name"] for query in document["queries"]] == [LOOKUP["name"], SMALL["name"]]
    assert all(len(query["samples_ms"]) == 100 for query in document["queries"])
    assert document["settings"]["runs"] == 100 and document["database"] == pg_db
    summaries = by_name(baseline["result"]["queries"])
    assert summaries[LOOKUP["name"]]["rows"] == 1 and summaries[SMALL["name"]]["rows"] == 1
    assert summaries[LOOKUP["name"]]["p99_reliable"] is True
    assert "samples_ms" not in summaries[LOOKUP["name"]]
    assert baseline["result"]["overall"]["n"] == 200
    # 5 warm-up rounds of the 2 queries, then 100 rounds of the 2 queries and the host reference.
    assert baseline["result"]["metrics"]["counters"]["executions"] == 310
    assert series_of(document["reference"]["sql"]) >= 1000 and len(document["reference"]["samples_ms"]) == 100
    assert baseline["result"]["reference"]["sql"] == document["reference"]["sql"] and baseline["result"]["reference"]["n"] == 100

    unchanged = tasks["unchanged"]
    assert unchanged["status"] == "ok"  # compare never changes anything
    comparison = unchanged["result"]["comparison"]
    assert [entry["name"] for entry in comparison["queries"]] == [LOOKUP["name"], SMALL["name"]]
    assert comparison["missing_in_current"] == [] and comparison["missing_in_baseline"] == []
    for entry in comparison["queries"]:
        # Same schema, same data: no large change. (Generous bounds: the machine may be busy with other work.)
        assert abs(entry["p50_delta_pct"]) < 100, entry
        assert entry["p99_ratio_ci"][0] < 2.0, entry
        assert entry["sql_changed"] is False
    assert comparison["overall"]["queries"] == 2
    # compare timed the baseline's reference again, unchanged, so every change is also judged net of it.
    assert comparison["reference"]["usable"] is True and comparison["reference"]["sql"] == document["reference"]["sql"]
    assert unchanged["result"]["reference"]["sql"] == document["reference"]["sql"]
    assert all(len(entry["p99_net_ratio_ci"]) == 2 for entry in comparison["queries"] + [comparison["overall"]])

    pg_cluster.execute("DROP INDEX items_code", dbname=pg_db)
    result, tasks = latency({"key": "dropped", "options": {"mode": "compare", "baseline_path": path}})
    result.assert_ok()
    comparison = tasks["dropped"]["result"]["comparison"]
    lookup = by_name(comparison["queries"])[LOOKUP["name"]]
    # An index lookup became a scan of 200k rows: many times slower, far beyond the noise.
    assert lookup["p99_delta_pct"] > 200, lookup
    assert lookup["p99_ratio_ci"][0] > 2.0, lookup
    assert lookup["significant"] is True
    # The reference touches no table: the scan slowed the query, not the host, so net of the reference it is as clear.
    assert lookup["p99_net_ratio_ci"][0] > 2.0 and lookup["net_significant"] is True, lookup
    assert LOOKUP["name"] in comparison["significant_increases"]
    assert comparison["overall"]["significant"] is True
    assert tasks["dropped"]["status"] == "ok"


def test_without_host_reference_nothing_is_judged_net_and_the_comparison_says_why(latency, items, tmp_path):
    path = str(tmp_path / "latency-plain.json")
    result, tasks = latency(
        {"key": "baseline", "options": {"mode": "baseline", "baseline_path": path, "queries": [SMALL], "runs": 20, "host_reference": False}},
        {"key": "compare", "options": {"mode": "compare", "baseline_path": path, "runs": 20}},
    )
    result.assert_ok()
    with open(path, encoding="utf-8") as stream:
        assert "reference" not in json.load(stream)
    assert tasks["baseline"]["result"]["reference"] is None
    assert tasks["baseline"]["result"]["metrics"]["counters"]["executions"] == 25  # 5 warm-up + 20 rounds, one query
    compared = tasks["compare"]["result"]
    assert compared["reference"] is None, "a baseline without a reference is compared without one"
    assert compared["comparison"]["reference"] == {"sql": None, "usable": False, "reason": "the baseline was measured without a host reference"}
    assert compared["comparison"]["queries"][0]["p99_net_ratio"] is None
    assert "no change is judged net of the host reference: the baseline was measured without a host reference" in compared["latency_warnings"]


def test_read_only_by_default_and_allow_writes_rolls_back(latency, items, pg_cluster, pg_db):
    write = {"name": "bump small", "sql": "UPDATE small SET v = v + 1 WHERE id <= 10"}
    result, tasks = latency(
        {"key": "read_only", "options": {"queries": [write], "runs": 3, "warmup": 0}, "ignore_errors": True},
        {"key": "allow_writes", "options": {"queries": [write, SMALL], "runs": 10, "warmup": 1, "allow_writes": True}},
        {"key": "check_writes", "options": {"queries": [write], "allow_writes": True}, "check_mode": True},
    )
    result.assert_ok()
    refused = tasks["read_only"]
    assert refused["status"] == "failed"
    assert refused["result"]["sqlstate"] == "25006"
    assert refused["result"]["error"] == "query_failed"
    assert "query 'bump small' (queries[0]) failed with SQLSTATE 25006 (read_only_sql_transaction)" in refused["result"]["msg"]
    assert "allow_writes" in refused["result"]["msg"]

    allowed = tasks["allow_writes"]
    assert allowed["status"] == "ok"
    summaries = by_name(allowed["result"]["queries"])
    assert summaries["bump small"]["n"] == 10 and summaries["bump small"]["rows"] == 10
    # Every UPDATE was rolled back: the table holds what the fixture inserted.
    assert pg_cluster.execute("SELECT count(*) FROM small WHERE v <> id", dbname=pg_db) == [(0,)]

    skipped = tasks["check_writes"]["result"]
    assert skipped["measured"] is False and skipped["queries"] == []
    assert any("check mode" in warning for warning in skipped["latency_warnings"])


def test_few_runs_warn_p99_unreliable_and_check_mode_writes_no_baseline(latency, items, tmp_path):
    path = tmp_path / "latency.json"
    result, tasks = latency(
        {"key": "few_runs", "options": {"queries": [SMALL], "runs": 20, "warmup": 2}},
        {"key": "check_baseline", "options": {"queries": [SMALL], "runs": 20, "mode": "baseline", "baseline_path": str(path)},
         "check_mode": True},
    )
    result.assert_ok()
    few = tasks["few_runs"]
    assert few["status"] == "ok"
    summary = few["result"]["queries"][0]
    assert summary["n"] == 20 and summary["p99_reliable"] is False
    assert set(summary) >= {"min", "p50", "p95", "p99", "max", "mean"}
    assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    warnings = few["result"]["latency_warnings"]
    assert any("too few samples for a reliable p99 (20 per query, at least 100 needed" in warning for warning in warnings)
    assert "too few samples for a reliable p99" in result.stdout + result.stderr  # also shown as an Ansible warning

    check = tasks["check_baseline"]
    assert check["status"] == "changed" and check["result"]["baseline_written"] is False
    assert check["result"]["measured"] is True
    assert not path.exists()


def test_top_statements_need_pg_stat_statements(latency, items, pg_cluster, pg_db):
    result, tasks = latency({"key": "missing", "options": {"top_statements": 3}, "ignore_errors": True})
    missing = tasks["missing"]["result"]
    assert tasks["missing"]["status"] == "failed"
    assert missing["field"] == "top_statements"
    assert "pg_stat_statements extension, which is not installed in database {0!r}".format(pg_db) in missing["msg"]

    # The session cluster preloads pg_stat_statements (tests/harness/postgres_cluster.py); install it in this database.
    pg_cluster.execute("CREATE EXTENSION pg_stat_statements", dbname=pg_db)
    pg_cluster.execute("SELECT pg_stat_statements_reset()", dbname=pg_db)
    with pg_cluster.connect(pg_db) as conn:
        for _repeat in range(20):
            conn.execute("SELECT count(*) FROM items WHERE payload LIKE 'a%'").fetchall()  # constant: recorded as $1
            conn.execute("SELECT max(payload) FROM items").fetchall()
            conn.execute("SELECT count(*) FROM small").fetchall()
    result, tasks = latency({"key": "top", "options": {"top_statements": 2, "runs": 10, "warmup": 1}})
    result.assert_ok()
    top = tasks["top"]["result"]
    measured = [query["sql"] for query in top["queries"]]
    assert "SELECT max(payload) FROM items" in measured
    assert all(query["source"] == "top_statements" and query["name"].startswith("statement_") for query in top["queries"])
    reasons = {entry["query"]: entry["reason"] for entry in top["skipped_statements"]}
    assert reasons["SELECT count(*) FROM items WHERE payload LIKE $1"].startswith("has parameters")


def test_bad_input_names_the_field(latency, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "queries": []}))
    result, tasks = latency(
        {"key": "no_path", "options": {"mode": "compare", "queries": [SMALL]}, "ignore_errors": True},
        {"key": "empty", "options": {"queries": []}, "ignore_errors": True},
        {"key": "other_format", "options": {"mode": "compare", "baseline_path": str(other)}, "ignore_errors": True},
        {"key": "commit", "options": {"queries": [{"name": "sneaky", "sql": "UPDATE small SET v = 0; COMMIT"}], "allow_writes": True},
         "ignore_errors": True},
        {"key": "timeout", "options": {"queries": [{"name": "slow", "sql": "SELECT pg_sleep(2)"}], "statement_timeout": "100ms", "runs": 1,
                                       "warmup": 0}, "ignore_errors": True},
    )
    result.assert_ok()  # every failure was ignored
    assert all(task["status"] == "failed" for task in tasks.values())
    no_path = tasks["no_path"]["result"]
    assert no_path["field"] == "baseline_path" and no_path["msg"] == "baseline_path: is required with mode: compare"
    empty = tasks["empty"]["result"]
    assert empty["field"] == "queries" and "at least one" in empty["msg"]
    other_format = tasks["other_format"]["result"]
    assert other_format["field"] == "baseline_path"
    assert "is not a valid query_latency baseline: format is 'something-else'" in other_format["msg"]
    commit = tasks["commit"]["result"]
    assert commit["field"] == "queries[0].sql" and "COMMIT" in commit["msg"]
    timeout = tasks["timeout"]["result"]
    assert timeout["sqlstate"] == "57014"
    assert "query 'slow' (queries[0]) failed with SQLSTATE 57014 (query_canceled); it ran longer than statement_timeout (100 ms)" in timeout["msg"]
