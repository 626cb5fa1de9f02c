"""Names as regclass text: what every to_regclass lookup of the engine and of partition upkeep is given."""

from __future__ import annotations

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import regclass_text


def test_each_part_is_quoted_so_upper_case_means_itself():
    assert regclass_text("public", "Orders") == '"public"."Orders"'
    assert regclass_text(None, "orders") == '"orders"'


def test_a_double_quote_inside_a_name_is_doubled_not_parsed():
    assert regclass_text('we"ird', 'na"me') == '"we""ird"."na""me"'
