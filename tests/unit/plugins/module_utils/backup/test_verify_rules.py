"""Restore verification rules without a server: options named on error, table comparison, assertion verdicts, sampling."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import BackupEntry
from ansible_collections.keel.postgres.plugins.module_utils.backup.table_stats import TableStats
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_checks import compare_tables, judge_result
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_options import parse_assertions, parse_masking
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_run import scratch_database_name, success_rate
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_sample import RANDOM, SampleSpec, parse_sample, select_backups
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import sql_condition, withhold_row_text

MANIFEST_TABLES = [
    {"schema": "public", "name": "customer", "rows": 3, "fingerprint": "-12345"},
    {"schema": "public", "name": "rental", "rows": 0, "fingerprint": "0"},
]


def stats(name: str, rows: int, fingerprint: str | None, schema: str = "public") -> TableStats:
    return TableStats(schema=schema, name=name, rows=rows, fingerprint=fingerprint)


def test_identical_tables_compare_clean():
    assert compare_tables(MANIFEST_TABLES, [stats("customer", 3, "-12345"), stats("rental", 0, "0")], "fingerprints") == []


def test_changed_missing_and_extra_tables_are_each_reported():
    found = [stats("customer", 3, "999"), stats("audit_log", 7, "1")]
    assert compare_tables(MANIFEST_TABLES, found, "fingerprints") == [
        {"table": "public.audit_log", "problem": "not in the manifest", "rows_expected": None, "rows_found": 7, "fingerprint_match": False},
        {"table": "public.customer", "problem": "fingerprint differs", "rows_expected": 3, "rows_found": 3, "fingerprint_match": False},
        {"table": "public.rental", "problem": "missing after restore", "rows_expected": 0, "rows_found": None, "fingerprint_match": False},
    ]


def test_row_counts_mode_ignores_fingerprints():
    expected = [dict(entry, fingerprint=None) for entry in MANIFEST_TABLES]
    assert compare_tables(expected, [stats("customer", 3, None), stats("rental", 0, None)], "row_counts") == []
    [mismatch] = compare_tables(expected, [stats("customer", 2, None), stats("rental", 0, None)], "row_counts")
    assert mismatch == {"table": "public.customer", "problem": "row count differs", "rows_expected": 3, "rows_found": 2, "fingerprint_match": None}


def test_same_name_in_another_schema_is_another_table():
    mismatches = compare_tables(MANIFEST_TABLES[:1], [stats("customer", 3, "-12345", schema="globex")], "fingerprints")
    assert [entry["table"] for entry in mismatches] == ["globex.customer", "public.customer"]


@pytest.mark.parametrize(
    "masking, field",
    [
        ("email", "masking"),
        (["customer.email"], "masking[0]"),
        ([{"table": "customer", "column": "email"}], "masking[0].expression"),
        ([{"table": "customer", "expression": "'x'"}], "masking[0].column"),
        ([{"column": "email", "expression": "'x'"}], "masking[0].table"),
        ([{"table": "a.b.c", "column": "email", "expression": "'x'"}], "masking[0].table"),
        ([{"table": ".customer", "column": "email", "expression": "'x'"}], "masking[0].table"),
        ([{"table": "customer", "column": "email", "expression": "'x'", "where": "id > 1"}], "masking[0].where"),
        ([{"table": "customer", "column": "email", "expression": "'x'"}, {"table": "customer", "column": "email", "expression": "'y'"}],
         "masking[1].column"),
    ],
)
def test_masking_mistakes_name_their_field(masking, field):
    with pytest.raises(InvalidOption) as refused:
        parse_masking(masking)
    assert refused.value.field == field


def test_masking_rules_parse_schema_and_table():
    qualified, bare = parse_masking([{"table": "public.customer", "column": "email", "expression": "md5(email)"},
                                     {"table": "staff", "column": "email", "expression": "'***'"}])
    assert (qualified.schema, qualified.table, qualified.column, qualified.expression) == ("public", "customer", "email", "md5(email)")
    assert (bare.schema, bare.table, bare.field) == (None, "staff", "masking[1]")


@pytest.mark.parametrize(
    "assertions, field",
    [
        ({"name": "x", "sql": "SELECT true"}, "assertions"),
        ([{"name": "x"}], "assertions[0].sql"),
        ([{"sql": "SELECT true"}], "assertions[0].name"),
        ([{"name": "x", "sql": " "}], "assertions[0].sql"),
        ([{"name": "x", "sql": "SELECT true"}, {"name": "x", "sql": "SELECT 1 = 1"}], "assertions[1].name"),
        ([{"name": "x", "sql": "SELECT true", "expect": True}], "assertions[0].expect"),
    ],
)
def test_assertion_mistakes_name_their_field(assertions, field):
    with pytest.raises(InvalidOption) as refused:
        parse_assertions(assertions)
    assert refused.value.field == field


@pytest.mark.parametrize(
    "description, rows, verdict",
    [
        (["ok"], [(True,)], None),
        (["ok"], [(False,)], "returned false"),
        (["ok"], [(None,)], "returned NULL"),
        (["ok"], [], "returns no row"),
        (["ok"], [(True,), (True,)], "returns more than one row"),
        (["a", "b"], [(True, True)], "returns 2 columns, not one boolean"),
        (None, [], "returns no result: it must be a query returning one boolean"),
        (["email"], [("secret@example.test",)], "returned a value of type str, not a boolean"),
        (["n"], [(1,)], "returned a value of type int, not a boolean"),
    ],
)
def test_assertion_verdict_never_quotes_a_value(description, rows, verdict):
    assert judge_result(description, rows) == verdict


def test_sql_errors_are_reduced_to_their_condition():
    psycopg = pytest.importorskip("psycopg")
    error = psycopg.errors.lookup("22P02")("invalid input syntax for type integer: \"secret@example.test\"")
    condition = sql_condition(error)
    assert condition["condition_class"] == "data_exception"
    assert condition["condition"] == "invalid_text_representation"
    assert "secret" not in repr(condition)


def test_pg_restore_messages_lose_row_text():
    message = ('pg_restore failed (exit code 1): pg_restore: error: COPY failed for table "customer": ERROR:  invalid input syntax '
               'for type integer: "secret@example.test" | CONTEXT:  COPY customer, line 1, column id: "secret@example.test" | '
               'pg_restore: detail: Key (email)=(secret@example.test) already exists. | pg_restore: warning: errors ignored on restore: 1')
    cleaned = withhold_row_text(message)
    assert "secret" not in cleaned
    assert 'table "customer"' in cleaned and "errors ignored on restore" in cleaned


def test_scratch_names_fit_postgres_identifiers():
    assert scratch_database_name("acme", "0a1b2c3d") == "keel_verify_acme_0a1b2c3d"
    long_name = scratch_database_name("t" * 63)
    assert len(long_name) <= 63 and long_name.startswith("keel_verify_ttt")
    with pytest.raises(InvalidOption):
        scratch_database_name("Bad Tenant")


def test_success_rate():
    assert success_rate(3, 1) == 0.75
    assert success_rate(0, 0) is None


@pytest.mark.parametrize(
    "sample, field",
    [
        ("random", "sample"),
        ({"mode": "newest"}, "sample.mode"),
        ({}, "sample.mode"),
        ({"mode": "random", "count": 0}, "sample.count"),
        ({"mode": "random", "count": "many"}, "sample.count"),
        ({"mode": "random", "within_days": -3}, "sample.within_days"),
        ({"mode": "random", "seed": [1]}, "sample.seed"),
        ({"mode": "latest_per_tier", "count": 2}, "sample.count"),
        ({"mode": "random", "per_tier": True}, "sample.per_tier"),
    ],
)
def test_sample_mistakes_name_their_field(sample, field):
    with pytest.raises(InvalidOption) as refused:
        parse_sample(sample)
    assert refused.value.field == field


NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc)


class FakeStore:
    """Just enough of a store for select_backups: published backups aged 1..10 days per tenant."""

    def __init__(self, tenants: list[str], ages: range) -> None:
        self.entries = {}
        for tenant in tenants:
            made = [NOW - datetime.timedelta(days=age) for age in sorted(ages, reverse=True)]
            self.entries[tenant] = [BackupEntry(tenant=tenant, backup_id=when.strftime("%Y%m%dT%H%M%SZ") + "-0000000{0}".format(index % 10))
                                    for index, when in enumerate(made)]


@pytest.fixture
def catalog(monkeypatch):
    store = FakeStore(["acme", "globex"], range(1, 11))
    monkeypatch.setattr("ansible_collections.keel.postgres.plugins.module_utils.backup.verify_sample.published_backups",
                        lambda _store, _keys, tenant: store.entries.get(tenant, []))
    return store


TENANTS = parse_tenants([{"name": "acme", "database": "a", "retention": {"days": 30, "tier": "hot"}},
                         {"name": "globex", "database": "g", "retention": {"days": 365, "tier": "cold"}},
                         {"name": "initech", "database": "i", "retention": {"days": 7}}])


def test_latest_per_tier_takes_each_tenants_newest_and_lists_the_empty_ones(catalog):
    selection = select_backups(None, None, TENANTS, None, parse_sample({"mode": "latest_per_tier"}), NOW)
    assert [(c.tenant.name, c.entry.backup_id) for c in selection.chosen] == [
        ("acme", catalog.entries["acme"][-1].backup_id), ("globex", catalog.entries["globex"][-1].backup_id)]
    assert [c.describe()["tier"] for c in selection.chosen] == ["hot", "cold"]
    assert selection.not_sampled == [{"tenant": "initech", "tier": "hot", "reason": "no published backup"}]


def test_random_sample_stays_in_its_window_and_repeats_with_a_seed(catalog):
    sample = SampleSpec(mode=RANDOM, count=2, within_days=5, seed="2026-Q4")
    first = select_backups(None, None, TENANTS[:2], None, sample, NOW)
    again = select_backups(None, None, TENANTS[:2], None, sample, NOW)
    assert [c.entry.backup_id for c in first.chosen] == [c.entry.backup_id for c in again.chosen]
    assert len(first.chosen) == 4
    assert all(NOW - c.entry.created_at <= datetime.timedelta(days=5) for c in first.chosen)
    everything = select_backups(None, None, TENANTS[:1], None, SampleSpec(mode=RANDOM, count=50), NOW)
    assert len(everything.chosen) == 10


def test_one_backup_latest_or_by_id(catalog):
    [acme] = TENANTS[:1]
    newest = select_backups(None, None, [acme], None, None, NOW).chosen[0].entry
    assert newest.backup_id == catalog.entries["acme"][-1].backup_id
    oldest_id = catalog.entries["acme"][0].backup_id
    assert select_backups(None, None, [acme], oldest_id, None, NOW).chosen[0].entry.backup_id == oldest_id
    for wanted in ("20200101T000000Z-00000000", "yesterday"):
        with pytest.raises(InvalidOption) as refused:
            select_backups(None, None, [acme], wanted, None, NOW)
        assert refused.value.field == "backup_id"
    with pytest.raises(InvalidOption):
        select_backups(None, None, TENANTS[2:], "latest", None, NOW)
