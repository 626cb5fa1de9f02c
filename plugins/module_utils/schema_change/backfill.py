# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Batched, throttled, resumable backfills.

Rows are visited in primary-key order (keyset pagination: no OFFSET scans,
no long transaction). Each batch is one short transaction that updates the
rows *and* moves the cursor in the catalog, so a run killed at any moment
resumes after the last committed batch and touches every row exactly once.
Between batches the backfill pauses in proportion to how long the batch
took, shrinks batches that got slow, and waits for lagging standbys.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo

try:
    from psycopg import sql
except ImportError:
    sql = None

SLOW_BATCH_SECONDS = 1.0
FAST_BATCH_SECONDS = 0.1
MIN_BATCH = 100


class BackfillResult(NamedTuple):
    rows: int
    batches: int
    seconds: float


def backfill_key(info: TableInfo, field: str) -> List[str]:
    """Primary key, else the narrowest unique index over NOT NULL columns."""
    if info.primary_key:
        return info.primary_key
    candidates = [
        index.columns for index in info.indexes
        if index.unique and index.valid and index.columns and all(info.columns[c].not_null for c in index.columns)
    ]
    if not candidates:
        raise InvalidOption(field, "table {0} has no primary key or unique NOT NULL key; a batched backfill needs one "
                                   "to walk the table in short transactions".format(info.qualified))
    return min(candidates, key=len)


def run_backfill(ctx: MigrationContext, step: str, info: TableInfo, assignments: Any, field: str) -> BackfillResult:
    """UPDATE ``info`` SET ``assignments`` for every row, batch by batch, resumably."""
    def update(key_range: Any) -> Any:
        return sql.SQL("UPDATE {table} SET {assignments} WHERE {key_range}").format(
            table=_table(info), assignments=assignments, key_range=key_range)

    return run_batches(ctx, step, info, update, field)


def run_batches(ctx: MigrationContext, step: str, info: TableInfo, statement_for: Callable[[Any], Any],
                field: str) -> BackfillResult:
    """Run ``statement_for(key range condition)`` over the whole table in keyset batches, resumably."""
    key = backfill_key(info, field)
    progress = catalog.backfill_progress(ctx.conn, ctx.name, step)
    if progress is not None and progress.done:
        return BackfillResult(0, 0, 0.0)
    if progress is None:
        catalog.begin_backfill(ctx.conn, ctx.name, step, info.qualified, info.rows_estimate)
    cursor = progress.cursor if progress else None
    batch_size = ctx.backfill_settings.batch_size
    rows = batches = 0
    began = time.monotonic()
    # One phase for the whole walk (its rate includes the pauses: the pace the application saw) and one
    # aggregated child for the batches themselves, never a phase per batch.
    with ctx.metrics.phase("backfill", table=info.qualified, step=step):
        while True:
            _wait_for_standbys(ctx)
            batch_began = time.monotonic()
            with ctx.metrics.phase("batch"):
                outcome = _run_batch(ctx, step, info, key, statement_for, cursor, batch_size)
            if outcome is None:
                break
            cursor, updated = outcome
            rows += updated
            batches += 1
            # Counted per batch, so a run stopped half-way still reports what it did.
            ctx.metrics.count("rows_backfilled", updated)
            ctx.metrics.count("backfill_batches")
            took = time.monotonic() - batch_began
            batch_size = _next_batch_size(batch_size, took, ctx.backfill_settings.batch_size)
            time.sleep(took * ctx.backfill_settings.pause_ratio)
        catalog.finish_backfill(ctx.conn, ctx.name, step)
    return BackfillResult(rows, batches, time.monotonic() - began)


def _run_batch(ctx, step, info, key, statement_for, cursor, batch_size):
    result = {}

    def work(conn: Any) -> None:
        upper = batch_upper_bound(conn, info, key, cursor, batch_size)
        if upper is None:
            return
        key_range = sql.SQL("{after_cursor} AND {key} <= {upper}").format(
            after_cursor=_after(info, key, cursor), key=key_row(key), upper=typed_row(info, key, upper))
        # The batch assigns the new column itself: the application's triggers (last_updated...) must not fire
        # and rewrite its data. Needs superuser, or on PostgreSQL 15+ GRANT SET ON PARAMETER session_replication_role.
        if _may_skip_user_triggers(conn):
            conn.execute("SET LOCAL session_replication_role = replica")
        updated = conn.execute(statement_for(key_range)).rowcount
        catalog.advance_backfill(conn, ctx.name, step, upper, updated)
        result["outcome"] = (upper, updated)

    ctx.guarded("backfill {0} ({1})".format(info.qualified, step), [info.qualified], work)
    return result.get("outcome")


def batch_upper_bound(conn: Any, info: TableInfo, key: List[str], cursor: Optional[List[str]], size: int):
    """The key of the last row of the next batch (as text), or None when no row is left."""
    key_text = sql.SQL(", ").join(sql.SQL("{0}::text").format(sql.Identifier(c)) for c in key)
    query = sql.SQL("SELECT ARRAY[{key_text}] FROM (SELECT {key} FROM {table} WHERE {after} ORDER BY {key_cols}"
                    " LIMIT {size}) AS batch ORDER BY {key_cols} DESC LIMIT 1").format(
        key_text=key_text, key=sql.SQL(", ").join(sql.Identifier(c) for c in key), table=_table(info),
        after=_after(info, key, cursor), key_cols=sql.SQL(", ").join(sql.Identifier(c) for c in key),
        size=sql.Literal(size))
    row = conn.execute(query).fetchone()
    return None if row is None else list(row[0])


def _may_skip_user_triggers(conn: Any) -> bool:
    if conn.info.server_version >= 150000:
        query = "SELECT has_parameter_privilege('session_replication_role', 'SET')"
    else:
        query = "SELECT current_setting('is_superuser')::bool"
    return bool(conn.execute(query).fetchone()[0])


def _after(info: TableInfo, key: List[str], cursor: Optional[List[str]]):
    if cursor is None:
        return sql.SQL("true")
    return sql.SQL("{0} > {1}").format(key_row(key), typed_row(info, key, cursor))


def key_row(key: List[str]):
    return sql.SQL("({0})").format(sql.SQL(", ").join(sql.Identifier(c) for c in key))


def typed_row(info: TableInfo, key: List[str], values: List[str]):
    # The cursor is stored as text; cast back to each key column's own type.
    return sql.SQL("({0})").format(sql.SQL(", ").join(
        sql.SQL("{0}::{1}").format(sql.Literal(value), sql.SQL(info.columns[column].type))
        for column, value in zip(key, values)))


def _table(info: TableInfo):
    return sql.Identifier(info.schema, info.name)


def _next_batch_size(current: int, took: float, configured: int) -> int:
    if took > SLOW_BATCH_SECONDS:
        return max(MIN_BATCH, current // 2)
    if took < FAST_BATCH_SECONDS:
        return min(configured, current * 2)
    return current


def _wait_for_standbys(ctx: MigrationContext) -> None:
    limit = ctx.backfill_settings.max_replication_lag
    deadline = time.monotonic() + ctx.backfill_settings.lag_wait_timeout
    while True:
        standbys, lag = ctx.conn.execute(
            "SELECT count(*), coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication"
        ).fetchone()
        # Measured whenever standbys exist (a cost signal), waited on only with max_replication_lag.
        if standbys:
            ctx.metrics.maximum("peak_replication_lag_seconds", round(lag, 3))
        if limit is None or lag <= limit:
            return
        if time.monotonic() > deadline:
            raise KeelError("backfill paused: replication lag {0:.1f} s stayed above max_replication_lag {1:.1f} s for "
                            "{2:.0f} s; the migration is resumable".format(lag, limit,
                                                                           ctx.backfill_settings.lag_wait_timeout))
        ctx.metrics.count("replication_lag_waits")
        time.sleep(0.5)
