"""Every schema_change operation against a real PostgreSQL, table-driven in the style of pgroll.

Each case is a migration over tables of ~1000 rows and three checks: the shape
after ``started`` (old and new application can both work), after ``completed``
and after ``rolled_back``. Every case runs twice:

* start -> check -> (writes of the old application) -> complete -> check;
* start -> check -> rollback -> check, and the schema is then exactly what it
  was before the migration (``pg_dump --schema-only``) with the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import psycopg
import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError

from tests.integration.schema_change.conftest import Db

pytestmark = pytest.mark.integration

BASE_SETUP = """
CREATE TABLE categories (id bigint PRIMARY KEY, title text NOT NULL);
INSERT INTO categories SELECT g, 'category ' || g FROM generate_series(1, 20) AS g;

CREATE TABLE items (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    price integer NOT NULL,
    code text NOT NULL,
    category integer,
    status text DEFAULT 'pending',
    email text
);
INSERT INTO items
SELECT g, 'item ' || g, g % 50, '#' || g, 1 + g % 20,
       CASE WHEN g % 3 = 0 THEN 'done' ELSE 'pending' END, 'user' || g || '@example.com'
FROM generate_series(1, 1000) AS g;

CREATE TABLE accounts (id bigint PRIMARY KEY, balance integer NOT NULL DEFAULT 0, owner text);
CREATE INDEX accounts_balance_idx ON accounts (balance);
INSERT INTO accounts SELECT g, g * 7 - 3000, 'owner ' || g FROM generate_series(1, 1000) AS g;

CREATE TABLE archive (id bigint PRIMARY KEY, payload text);
INSERT INTO archive SELECT g, repeat('x', g % 10) FROM generate_series(1, 1000) AS g;

ANALYZE;
"""

Check = Callable[[Db], None]


@dataclass(frozen=True)
class Case:
    id: str
    operations: List[Dict[str, Any]]
    after_start: Check
    after_complete: Check
    after_rollback: Check
    # Writes of the old application between start and complete (only in the complete run).
    old_app: Optional[Check] = None
    setup: str = ""


# -- small readers ----------------------------------------------------------------------------


def helper_checks(db: Db, table: str) -> List[str]:
    """Definitions of the migration's own validated-check helpers on ``table``."""
    return sorted(definition for name, (definition, validated) in db.constraints(table).items()
                  if name.startswith("_keel_") and validated)


def helper_column(db: Db, table: str) -> str:
    names = [name for name in db.columns(table) if name.startswith("_keel_")]
    assert len(names) == 1, names
    return names[0]


def count(db: Db, query: str, params: Any = None) -> int:
    return db.value(query, params)


# -- add_column ---------------------------------------------------------------------------------


def note_is_null_everywhere(db: Db) -> None:
    assert db.columns("items")["note"] == ("text", False, None)
    assert count(db, "SELECT count(*) FROM items WHERE note IS NULL") == 1000


def note_is_absent(db: Db) -> None:
    assert "note" not in db.columns("items")


def state_defaults_to_new(db: Db) -> None:
    assert db.columns("items")["state"] == ("text", False, "'new'::text")
    assert count(db, "SELECT count(*) FROM items WHERE state = 'new'") == 1000
    assert db.rolled_back("INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', 1, '#3001')"
                          " RETURNING state") == [("new",)]


def state_is_absent(db: Db) -> None:
    assert "state" not in db.columns("items")


def priority_started(db: Db) -> None:
    # NOT NULL is not declared yet (that would scan under ACCESS EXCLUSIVE): a validated check holds it.
    assert db.columns("items")["priority"] == ("integer", False, "7")
    assert helper_checks(db, "items") == ["CHECK ((priority IS NOT NULL))"]
    assert count(db, "SELECT count(*) FROM items WHERE priority = 7") == 1000
    assert db.rolled_back("INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', 1, '#3001')"
                          " RETURNING priority") == [(7,)]
    with pytest.raises(psycopg.errors.CheckViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, priority) VALUES (3002, 'x', 1, '#3002', NULL)")


def priority_completed(db: Db) -> None:
    assert db.columns("items")["priority"] == ("integer", True, "7")
    assert helper_checks(db, "items") == []
    assert count(db, "SELECT count(*) FROM items WHERE priority = 7") == 1000
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, priority) VALUES (3002, 'x', 1, '#3002', NULL)")


def priority_is_absent(db: Db) -> None:
    assert "priority" not in db.columns("items")


def price_cents_started(db: Db) -> None:
    assert db.columns("items")["price_cents"] == ("bigint", False, None)
    assert helper_checks(db, "items") == ["CHECK ((price_cents IS NOT NULL))"]
    assert count(db, "SELECT count(*) FROM items WHERE price_cents IS DISTINCT FROM price * 100") == 0
    assert len(db.triggers("items")) == 1


def price_cents_old_app_inserts(db: Db) -> None:
    db.execute("INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', 3, '#3001')")
    db.execute("UPDATE items SET name = 'renamed by old app' WHERE id = 10")
    assert db.value("SELECT price_cents FROM items WHERE id = 3001") == 300


def price_cents_old_app_changes_price(db: Db) -> None:
    price_cents_old_app_inserts(db)
    db.execute("UPDATE items SET price = price + 1 WHERE id <= 10")


def price_cents_completed(db: Db) -> None:
    assert db.columns("items")["price_cents"] == ("bigint", True, None)
    assert helper_checks(db, "items") == []
    assert db.triggers("items") == []
    assert count(db, "SELECT count(*) FROM items") == 1001
    assert count(db, "SELECT count(*) FROM items WHERE price_cents IS DISTINCT FROM price * 100") == 0


def price_cents_is_absent(db: Db) -> None:
    assert "price_cents" not in db.columns("items")


def token_started(db: Db) -> None:
    # A volatile default cannot be added without a rewrite: set afterwards, existing rows backfilled.
    assert db.columns("items")["token"] == ("uuid", False, "gen_random_uuid()")
    assert count(db, "SELECT count(DISTINCT token) FROM items") == 1000
    assert db.rolled_back("INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', 1, '#3001')"
                          " RETURNING token IS NOT NULL") == [(True,)]


def token_completed(db: Db) -> None:
    assert db.columns("items")["token"] == ("uuid", True, "gen_random_uuid()")
    assert count(db, "SELECT count(DISTINCT token) FROM items") == 1000


def token_is_absent(db: Db) -> None:
    assert "token" not in db.columns("items")


def quantity_checked(db: Db) -> None:
    assert db.columns("items")["quantity"] == ("integer", False, "1")
    assert db.constraints("items")["items_quantity_check"] == ("CHECK ((quantity > 0))", True)
    assert db.rolled_back("INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', 1, '#3001')"
                          " RETURNING quantity") == [(1,)]
    with pytest.raises(psycopg.errors.CheckViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, quantity) VALUES (3002, 'x', 1, '#3002', 0)")


def quantity_is_absent(db: Db) -> None:
    assert "quantity" not in db.columns("items")
    assert "items_quantity_check" not in db.constraints("items")


def category_id_started(db: Db) -> None:
    assert db.columns("items")["category_id"] == ("bigint", False, None)
    assert db.constraints("items")["items_category_id_fkey"] == (
        "FOREIGN KEY (category_id) REFERENCES categories(id)", True)
    assert count(db, "SELECT count(*) FROM items WHERE category_id IS DISTINCT FROM category") == 0
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, category_id) VALUES (3002, 'x', 1, '#3002', 999)")


def category_id_old_app(db: Db) -> None:
    db.execute("INSERT INTO items (id, name, price, code, category) VALUES (3001, 'old app', 1, '#3001', 3)")


def category_id_completed(db: Db) -> None:
    category_id_started(db)
    assert db.value("SELECT category_id FROM items WHERE id = 3001") == 3
    assert db.triggers("items") == []


def category_id_is_absent(db: Db) -> None:
    assert "category_id" not in db.columns("items")
    assert "items_category_id_fkey" not in db.constraints("items")


# -- drop_column, rename_column -----------------------------------------------------------------------


def payload_still_there(db: Db) -> None:
    assert "payload" in db.columns("archive")
    assert count(db, "SELECT count(*) FROM archive WHERE payload = repeat('x', (id % 10)::int)") == 1000


def payload_dropped(db: Db) -> None:
    assert "payload" not in db.columns("archive")
    assert count(db, "SELECT count(*) FROM archive") == 1000


def name_not_renamed_yet(db: Db) -> None:
    columns = db.columns("items")
    assert "name" in columns
    assert "title" not in columns


def name_renamed(db: Db) -> None:
    columns = db.columns("items")
    assert "name" not in columns
    assert columns["title"] == ("text", True, None)
    assert db.value("SELECT title FROM items WHERE id = 7") == "item 7"


# -- alter_column --------------------------------------------------------------------------------


def balance_started(db: Db) -> None:
    columns = db.columns("accounts")
    assert columns["balance"] == ("integer", True, "0")
    shadow = helper_column(db, "accounts")
    assert columns[shadow][0] == "bigint"
    assert count(db, 'SELECT count(*) FROM accounts WHERE "{0}" IS DISTINCT FROM balance'.format(shadow)) == 0
    # The index is built beside the original, concurrently, on the new column.
    shadow_indexes = {name: index for name, index in db.indexes("accounts").items() if name.startswith("_keel_")}
    assert [(definition, valid) for name, (definition, valid) in shadow_indexes.items()] == [
        ("CREATE INDEX {0} ON public.accounts USING btree ({1})".format(name, shadow), True) for name in shadow_indexes]
    assert len(shadow_indexes) == 1
    assert db.indexes("accounts")["accounts_balance_idx"][1] is True
    # Backfilled in short batches of at most 300 rows (conftest.BACKFILL), not in one UPDATE.
    assert db.execute("SELECT rows_done, batches, done FROM keel.backfills") == [(1000, 4, True)]
    # The old application still has its integer column.
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        db.rolled_back("INSERT INTO accounts (id, balance) VALUES (3000, 3000000000)")


def balance_old_app(db: Db) -> None:
    db.execute("INSERT INTO accounts (id, balance, owner) VALUES (2001, 42, 'new owner')")
    db.execute("INSERT INTO accounts (id, owner) VALUES (2002, 'takes the default')")
    db.execute("UPDATE accounts SET balance = 2147483647 WHERE id = 1")
    db.execute("UPDATE accounts SET owner = 'moved' WHERE id = 3")
    db.execute("DELETE FROM accounts WHERE id = 2")


def balance_completed(db: Db) -> None:
    assert db.columns("accounts")["balance"] == ("bigint", True, "0")
    definition, valid = db.indexes("accounts")["accounts_balance_idx"]
    assert definition == "CREATE INDEX accounts_balance_idx ON public.accounts USING btree (balance)"
    assert valid
    assert sorted(db.indexes("accounts")) == ["accounts_balance_idx", "accounts_pkey"]
    assert db.triggers("accounts") == []
    assert count(db, "SELECT count(*) FROM accounts") == 1001
    assert count(db, "SELECT count(*) FROM accounts WHERE id BETWEEN 3 AND 1000 AND balance <> id * 7 - 3000") == 0
    assert db.execute("SELECT id, balance FROM accounts WHERE id IN (1, 2, 2001, 2002) ORDER BY id") == [
        (1, 2147483647), (2001, 42), (2002, 0)]
    assert db.rolled_back("INSERT INTO accounts (id, balance) VALUES (3000, 3000000000) RETURNING balance") == [
        (3000000000,)]
    assert db.rolled_back("INSERT INTO accounts (id) VALUES (3001) RETURNING balance") == [(0,)]
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.rolled_back("INSERT INTO accounts (id, balance) VALUES (3002, NULL)")


def balance_unchanged(db: Db) -> None:
    assert db.columns("accounts")["balance"] == ("integer", True, "0")
    assert sorted(db.indexes("accounts")) == ["accounts_balance_idx", "accounts_pkey"]


def code_still_text(db: Db) -> None:
    assert db.columns("items")["code"] == ("text", True, None)
    shadow = helper_column(db, "items")
    assert db.columns("items")[shadow][0] == "integer"
    assert count(db, 'SELECT count(*) FROM items WHERE "{0}" IS DISTINCT FROM id'.format(shadow)) == 0


def code_old_app(db: Db) -> None:
    db.execute("INSERT INTO items (id, name, price, code) VALUES (2001, 'old app', 1, '#77')")
    db.execute("UPDATE items SET code = '#123' WHERE id = 5")


def code_is_integer(db: Db) -> None:
    assert db.columns("items")["code"] == ("integer", True, None)
    assert count(db, "SELECT count(*) FROM items WHERE id NOT IN (5, 2001) AND code <> id") == 0
    assert db.execute("SELECT id, code FROM items WHERE id IN (5, 2001) ORDER BY id") == [(5, 123), (2001, 77)]


def code_unchanged(db: Db) -> None:
    assert db.columns("items")["code"] == ("text", True, None)


def email_checked_not_null(db: Db) -> None:
    assert db.columns("items")["email"] == ("text", False, None)
    assert helper_checks(db, "items") == ["CHECK ((email IS NOT NULL))"]
    with pytest.raises(psycopg.errors.CheckViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, email) VALUES (3001, 'x', 1, '#3001', NULL)")


def email_not_null(db: Db) -> None:
    assert db.columns("items")["email"] == ("text", True, None)
    assert helper_checks(db, "items") == []
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, email) VALUES (3001, 'x', 1, '#3001', NULL)")


def email_nullable(db: Db) -> None:
    assert db.columns("items")["email"] == ("text", False, None)


def status_defaults_to_open(db: Db) -> None:
    assert db.columns("items")["status"] == ("text", False, "'open'::text")
    assert db.rolled_back("INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', 1, '#3001')"
                          " RETURNING status") == [("open",)]
    assert count(db, "SELECT count(*) FROM items WHERE status = 'pending'") == 667


def status_defaults_to_pending(db: Db) -> None:
    assert db.columns("items")["status"] == ("text", False, "'pending'::text")


def balance_without_default(db: Db) -> None:
    assert db.columns("accounts")["balance"] == ("integer", True, None)
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.rolled_back("INSERT INTO accounts (id) VALUES (3001)")


def balance_defaults_to_zero(db: Db) -> None:
    assert db.columns("accounts")["balance"] == ("integer", True, "0")


# -- create_index --------------------------------------------------------------------------------------


def index_is(name: str, definition: str) -> Check:
    def check(db: Db) -> None:
        assert db.indexes("items").get(name) == (definition, True)

    return check


def index_absent(name: str) -> Check:
    def check(db: Db) -> None:
        assert name not in db.indexes("items")

    return check


def unique_email_index(db: Db) -> None:
    index_is("items_email_key", "CREATE UNIQUE INDEX items_email_key ON public.items USING btree (email)")(db)
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, email) VALUES (3001, 'x', 1, '#3001', 'user1@example.com')")


# -- constraints --------------------------------------------------------------------------------------


def price_nonnegative(db: Db) -> None:
    assert db.constraints("items")["items_price_nonnegative"] == ("CHECK ((price >= 0))", True)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code) VALUES (3001, 'x', -1, '#3001')")


def no_price_check(db: Db) -> None:
    assert "items_price_nonnegative" not in db.constraints("items")


def category_fk(db: Db) -> None:
    assert db.constraints("items")["items_category_fkey"] == ("FOREIGN KEY (category) REFERENCES categories(id)", True)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.rolled_back("INSERT INTO items (id, name, price, code, category) VALUES (3001, 'x', 1, '#3001', 999)")


def no_category_fk(db: Db) -> None:
    assert "items_category_fkey" not in db.constraints("items")


# -- tables --------------------------------------------------------------------------------------------


def tags_exists(db: Db) -> None:
    assert db.columns("tags") == {
        "id": ("bigint", True, None),
        "label": ("text", True, None),
        "created_at": ("timestamp with time zone", True, "now()"),
    }
    assert sorted(db.constraints("tags")) == ["tags_label_key", "tags_pkey"]
    assert db.rolled_back("INSERT INTO tags (id, label) VALUES (1, 'first') RETURNING created_at IS NOT NULL") == [
        (True,)]
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.rolled_back("INSERT INTO tags (id, label) VALUES (1, 'first'), (2, 'first')")


def tags_absent(db: Db) -> None:
    assert not db.table_exists("tags")


def archive_present(db: Db) -> None:
    assert count(db, "SELECT count(*) FROM archive") == 1000
    assert not db.table_exists("archive_old")


def archive_dropped(db: Db) -> None:
    assert not db.table_exists("archive")


def archive_renamed(db: Db) -> None:
    assert not db.table_exists("archive")
    assert count(db, "SELECT count(*) FROM archive_old") == 1000
    assert sorted(db.indexes("archive_old")) == ["archive_pkey"]


# -- raw_sql ------------------------------------------------------------------------------------------------


def raw_sql_applied(db: Db) -> None:
    assert db.columns("audit_log") == {"id": ("bigint", True, None), "note": ("text", False, None)}
    assert db.columns("items")["audited"] == ("boolean", False, None)


def raw_sql_undone(db: Db) -> None:
    assert not db.table_exists("audit_log")
    assert "audited" not in db.columns("items")


# -- several operations: rolled back in reverse order ---------------------------------------------


def several_started(db: Db) -> None:
    assert count(db, "SELECT count(*) FROM items WHERE sku = 'SKU-' || id") == 1000
    index_is("items_price_idx", "CREATE INDEX items_price_idx ON public.items USING btree (price)")(db)
    assert db.constraints("accounts")["accounts_owner_present"] == ("CHECK ((owner IS NOT NULL))", True)


def several_completed(db: Db) -> None:
    several_started(db)
    assert db.columns("items")["sku"] == ("text", False, None)
    assert db.triggers("items") == []


def several_undone(db: Db) -> None:
    assert "sku" not in db.columns("items")
    index_absent("items_price_idx")(db)
    assert "accounts_owner_present" not in db.constraints("accounts")


PRICE_CENTS = {"add_column": {"table": "items", "column": "price_cents", "type": "bigint", "up": "price * 100",
                              "not_null": True}}

CASES = [
    Case("add_column_plain", [{"add_column": {"table": "items", "column": "note", "type": "text"}}],
         note_is_null_everywhere, note_is_null_everywhere, note_is_absent),
    Case("add_column_constant_default",
         [{"add_column": {"table": "items", "column": "state", "type": "text", "default": "'new'"}}],
         state_defaults_to_new, state_defaults_to_new, state_is_absent),
    Case("add_column_default_not_null",
         [{"add_column": {"table": "items", "column": "priority", "type": "integer", "default": "7",
                          "not_null": True}}],
         priority_started, priority_completed, priority_is_absent),
    Case("add_column_up_not_null", [PRICE_CENTS], price_cents_started, price_cents_completed, price_cents_is_absent,
         old_app=price_cents_old_app_inserts),
    Case("add_column_up_old_app_updates_source", [PRICE_CENTS], price_cents_started, price_cents_completed,
         price_cents_is_absent, old_app=price_cents_old_app_changes_price,),
    Case("add_column_volatile_default_not_null",
         [{"add_column": {"table": "items", "column": "token", "type": "uuid", "default": "gen_random_uuid()",
                          "not_null": True}}],
         token_started, token_completed, token_is_absent),
    Case("add_column_check",
         [{"add_column": {"table": "items", "column": "quantity", "type": "integer", "default": "1",
                          "check": "quantity > 0"}}],
         quantity_checked, quantity_checked, quantity_is_absent),
    Case("add_column_references",
         [{"add_column": {"table": "items", "column": "category_id", "type": "bigint", "up": "category",
                          "references": {"table": "categories", "column": "id"}}}],
         category_id_started, category_id_completed, category_id_is_absent, old_app=category_id_old_app),
    Case("drop_column", [{"drop_column": {"table": "archive", "column": "payload"}}],
         payload_still_there, payload_dropped, payload_still_there),
    Case("rename_column", [{"rename_column": {"table": "items", "from": "name", "to": "title"}}],
         name_not_renamed_yet, name_renamed, name_not_renamed_yet),
    Case("alter_column_int_to_bigint_indexed_default_not_null",
         [{"alter_column": {"table": "accounts", "column": "balance", "type": "bigint"}}],
         balance_started, balance_completed, balance_unchanged, old_app=balance_old_app),
    Case("alter_column_text_to_integer_using",
         [{"alter_column": {"table": "items", "column": "code", "type": "integer",
                            "using": "ltrim(code, '#')::integer"}}],
         code_still_text, code_is_integer, code_unchanged, old_app=code_old_app),
    Case("alter_column_not_null", [{"alter_column": {"table": "items", "column": "email", "not_null": True}}],
         email_checked_not_null, email_not_null, email_nullable),
    Case("alter_column_default", [{"alter_column": {"table": "items", "column": "status", "default": "'open'"}}],
         status_defaults_to_open, status_defaults_to_open, status_defaults_to_pending),
    Case("alter_column_drop_default",
         [{"alter_column": {"table": "accounts", "column": "balance", "drop_default": True}}],
         balance_without_default, balance_without_default, balance_defaults_to_zero),
    Case("create_index_plain", [{"create_index": {"table": "items", "name": "items_price_idx", "columns": ["price"]}}],
         index_is("items_price_idx", "CREATE INDEX items_price_idx ON public.items USING btree (price)"),
         index_is("items_price_idx", "CREATE INDEX items_price_idx ON public.items USING btree (price)"),
         index_absent("items_price_idx")),
    Case("create_index_unique",
         [{"create_index": {"table": "items", "name": "items_email_key", "columns": ["email"], "unique": True}}],
         unique_email_index, unique_email_index, index_absent("items_email_key")),
    Case("create_index_where",
         [{"create_index": {"table": "items", "name": "items_done_idx", "columns": ["name", "price"],
                            "where": "status = 'done'"}}],
         index_is("items_done_idx", "CREATE INDEX items_done_idx ON public.items USING btree (name, price) "
                                    "WHERE (status = 'done'::text)"),
         index_is("items_done_idx", "CREATE INDEX items_done_idx ON public.items USING btree (name, price) "
                                    "WHERE (status = 'done'::text)"),
         index_absent("items_done_idx")),
    Case("add_check", [{"add_check": {"table": "items", "name": "items_price_nonnegative", "check": "price >= 0"}}],
         price_nonnegative, price_nonnegative, no_price_check),
    Case("add_foreign_key",
         [{"add_foreign_key": {"table": "items", "name": "items_category_fkey", "columns": ["category"],
                               "references": {"table": "categories", "columns": ["id"]}}}],
         category_fk, category_fk, no_category_fk),
    Case("create_table",
         [{"create_table": {"table": "tags", "columns": [
             {"name": "id", "type": "bigint", "primary_key": True},
             {"name": "label", "type": "text", "not_null": True, "unique": True},
             {"name": "created_at", "type": "timestamptz", "not_null": True, "default": "now()"}]}}],
         tags_exists, tags_exists, tags_absent),
    Case("drop_table", [{"drop_table": {"table": "archive"}}], archive_present, archive_dropped, archive_present),
    Case("rename_table", [{"rename_table": {"table": "archive", "to": "archive_old"}}],
         archive_present, archive_renamed, archive_present),
    Case("raw_sql",
         [{"raw_sql": {"up": "CREATE TABLE audit_log (id bigint PRIMARY KEY, note text);"
                             " ALTER TABLE items ADD COLUMN audited boolean",
                       "down": "ALTER TABLE items DROP COLUMN audited; DROP TABLE audit_log",
                       "tables": ["items"]}}],
         raw_sql_applied, raw_sql_applied, raw_sql_undone),
    Case("several_operations",
         [{"add_column": {"table": "items", "column": "sku", "type": "text", "up": "'SKU-' || id"}},
          {"create_index": {"table": "items", "name": "items_price_idx", "columns": ["price"]}},
          {"add_check": {"table": "accounts", "name": "accounts_owner_present", "check": "owner IS NOT NULL"}}],
         several_started, several_completed, several_undone),
]


def _complete_params() -> List[Any]:
    return [pytest.param(case, id=case.id) for case in CASES]


def _rollback_params() -> List[Any]:
    return [pytest.param(case, id=case.id) for case in CASES]


def _prepare(db: Db, case: Case) -> None:
    db.execute(BASE_SETUP + case.setup)


def _assert_no_leftovers(db: Db) -> None:
    assert db.keel_helpers() == []
    assert db.invalid_indexes() == []


@pytest.mark.parametrize("case", _complete_params())
def test_start_then_complete(case: Case, db: Db, migrate: Callable[..., Dict[str, Any]]) -> None:
    _prepare(db, case)

    started = migrate(case.id, case.operations, "started")
    assert (started["changed"], started["phases"], started["phase"]) == (True, ["start"], "started")
    case.after_start(db)
    assert db.migration_rows() == [(case.id, "started", None, None)]

    if case.old_app is not None:
        case.old_app(db)

    completed = migrate(case.id, case.operations, "completed")
    assert (completed["changed"], completed["phases"], completed["phase"]) == (True, ["complete"], "completed")
    assert completed["revertible_until"] is not None

    finalized = migrate(case.id, case.operations, "finalized")
    assert (finalized["changed"], finalized["phases"], finalized["phase"]) == (True, ["finalize"], "finalized")
    case.after_complete(db)
    _assert_no_leftovers(db)
    assert db.migration_rows() == [(case.id, "finalized", None, None)]
    assert migrate(case.id, case.operations, "finalized")["changed"] is False


@pytest.mark.parametrize("case", _complete_params())
def test_complete_then_revert_restores_the_old_schema(
        case: Case, db: Db, migrate: Callable[..., Dict[str, Any]], schema_dump: Callable[[], str]) -> None:
    _prepare(db, case)
    schema_before = schema_dump()

    migrate(case.id, case.operations, "started")
    if case.old_app is not None:
        # The old application writes the tables directly: before completion, as a real one would.
        case.old_app(db)
    migrate(case.id, case.operations, "completed")
    reverted = migrate(case.id, case.operations, "reverted")

    assert (reverted["changed"], reverted["phases"], reverted["phase"]) == (True, ["revert"], "reverted")
    assert schema_dump() == schema_before
    _assert_no_leftovers(db)
    assert migrate(case.id, case.operations, "reverted")["changed"] is False


@pytest.mark.parametrize("case", _rollback_params())
def test_start_then_rollback_restores_schema_and_data(case: Case, db: Db, migrate: Callable[..., Dict[str, Any]],
                                                      schema_dump: Callable[[], str]) -> None:
    _prepare(db, case)
    schema_before, data_before = schema_dump(), db.data()

    migrate(case.id, case.operations, "started")
    case.after_start(db)

    rolled_back = migrate(case.id, case.operations, "rolled_back")
    assert (rolled_back["changed"], rolled_back["phases"], rolled_back["phase"]) == (True, ["rollback"], "rolled_back")
    case.after_rollback(db)
    assert schema_dump() == schema_before
    _assert_no_leftovers(db)
    assert db.data() == data_before
    assert db.migration_rows()[0][:2] == (case.id, "rolled_back")


# -- failures part-way through start ------------------------------------------------------------------


def test_unique_index_on_duplicate_data_fails_and_leaves_no_invalid_index(
        db: Db, migrate: Callable[..., Dict[str, Any]], schema_dump: Callable[[], str]) -> None:
    db.execute(BASE_SETUP)
    db.execute("UPDATE items SET email = 'twice@example.com' WHERE id IN (10, 20)")
    schema_before, data_before = schema_dump(), db.data()
    operations = [{"create_index": {"table": "items", "name": "items_email_key", "columns": ["email"], "unique": True}}]

    with pytest.raises(psycopg.errors.UniqueViolation, match=r"twice@example\.com"):
        migrate("unique_email", operations, "started")

    # A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index that still rejects writes: it must be gone.
    assert db.invalid_indexes() == []
    assert "items_email_key" not in db.indexes("items")
    assert schema_dump() == schema_before
    assert db.data() == data_before
    [(name, phase, _unused_seconds, last_error)] = db.migration_rows()
    assert (name, phase) == ("unique_email", "starting")
    assert "items_email_key" in last_error

    # Once the data is fixed, the same migration resumes and completes.
    db.execute("UPDATE items SET email = 'once@example.com' WHERE id = 20")
    result = migrate("unique_email", operations, "completed")
    assert (result["phases"], result["phase"]) == (["start", "complete"], "completed")
    assert db.indexes("items")["items_email_key"] == (
        "CREATE UNIQUE INDEX items_email_key ON public.items USING btree (email)", True)


def test_not_null_on_a_column_with_nulls_fails_naming_the_column_and_rolls_back(
        db: Db, migrate: Callable[..., Dict[str, Any]], schema_dump: Callable[[], str]) -> None:
    db.execute(BASE_SETUP)
    db.execute("UPDATE items SET email = NULL WHERE id % 100 = 0")
    schema_before, data_before = schema_dump(), db.data()
    operations = [{"alter_column": {"table": "items", "column": "email", "not_null": True}}]

    with pytest.raises(KeelError) as failure:
        migrate("email_not_null", operations, "started")

    assert "violate NOT NULL on column email (rows with NULL)" in str(failure.value)
    assert "fix the data, then run the migration again" in str(failure.value)
    assert db.columns("items")["email"] == ("text", False, None)
    [(name, phase, _unused_seconds, last_error)] = db.migration_rows()
    assert (name, phase) == ("email_not_null", "starting")
    assert "email" in last_error

    result = migrate("email_not_null", operations, "rolled_back")
    assert (result["phases"], result["phase"]) == (["rollback"], "rolled_back")
    assert schema_dump() == schema_before
    assert db.data() == data_before
    assert db.keel_helpers() == []


FAILING_VALIDATIONS = [
    pytest.param("UPDATE items SET email = NULL WHERE id = 500",
                 {"alter_column": {"table": "items", "column": "email", "not_null": True}},
                 "INSERT INTO items (id, name, price, code, email) VALUES (3001, 'old app', 1, '#3001', NULL)",
                 id="alter_column_not_null"),
    pytest.param("UPDATE items SET price = -1 WHERE id = 500",
                 {"add_check": {"table": "items", "name": "items_price_nonnegative", "check": "price >= 0"}},
                 "INSERT INTO items (id, name, price, code) VALUES (3001, 'old app', -5, '#3001')",
                 id="add_check"),
    pytest.param("UPDATE items SET category = 999 WHERE id = 500",
                 {"add_foreign_key": {"table": "items", "name": "items_category_fkey", "columns": ["category"],
                                      "references": {"table": "categories", "columns": ["id"]}}},
                 "INSERT INTO items (id, name, price, code, category) VALUES (3001, 'old app', 1, '#3001', 998)",
                 id="add_foreign_key"),
]


@pytest.mark.parametrize("bad_rows, operation, old_app_write", FAILING_VALIDATIONS)
def test_failed_validation_leaves_the_old_application_writing(
        db: Db, migrate: Callable[..., Dict[str, Any]], bad_rows: str, operation: Dict[str, Any],
        old_app_write: str) -> None:
    db.execute(BASE_SETUP)
    db.execute(bad_rows)
    # The old application writes such rows today; the table accepts them before the migration.
    db.rolled_back(old_app_write)

    with pytest.raises(KeelError, match=r"existing rows of public\.items violate .* The constraint was removed again"):
        migrate("failing_validation", [operation], "started")

    # The migration failed and changed nothing the application relies on: the same write still works.
    db.rolled_back(old_app_write)


TYPE_MODIFIERS = [
    pytest.param({"add_column": {"table": "items", "column": "amount", "type": "numeric(10,2)"}},
                 "items", "amount", "numeric(10,2)", id="add_column"),
    pytest.param({"alter_column": {"table": "items", "column": "price", "type": "numeric(12,2)"}},
                 "items", "price", "numeric(12,2)", id="alter_column"),
    pytest.param({"create_table": {"table": "labels", "columns": [{"name": "id", "type": "bigint", "primary_key": True},
                                                                  {"name": "label", "type": "varchar(20)"}]}},
                 "labels", "label", "character varying(20)", id="create_table"),
]


@pytest.mark.parametrize("operation, table, column, expected_type", TYPE_MODIFIERS)
def test_type_modifiers_are_kept(db: Db, migrate: Callable[..., Dict[str, Any]], operation: Dict[str, Any],
                                 table: str, column: str, expected_type: str) -> None:
    db.execute(BASE_SETUP)
    migrate("typmod", [operation], "completed")
    assert db.columns(table)[column][0] == expected_type
