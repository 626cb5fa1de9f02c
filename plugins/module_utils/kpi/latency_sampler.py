# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Timing queries: interleaved rounds, each execution in its own transaction.

Noise control: a slow minute on the server (a checkpoint, autovacuum, another
tenant's batch) must not land on one query only, so queries are never timed
in blocks. Round ``r`` runs every query once, in an order rotated by ``r``
(round 0: a b c, round 1: b c a, ...), so each query sees the same share of
any disturbance and of first-in-round effects. ``warmup`` rounds run first and
are not recorded (caches, catalog lookups, JIT).

Each execution is its own transaction: ``BEGIN READ ONLY`` ... ``COMMIT`` by
default, so a query that writes fails with SQLSTATE 25006 before it changes
anything, or ``BEGIN`` ... ``ROLLBACK`` with ``allow_writes``. The transaction
first sets ``statement_timeout`` locally, which also keeps the query from
switching the transaction to READ WRITE (that is only allowed before the
first query of a transaction). The query is sent as is, without parameters
and never prepared, so every execution is parsed and planned like a fresh
statement: a dropped index shows up in the very next execution.

The clock (``time.perf_counter``) runs around the execute and the fetch of
all result rows, not around BEGIN and COMMIT/ROLLBACK. Rows are counted and
dropped: no row value is kept or returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, QueryFailed
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import describe_condition, sql_condition

try:
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None
    TransactionStatus = None

SOURCE_QUERIES = "queries"
SOURCE_TOP_STATEMENTS = "top_statements"
SOURCE_BASELINE = "baseline"


@dataclass(frozen=True)
class LatencyQuery:
    """One statement to time, under a name that is unique in the run and matches it with a baseline."""

    name: str
    sql: str
    source: str = SOURCE_QUERIES  # queries | top_statements | baseline
    field: str = "queries"  # the option path that gave it, for messages: queries[2]


@dataclass(frozen=True)
class SamplerSettings:
    runs: int = 100
    warmup: int = 5
    allow_writes: bool = False
    statement_timeout_ms: int = 30000

    def as_dict(self) -> Dict[str, Any]:
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "allow_writes": self.allow_writes,
            "statement_timeout_ms": self.statement_timeout_ms,
            "interleaved": True,
        }


@dataclass
class QuerySamples:
    query: LatencyQuery
    samples_ms: List[float]
    rows: Optional[int] = None  # rows returned (or affected) by the last execution


def round_order(count: int, round_index: int) -> List[int]:
    """Indexes of the queries in the order round ``round_index`` runs them: rotated by one each round."""
    if count == 0:
        return []
    shift = round_index % count
    return list(range(shift, count)) + list(range(0, shift))


def sample_latencies(
    conn: Any,
    queries: Sequence[LatencyQuery],
    settings: SamplerSettings,
    metrics: Any = None,
    clock: Callable[[], float] = time.perf_counter,
    after_warmup: Optional[Callable[[Sequence[QuerySamples]], Sequence[LatencyQuery]]] = None,
) -> List[QuerySamples]:
    """Run ``settings.warmup`` rounds that are not part of the result, then ``settings.runs`` timed rounds; samples in
    milliseconds.

    ``after_warmup``, when given, is called once the warmup is over with the warmup's timings (all but the first
    round's, which pays for cold caches; empty without a warmup) and returns statements timed in every recorded round
    beside ``queries`` (the host reference, sized on them); their samples come last.
    ``conn`` must be an autocommit psycopg connection: the transactions are opened here, one per execution.
    """
    if not conn.autocommit:
        raise ValueError("sample_latencies needs an autocommit connection; it opens one transaction per execution")
    timed = list(queries)
    warm = [QuerySamples(query=query, samples_ms=[]) for query in timed]
    for round_index in range(settings.warmup):
        with _phase(metrics, "warmup"):
            run_round(conn, timed, warm if round_index > 0 else None, round_index, settings, clock)
        _count_executions(metrics, len(timed))
    if after_warmup is not None:
        with _phase(metrics, "calibrate"):
            timed.extend(after_warmup(warm))
    results = [QuerySamples(query=query, samples_ms=[]) for query in timed]
    for round_index in range(settings.warmup, settings.warmup + settings.runs):
        with _phase(metrics, "measure"):
            run_round(conn, timed, results, round_index, settings, clock)
        _count_executions(metrics, len(timed))
    return results


def _count_executions(metrics: Any, executions: int) -> None:
    if metrics is not None:
        metrics.count("executions", executions)


def run_round(conn: Any, queries: Sequence[LatencyQuery], results: Optional[List[QuerySamples]], round_index: int,
              settings: SamplerSettings, clock: Callable[[], float] = time.perf_counter) -> None:
    """Round ``round_index``: every query once, in its rotated order; samples go to ``results`` (None: a warmup)."""
    for position in round_order(len(queries), round_index):
        elapsed, rows = execute_once(conn, queries[position], settings, clock)
        if results is not None:
            results[position].samples_ms.append(elapsed * 1000.0)
            results[position].rows = rows


def execute_once(conn: Any, query: LatencyQuery, settings: SamplerSettings, clock: Callable[[], float] = time.perf_counter) -> tuple:
    """One execution in its own transaction; (seconds spent in execute + fetch, rows returned or affected)."""
    begin = "BEGIN" if settings.allow_writes else "BEGIN READ ONLY"
    end = "ROLLBACK" if settings.allow_writes else "COMMIT"
    with conn.cursor() as cursor:
        # The timeout value is an int we built, so formatting it in is safe; one round trip for both statements.
        cursor.execute("{0}; SELECT set_config('statement_timeout', '{1:d}', true)".format(begin, int(settings.statement_timeout_ms)), prepare=False)
        try:
            started = clock()
            cursor.execute(query.sql, prepare=False)
            rows = _drain(cursor)
            elapsed = clock() - started
        except psycopg.Error as exc:
            _rollback_quietly(conn)
            raise query_failed(query, exc, settings) from None
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            _rollback_quietly(conn)
            raise InvalidOption(query.field + ".sql", "query {0!r} ended the transaction it is measured in; statements such as COMMIT, "
                                "ROLLBACK or BEGIN are not allowed in a measured query".format(query.name))
        cursor.execute(end)
    return elapsed, rows


def query_failed(query: LatencyQuery, exc: BaseException, settings: SamplerSettings) -> QueryFailed:
    """The failure of a measured query by SQLSTATE and condition only: a server message can quote row values."""
    condition = sql_condition(exc)
    hint = ""
    if condition.get("sqlstate") == "25006" and not settings.allow_writes:
        hint = ("; queries run in READ ONLY transactions by default and this one writes or locks rows: set allow_writes: true "
                "to run it in a transaction that is rolled back after each execution")
    elif condition.get("sqlstate") == "57014":
        hint = "; it ran longer than statement_timeout ({0} ms) or was cancelled".format(settings.statement_timeout_ms)
    error = QueryFailed("query {0!r} ({1}) failed with {2}{3}".format(query.name, query.field, describe_condition(condition), hint),
                        cause=condition.get("condition") or condition.get("condition_class"))
    error.details = {"query": query.name, "sqlstate": condition.get("sqlstate"), "condition": condition.get("condition")}
    return error


def _drain(cursor: Any) -> int:
    """Fetch every result of the statement(s) and drop it; the count of the last result's rows."""
    while True:
        rows = len(cursor.fetchall()) if cursor.description is not None else max(cursor.rowcount, 0)
        if not cursor.nextset():
            return rows


def _rollback_quietly(conn: Any) -> None:
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the original failure is what the user needs to see


class _NoPhase:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: Any) -> None:
        return None


def _phase(metrics: Any, name: str) -> Any:
    return metrics.phase(name) if metrics is not None else _NoPhase()
