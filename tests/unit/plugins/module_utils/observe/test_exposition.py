"""The exposition writer and the reader of keel's own textfiles."""

from __future__ import annotations

from ansible_collections.keel.postgres.plugins.module_utils.observe import exposition
from prometheus_client.parser import text_string_to_metric_families


def test_escaping_helpers():
    assert exposition.escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert exposition.unescape_label_value('a\\\\b\\"c\\nd') == 'a\\b"c\nd'
    assert exposition.escape_help("x\\y\nz") == "x\\\\y\\nz"
    assert exposition.format_value(float("nan")) == "NaN" and exposition.format_value(float("inf")) == "+Inf"


def families():
    runs = exposition.Family("keel_runs_total", "counter", "Runs.")
    runs.samples[exposition.label_set({"module": "backup", "tenant": 'we"ird\\name\n'})] = 3.0
    runs.samples[exposition.label_set({"module": "backup", "tenant": "acme"})] = 1.0
    stamp = exposition.Family("keel_last_success_timestamp_seconds", "gauge", "Last success.")
    stamp.samples[()] = 1764120000.0
    return [runs, stamp]


def test_rendered_text_is_sorted_valid_exposition_and_reads_back_the_same():
    text = exposition.render_families(families())
    assert text.index("keel_last_success") < text.index("keel_runs_total")
    parsed = {family.name: family for family in text_string_to_metric_families(text)}
    assert parsed["keel_runs"].type == "counter" and len(parsed["keel_runs"].samples) == 2
    back = exposition.parse_families(text)
    assert back is not None
    assert {name: (family.kind, family.samples) for name, family in back.items()} == {
        family.name: (family.kind, family.samples) for family in families()}
    assert exposition.render_families(list(back.values())) == text


def test_text_keel_did_not_write_is_not_read():
    assert exposition.parse_families("# TYPE x histogram\nx_bucket{le=\"1\"} 1\n") is None
    assert exposition.parse_families("no_type_line 1\n") is None
    assert exposition.parse_families("# TYPE x gauge\nx{a=unquoted} 1\n") is None
    assert exposition.parse_families("") == {}
