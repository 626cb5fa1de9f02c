# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Does the target hold exactly the mapped source rows? Checked key range by key range.

Each batch compares a hash of every mapped source row with a hash of the
target row of the same key, both read in one REPEATABLE READ snapshot: the
trigger writes the target in the same transaction as the source, so any
difference seen is real drift, never a write in flight.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import (
    batch_upper_bound,
    key_row,
    typed_row,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    table_identifier,
)
from ansible_collections.keel.postgres.plugins.module_utils.shadow.triggers import mapped_select

try:
    from psycopg import sql
except ImportError:
    sql = None

SAMPLE_EVERY = 10  # drift_check=sample compares one key range in ten


def check_drift(conn: Any, mapping: Dict[str, str], source: TableInfo, target: TableInfo, source_key: List[str],
                mode: str, batch_size: int, target_key: List[str]) -> Optional[Dict[str, Any]]:
    """``target_key``: the target column holding each source key column, in source-key order."""
    if mode == "none":
        return None
    totals = {"mode": mode, "rows_checked": 0, "missing_in_target": 0, "extra_in_target": 0, "different": 0,
              "batches": 0}
    cursor: Optional[List[str]] = None
    position = 0
    while True:
        upper = batch_upper_bound(conn, source, source_key, cursor, batch_size)
        if mode == "full" or position % SAMPLE_EVERY == 0:
            counts = _compare_range(conn, mapping, source, target, source_key, target_key, cursor, upper)
            for key, value in counts.items():
                totals[key] += value
            totals["batches"] += 1
        position += 1
        if upper is None:
            break
        cursor = upper
    totals["drift"] = totals["missing_in_target"] + totals["extra_in_target"] + totals["different"]
    return totals


def _compare_range(conn, mapping, source, target, source_key, target_key, lower, upper) -> Dict[str, int]:
    """Counts for keys in (lower, upper]; ``upper`` None means to the end (extra target rows included)."""
    columns = list(mapping)

    def key_range(key: List[str], info: TableInfo) -> Any:
        parts = []
        if lower is not None:
            parts.append(sql.SQL("{0} > {1}").format(key_row(key), typed_row(source, source_key, lower)))
        if upper is not None:
            parts.append(sql.SQL("{0} <= {1}").format(key_row(key), typed_row(source, source_key, upper)))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    key_aliases = ["k{0}".format(i) for i in range(len(source_key))]
    source_side = sql.SQL("SELECT {keys}, md5(ROW({values})::text) AS h FROM {table} AS src WHERE {range}").format(
        keys=sql.SQL(", ").join(sql.SQL("{0} AS {1}").format(sql.Identifier(c), sql.Identifier(a))
                                for c, a in zip(source_key, key_aliases)),
        values=mapped_select(mapping, target), table=table_identifier(source), range=key_range(source_key, source))
    target_side = sql.SQL("SELECT {keys}, md5(ROW({values})::text) AS h FROM {table} WHERE {range}").format(
        keys=sql.SQL(", ").join(sql.SQL("{0} AS {1}").format(sql.Identifier(c), sql.Identifier(a))
                                for c, a in zip(target_key, key_aliases)),
        values=sql.SQL(", ").join(sql.Identifier(c) for c in columns), table=table_identifier(target),
        range=key_range(target_key, target))
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE s.h IS NOT NULL), count(*) FILTER (WHERE t.h IS NULL),"
        " count(*) FILTER (WHERE s.h IS NULL), count(*) FILTER (WHERE s.h <> t.h)"
        " FROM ({source_side}) AS s FULL JOIN ({target_side}) AS t USING ({keys})").format(
        source_side=source_side, target_side=target_side,
        keys=sql.SQL(", ").join(sql.Identifier(a) for a in key_aliases))
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute(query).fetchone()
    return {"rows_checked": row[0], "missing_in_target": row[1], "extra_in_target": row[2], "different": row[3]}
