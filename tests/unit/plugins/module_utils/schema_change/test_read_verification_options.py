"""verify_reads entries: what is accepted, and every refusal naming the exact field at fault."""

from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.read_verification import (
    ReadQuery,
    parse_verify_reads,
)


def test_entries_become_read_queries():
    parsed = parse_verify_reads([
        {"name": "orders by id", "query": "SELECT id, amount FROM orders;  ", "key": ["id"]},
        {"name": "totals",
         "query": "-- per customer\n/* grouped */ (SELECT customer, sum(amount) FROM orders GROUP BY 1)"},
        {"name": "constants", "query": "VALUES (1), (2)"},
        {"name": "whole table", "query": "table orders"},
        {"name": "cte", "query": "WITH x AS (SELECT 1 AS a) SELECT a FROM x"},
    ])
    assert parsed[0] == ReadQuery("orders by id", "SELECT id, amount FROM orders", ["id"])
    assert parsed[1].key is None
    assert [query.name for query in parsed] == ["orders by id", "totals", "constants", "whole table", "cte"]


def test_nothing_given_is_no_queries():
    assert parse_verify_reads(None) == []
    assert parse_verify_reads([]) == []


GOOD = {"name": "a", "query": "SELECT 1"}


@pytest.mark.parametrize(
    ("value", "field", "text"),
    [
        ({"name": "a", "query": "SELECT 1"}, "verify_reads", "must be a list"),
        (["SELECT 1"], "verify_reads[0]", "must be a mapping"),
        ([{"name": "a", "sql": "SELECT 1"}], "verify_reads[0].sql", "unknown key"),
        ([{"query": "SELECT 1"}], "verify_reads[0].name", "is required"),
        ([GOOD, {"name": "a", "query": "SELECT 2"}], "verify_reads[1].name", "already the name of verify_reads[0]"),
        ([GOOD, {"name": "b", "query": "   "}], "verify_reads[1].query", "is required"),
        ([GOOD, {"name": "b"}], "verify_reads[1].query", "is required"),
        ([{"name": "a", "query": 42}], "verify_reads[0].query", "is required"),
        ([{"name": "a", "query": "SELECT 1; SELECT 2"}], "verify_reads[0].query", "single statement"),
        ([{"name": "a", "query": "SELECT 1; DROP TABLE orders;"}], "verify_reads[0].query", "single statement"),
        ([{"name": "a", "query": "SELECT ';'"}], "verify_reads[0].query", "chr(59)"),
        ([{"name": "a", "query": "DELETE FROM orders"}], "verify_reads[0].query", "not 'delete'"),
        ([{"name": "a", "query": "-- SELECT\nUPDATE orders SET amount = 0"}], "verify_reads[0].query", "not 'update'"),
        ([{"name": "a", "query": "selectx 1"}], "verify_reads[0].query", "read query"),
        ([{"name": "a", "query": "EXPLAIN SELECT 1"}], "verify_reads[0].query", "read query"),
        ([{"name": "a", "query": "SELECT 1", "key": "id"}], "verify_reads[0].key", "non-empty list"),
        ([{"name": "a", "query": "SELECT 1", "key": []}], "verify_reads[0].key", "non-empty list"),
        ([{"name": "a", "query": "SELECT 1", "key": ["id", "order id"]}], "verify_reads[0].key[1]", "plain identifier"),
        ([{"name": "a", "query": "SELECT 1", "key": ["id", 'x"; --']}], "verify_reads[0].key[1]", "plain identifier"),
        ([{"name": "a", "query": "SELECT 1", "key": ["id", "id"]}], "verify_reads[0].key[1]", "listed twice"),
        ([{"name": "a", "query": "SELECT 1", "key": [7]}], "verify_reads[0].key[0]", "expected a name"),
    ],
)
def test_bad_entries_name_their_field(value, field, text):
    with pytest.raises(InvalidOption) as caught:
        parse_verify_reads(value)
    assert caught.value.field == field
    assert text in caught.value.message


def test_the_field_name_is_the_callers():
    with pytest.raises(InvalidOption) as caught:
        parse_verify_reads([{"name": "a", "query": "TRUNCATE orders"}], field="operations[0].verify_reads")
    assert caught.value.field == "operations[0].verify_reads[0].query"
