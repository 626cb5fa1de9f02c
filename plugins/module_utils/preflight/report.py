# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Assembling the preflight report from the read-only inspections."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils import client_tools
from ansible_collections.keel.postgres.plugins.module_utils.errors import GateFailed, InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.preflight import server_state
from ansible_collections.keel.postgres.plugins.module_utils.preflight.backup_coverage import CoverageRequest, backup_coverage
from ansible_collections.keel.postgres.plugins.module_utils.preflight.gates import (
    GatePolicy,
    evaluate_gates,
    summarize_failures,
)

CLIENT_TOOLS = ("pg_dump", "pg_restore")


class PreflightRequest(NamedTuple):
    tables: List[str]
    transaction_age_threshold: float
    query_max_length: int
    client_tools: str  # required | report | skip
    client_bin_dir: Optional[str]
    policy: GatePolicy
    backup_coverage: Optional[CoverageRequest] = None  # only when asked: it reads the backup store


def validate_request(request: PreflightRequest) -> None:
    if request.query_max_length < 0:
        raise InvalidOption("query_max_length", "must be 0 (hide queries) or more, got {0}".format(
            request.query_max_length))
    for name in request.tables:
        if not name or not name.strip():
            raise InvalidOption("tables", "table names must not be empty")


def build_report(conn: Any, request: PreflightRequest, metrics: RunMetrics) -> Dict[str, Any]:
    with metrics.phase("server"):
        server = server_state.server_facts(conn)
    with metrics.phase("tables"):
        tables = _tables_report(conn, request)
    # Collect down to the stricter of the reporting and gating thresholds, so a
    # gate never misses a transaction the report would have left out.
    min_age = request.transaction_age_threshold
    if request.policy.max_transaction_age is not None:
        min_age = min(min_age, request.policy.max_transaction_age)
    with metrics.phase("transactions"):
        transactions = server_state.old_transactions(conn, min_age, request.query_max_length)
    with metrics.phase("replication"):
        replication = server_state.replication_status(conn, server["in_recovery"])
    with metrics.phase("pg_stat_statements"):
        pgss = server_state.pg_stat_statements_status(conn)
    with metrics.phase("client_tools"):
        tools = _client_tools_report(request, server["version_num"])
    coverage: List[Dict[str, Any]] = []
    if request.backup_coverage is not None:
        with metrics.phase("backup_coverage"):
            coverage = backup_coverage(conn, request.backup_coverage)
        metrics.count("migrations_uncovered", sum(1 for entry in coverage if not entry["covered"]))
    metrics.count("transactions_reported", len(transactions))
    metrics.count("tables_inspected", len(tables))
    return {
        "server": server,
        "transactions": transactions,
        "tables": tables,
        "replication": replication,
        "pg_stat_statements": pgss,
        "client_tools": tools,
        "backup_coverage": coverage,
    }


def run_preflight(conn: Any, request: PreflightRequest, metrics: RunMetrics) -> Dict[str, Any]:
    """Build the report and apply the gates; raise GateFailed with the report when one fails."""
    validate_request(request)
    report = build_report(conn, request, metrics)
    failures = evaluate_gates(request.policy, report)
    report["failed_checks"] = failures
    report["passed"] = not failures
    if failures:
        raise GateFailed(summarize_failures(failures), report)
    return report


def _tables_report(conn: Any, request: PreflightRequest) -> List[Dict[str, Any]]:
    report = []
    for given, oid, schema, name in server_state.resolve_tables(conn, request.tables):
        facts = server_state.table_facts(conn, oid)
        facts.update(
            name="{0}.{1}".format(schema, name),
            requested_as=given,
            lock_sessions=server_state.table_lock_sessions(conn, oid, request.query_max_length),
        )
        report.append(facts)
    return report


def _client_tools_report(request: PreflightRequest, server_version_num: int) -> List[Dict[str, Any]]:
    if request.client_tools == "skip":
        return []
    tools = []
    for tool in CLIENT_TOOLS:
        entry = client_tools.inspect_client_tool(tool, request.client_bin_dir, server_version_num)
        entry["required"] = request.client_tools == "required"
        tools.append(entry)
    return tools
