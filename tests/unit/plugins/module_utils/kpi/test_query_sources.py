"""Which statements query_latency accepts and re-runs: transaction control, parameters, writes, quoting."""

from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi.query_sources import (
    parse_queries,
    skip_reason,
    statement_name,
    transaction_control,
)


@pytest.mark.parametrize(
    "text, control",
    [
        ("SELECT 1", None),
        ("SELECT 'commit; rollback'", None),  # inside a literal
        ("SELECT $$ begin $$", None),  # inside dollar quotes
        ("SELECT 1 -- COMMIT", None),  # inside a comment
        ("SELECT 1; COMMIT", "commit"),
        ("savepoint s1", "savepoint"),
        ("/* note */ ROLLBACK", "rollback"),
    ],
)
def test_transaction_control_ignores_comments_and_quoted_text(text, control):
    assert transaction_control(text) == control


@pytest.mark.parametrize(
    "text, allow_writes, reason",
    [
        ("SELECT * FROM orders WHERE id = 42", False, None),
        ("SELECT * FROM orders WHERE id = $1", False, "has parameters"),
        ("SELECT '$1' FROM orders", False, None),  # a literal, not a parameter
        ("UPDATE orders SET amount = 0", False, "writes"),
        ("UPDATE orders SET amount = 0", True, None),
        ("SELECT * FROM orders FOR UPDATE", False, "locks rows"),
        ("VACUUM orders", True, "utility statement (VACUUM)"),
        ("SELECT 1; SELECT 2", False, "several statements"),
        ("SELECT pg_stat_statements_reset()", False, "pg_stat_statements"),
    ],
)
def test_skip_reason_keeps_only_statements_that_can_be_re_run_as_recorded(text, allow_writes, reason):
    found = skip_reason(text, allow_writes)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_statement_names_are_stable_under_whitespace_changes():
    assert statement_name("SELECT  1\n FROM t") == statement_name("SELECT 1 FROM t")
    assert statement_name("SELECT 1 FROM t") != statement_name("SELECT 2 FROM t")


@pytest.mark.parametrize(
    "value, field",
    [
        ("SELECT 1", "queries"),
        ([], "queries"),
        ([{"name": "a"}], "queries[0].sql"),
        ([{"name": "a", "sql": "SELECT 1", "runs": 3}], "queries[0].runs"),
        ([{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}], "queries[1].name"),
        ([{"name": "a", "sql": "BEGIN; SELECT 1"}], "queries[0].sql"),
    ],
)
def test_bad_query_lists_name_the_field(value, field):
    with pytest.raises(InvalidOption) as refused:
        parse_queries(value)
    assert refused.value.field == field


def test_good_queries_parse_in_order():
    parsed = parse_queries([{"name": "lookup", "sql": "SELECT 1"}, {"name": "scan", "sql": "SELECT count(*) FROM pg_class"}])
    assert [(query.name, query.field) for query in parsed] == [("lookup", "queries[0]"), ("scan", "queries[1]")]
