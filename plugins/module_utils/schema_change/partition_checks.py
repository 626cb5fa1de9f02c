# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What partition_table refuses before anything changes, each refusal naming the option at fault.

A partitioned table can only enforce uniqueness per partition, so every
primary key and unique constraint must contain the partition key; a foreign
key of another table would keep pointing at the old table (the first
partition) alone; a user view or trigger would keep reading or firing on it
alone. Those are refused rather than silently half-converted.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import regclass_text
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_relations import (
    table_relations,
    user_triggers,
)

try:
    from psycopg import sql
except ImportError:
    sql = None

UNCOVERED_SAMPLE = 5


def refuse_unconvertible(conn: Any, info: TableInfo, field: str) -> None:
    relations = table_relations(conn, info.oid)
    referencing = sorted(relations.referenced_by + relations.self_references)
    triggers = user_triggers(relations)
    refusals = [
        (info.partitioned, "it is partitioned already"),
        (relations.is_partition, "it is a partition of another table"),
        (relations.in_inheritance, "it takes part in inheritance"),
        (referencing, "foreign keys of other tables reference it ({0}); they would keep pointing at the first "
                      "partition only".format(", ".join(referencing))),
        (relations.exclusion_constraints, "it has exclusion constraints ({0})".format(
            ", ".join(relations.exclusion_constraints))),
        (triggers, "it has user triggers ({0}), which would fire for the first partition only".format(
            ", ".join(triggers))),
        (relations.has_policies, "it has row level security policies"),
        (info.dependent_views, "views read it ({0}), which would keep reading the first partition only".format(
            ", ".join(info.dependent_views))),
    ]
    reasons = [reason for present, reason in refusals if present]
    if reasons:
        raise InvalidOption(field, "cannot partition {0} online: {1}".format(info.qualified, "; ".join(reasons)))


def refuse_keys_without(info: TableInfo, key: str, field: str) -> None:
    """Every unique index must contain the partition key (else PostgreSQL refuses the parent's constraint,
    SQLSTATE 0A000). The primary key is the exception: the parent's gains the key, which the plan says."""
    missing = [index.name for index in info.indexes
               if index.unique and not index.primary and key not in index.columns and not index.name.startswith("_keel_")]
    if missing:
        raise InvalidOption(field, "every unique index of {0} must contain the partition key "
                                   "{1!r}; {2} do(es) not: add {1!r} to them first".format(
                                       info.qualified, key, ", ".join(missing)))


def refuse_nulls(conn: Any, info: TableInfo, key: str, field: str) -> None:
    if info.columns[key].not_null:
        return
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {0} WHERE {1} IS NULL)").format(
        sql.Identifier(info.schema, info.name), sql.Identifier(key))
    if conn.execute(query).fetchone()[0]:
        raise InvalidOption(field, "rows of {0} have no {1!r} (NULL): a range partition cannot hold them; fill "
                                   "them first".format(info.qualified, key))


def uncovered_values(conn: Any, info: TableInfo, key: str, values: List[Any]) -> List[Optional[str]]:
    """A few key values present in the table but not in ``values`` (NULL included)."""
    query = sql.SQL("SELECT DISTINCT {key}::text FROM {table} WHERE {key} IS NULL OR NOT ({key}::text = ANY (%s))"
                    " LIMIT {limit}").format(key=sql.Identifier(key), table=sql.Identifier(info.schema, info.name),
                                             limit=sql.Literal(UNCOVERED_SAMPLE))
    return [row[0] for row in conn.execute(query, ([str(v) for v in values],)).fetchall()]


def refuse_uncovered(conn: Any, info: TableInfo, key: str, values: List[Any], field: str) -> None:
    sample = uncovered_values(conn, info, key, values)
    if sample:
        shown = ", ".join("NULL" if v is None else repr(v) for v in sample)
        raise InvalidOption(field, "rows of {0} have {1} values no partition would hold: {2}{3}; add them to "
                                   "values (nothing was changed)".format(
                                       info.qualified, key, shown, " and more" if len(sample) == UNCOVERED_SAMPLE
                                       else ""))


def refuse_taken_names(conn: Any, schema: str, names: List[str], field: str) -> None:
    taken = [name for name in names
             if conn.execute("SELECT to_regclass(%s)", (regclass_text(schema, name),)).fetchone()[0]]
    if taken:
        raise InvalidOption(field, "cannot create partition(s) {0} in schema {1}: the name(s) exist already".format(
            ", ".join(taken), schema))


def lock_timeout_warning(conn: Any, lock_timeout: float) -> Optional[str]:
    """The swap locks several relations in order; lock_timeout must give up before deadlock detection runs."""
    deadlock = conn.execute("SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'deadlock_timeout'"
                            ).fetchone()[0]
    if lock_timeout >= deadlock:
        return ("lock_timeout {0:.0f} ms is not below the server's deadlock_timeout {1:.0f} ms: a swap waiting on "
                "several locks may be cancelled as a deadlock instead of retried cleanly".format(
                    lock_timeout * 1000, deadlock * 1000))
    return None
