# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running DDL without ever queueing application traffic behind it.

An ``ALTER TABLE`` waiting for its lock blocks every later query on the table
until it gets it. So every statement that takes a table lock runs with a short
``lock_timeout``; when it times out it gives the lock queue back at once, waits
a jittered, growing pause and tries again, up to ``retries`` times. When the
retries run out, the error names the sessions in the way so an operator can
act, and the migration stays resumable.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

try:
    from psycopg import errors as pg_errors
except ImportError:  # reported by KeelModule before any of this runs
    pg_errors = None


class LockPolicy(NamedTuple):
    lock_timeout: float  # seconds
    retries: int
    statement_timeout: float  # seconds; 0 = none
    backoff_initial: float = 0.05
    backoff_max: float = 5.0


class LockRetriesExhausted(KeelError):
    kind = "lock_timeout"

    def __init__(self, message: str, blockers: List[Dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = {"blockers": blockers}


def backoff_delay(attempt: int, policy: LockPolicy, rng: random.Random) -> float:
    """A jittered pause that grows with each attempt, so retries from several hosts do not
    line up behind the same blocker.

    It is never shorter than lock_timeout: while an attempt waits in the lock queue the
    application queues behind it, so pausing at least as long caps the share of time the
    application can be held up at one half, however long the blocker stays.
    """
    floor = max(policy.backoff_initial, policy.lock_timeout)
    cap = min(max(policy.backoff_max, floor), floor * (2 ** attempt))
    return rng.uniform(floor, max(cap, floor))


def is_lock_timeout(exc: BaseException) -> bool:
    """A lock not granted in time, or a deadlock the server resolved by cancelling us:
    either way nothing was changed and trying again later is right."""
    return pg_errors is not None and isinstance(exc, (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected))


def run_in_guarded_transaction(
    conn: Any,
    work: Callable[[Any], None],
    policy: LockPolicy,
    metrics: RunMetrics,
    tables: Sequence[str],
    description: str,
    rng: Optional[random.Random] = None,
) -> None:
    """Run ``work(conn)`` in one transaction under lock_timeout, retrying lock timeouts."""

    def attempt() -> None:
        with conn.transaction():
            _set_local_timeouts(conn, policy)
            work(conn)

    _retry_on_lock_timeout(conn, attempt, policy, metrics, tables, description, rng)


def run_outside_transaction(
    conn: Any,
    statement: Any,
    policy: LockPolicy,
    metrics: RunMetrics,
    tables: Sequence[str],
    description: str,
    on_lock_timeout: Optional[Callable[[], None]] = None,
    rng: Optional[random.Random] = None,
) -> None:
    """For statements that refuse a transaction block (``CREATE INDEX CONCURRENTLY``).

    ``on_lock_timeout`` cleans up what a timed-out attempt leaves behind (an
    invalid index) before the next attempt.
    """

    # Concurrent builds take as long as the table is big: only lock waits are bounded.
    policy = policy._replace(statement_timeout=0)

    def attempt() -> None:
        _set_session_timeouts(conn, policy)
        try:
            conn.execute(statement)
        except Exception as exc:
            if is_lock_timeout(exc) and on_lock_timeout is not None:
                on_lock_timeout()
            raise
        finally:
            conn.execute("RESET lock_timeout")
            conn.execute("RESET statement_timeout")

    _retry_on_lock_timeout(conn, attempt, policy, metrics, tables, description, rng)


def blocking_sessions(conn: Any, tables: Sequence[str]) -> List[Dict[str, Any]]:
    """Other sessions holding a lock on any of ``tables``, oldest transaction first."""
    if not tables:
        return []
    rows = conn.execute(
        "SELECT DISTINCT a.pid, l.mode, format('%%s.%%s', n.nspname, c.relname), a.state, a.application_name,"
        " extract(epoch FROM clock_timestamp() - a.xact_start)::float8, left(a.query, 200), a.xact_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()"
        "   AND l.relation = ANY (SELECT to_regclass(t) FROM unnest(%s::text[]) AS t)"
        " ORDER BY a.xact_start NULLS LAST",
        (list(tables),),
    ).fetchall()
    return [
        {"pid": row[0], "mode": row[1], "table": row[2], "state": row[3], "application_name": row[4],
         "transaction_age_seconds": None if row[5] is None else round(row[5], 3), "query": row[6]}
        for row in rows
    ]


def _retry_on_lock_timeout(conn, attempt, policy, metrics, tables, description, rng) -> None:
    rng = rng or random.Random()
    for number in range(policy.retries + 1):
        began = time.monotonic()
        metrics.count("lock_attempts")
        try:
            attempt()
        except Exception as exc:
            waited = time.monotonic() - began
            _record_wait(metrics, waited)
            if not is_lock_timeout(exc):
                raise
            metrics.count("lock_timeouts")
            if number == policy.retries:
                blockers = blocking_sessions(conn, tables)
                raise LockRetriesExhausted(_exhausted_message(description, policy, blockers), blockers) from None
            time.sleep(backoff_delay(number, policy, rng))
        else:
            _record_wait(metrics, time.monotonic() - began)
            return


def _record_wait(metrics: RunMetrics, seconds: float) -> None:
    metrics.maximum("longest_lock_attempt_ms", round(seconds * 1000.0, 3))


def _exhausted_message(description: str, policy: LockPolicy, blockers: List[Dict[str, Any]]) -> str:
    who = "; ".join(
        "pid {0} ({1}, {2}, transaction {3} s old) holds {4} on {5}: {6}".format(
            b["pid"], b["application_name"] or "?", b["state"], b["transaction_age_seconds"], b["mode"], b["table"],
            b["query"])
        for b in blockers
    ) or "no blocker is visible any more"
    return ("could not {0}: lock not granted within lock_timeout {1:.0f} ms after {2} attempt(s); the migration is left "
            "resumable, re-run when these sessions are gone. Blocking: {3}").format(
        description, policy.lock_timeout * 1000, policy.retries + 1, who)


def _set_local_timeouts(conn: Any, policy: LockPolicy) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                 (_ms(policy.lock_timeout), _ms(policy.statement_timeout)))


def _set_session_timeouts(conn: Any, policy: LockPolicy) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 (_ms(policy.lock_timeout), _ms(policy.statement_timeout)))


def _ms(seconds: float) -> str:
    return "{0}ms".format(round(seconds * 1000))
