# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The row trigger that mirrors source writes into the target, and its paused form.

One trigger per shadow, whose function body is swapped: "apply" writes the
mapped row into the target (upsert by key, delete by key), "log" only records
the changed keys in ``keel.shadow_changes`` so a resume can resync them.
Replacing a function body is transactional and takes no lock on the tables.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import DOLLAR_TAG
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    table_identifier,
)

try:
    from psycopg import sql
except ImportError:
    sql = None


def mapped_select(mapping: Dict[str, str], target: TableInfo) -> Any:
    """Each target column's value computed from ``src``, cast to the target's type."""
    return sql.SQL(", ").join(
        sql.SQL("({0})::{1}").format(sql.SQL(mapping[column]), sql.SQL(target.columns[column].type))
        for column in mapping)


def upsert_from_source(mapping: Dict[str, str], target: TableInfo, source_rows: Any) -> Any:
    """INSERT the mapped rows of ``source_rows`` (a FROM item aliased src) into the target, replacing by key."""
    columns = list(mapping)
    updates = [c for c in columns if c not in target.primary_key] or columns[:1]
    return sql.SQL("INSERT INTO {target} ({columns}) OVERRIDING SYSTEM VALUE SELECT {values} FROM {rows}"
                   " ON CONFLICT ({key}) DO UPDATE SET {updates}").format(
        target=table_identifier(target), columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        values=mapped_select(mapping, target), rows=source_rows,
        key=sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key),
        updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates))


def apply_function_body(mapping: Dict[str, str], target: TableInfo, source_key: List[str]) -> Any:
    match_old = sql.SQL(" AND ").join(
        sql.SQL("{0} = OLD.{1}").format(sql.Identifier(t), sql.Identifier(s))
        for t, s in zip(target.primary_key, source_key))
    key_changed = sql.SQL(" OR ").join(sql.SQL("NEW.{0} IS DISTINCT FROM OLD.{0}").format(sql.Identifier(c))
                                       for c in source_key)
    upsert = upsert_from_source(mapping, target, sql.SQL("(SELECT NEW.*) AS src"))
    return sql.SQL(
        "BEGIN"
        " IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({key_changed})) THEN"
        "   DELETE FROM {target} WHERE {match_old};"
        " END IF;"
        " IF TG_OP IN ('INSERT', 'UPDATE') THEN {upsert}; END IF;"
        " RETURN NULL;"
        " END").format(key_changed=key_changed, target=table_identifier(target), match_old=match_old, upsert=upsert)


def log_function_body(shadow_name: str, source_key: List[str]) -> Any:
    def key_of(row: str) -> Any:
        return sql.SQL("ARRAY[{0}]").format(sql.SQL(", ").join(
            sql.SQL("{0}.{1}::text").format(sql.SQL(row), sql.Identifier(c)) for c in source_key))

    return sql.SQL(
        "BEGIN"
        " IF TG_OP IN ('UPDATE', 'DELETE') THEN"
        "   INSERT INTO keel.shadow_changes (shadow, key) VALUES ({name}, {old_key});"
        " END IF;"
        " IF TG_OP IN ('INSERT', 'UPDATE') THEN"
        "   INSERT INTO keel.shadow_changes (shadow, key) VALUES ({name}, {new_key});"
        " END IF;"
        " RETURN NULL;"
        " END").format(name=sql.Literal(shadow_name), old_key=key_of("OLD"), new_key=key_of("NEW"))


def replace_function(function_name: str, body: Any) -> Any:
    return sql.SQL("CREATE OR REPLACE FUNCTION keel.{name}() RETURNS trigger LANGUAGE plpgsql AS {tag}{body}{tag}").format(
        name=sql.Identifier(function_name), tag=sql.SQL(DOLLAR_TAG), body=body)


def create_trigger_statements(trigger_name: str, table: TableInfo) -> List[Any]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(trigger_name), table_identifier(table)),
        sql.SQL("CREATE TRIGGER {0} AFTER INSERT OR UPDATE OR DELETE ON {1} FOR EACH ROW"
                " EXECUTE FUNCTION keel.{0}()").format(sql.Identifier(trigger_name), table_identifier(table)),
    ]


def drop_trigger_statements(trigger_name: str, table: TableInfo) -> List[Any]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {0} ON {1}").format(sql.Identifier(trigger_name), table_identifier(table)),
        sql.SQL("DROP FUNCTION IF EXISTS keel.{0}()").format(sql.Identifier(trigger_name)),
    ]


def trigger_exists(conn: Any, trigger_name: str, table: TableInfo) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s AND tgname = %s)",
                        (table.oid, trigger_name)).fetchone()[0]


def function_mode(conn: Any, function_name: str) -> str:
    """'apply', 'log' or 'absent', read from the installed function's body."""
    row = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = %s AND pronamespace = 'keel'::regnamespace",
                       (function_name,)).fetchone()
    if row is None:
        return "absent"
    return "log" if "keel.shadow_changes" in row[0] else "apply"
