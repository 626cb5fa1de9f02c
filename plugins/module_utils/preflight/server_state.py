# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only queries behind the preflight report.

Each function reads one aspect of the server and returns plain dicts, so the
report is JSON-ready and the gate logic (``gates.py``) stays pure. Nothing
here takes a lock stronger than AccessShare on catalog views; the module's own
session is always left out of what it reports.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption


def server_facts(conn: Any) -> Dict[str, Any]:
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " pg_is_in_recovery(), current_database(), current_user,"
        " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()
    return {
        "version": row[0],
        "version_num": row[1],
        "in_recovery": row[2],
        "database": row[3],
        "user": row[4],
        "is_superuser": row[5],
    }


def old_transactions(conn: Any, min_age_seconds: float, query_max_length: int) -> List[Dict[str, Any]]:
    """Open transactions at least ``min_age_seconds`` old, oldest first.

    They hold back vacuum and may hold locks a migration needs; idle-in-
    transaction sessions are the usual culprits.
    """
    rows = conn.execute(
        "SELECT pid, usename, application_name, datname, state, backend_type,"
        " extract(epoch FROM clock_timestamp() - xact_start)::float8,"
        " wait_event_type, wait_event, left(query, %(qlen)s)"
        " FROM pg_stat_activity"
        " WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
        "   AND clock_timestamp() - xact_start >= make_interval(secs => %(age)s)"
        " ORDER BY xact_start",
        {"age": min_age_seconds, "qlen": query_max_length},
    ).fetchall()
    return [
        {
            "pid": row[0],
            "user": row[1],
            "application_name": row[2],
            "database": row[3],
            "state": row[4],
            "backend_type": row[5],
            "age_seconds": round(row[6], 3),
            "wait_event_type": row[7],
            "wait_event": row[8],
            "query": row[9] if query_max_length > 0 else None,
        }
        for row in rows
    ]


def resolve_tables(conn: Any, names: List[str]) -> List[Tuple[str, int, str, str]]:
    """Map each given name to (given, oid, schema, table); unknown names are an input error."""
    resolved = []
    for name in names:
        row = conn.execute(
            "SELECT c.oid::int8, n.nspname, c.relname, c.relkind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            (name,),
        ).fetchone()
        if row is None:
            raise InvalidOption("tables", "relation {0!r} does not exist in database {1!r} (search_path: {2})".format(
                name, _scalar(conn, "SELECT current_database()"), _scalar(conn, "SHOW search_path")))
        if row[3] not in ("r", "p"):
            raise InvalidOption("tables", "{0!r} is not a table (relkind {1!r})".format(name, row[3]))
        resolved.append((name, row[0], row[1], row[2]))
    return resolved


def table_facts(conn: Any, oid: int) -> Dict[str, Any]:
    """Size, row estimate and keys of one table; partitioned tables sum their leaves."""
    row = conn.execute(
        "WITH leaves AS ("
        "  SELECT relid FROM pg_partition_tree(%(oid)s::regclass) WHERE isleaf"
        "  UNION SELECT %(oid)s::regclass"  # a plain table has no partition tree
        "  WHERE NOT EXISTS (SELECT 1 FROM pg_partition_tree(%(oid)s::regclass))"
        "), parts AS ("
        "  SELECT c.oid, c.reltuples FROM leaves JOIN pg_class c ON c.oid = leaves.relid"
        ") SELECT"
        " coalesce(sum(pg_total_relation_size(oid)), 0)::int8,"
        " coalesce(sum(pg_relation_size(oid)), 0)::int8,"
        " coalesce(sum(pg_indexes_size(oid)), 0)::int8,"
        " CASE WHEN bool_or(reltuples < 0) THEN NULL ELSE sum(reltuples)::int8 END,"
        " (SELECT relkind = 'p' FROM pg_class WHERE oid = %(oid)s),"
        " EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %(oid)s AND indisprimary),"
        " (SELECT relreplident FROM pg_class WHERE oid = %(oid)s)"
        " FROM parts",
        {"oid": oid},
    ).fetchone()
    return {
        "total_bytes": row[0],
        "table_bytes": row[1],
        "index_bytes": row[2],
        "rows_estimate": row[3],
        "partitioned": row[4],
        "has_primary_key": row[5],
        "replica_identity": {"d": "default", "n": "nothing", "f": "full", "i": "index"}.get(row[6], row[6]),
    }


def table_lock_sessions(conn: Any, oid: int, query_max_length: int) -> List[Dict[str, Any]]:
    """Other sessions holding or waiting for a lock on the table.

    Any of them, even a plain SELECT, would queue an ALTER TABLE behind it,
    and everything else behind the ALTER.
    """
    rows = conn.execute(
        "SELECT l.pid, l.mode, l.granted, a.state, a.usename, a.application_name,"
        " extract(epoch FROM clock_timestamp() - a.xact_start)::float8,"
        " pg_blocking_pids(l.pid), left(a.query, %(qlen)s)"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'relation' AND l.relation = %(oid)s AND l.pid <> pg_backend_pid()"
        " ORDER BY l.granted DESC, a.xact_start",
        {"oid": oid, "qlen": query_max_length},
    ).fetchall()
    return [
        {
            "pid": row[0],
            "mode": row[1],
            "granted": row[2],
            "state": row[3],
            "user": row[4],
            "application_name": row[5],
            "transaction_age_seconds": None if row[6] is None else round(row[6], 3),
            "blocked_by": list(row[7] or []),
            "query": row[8] if query_max_length > 0 else None,
        }
        for row in rows
    ]


def replication_status(conn: Any, in_recovery: bool) -> Dict[str, Any]:
    if in_recovery:
        return {"role": "standby", "standbys": [], "slots": [], "self": _standby_self_lag(conn)}
    standbys = conn.execute(
        "SELECT application_name, host(client_addr), state, sync_state,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8,"
        " extract(epoch FROM replay_lag)::float8"
        " FROM pg_stat_replication ORDER BY application_name"
    ).fetchall()
    slots = conn.execute(
        "SELECT slot_name, slot_type, active,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8"
        " FROM pg_replication_slots ORDER BY slot_name"
    ).fetchall()
    return {
        "role": "primary",
        "standbys": [
            {
                "application_name": row[0],
                "client_addr": row[1],
                "state": row[2],
                "sync_state": row[3],
                "lag_bytes": row[4],
                # replay_lag is NULL once a standby has caught up and the primary is idle
                "lag_seconds": 0.0 if row[5] is None and row[4] == 0 else row[5],
            }
            for row in standbys
        ],
        "slots": [
            {"slot_name": row[0], "slot_type": row[1], "active": row[2], "retained_bytes": row[3]} for row in slots
        ],
        "self": None,
    }


def pg_stat_statements_status(conn: Any) -> Dict[str, Any]:
    """Whether latency baselines can come from pg_stat_statements in this database."""
    version = _scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'")
    preload = _scalar(conn, "SELECT current_setting('shared_preload_libraries')") or ""
    preloaded = "pg_stat_statements" in [lib.strip() for lib in preload.split(",")]
    usable, problem = False, None
    if version is None:
        problem = "extension not installed in this database (CREATE EXTENSION pg_stat_statements)"
    elif not preloaded:
        problem = "pg_stat_statements is not in shared_preload_libraries"
    else:
        usable, problem = _can_read_pg_stat_statements(conn)
    return {"installed": version is not None, "version": version, "preloaded": preloaded, "usable": usable,
            "problem": problem}


def _can_read_pg_stat_statements(conn: Any) -> Tuple[bool, Optional[str]]:
    try:
        with conn.transaction():
            conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
    except Exception as exc:  # any server refusal means "not usable", with its reason
        return False, str(exc).strip()
    return True, None


def _standby_self_lag(conn: Any) -> Dict[str, Any]:
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8,"
        " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
        "      ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8"
    ).fetchone()
    return {"lag_bytes": row[0], "lag_seconds": row[1]}


def _scalar(conn: Any, query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]
