# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turning a preflight report into pass/fail, as pure functions.

Every failure names the check, the value found and the threshold, so a
failed play says exactly what to fix (or which threshold to relax).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.units import (
    format_bytes,
    format_seconds,
    parse_duration,
    parse_size,
)


class GatePolicy(NamedTuple):
    max_transaction_age: Optional[float] = None
    max_replication_lag: Optional[float] = None
    max_replication_lag_bytes: Optional[int] = None
    require_primary_key: bool = False
    forbid_table_locks: bool = False
    require_primary: bool = False
    require_pg_stat_statements: bool = False
    require_backup_coverage: bool = False


def gate_options_spec() -> Dict[str, Any]:
    """Sub-options of ``fail_on``; Ansible rejects unknown keys naming ``fail_on``."""
    return dict(
        max_transaction_age=dict(type="raw"),
        max_replication_lag=dict(type="raw"),
        max_replication_lag_bytes=dict(type="raw"),
        require_primary_key=dict(type="bool", default=False),
        forbid_table_locks=dict(type="bool", default=False),
        require_primary=dict(type="bool", default=False),
        require_pg_stat_statements=dict(type="bool", default=False),
        require_backup_coverage=dict(type="bool", default=False),
    )


def parse_gate_policy(fail_on: Optional[Dict[str, Any]]) -> GatePolicy:
    options = fail_on or {}

    def duration(key: str) -> Optional[float]:
        value = options.get(key)
        return None if value is None else parse_duration(value, "fail_on.{0}".format(key))

    lag_bytes = options.get("max_replication_lag_bytes")
    return GatePolicy(
        max_transaction_age=duration("max_transaction_age"),
        max_replication_lag=duration("max_replication_lag"),
        max_replication_lag_bytes=None if lag_bytes is None else parse_size(lag_bytes, "fail_on.max_replication_lag_bytes"),
        require_primary_key=bool(options.get("require_primary_key")),
        forbid_table_locks=bool(options.get("forbid_table_locks")),
        require_primary=bool(options.get("require_primary")),
        require_pg_stat_statements=bool(options.get("require_pg_stat_statements")),
        require_backup_coverage=bool(options.get("require_backup_coverage")),
    )


def failure(check: str, subject: str, value: Any, threshold: Any, message: str) -> Dict[str, Any]:
    return {"check": check, "subject": subject, "value": value, "threshold": threshold, "message": message}


def evaluate_gates(policy: GatePolicy, report: Dict[str, Any]) -> List[Dict[str, Any]]:
    failures: List[Dict[str, Any]] = []
    failures += _transaction_age_failures(policy, report["transactions"])
    failures += _replication_failures(policy, report["replication"])
    failures += _table_failures(policy, report["tables"])
    if policy.require_primary and report["server"]["in_recovery"]:
        failures.append(failure("require_primary", "server", "standby", "primary",
                                "the server is a standby (in recovery); run against the primary"))
    pgss = report["pg_stat_statements"]
    if policy.require_pg_stat_statements and not pgss["usable"]:
        failures.append(failure("require_pg_stat_statements", "pg_stat_statements", False, True,
                                "pg_stat_statements is not usable: {0}".format(pgss["problem"])))
    if policy.require_backup_coverage:
        failures += backup_coverage_failures(report.get("backup_coverage") or [])
    for tool in report["client_tools"]:
        if tool.get("required") and not tool["compatible"]:
            failures.append(failure("client_tools", tool["name"], tool["version"], tool["server_version"],
                                    tool["problem"]))
    return failures


def backup_coverage_failures(coverage: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [failure("require_backup_coverage", entry["name"], False, True,
                    "migration {0} ({1}, started {2}) is not covered by a verified backup: {3}".format(
                        entry["name"], entry["state"], entry["started_at"], entry["reason"]))
            for entry in coverage if not entry["covered"]]


def summarize_failures(failures: List[Dict[str, Any]]) -> str:
    lines = ["{0}: {1}".format(item["check"], item["message"]) for item in failures]
    return "preflight failed {0} check(s): {1}".format(len(failures), "; ".join(lines))


def _transaction_age_failures(policy: GatePolicy, transactions: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    limit = policy.max_transaction_age
    if limit is None:
        return []
    return [
        failure("max_transaction_age", "pid {0}".format(tx["pid"]), tx["age_seconds"], limit,
                "transaction of pid {0} ({1}, state {2!r}) is {3} old, threshold {4}".format(
                    tx["pid"], tx["application_name"] or tx["backend_type"], tx["state"],
                    format_seconds(tx["age_seconds"]), format_seconds(limit)))
        for tx in transactions
        if tx["age_seconds"] > limit
    ]


def _replication_failures(policy: GatePolicy, replication: Dict[str, Any]) -> List[Dict[str, Any]]:
    peers = [dict(standby, name=standby["application_name"] or standby["client_addr"]) for standby in replication["standbys"]]
    if replication.get("self"):
        peers.append(dict(replication["self"], name="this standby"))
    failures = []
    for peer in peers:
        seconds, lag_bytes = peer.get("lag_seconds"), peer.get("lag_bytes")
        if policy.max_replication_lag is not None and seconds is not None and seconds > policy.max_replication_lag:
            failures.append(failure("max_replication_lag", peer["name"], seconds, policy.max_replication_lag,
                                    "replication lag of {0} is {1}, threshold {2}".format(
                                        peer["name"], format_seconds(seconds), format_seconds(policy.max_replication_lag))))
        limit = policy.max_replication_lag_bytes
        if limit is not None and lag_bytes is not None and lag_bytes > limit:
            failures.append(failure("max_replication_lag_bytes", peer["name"], lag_bytes, limit,
                                    "replication lag of {0} is {1}, threshold {2}".format(
                                        peer["name"], format_bytes(lag_bytes), format_bytes(limit))))
    return failures


def _table_failures(policy: GatePolicy, tables: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    failures = []
    for table in tables:
        if policy.require_primary_key and not table["has_primary_key"]:
            failures.append(failure("require_primary_key", table["name"], False, True,
                                    "table {0} has no primary key".format(table["name"])))
        if policy.forbid_table_locks and table["lock_sessions"]:
            pids = sorted({session["pid"] for session in table["lock_sessions"]})
            failures.append(failure("forbid_table_locks", table["name"], len(pids), 0,
                                    "{0} other session(s) hold or wait for locks on {1} (pids {2})".format(
                                        len(pids), table["name"], ", ".join(str(pid) for pid in pids))))
    return failures
