"""keel.postgres.schema_change on a real third-party schema: pagila (the DVD-rental sample).

Every test gets its own copy of pagila (15 tables, ``payment`` partitioned in 7,
foreign keys everywhere, ``last_updated`` triggers on every table, a full-text
trigger on ``film``, 7 views and a materialized view) and runs the module the
way a user would, through ansible-playbook. Each test states which pagila case
keel supports and which it refuses, and checks that:

* a refusal names its reason and changes nothing (``pg_dump --schema-only`` is
  identical, not even the keel catalog is created);
* a supported change leaves the data, the views and the materialized view
  intact, with every constraint validated and no ``_keel_`` helper left;
* a rollback after ``started`` restores the exact schema (``pg_dump``).

Enabled by ``KEEL_PAGILA_DIR`` (see conftest.py); skipped as a whole without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.realworld.conftest import Pagila, pagila_dir_or_skip

pagila_dir_or_skip()

pytestmark = pytest.mark.integration

# Views and the materialized view of pagila, all of which must keep returning the same rows.
VIEWS = ("actor_info", "customer_list", "film_list", "nicer_but_slower_film_list", "sales_by_film_category",
         "sales_by_store", "staff_list", "rental_by_category")


def view_fingerprints(pagila: Pagila) -> dict[str, str]:
    return {view: pagila.fingerprint(view) for view in VIEWS}


def assert_refused(result: Any, task: dict[str, Any], *fragments: str) -> str:
    """The run failed with keel's own refusal (not a PostgreSQL error or a crash) whose message holds every fragment."""
    assert result.rc != 0, f"expected a refusal, the run succeeded:\n{result.output_tail()}"
    assert [record["name"] for record in result.failed_tasks] == ["schema_change"], result.output_tail()
    assert task.get("error") == "invalid_option", f"expected keel's invalid_option refusal, got {task.get('error')}: {task.get('msg')}"
    message = task["msg"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the refusal: {message}"
    return message


def assert_completed(result: Any, task: dict[str, Any], phase: str = "completed") -> None:
    result.assert_ok()
    assert task["phase"] == phase, task


# -- 1. widen rental.inventory_id -----------------------------------------------------------------------------------------


def test_widening_rental_inventory_id_is_refused_for_its_foreign_key_then_for_its_views(pagila, migrate):
    """integer -> bigint on rental.inventory_id: refused, because a foreign key and three views use it.

    The column is referenced by rental_inventory_id_fkey (to inventory), two plain indexes
    (which keel could rebuild), the views sales_by_film_category and sales_by_store and the
    materialized view rental_by_category. keel names the first blocker; after doing what the
    message says (drop the foreign key), it names the views. Nothing changes on either refusal.
    """
    widen = [{"alter_column": {"table": "rental", "column": "inventory_id", "type": "bigint"}}]
    schema_before, rental_before = pagila.schema_dump(), pagila.fingerprint("rental")

    result, task = migrate("rental_inventory_id_bigint", widen)
    message = assert_refused(result, task, "operations[0].alter_column.type", "rental_inventory_id_fkey", "uses inventory_id",
                             "drop it first")
    assert task["field"] == "operations[0].alter_column.type"
    assert "FOREIGN KEY (inventory_id) REFERENCES inventory(inventory_id)" in message
    assert pagila.schema_dump() == schema_before
    assert pagila.fingerprint("rental") == rental_before
    assert pagila.columns("rental")["inventory_id"] == ("integer", True)
    assert not pagila.keel_catalog_exists(), "a refused migration must not even create the catalog"

    # Check mode validates too: same refusal, no plan.
    checked, plan = migrate("rental_inventory_id_bigint", widen, check=True)
    assert_refused(checked, plan, "rental_inventory_id_fkey")

    # Follow the advice: drop the foreign key. The views are the next (and final) reason.
    pagila.execute("ALTER TABLE rental DROP CONSTRAINT rental_inventory_id_fkey")
    schema_without_fk = pagila.schema_dump()
    result, task = migrate("rental_inventory_id_bigint", widen)
    assert_refused(result, task, "rental_by_category", "sales_by_film_category", "sales_by_store", "read inventory_id",
                   "cannot be swapped")
    assert pagila.schema_dump() == schema_without_fk
    assert pagila.fingerprint("rental") == rental_before
    assert not pagila.keel_catalog_exists()


def test_widening_refusal_names_every_blocker_at_once(pagila, migrate):
    """Following the first refusal's advice (drop rental_inventory_id_fkey) only leads to the next refusal (the views):
    a user who obeys ends up without the foreign key and still cannot widen the column. All reasons belong in one message."""
    result, task = migrate("rental_inventory_id_bigint", [{"alter_column": {"table": "rental", "column": "inventory_id", "type": "bigint"}}])
    assert_refused(result, task, "rental_inventory_id_fkey", "rental_by_category", "sales_by_film_category", "sales_by_store")


# -- 2. NOT NULL column with a default on customer, and a foreign key from a new rental column to staff ------------------


def test_add_not_null_column_with_default_and_a_foreign_key_column(pagila, migrate):
    operations = [
        {"add_column": {"table": "customer", "column": "loyalty_tier", "type": "text", "default": "'standard'", "not_null": True}},
        {"add_column": {"table": "rental", "column": "checked_by", "type": "integer",
                        "references": {"table": "staff", "column": "staff_id", "on_delete": "set null"}}},
    ]
    schema_before, views_before = pagila.schema_dump(), view_fingerprints(pagila)
    customer_columns, rental_columns = list(pagila.columns("customer")), list(pagila.columns("rental"))
    data_before = {"customer": pagila.fingerprint("customer", customer_columns), "rental": pagila.fingerprint("rental", rental_columns),
                   "staff": pagila.fingerprint("staff")}

    # Check mode: the plan, and nothing changes.
    checked, plan = migrate("loyalty_and_checker", operations, check=True)
    checked.assert_ok()
    assert [step["phase"] for step in plan["plan"]].count("start") >= 4
    assert pagila.schema_dump() == schema_before and not pagila.keel_catalog_exists()

    # started: both columns exist, the constraints are enforced and validated, nothing is NOT NULL yet.
    result, task = migrate("loyalty_and_checker", operations, state="started")
    assert_completed(result, task, "started")
    assert set(task["tables"]) == {"public.customer", "public.rental", "public.staff"}
    assert pagila.columns("customer")["loyalty_tier"] == ("text", False)
    assert pagila.value("SELECT count(*) FROM customer WHERE loyalty_tier = 'standard'") == 599
    helper_checks = [(name, validated) for name, (definition, validated) in pagila.constraints("customer").items()
                     if definition == "CHECK ((loyalty_tier IS NOT NULL))"]
    assert len(helper_checks) == 1 and helper_checks[0][1] is True, pagila.constraints("customer")
    assert pagila.constraints("rental")["rental_checked_by_fkey"] == (
        "FOREIGN KEY (checked_by) REFERENCES staff(staff_id) ON DELETE SET NULL", True)
    # The old application keeps inserting customers without the column; the new one can reference staff.
    assert pagila.rolled_back("INSERT INTO customer (store_id, first_name, last_name, address_id)"
                              " VALUES (1, 'ADA', 'LOVELACE', 1) RETURNING loyalty_tier") == [("standard",)]
    assert pagila.rolled_back("INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id, checked_by)"
                              " VALUES (now(), 1, 1, 1, 2) RETURNING checked_by") == [(2,)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        pagila.rolled_back("INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id, checked_by)"
                           " VALUES (now(), 1, 1, 1, 999999)")

    # rolled_back: exactly the schema and data we started from.
    result, task = migrate("loyalty_and_checker", operations, state="rolled_back")
    assert_completed(result, task, "rolled_back")
    assert pagila.schema_dump() == schema_before
    assert {table: pagila.fingerprint(table) for table in data_before} == data_before
    assert view_fingerprints(pagila) == views_before
    assert pagila.keel_helpers() == []

    # completed (the rolled-back name starts afresh).
    result, task = migrate("loyalty_and_checker", operations, state="completed")
    assert_completed(result, task)
    assert task["phases"] == ["start", "complete"]
    assert pagila.columns("customer")["loyalty_tier"] == ("text", True)
    assert pagila.columns("rental")["checked_by"] == ("integer", False)
    assert pagila.constraints("rental")["rental_checked_by_fkey"][1] is True
    assert all(validated for _definition, validated in pagila.constraints("customer").values())
    assert pagila.keel_helpers() == []
    assert pagila.value("SELECT count(*) FROM customer WHERE loyalty_tier = 'standard'") == 599
    assert pagila.value("SELECT count(*) FROM rental WHERE checked_by IS NOT NULL") == 0
    # The existing columns hold exactly the rows they held (no backfill touched them, no trigger fired).
    assert pagila.fingerprint("customer", customer_columns) == data_before["customer"]
    assert pagila.fingerprint("rental", rental_columns) == data_before["rental"]
    assert pagila.fingerprint("staff") == data_before["staff"]
    pagila.execute("REFRESH MATERIALIZED VIEW rental_by_category")
    assert view_fingerprints(pagila) == views_before
    with pytest.raises(psycopg.errors.NotNullViolation):
        pagila.rolled_back("INSERT INTO customer (store_id, first_name, last_name, address_id, loyalty_tier)"
                           " VALUES (1, 'ADA', 'LOVELACE', 1, NULL)")
    # ON DELETE SET NULL works for the new foreign key: a new clerk checks a rental, then leaves.
    pagila.execute("INSERT INTO staff (staff_id, first_name, last_name, address_id, store_id, username)"
                   " VALUES (100000, 'TEMP', 'CLERK', 1, 1, 'temp')")
    pagila.execute("UPDATE rental SET checked_by = 100000 WHERE rental_id = 1")
    pagila.execute("DELETE FROM staff WHERE staff_id = 100000")
    assert pagila.value("SELECT checked_by FROM rental WHERE rental_id = 1") is None

    again, task = migrate("loyalty_and_checker", operations, state="completed")
    again.assert_ok()
    assert task["changed"] is False


# -- 3. NOT NULL on an existing nullable column ---------------------------------------------------------------------------


def test_set_not_null_on_address_postal_code_which_has_no_nulls(pagila, migrate):
    """address.postal_code is nullable and has no NULL (4 empty strings, which are values); two views read it."""
    assert pagila.value("SELECT count(*) FROM address WHERE postal_code IS NULL") == 0
    operations = [{"alter_column": {"table": "address", "column": "postal_code", "not_null": True}}]
    schema_before, address_before, views_before = pagila.schema_dump(), pagila.fingerprint("address"), view_fingerprints(pagila)

    result, task = migrate("address_postal_code_not_null", operations, state="started")
    assert_completed(result, task, "started")
    assert pagila.columns("address")["postal_code"] == ("text", False)
    checks = {name: validated for name, (definition, validated) in pagila.constraints("address").items()
              if definition == "CHECK ((postal_code IS NOT NULL))"}
    assert list(checks.values()) == [True], pagila.constraints("address")
    with pytest.raises(psycopg.errors.CheckViolation):
        pagila.rolled_back("INSERT INTO address (address, district, city_id, phone, postal_code) VALUES ('1 Main St', 'X', 1, '1', NULL)")

    result, task = migrate("address_postal_code_not_null", operations, state="rolled_back")
    assert_completed(result, task, "rolled_back")
    assert pagila.schema_dump() == schema_before
    assert pagila.keel_helpers() == []

    result, task = migrate("address_postal_code_not_null", operations)
    assert_completed(result, task)
    assert pagila.columns("address")["postal_code"] == ("text", True)
    assert pagila.keel_helpers() == []
    assert all(validated for _definition, validated in pagila.constraints("address").values())
    assert pagila.fingerprint("address") == address_before, "SET NOT NULL must not touch a row (nor fire last_updated)"
    assert view_fingerprints(pagila) == views_before
    with pytest.raises(psycopg.errors.NotNullViolation):
        pagila.rolled_back("INSERT INTO address (address, district, city_id, phone, postal_code) VALUES ('1 Main St', 'X', 1, '1', NULL)")
    # Only the column's nullability changed.
    expected = schema_before.replace("    postal_code text,\n", "    postal_code text NOT NULL,\n", 1)
    assert expected != schema_before
    assert pagila.schema_dump() == expected


def test_set_not_null_on_address_address2_which_has_nulls_fails_clearly_and_rolls_back(pagila, migrate):
    """address.address2 has 4 NULLs: validation fails, naming the column's helper check; a rollback restores everything."""
    assert pagila.value("SELECT count(*) FROM address WHERE address2 IS NULL") == 4
    operations = [{"alter_column": {"table": "address", "column": "address2", "not_null": True}}]
    schema_before, address_before = pagila.schema_dump(), pagila.fingerprint("address")

    result, task = migrate("address_address2_not_null", operations)
    assert result.rc != 0 and [record["name"] for record in result.failed_tasks] == ["schema_change"]
    assert "address2" in task["msg"] and "is violated by some row" in task["msg"], task["msg"]
    assert pagila.columns("address")["address2"] == ("text", False)
    # Left resumable where it stopped, with the error recorded.
    assert pagila.migration_phase("address_address2_not_null") == "starting"

    result, task = migrate("address_address2_not_null", operations, state="rolled_back")
    assert_completed(result, task, "rolled_back")
    assert pagila.schema_dump() == schema_before
    assert pagila.fingerprint("address") == address_before
    assert pagila.keel_helpers() == []


# -- 4. rename a column that views read -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column", "new_name", "views"),
    [
        ("film", "rental_rate", "rate", ("film_list", "nicer_but_slower_film_list")),
        ("actor", "last_name", "family_name", ("actor_info", "film_list", "nicer_but_slower_film_list")),
    ],
)
def test_rename_column_read_by_views_keeps_the_views_working(pagila, migrate, table, column, new_name, views):
    """Supported: views bind columns by attribute number, so they survive the rename and keep their output columns."""
    operations = [{"rename_column": {"table": table, "from": column, "to": new_name}}]
    schema_before, views_before, table_before = pagila.schema_dump(), view_fingerprints(pagila), pagila.fingerprint(table)
    using = {row[0] for row in pagila.execute(
        "SELECT DISTINCT v.relname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class"
        " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
        " WHERE d.refobjid = %s::regclass AND a.attname = %s AND v.oid <> d.refobjid", (table, column))}
    assert using == set(views), "pagila is not what this test expects"

    checked, plan = migrate("rename_" + column, operations, check=True)
    checked.assert_ok()
    impacts = [step.get("client_impact") or "" for step in plan["plan"]]
    assert any("views and version schemas keep working" in impact for impact in impacts), plan["plan"]

    # started changes no table (the rename happens at the switch-over; the new version schema shows the new name),
    # so rolling back is trivially exact.
    result, task = migrate("rename_" + column, operations, state="started")
    assert_completed(result, task, "started")
    assert pagila.schema_dump() == schema_before
    result, task = migrate("rename_" + column, operations, state="rolled_back")
    assert_completed(result, task, "rolled_back")
    assert pagila.schema_dump() == schema_before

    result, task = migrate("rename_" + column, operations)
    assert_completed(result, task)
    columns = pagila.columns(table)
    assert new_name in columns and column not in columns
    assert pagila.fingerprint(table) == table_before
    assert view_fingerprints(pagila) == views_before, "the views must return exactly the rows they returned before"
    for view in views:
        assert pagila.value(f"SELECT count(*) FROM {view}") > 0
    # The application's writes go on under the new name (the last_updated trigger does not name columns).
    key = {"film": "film_id", "actor": "actor_id"}[table]
    assert pagila.rolled_back(f"UPDATE {table} SET {new_name} = {new_name} WHERE {key} = 1 RETURNING {key}") == [(1,)]


def test_rename_column_named_by_a_trigger_is_refused_or_keeps_writes_working(pagila, migrate):
    """film.title is read by three views and passed *by name* to tsvector_update_trigger by film_fulltext_trigger.

    Acceptable outcomes: keel refuses before any change, naming the trigger; or it renames and
    the application can still write to film. Today it renames, the views work, and writes fail
    with 'column "title" does not exist'.
    """
    operations = [{"rename_column": {"table": "film", "from": "title", "to": "film_title"}}]
    schema_before, views_before = pagila.schema_dump(), view_fingerprints(pagila)
    result, task = migrate("rename_film_title", operations)
    if result.rc != 0:
        assert_refused(result, task, "film_fulltext_trigger", "title")
        assert pagila.schema_dump() == schema_before
        return
    assert view_fingerprints(pagila) == views_before
    assert pagila.rolled_back("UPDATE film SET rental_rate = rental_rate WHERE film_id = 1 RETURNING film_id") == [(1,)]
    assert pagila.rolled_back("INSERT INTO film (film_title, language_id) VALUES ('KEEL TEST', 1) RETURNING fulltext IS NOT NULL") == [(True,)]


# -- 5. rewrite a partition, and the plain tables -------------------------------------------------------------------------

REWRITE_ALL_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: rewrite
      keel.postgres.schema_change: "{{ connection | combine({'name': 'rewrite_' ~ item, 'operations': [{'rewrite_table': {'table': item}}]}) }}"
      loop: "{{ tables }}"
      ignore_errors: true
"""


def test_rewrite_table_refuses_partitions_and_every_pagila_table_with_its_reasons(pagila, migrate, run_playbook):
    """rewrite_table is refused for all of pagila: partitions (and the partitioned parent) are not supported, and every
    plain table has user triggers (last_updated), foreign keys in or out and/or views. Each refusal lists all its reasons."""
    schema_before = pagila.schema_dump()

    result, task = migrate("rewrite_payment_p2022_01", [{"rewrite_table": {"table": "payment_p2022_01"}}])
    assert_refused(result, task, "cannot rewrite public.payment_p2022_01 online", "it is a partition",
                   "it has foreign keys or exclusion constraints")
    result, task = migrate("rewrite_payment", [{"rewrite_table": {"table": "payment"}}])
    assert_refused(result, task, "public.payment is partitioned")

    tables = [row[0] for row in pagila.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY relname")]
    assert len(tables) == 21  # 14 plain tables and 7 partitions
    result = run_playbook(REWRITE_ALL_PLAYBOOK, extra_vars={"connection": pagila.connection_options(), "tables": tables})
    items = {item["item"]: item for item in result.task("rewrite")["result"]["results"]}
    assert sorted(items) == tables
    rewritten = [table for table, item in items.items() if "error" not in item]
    assert rewritten == [], f"unexpectedly supported: {rewritten}"
    messages = {table: item["msg"] for table, item in items.items()}
    assert all(item.get("error") == "invalid_option" for item in items.values()), messages
    for table, message in messages.items():
        assert message.startswith(f"operations[0].rewrite_table.table: cannot rewrite public.{table} online: "), message
        if table.startswith("payment_p"):
            assert "it is a partition" in message
        else:
            assert "it has user triggers" in message, message  # every plain pagila table has last_updated
    expectations = {
        "film": ["foreign keys of other tables reference it", "it has foreign keys or exclusion constraints",
                 "views read it (actor_info, film_list, nicer_but_slower_film_list, rental_by_category, sales_by_film_category)"],
        "rental": ["foreign keys of other tables reference it", "views read it (rental_by_category, sales_by_film_category, sales_by_store)"],
        "language": ["foreign keys of other tables reference it"],
        "payment_p2022_07": ["it takes part in inheritance"],
    }
    for table, fragments in expectations.items():
        for fragment in fragments:
            assert fragment in messages[table], messages[table]
    assert "views read it" not in messages["language"]
    assert pagila.schema_dump() == schema_before
    assert not pagila.keel_catalog_exists()


# -- 6. an index on the partitioned payment table -------------------------------------------------------------------------


def test_create_index_on_partitioned_payment_builds_one_per_partition_and_attaches_them(pagila, migrate):
    operations = [{"create_index": {"table": "payment", "name": "payment_rental_id_idx", "columns": ["rental_id"]}}]
    partitions = [row[0] for row in pagila.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'payment'::regclass ORDER BY 1")]
    assert len(partitions) == 7
    schema_before, payment_before = pagila.schema_dump(), pagila.fingerprint("payment")

    def index_facts() -> dict[str, tuple[str, bool, str]]:
        """table -> (index, valid, definition) of every index on rental_id alone, on payment and its partitions."""
        rows = pagila.execute(
            "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, i.indisvalid, pg_get_indexdef(i.indexrelid)"
            " FROM pg_index i WHERE (i.indrelid = 'payment'::regclass"
            "   OR i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'payment'::regclass))"
            "  AND i.indkey::text = (SELECT attnum::text FROM pg_attribute WHERE attrelid = i.indrelid AND attname = 'rental_id')")
        facts: dict[str, tuple[str, bool, str]] = {}
        for table, index, valid, definition in rows:
            assert table not in facts, f"{table} has two indexes on rental_id"
            facts[table] = (index, valid, definition)
        return facts

    result, task = migrate("payment_rental_id_idx", operations, state="started")
    assert_completed(result, task, "started")
    facts = index_facts()
    assert set(facts) == {"payment", *partitions}
    assert all(valid for _index, valid, _definition in facts.values()), facts
    assert facts["payment"][0] == "payment_rental_id_idx"
    attached = {row[0] for row in pagila.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'payment_rental_id_idx'::regclass")}
    assert attached == {facts[partition][0] for partition in partitions}
    assert pagila.fingerprint("payment") == payment_before
    # The planner uses it on every partition.
    with pagila.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN SELECT * FROM payment WHERE rental_id = 1000").fetchall())
    for partition in partitions:
        assert facts[partition][0] in plan, plan

    result, task = migrate("payment_rental_id_idx", operations, state="rolled_back")
    assert_completed(result, task, "rolled_back")
    assert pagila.schema_dump() == schema_before
    assert index_facts() == {}

    result, task = migrate("payment_rental_id_idx", operations)
    assert_completed(result, task)
    facts = index_facts()
    assert set(facts) == {"payment", *partitions} and all(valid for _index, valid, _definition in facts.values())
    assert pagila.value("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    # A new partition gets the index automatically, as with any partitioned index.
    pagila.execute("CREATE TABLE payment_p2022_08 PARTITION OF payment FOR VALUES FROM ('2022-08-01 00:00+00') TO ('2022-09-01 00:00+00')")
    assert "payment_p2022_08" in index_facts()


# -- 7. a migration waits for an open transaction, and the application never sees an error --------------------------------


def test_migration_on_rental_waits_for_an_open_transaction_and_never_fails_the_application(pagila, migrate):
    operations = [{"add_column": {"table": "rental", "column": "channel", "type": "text", "default": "'store'", "not_null": True}}]
    outcome: dict[str, Any] = {}

    def run_migration() -> None:
        try:
            outcome["run"] = migrate("rental_channel", operations, lock_timeout="100ms", lock_retries=200)
        except Exception as error:  # re-raised by the main thread
            outcome["error"] = error

    application_errors: list[str] = []
    latencies: list[float] = []
    with pagila.connect() as holder, pagila.connect() as application, pagila.connect() as observer:
        # Another session, in the middle of a transaction that read rental: it holds ACCESS SHARE until COMMIT.
        holder.execute("BEGIN")
        rentals = holder.execute("SELECT count(*) FROM rental").fetchone()[0]
        migration = threading.Thread(target=run_migration, name="keel-migration")
        migration.start()
        try:
            waits = wait_for_keel_lock_waits(observer, minimum=2, timeout=120, running=migration.is_alive, outcome=outcome)
            # While keel keeps retrying, the transaction goes on working, and so does everyone else.
            deadline = time.monotonic() + 1.5
            customer = 1
            while time.monotonic() < deadline:
                for connection, query in ((holder, "SELECT count(*) FROM rental WHERE customer_id = %s"),
                                          (application, "SELECT count(*) FROM rental WHERE customer_id = %s")):
                    began = time.monotonic()
                    try:
                        connection.execute(query, (customer,)).fetchone()
                    except psycopg.Error as error:
                        application_errors.append(f"{query}: {error}")
                    latencies.append(time.monotonic() - began)
                customer = customer % 599 + 1
                time.sleep(0.02)
            holder.execute("UPDATE rental SET return_date = return_date WHERE rental_id = 1")
            assert outcome == {}, "the migration finished while the transaction still held its lock"
            holder.execute("COMMIT")
        finally:
            migration.join(timeout=300)
    assert not migration.is_alive(), "the migration did not finish after the transaction ended"
    if "error" in outcome:
        raise outcome["error"]
    result, task = outcome["run"]
    assert application_errors == []
    assert max(latencies) < 2.0, f"an application query waited {max(latencies):.2f} s behind the migration"
    assert_completed(result, task)
    counters = task["metrics"]["counters"]
    assert counters["lock_timeouts"] >= 1 and counters["lock_attempts"] > counters["lock_timeouts"], counters
    assert waits >= 2
    assert pagila.columns("rental")["channel"] == ("text", True)
    assert pagila.value("SELECT count(*) FROM rental WHERE channel = 'store'") == rentals == 16044
    assert pagila.keel_helpers() == []


def wait_for_keel_lock_waits(observer: Any, minimum: int, timeout: float, running: Callable[[], bool], outcome: dict[str, Any]) -> int:
    """Poll until keel's session has been seen queued for a lock on rental `minimum` separate times; how many were seen."""
    deadline = time.monotonic() + timeout
    seen, waiting_before = 0, False
    while time.monotonic() < deadline:
        if not running():
            raise AssertionError(f"the migration ended while the transaction still held its lock: {outcome}")
        waiting = observer.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND l.relation = 'rental'::regclass AND a.application_name LIKE 'keel.postgres/%')").fetchone()[0]
        if waiting and not waiting_before:
            seen += 1
            if seen >= minimum:
                return seen
        waiting_before = waiting
        time.sleep(0.01)
    raise AssertionError(f"keel was seen waiting for rental only {seen} time(s) in {timeout:.0f} s")


# -- found on pagila: a backfill fires the application's triggers ---------------------------------------------------------


def test_backfilling_a_new_column_leaves_the_existing_columns_alone(pagila, migrate):
    operations = [{"add_column": {"table": "customer", "column": "full_name", "type": "text",
                                  "up": "first_name || ' ' || last_name", "not_null": True}}]
    columns = list(pagila.columns("customer"))
    before = pagila.fingerprint("customer", columns)
    before_but_last_update = pagila.fingerprint("customer", [column for column in columns if column != "last_update"])
    result, task = migrate("customer_full_name", operations, batch_size=200)
    assert_completed(result, task)
    assert task["metrics"]["counters"]["rows_backfilled"] == 599
    assert pagila.value("SELECT count(*) FROM customer WHERE full_name = first_name || ' ' || last_name") == 599
    # Everything but last_update is untouched; last_update is what the application's trigger rewrote.
    assert pagila.fingerprint("customer", [column for column in columns if column != "last_update"]) == before_but_last_update
    assert pagila.fingerprint("customer", columns) == before, "a schema change must not change application data (last_update)"
