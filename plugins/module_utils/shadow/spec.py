# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A shadow write as the playbook describes it: source, target, column mapping.

The mapping says how each target column is computed from a source row (a
source column name or an SQL expression over the source's columns). The
target's primary key columns must map to plain source columns, so a source
row and its shadow share a key: deletes, resyncs and drift checks all work
key by key, and the trigger touches target rows in the same order the
application touches source rows (no lock-order deadlocks).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.expressions import check_expression
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import (
    TableName,
    check_identifier,
    parse_table_name,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import TableInfo


class ShadowSpec(NamedTuple):
    source: TableName
    target: TableName
    target_definition: Optional[str]
    mapping: Dict[str, str]  # target column -> expression over the source row
    reverse_mapping: Dict[str, str]  # source column -> expression over the target row (for cutover)


def parse_spec(params: Dict[str, Any]) -> ShadowSpec:
    source = parse_table_name(params.get("source"), "source")
    target = parse_table_name(params.get("target"), "target")
    if (source.schema, source.name) == (target.schema, target.name):
        raise InvalidOption("target", "must differ from source")
    return ShadowSpec(source, target, params.get("target_definition"),
                      _parse_mapping(params.get("mapping"), "mapping"),
                      _parse_mapping(params.get("reverse_mapping") or {}, "reverse_mapping", allow_empty=True))


def _parse_mapping(value: Any, field: str, allow_empty: bool = False) -> Dict[str, str]:
    if not isinstance(value, dict) or (not value and not allow_empty):
        raise InvalidOption(field, "expected a mapping of target column -> source column or expression")
    mapping = {}
    for column, expression in value.items():
        check_identifier(column, "{0}.{1}".format(field, column))
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidOption("{0}.{1}".format(field, column), "expected a column name or SQL expression")
        mapping[column] = expression
    return mapping


def key_columns(source: TableInfo, field: str = "source") -> List[str]:
    if not source.primary_key:
        raise InvalidOption(field, "table {0} has no primary key; shadow writes match rows by primary key".format(
            source.qualified))
    return source.primary_key


def validate_mapping(conn: Any, spec: ShadowSpec, source: TableInfo, target: TableInfo) -> List[str]:
    """Check the mapping against both tables before any trigger exists; return the target's key columns."""
    source_key = key_columns(source)
    if not target.primary_key:
        raise InvalidOption("target", "table {0} has no primary key".format(target.qualified))
    for column, expression in spec.mapping.items():
        field = "mapping.{0}".format(column)
        if column not in target.columns:
            raise InvalidOption(field, "table {0} has no column {1!r}".format(target.qualified, column))
        check_expression(conn, source, expression, field, result_type=target.columns[column].type)
    missing = [c for c in target.columns if c not in spec.mapping and target.columns[c].not_null
               and target.columns[c].default is None]
    if missing:
        raise InvalidOption("mapping", "target columns {0} are NOT NULL without default and not mapped".format(
            ", ".join(missing)))
    for column in target.primary_key:
        expression = spec.mapping.get(column)
        if expression is None or expression.strip().strip('"') not in source_key:
            raise InvalidOption("mapping.{0}".format(column), "target key column {0} must map to a source key column "
                                "({1}) so rows correspond one to one".format(column, ", ".join(source_key)))
    if len(target.primary_key) != len(source_key):
        raise InvalidOption("target", "its primary key ({0}) must have the same columns as the source's ({1})".format(
            ", ".join(target.primary_key), ", ".join(source_key)))
    check_existing_rows_convert(conn, spec.mapping, source, target)
    for column, expression in spec.reverse_mapping.items():
        field = "reverse_mapping.{0}".format(column)
        if column not in source.columns:
            raise InvalidOption(field, "table {0} has no column {1!r}".format(source.qualified, column))
        check_expression(conn, target, expression, field, result_type=source.columns[column].type)
    return target.primary_key


def source_key_for(spec: ShadowSpec, target_key: List[str]) -> List[str]:
    """The source column each target key column copies, in target key order."""
    return [spec.mapping[column].strip().strip('"') for column in target_key]


def check_existing_rows_convert(conn: Any, mapping: Dict[str, str], source: TableInfo, target: TableInfo) -> None:
    """Evaluate every mapping over every source row (a read-only scan) before any trigger exists.

    A mapping that fails on some row would otherwise fail the backfill half-way, and worse, the
    application's own writes of such rows once the trigger is in place.
    """
    from psycopg import sql  # imported here: parsing the spec needs no driver

    def query(columns: List[str]) -> Any:
        return sql.SQL("SELECT {0} FROM {1} AS src").format(
            sql.SQL(", ").join(sql.SQL("count(({0})::{1})").format(sql.SQL(mapping[c]), sql.SQL(target.columns[c].type))
                               for c in columns),
            sql.Identifier(source.schema, source.name))

    try:
        with conn.transaction():
            conn.execute(query(list(mapping)))
        return
    except Exception:  # find which column fails, to name it
        pass
    for column in mapping:
        try:
            with conn.transaction():
                conn.execute(query([column]))
        except Exception as exc:
            raise InvalidOption("mapping.{0}".format(column), "existing rows of {0} cannot be mapped: {1}".format(
                source.qualified, str(exc).strip().splitlines()[0])) from None
