from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import (
    check_identifier,
    parse_table_name,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations import parse_operations
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.raw_sql import dangerous_reasons


@pytest.mark.parametrize("name", ['or"ders', "orders;drop", "my table", "ordérs", "1orders", "", "a" * 64, "a.b"])
def test_identifiers_outside_the_plain_alphabet_are_refused(name):
    with pytest.raises(InvalidOption) as caught:
        check_identifier(name, "operations[0].add_column.column")
    assert caught.value.field == "operations[0].add_column.column"


def test_plain_identifiers_pass():
    assert check_identifier("order_items$2", "f") == "order_items$2"
    assert str(parse_table_name("shop.orders", "f")) == "shop.orders"
    assert parse_table_name("orders", "f").schema is None


def test_table_names_with_two_dots_are_refused():
    with pytest.raises(InvalidOption, match="more than one dot"):
        parse_table_name("db.shop.orders", "operations[0].drop_table.table")


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ([], "operations", "non-empty list"),
        ([{"add_column": {}, "drop_column": {}}], "operations[0]", "exactly one operation"),
        ([{"explode_table": {"table": "t"}}], "operations[0]", "unknown operation 'explode_table'"),
        ([{"add_column": {"table": "t", "column": "c"}}], "operations[0].add_column", "missing required option(s) type"),
        ([{"add_column": {"table": "t", "column": "c", "type": "int", "colour": "red"}}], "operations[0].add_column",
         "unknown option(s) colour"),
        ([{"add_column": {"table": "t", "column": "c", "type": "int", "not_null": "yes"}}],
         "operations[0].add_column.not_null", "expected true or false"),
        ([{"alter_column": {"table": "t", "column": "c"}}], "operations[0].alter_column", "nothing to change"),
        ([{"alter_column": {"table": "t", "column": "c", "using": "c::int"}}], "operations[0].alter_column.using",
         "only makes sense with type"),
        ([{"rename_column": {"table": "t", "from": "a", "to": "a"}}], "operations[0].rename_column.to", "same name"),
        ([{"create_index": {"table": "t", "name": "i", "columns": ["a"], "method": "btree; drop"}}],
         "operations[0].create_index.method", "must be one of"),
        ([{"add_foreign_key": {"table": "t", "name": "fk", "columns": ["a", "b"],
                               "references": {"table": "u", "columns": ["id"]}}}],
         "operations[0].add_foreign_key.references.columns", "as many columns"),
    ],
)
def test_bad_operations_name_the_field(spec, field, text):
    with pytest.raises(InvalidOption) as caught:
        parse_operations(spec)
    assert caught.value.field == field
    assert text in caught.value.message


@pytest.mark.parametrize(
    ("statement", "flagged"),
    [
        ("ALTER TABLE orders ALTER COLUMN amount TYPE bigint", True),
        ("alter table orders alter amount set data type bigint", True),
        ("ALTER TABLE orders ALTER COLUMN amount SET NOT NULL", True),
        ("ALTER TABLE orders ADD CONSTRAINT c CHECK (amount > 0)", True),
        ("ALTER TABLE orders ADD CONSTRAINT c CHECK (amount > 0) NOT VALID", False),
        ("CREATE INDEX orders_a ON orders (amount)", True),
        ("CREATE INDEX CONCURRENTLY orders_a ON orders (amount)", False),
        ("VACUUM FULL orders", True),
        ("ALTER TABLE orders ADD COLUMN note text", False),
        ("COMMENT ON TABLE orders IS 'x'", False),
    ],
)
def test_raw_sql_flags_statements_that_hold_access_exclusive_while_scanning(statement, flagged):
    assert bool(dangerous_reasons(statement)) is flagged
