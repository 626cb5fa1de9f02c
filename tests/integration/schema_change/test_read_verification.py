"""Dual-read verification against a real server: old and new version schemas built by hand as plain views.

``public.orders`` holds the old column ``amount`` and the new ``_keel_new_amount`` a backfill fills;
``public_v1.orders`` shows the old shape and ``public_v2.orders`` the new one, as a migration's version
schemas would. A correct backfill verifies; a deliberately wrong backfill expression is caught, with
both row counts and a sample of the wrong ids.
"""

from __future__ import annotations

import json
import threading
from typing import Iterator, List

import psycopg
import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, QueryFailed
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.read_verification import (
    MASK,
    ReadMismatch,
    ReadQuery,
    compare_reads,
    parse_verify_reads,
    require_matching_reads,
)

from tests.integration.schema_change.conftest import Db

pytestmark = pytest.mark.integration

ROWS = 5000
OLD = ["public_v1", "public"]
NEW = ["public_v2", "public"]

SETUP = """
CREATE TABLE public.orders (id bigint PRIMARY KEY, amount integer NOT NULL, _keel_new_amount bigint, customer text);
INSERT INTO public.orders SELECT g, 1 + (g * 37) % 1000, 1 + (g * 37) % 1000, 'customer ' || (g % 50)
  FROM generate_series(1, {rows}) AS g;
CREATE SCHEMA public_v1;
CREATE VIEW public_v1.orders AS SELECT id, amount, customer FROM public.orders;
CREATE SCHEMA public_v2;
CREATE VIEW public_v2.orders AS SELECT id, _keel_new_amount AS amount, customer, 'n' || id AS note FROM public.orders;
""".format(rows=ROWS)

# The deliberately wrong backfill expression: amount * 10 for every seventh order.
WRONG_BACKFILL = "UPDATE public.orders SET _keel_new_amount = amount * 10 WHERE id % 7 = 0"
WRONG_IDS = {str(i) for i in range(7, ROWS + 1, 7)}

VERIFY_READS = parse_verify_reads([
    {"name": "orders by id", "query": "SELECT id, amount FROM orders", "key": ["id"]},
    {"name": "totals per customer", "query": "SELECT customer, sum(amount) AS total FROM orders GROUP BY customer"},
    {"name": "customers like 1", "query": "SELECT count(*) FROM orders WHERE customer LIKE 'customer 1%'"},
])


@pytest.fixture
def orders(db: Db) -> Db:
    db.execute(SETUP)
    return db


@pytest.fixture
def conn(orders: Db) -> Iterator[psycopg.Connection]:
    with orders.connect() as connection:
        yield connection


def test_a_correct_backfill_reads_the_same_through_both_version_schemas(conn):
    outcomes = compare_reads(conn, OLD, NEW, VERIFY_READS)

    assert [outcome.name for outcome in outcomes] == ["orders by id", "totals per customer", "customers like 1"]
    assert all(outcome.ok for outcome in outcomes)
    by_id, totals, like = outcomes
    assert (by_id.old_rows, by_id.new_rows) == (ROWS, ROWS)
    assert (totals.old_rows, totals.new_rows) == (50, 50)
    assert (like.old_rows, like.new_rows) == (1, 1)  # the % in LIKE reached the server untouched
    assert by_id.old_hash == by_id.new_hash and by_id.old_hash != "0"
    assert by_id.old_ms > 0 and by_id.new_ms > 0
    assert by_id.only_in_old == [] and by_id.only_in_new == []
    require_matching_reads(outcomes)
    assert json.loads(json.dumps([outcome.as_dict() for outcome in outcomes]))[0]["old_rows"] == ROWS
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_wrong_backfill_expression_is_caught_with_counts_and_the_wrong_ids(orders, conn):
    orders.execute(WRONG_BACKFILL)

    outcomes = compare_reads(conn, OLD, NEW, VERIFY_READS, sample_size=5)

    by_id, totals, like = outcomes
    assert not by_id.ok and not totals.ok and like.ok
    assert (by_id.old_rows, by_id.new_rows) == (ROWS, ROWS)
    assert by_id.old_hash != by_id.new_hash
    assert len(by_id.only_in_old) == 5 and len(by_id.only_in_new) == 5
    assert all(set(row) == {"id"} and row["id"] in WRONG_IDS for row in by_id.only_in_old + by_id.only_in_new)
    assert len(totals.only_in_old) == 5 and set(totals.only_in_old[0]) == {"customer", "total"}  # all columns

    with pytest.raises(ReadMismatch) as caught:
        require_matching_reads(outcomes)
    error = caught.value
    assert error.kind == "read_mismatch"
    assert error.field == "verify_reads[0]"
    assert "2 of 3 read queries differ" in error.message
    assert ("'orders by id' (verify_reads[0]): old version schema 5000 rows, new version schema 5000 rows"
            in error.message)
    assert '{"id": "' + by_id.only_in_old[0]["id"] + '"}' in error.message
    assert "'totals per customer' (verify_reads[1])" in error.message and "customers like 1" not in error.message
    assert [entry["ok"] for entry in error.details["read_verification"]] == [False, False, True]


def test_the_sample_finds_exactly_the_rows_that_differ(orders, conn):
    orders.execute(WRONG_BACKFILL)

    [by_id] = compare_reads(conn, OLD, NEW, VERIFY_READS[:1], sample_size=ROWS)

    assert {row["id"] for row in by_id.only_in_old} == WRONG_IDS
    assert {row["id"] for row in by_id.only_in_new} == WRONG_IDS
    assert [row["id"] for row in by_id.only_in_old[:3]] == ["7", "14", "21"]  # ordered by key, as numbers


def test_row_counts_differ_when_the_new_version_schema_loses_rows(orders, conn):
    orders.execute("CREATE OR REPLACE VIEW public_v2.orders AS SELECT id, _keel_new_amount AS amount, customer,"
                   " 'n' || id AS note FROM public.orders WHERE id <= 4990")

    [by_id] = compare_reads(conn, OLD, NEW, VERIFY_READS[:1], sample_size=20)

    assert (by_id.old_rows, by_id.new_rows) == (ROWS, 4990)
    assert by_id.only_in_old == [{"id": str(i)} for i in range(4991, ROWS + 1)]
    assert by_id.only_in_new == []


def test_duplicates_count(orders, conn):
    orders.execute("""
        CREATE VIEW public_v1.letters AS SELECT * FROM (VALUES ('a'), ('a'), ('c')) AS v(letter);
        CREATE VIEW public_v2.letters AS SELECT * FROM (VALUES ('b'), ('b'), ('c')) AS v(letter);
        CREATE VIEW public_v1.twice AS SELECT * FROM (VALUES ('a'), ('a')) AS v(letter);
        CREATE VIEW public_v2.twice AS SELECT * FROM (VALUES ('a')) AS v(letter);
    """)
    queries = parse_verify_reads([{"name": "letters", "query": "SELECT letter FROM letters"},
                                  {"name": "twice", "query": "TABLE twice"}])

    letters, twice = compare_reads(conn, OLD, NEW, queries)

    # Same count and, with an XOR of row hashes, the same hash (a^a^c = c = b^b^c): the sum tells them apart.
    assert (letters.ok, letters.old_rows, letters.new_rows) == (False, 3, 3)
    assert (letters.only_in_old, letters.only_in_new) == ([{"letter": "a"}] * 2, [{"letter": "b"}] * 2)
    assert (twice.ok, twice.old_rows, twice.new_rows) == (False, 2, 1)
    assert (twice.only_in_old, twice.only_in_new) == ([{"letter": "a"}], [])


def test_concurrent_writers_cause_no_false_mismatch(orders, conn):
    """Both sides read one snapshot: rows committed between the old and the new read are in neither."""
    stop = threading.Event()
    inserted: List[int] = []
    failures: List[BaseException] = []

    def write() -> None:
        try:
            with orders.connect() as writer:
                next_id = ROWS + 1
                while not stop.is_set():
                    writer.execute("INSERT INTO public.orders VALUES (%s, 5, 5, 'writer')", (next_id,))
                    inserted.append(next_id)
                    next_id += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    # Each side sleeps 50 ms inside the snapshot, so the writer commits rows between the two sides' reads.
    slow = parse_verify_reads([
        {"name": "slow orders", "query": "WITH pause AS MATERIALIZED (SELECT pg_sleep(0.05))"
                                         " SELECT o.id, o.amount FROM orders AS o, pause", "key": ["id"]},
        {"name": "slow count", "query": "WITH pause AS MATERIALIZED (SELECT pg_sleep(0.05))"
                                        " SELECT count(*) FROM orders, pause"},
    ])
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        seen = []
        for _round in range(4):
            before = len(inserted)
            outcomes = compare_reads(conn, OLD, NEW, slow)
            assert len(inserted) > before, "the writer committed nothing during compare_reads"
            assert all(outcome.ok for outcome in outcomes), [outcome.as_dict() for outcome in outcomes]
            seen.append(outcomes[0].old_rows)
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures
    assert seen == sorted(seen) and seen[-1] > seen[0] >= ROWS


def test_masked_columns_show_the_marker_not_the_values(orders, conn):
    orders.execute(WRONG_BACKFILL + "; UPDATE public.orders SET _keel_new_amount = NULL WHERE id = 14")
    queries = parse_verify_reads([{"name": "orders", "query": "SELECT id, amount, customer FROM orders"}])

    [outcome] = compare_reads(conn, OLD, NEW, queries, sample_size=ROWS, masked_columns=["amount", "customer"])

    assert {row["id"] for row in outcome.only_in_new} == WRONG_IDS
    fourteen = [row for row in outcome.only_in_new if row["id"] == "14"]
    assert fourteen == [{"id": "14", "amount": None, "customer": MASK}]  # NULL stays visible: the classic bug
    others = [row for row in outcome.only_in_old + outcome.only_in_new if row is not fourteen[0]]
    assert all(row["amount"] == MASK and row["customer"] == MASK for row in others)
    with pytest.raises(ReadMismatch) as caught:
        require_matching_reads([outcome])
    assert "customer 1" not in caught.value.message and "customer 1" not in json.dumps(caught.value.details)


def test_a_query_failing_on_one_side_names_the_field_and_the_side(conn):
    queries = parse_verify_reads([
        {"name": "orders by id", "query": "SELECT id, amount FROM orders", "key": ["id"]},
        {"name": "notes", "query": "SELECT id, note FROM orders"},
    ])

    with pytest.raises(QueryFailed) as caught:
        compare_reads(conn, OLD, NEW, queries)

    error = caught.value
    assert error.field == "verify_reads[1].query"
    assert error.message.startswith("verify_reads[1].query ('notes') failed on the old version schema "
                                    "(search_path public_v1, public) with SQLSTATE 42703 (undefined_column)")
    assert 'column "note" does not exist' in error.message
    assert error.details["side"] == "old"
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # rolled back, still usable
    assert compare_reads(conn, OLD, NEW, queries[:1])[0].ok


@pytest.mark.parametrize(
    ("query", "sqlstate"),
    [
        ("SELECT id FROM orders WHERE", "42601"),
        ("SELECT id FROM no_such_table", "42P01"),
        ("SELECT customer::int FROM orders", "22P02"),
        ("WITH gone AS (DELETE FROM orders RETURNING id) SELECT id FROM gone", "0A000"),
        ("SELECT id FROM orders FOR UPDATE", "25006"),
    ],
)
def test_failing_queries_are_reported_by_sqlstate_without_row_values(orders, conn, query, sqlstate):
    with pytest.raises(QueryFailed) as caught:
        compare_reads(conn, OLD, NEW, [ReadQuery("bad", query)])

    assert caught.value.field == "verify_reads[0].query"
    assert "SQLSTATE " + sqlstate in caught.value.message
    assert "customer 1" not in caught.value.message  # 22P02's server text would quote the value
    assert orders.value("SELECT count(*) FROM public.orders") == ROWS


def test_a_key_that_is_not_a_result_column_names_the_key(conn):
    queries = parse_verify_reads([{"name": "notes", "query": "SELECT id, amount FROM orders", "key": ["id", "amt"]}])

    with pytest.raises(InvalidOption) as caught:
        compare_reads(conn, OLD, NEW, queries, field="operations[0].verify_reads")

    assert caught.value.field == "operations[0].verify_reads[0].key[1]"
    assert "'amt' is not a result column" in caught.value.message


def test_prepared_statements_are_off_while_comparing_and_restored_after(orders):
    queries = parse_verify_reads([{"name": "everything", "query": "SELECT * FROM orders"}])
    with orders.connect() as conn:
        conn.prepare_threshold = 0  # psycopg prepares every statement, as a pooled client might

        # Why: the same statement prepared under one search_path changes result type under the other.
        with pytest.raises(psycopg.errors.FeatureNotSupported), conn.transaction():
            for schema in ("public_v1", "public_v2"):
                conn.execute(psycopg.sql.SQL("SET LOCAL search_path TO {0}, public").format(
                    psycopg.sql.Identifier(schema)))
                conn.execute("SELECT * FROM orders LIMIT 0")

        orders.execute(WRONG_BACKFILL)
        [outcome] = compare_reads(conn, OLD, NEW, queries, sample_size=3)

        assert not outcome.ok and len(outcome.only_in_new) == 3 and set(outcome.only_in_new[0]) == {
            "id", "amount", "customer", "note"}
        assert conn.prepare_threshold == 0


def test_a_connection_inside_a_transaction_is_refused(conn):
    with conn.transaction(), pytest.raises(ValueError, match="outside any transaction"):
        compare_reads(conn, OLD, NEW, VERIFY_READS)
