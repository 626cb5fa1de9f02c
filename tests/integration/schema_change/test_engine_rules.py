"""What the schema_change engine itself guarantees, whatever the operation.

Idempotent re-runs, check mode that changes nothing, phases that only move
forward, one migration per table at a time, migrations that cannot change once
started, and refusals (conflicts, bad names, unknown objects, bad types and
expressions) that happen before anything in the database has changed.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationBusy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import NotRevertible
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.report import migration_reports

from tests.integration.schema_change.conftest import Db

pytestmark = pytest.mark.integration

SETUP = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price integer NOT NULL, code text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g, g % 50, (g * 3)::text FROM generate_series(1, 1000) AS g;
CREATE TABLE accounts (id bigint PRIMARY KEY, balance integer NOT NULL DEFAULT 0, owner text);
CREATE INDEX accounts_balance_idx ON accounts (balance);
INSERT INTO accounts SELECT g, g * 7, 'owner ' || g FROM generate_series(1, 1000) AS g;
CREATE TABLE archive (id bigint PRIMARY KEY, payload text);
INSERT INTO archive SELECT g, 'x' FROM generate_series(1, 100) AS g;
"""

ADD_NOTE = [{"add_column": {"table": "items", "column": "note", "type": "text"}}]
WIDEN_BALANCE = [{"alter_column": {"table": "accounts", "column": "balance", "type": "bigint"}}]

Migrate = Callable[..., Dict[str, Any]]
Dump = Callable[[], str]

KNOWN_LOCKS = {"ACCESS EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE", "none"}


@pytest.fixture
def tables(db: Db) -> Db:
    db.execute(SETUP)
    return db


class Snapshot:
    """The schema, the data and the catalog before a refused run, to prove the run changed none of them."""

    def __init__(self, db: Db, schema_dump: Dump) -> None:
        self.db, self.schema_dump = db, schema_dump
        self.schema, self.data, self.migrations = schema_dump(), db.data(), db.migration_rows()

    def assert_unchanged(self) -> None:
        assert self.schema_dump() == self.schema
        assert self.db.data() == self.data
        assert self.db.migration_rows() == self.migrations


# -- idempotence and phases --------------------------------------------------------------------------


def test_rerunning_a_migration_in_its_state_changes_nothing(tables: Db, migrate: Migrate, schema_dump: Dump) -> None:
    migrate("widen", WIDEN_BALANCE, "started")
    started = schema_dump()
    again = migrate("widen", WIDEN_BALANCE, "started")
    assert (again["changed"], again["phases"], again["plan"], again["phase"]) == (False, [], [], "started")
    assert schema_dump() == started

    migrate("widen", WIDEN_BALANCE, "completed")
    completed = schema_dump()
    for state in ("completed", "started"):
        again = migrate("widen", WIDEN_BALANCE, state)
        assert (again["changed"], again["phases"], again["plan"], again["phase"]) == (False, [], [], "completed")
    assert schema_dump() == completed
    assert tables.migration_rows() == [("widen", "completed", None, None)]


def test_state_completed_runs_start_and_complete_in_one_go(tables: Db, migrate: Migrate) -> None:
    result = migrate("widen", WIDEN_BALANCE, "completed")
    assert (result["changed"], result["phases"], result["phase"], result["previous_phase"]) == (
        True, ["start", "complete"], "completed", None)
    # Until finalize the default stays with the old column (the sync trigger converts it for inserts that omit
    # the column): a default on the new one would make every old client's insert look like a new client's.
    assert tables.columns("accounts")["balance"] == ("bigint", True, None)
    assert result["diff"]["before"]["public.accounts"] != result["diff"]["after"]["public.accounts"]
    [inserted] = tables.rolled_back("INSERT INTO accounts (id, owner) VALUES (5000, 'defaulted') RETURNING balance")
    assert inserted == (0,)

    finalized = migrate("widen", WIDEN_BALANCE, "finalized")
    assert (finalized["phases"], finalized["phase"]) == (["finalize"], "finalized")
    assert tables.columns("accounts")["balance"] == ("bigint", True, "0")


def test_rolling_back_a_migration_that_never_started_changes_nothing(tables: Db, migrate: Migrate,
                                                                     schema_dump: Dump) -> None:
    snapshot = Snapshot(tables, schema_dump)
    result = migrate("never_started", ADD_NOTE, "rolled_back")
    assert (result["changed"], result["phases"], result["phase"]) == (False, [], None)
    snapshot.assert_unchanged()


def test_a_rolled_back_migration_can_be_started_again(tables: Db, migrate: Migrate) -> None:
    migrate("note", ADD_NOTE, "started")
    migrate("note", ADD_NOTE, "rolled_back")
    result = migrate("note", ADD_NOTE, "completed")
    assert (result["phases"], result["previous_phase"], result["phase"]) == (["start", "complete"], "rolled_back",
                                                                             "completed")
    assert "note" in tables.columns("items")
    assert tables.migration_rows() == [("note", "completed", None, None)]


def test_check_mode_changes_nothing_and_plans_every_step_with_its_lock(tables: Db, migrate: Migrate,
                                                                       schema_dump: Dump) -> None:
    operations = [
        *WIDEN_BALANCE,
        {"add_column": {"table": "items", "column": "price_cents", "type": "bigint", "up": "price * 100",
                        "not_null": True}},
        {"create_index": {"table": "items", "name": "items_price_idx", "columns": ["price"]}},
        {"add_check": {"table": "items", "name": "items_price_nonnegative", "check": "price >= 0"}},
        {"raw_sql": {"up": "CREATE INDEX items_name_idx ON items (name)", "down": "DROP INDEX items_name_idx",
                     "tables": ["items"]}},
    ]
    snapshot = Snapshot(tables, schema_dump)

    result = migrate("planned", operations, "completed", check=True)

    snapshot.assert_unchanged()
    assert tables.value("SELECT to_regnamespace('keel') IS NULL"), "check mode must not even create the catalog"
    assert (result["changed"], result["phases"], result["phase"]) == (True, ["start", "complete"], None)
    assert result["diff"]["before"] == result["diff"]["after"]
    plan: List[Dict[str, Any]] = result["plan"]
    assert plan
    for step in plan:
        assert step["phase"] in ("start", "complete")
        assert step["lock"] in KNOWN_LOCKS | {"depends on the statement", "ACCESS SHARE"}, step
        assert step["lock_held"] in ("brief", "batches", "scan", "rewrite"), step

    def steps(operation: str, phase: str) -> List[Dict[str, Any]]:
        return [s for s in plan if s["operation"] == operation and s["phase"] == phase]

    widen_start = steps("alter_column accounts.balance", "start")
    assert [s["lock"] for s in widen_start if "backfill" in s["action"]] == ["ROW EXCLUSIVE"]
    assert [s["lock"] for s in widen_start if "CREATE INDEX CONCURRENTLY" in s["action"]] == ["SHARE UPDATE EXCLUSIVE"]
    assert all(not s["rewrites_table"] for s in widen_start)
    assert [s["lock"] for s in steps("alter_column accounts.balance", "complete")] == ["ACCESS EXCLUSIVE"]
    assert [s["lock"] for s in steps("create_index items_price_idx on items", "start")] == ["SHARE UPDATE EXCLUSIVE"]
    assert [s["lock"] for s in steps("add_check items_price_nonnegative on items", "start")] == [
        "ACCESS EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"]
    [raw] = steps("raw_sql #4", "start")
    assert raw["lock"] == "ACCESS EXCLUSIVE"
    assert "CREATE INDEX without CONCURRENTLY" in raw["warning"]


def test_check_mode_plans_a_rollback_without_running_it(tables: Db, migrate: Migrate, schema_dump: Dump) -> None:
    migrate("widen", WIDEN_BALANCE, "started")
    snapshot = Snapshot(tables, schema_dump)
    result = migrate("widen", WIDEN_BALANCE, "rolled_back", check=True)
    snapshot.assert_unchanged()
    assert (result["changed"], result["phases"], result["phase"]) == (True, ["rollback"], "started")
    assert [(s["phase"], s["operation"], s["lock"]) for s in result["plan"]] == [
        ("rollback", "version schema", "ACCESS EXCLUSIVE"), ("rollback", "alter_column accounts.balance", "ACCESS EXCLUSIVE")]


def test_a_completed_migration_is_reverted_not_rolled_back(tables: Db, migrate: Migrate, schema_dump: Dump) -> None:
    migrate("widen", WIDEN_BALANCE, "started")
    migrate("widen", WIDEN_BALANCE, "completed")
    snapshot = Snapshot(tables, schema_dump)
    with pytest.raises(MigrationBusy, match=r"completed; undo it with state: reverted"):
        migrate("widen", WIDEN_BALANCE, "rolled_back")
    snapshot.assert_unchanged()


def test_a_revert_is_refused_before_any_change_when_an_operation_cannot_undo_itself(
        tables: Db, migrate: Migrate, schema_dump: Dump) -> None:
    # raw_sql without down: its up cannot be taken back, so the revert must not pretend it was.
    operations = [{"raw_sql": {"tables": ["items"], "up": "CREATE INDEX items_name_idx ON items (name)"}}]
    migrate("raw", operations, "completed")
    snapshot = Snapshot(tables, schema_dump)
    with pytest.raises(NotRevertible, match=r"raw_sql #0 cannot be undone after completion; nothing was changed"):
        migrate("raw", operations, "reverted")
    snapshot.assert_unchanged()
    assert tables.migration_rows()[0][:2] == ("raw", "completed")


def test_a_finalized_migration_cannot_be_undone(tables: Db, migrate: Migrate, schema_dump: Dump) -> None:
    migrate("widen", WIDEN_BALANCE, "finalized")
    snapshot = Snapshot(tables, schema_dump)
    for state in ("rolled_back", "reverted"):
        with pytest.raises(MigrationBusy, match=r"finalized: its old shape is gone.*write a new migration"):
            migrate("widen", WIDEN_BALANCE, state)
    snapshot.assert_unchanged()


def test_rollback_records_its_duration(tables: Db, migrate: Migrate, pg_cluster: Any, pg_db: str) -> None:
    migrate("widen", WIDEN_BALANCE, "started")
    assert tables.migration_rows() == [("widen", "started", None, None)]
    migrate("widen", WIDEN_BALANCE, "rolled_back")
    [(name, phase, rollback_seconds, last_error)] = tables.migration_rows()
    assert (name, phase, last_error) == ("widen", "rolled_back", None)
    assert isinstance(rollback_seconds, float)
    assert rollback_seconds > 0
    phase_seconds = tables.value("SELECT phase_seconds FROM keel.migrations WHERE name = 'widen'")
    assert set(phase_seconds) == {"start", "rollback"}
    assert phase_seconds["rollback"] == pytest.approx(rollback_seconds)
    with pg_cluster.connect(pg_db) as conn:
        [report] = migration_reports(conn, "widen")
    assert report["rollback_seconds"] == round(rollback_seconds, 3)
    assert report["in_flight"] is False


# -- one migration per table ------------------------------------------------------------------------


def test_a_table_in_an_unfinished_migration_is_refused_to_another(tables: Db, migrate: Migrate,
                                                                  schema_dump: Dump) -> None:
    migrate("first", ADD_NOTE, "started")
    snapshot = Snapshot(tables, schema_dump)
    second = [{"create_index": {"table": "items", "name": "items_price_idx", "columns": ["price"]}}]
    for check in (True, False):
        with pytest.raises(MigrationBusy, match=r"public\.items are in migration first \(phase started\)"):
            migrate("second", second, "started", check=check)
    snapshot.assert_unchanged()

    # Other tables are free to migrations without a version schema (a version schema covers the whole schema:
    # see the next test); once the first migration is finalized, the table is free too.
    migrate("elsewhere", WIDEN_BALANCE, "started", publish_views=False)
    migrate("first", ADD_NOTE, "completed")
    with pytest.raises(MigrationBusy, match=r"public\.items are in migration first \(phase completed\); finalize, revert"):
        migrate("second", second, "started")
    migrate("first", ADD_NOTE, "finalized")
    result = migrate("second", second, "completed")
    assert result["phase"] == "completed"


def test_version_schemas_of_one_schema_form_a_line(tables: Db, migrate: Migrate) -> None:
    migrate("first", ADD_NOTE, "completed")
    second = [{"create_index": {"table": "accounts", "name": "accounts_owner_idx", "columns": ["owner"]}}]
    with pytest.raises(MigrationBusy, match=r"migration first \(completed\) publishes version schemas of schema "
                                            r"public and is not finished; finalize it .*revert window ends at"):
        migrate("second", second, "started")
    migrate("first", ADD_NOTE, "finalized")
    assert migrate("second", second, "started")["version_schema"] == "public_second"


def test_a_table_another_run_is_migrating_right_now_is_refused(tables: Db, migrate: Migrate, pg_cluster: Any,
                                                               pg_db: str, schema_dump: Dump) -> None:
    snapshot = Snapshot(tables, schema_dump)
    with pg_cluster.connect(pg_db) as other_run:
        other_run.execute("SELECT pg_advisory_lock(hashtext('keel.table:public.items'))")
        with pytest.raises(MigrationBusy, match=r"another keel\.postgres run is migrating public\.items"):
            migrate("note", ADD_NOTE, "started")
    snapshot.assert_unchanged()
    assert migrate("note", ADD_NOTE, "started")["phase"] == "started"


def test_the_operations_of_a_started_migration_cannot_change(tables: Db, migrate: Migrate, schema_dump: Dump) -> None:
    migrate("note", ADD_NOTE, "started")
    snapshot = Snapshot(tables, schema_dump)
    changed = [{"add_column": {"table": "items", "column": "note", "type": "varchar"}}]
    for state in ("started", "completed", "rolled_back"):
        with pytest.raises(InvalidOption, match="started with different operations") as refusal:
            migrate("note", changed, state)
        assert refusal.value.field == "operations"
    snapshot.assert_unchanged()


def test_an_unknown_state_is_refused(tables: Db, migrate: Migrate) -> None:
    with pytest.raises(InvalidOption) as refusal:
        migrate("note", ADD_NOTE, "done")
    assert refusal.value.field == "state"


# -- refusals before any change -----------------------------------------------------------------------

CONFLICTS = [
    pytest.param([{"alter_column": {"table": "accounts", "column": "balance", "type": "bigint"}},
                  {"alter_column": {"table": "accounts", "column": "balance", "default": "5"}}],
                 "operations[1]", "both change public.accounts.balance", id="two_alter_column"),
    pytest.param([{"rename_column": {"table": "items", "from": "name", "to": "title"}},
                  {"add_column": {"table": "items", "column": "title", "type": "text"}}],
                 "operations[1]", "both change public.items.title", id="rename_then_add_same_name"),
    pytest.param([{"drop_column": {"table": "items", "column": "price"}},
                  {"create_index": {"table": "items", "name": "items_price_idx", "columns": ["price"]}},
                  {"alter_column": {"table": "items", "column": "price", "type": "bigint"}}],
                 "operations[2]", "both change public.items.price", id="drop_then_alter"),
    pytest.param([{"rename_table": {"table": "archive", "to": "archive_old"}},
                  {"add_column": {"table": "archive", "column": "note", "type": "text"}}],
                 "operations[1]", "creates, drops or renames table public.archive", id="rename_table_then_add_column"),
    pytest.param([{"drop_column": {"table": "items", "column": "price"}},
                  {"alter_column": {"table": "public.items", "column": "price", "type": "bigint"}}],
                 "operations[1]", "both change",
                 id="same_table_spelled_with_schema"),
]


@pytest.mark.parametrize("operations, field, problem", CONFLICTS)
def test_conflicting_operations_are_refused_before_any_change(tables: Db, migrate: Migrate, schema_dump: Dump,
                                                              operations: List[Dict[str, Any]], field: str,
                                                              problem: str) -> None:
    snapshot = Snapshot(tables, schema_dump)
    with pytest.raises(InvalidOption) as refusal:
        migrate("conflict", operations, "completed")
    assert refusal.value.field == field
    assert problem in str(refusal.value)
    assert "use two migrations" in str(refusal.value)
    snapshot.assert_unchanged()


BAD_NAMES = [
    pytest.param("note'x", id="quote"),
    pytest.param('note"x', id="double_quote"),
    pytest.param("note;DROP TABLE items", id="semicolon"),
    pytest.param("note x", id="space"),
    pytest.param("notéx", id="unicode"),
    pytest.param("items.note", id="dotted"),
    pytest.param("1note", id="leading_digit"),
    pytest.param("n" * 64, id="too_long"),
    pytest.param("note\n", id="trailing_newline"),
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_bad_column_name_is_refused_naming_the_field(tables: Db, migrate: Migrate, schema_dump: Dump,
                                                       bad: str) -> None:
    snapshot = Snapshot(tables, schema_dump)
    for check in (True, False):
        with pytest.raises(InvalidOption) as refusal:
            migrate("bad_name", [{"add_column": {"table": "items", "column": bad, "type": "text"}}], "started",
                    check=check)
        assert refusal.value.field == "operations[0].add_column.column"
        assert str(refusal.value).startswith("operations[0].add_column.column: ")
    snapshot.assert_unchanged()


BAD_NAMES_IN_OTHER_FIELDS = [
    pytest.param({"add_column": {"table": "items; DROP TABLE items", "column": "note", "type": "text"}},
                 "operations[0].add_column.table", id="table"),
    pytest.param({"add_column": {"table": "public.items.x", "column": "note", "type": "text"}},
                 "operations[0].add_column.table", id="table_with_two_dots"),
    pytest.param({"rename_column": {"table": "items", "from": "name", "to": "new name"}},
                 "operations[0].rename_column.to", id="rename_column_to"),
    pytest.param({"rename_table": {"table": "items", "to": "public.items2"}},
                 "operations[0].rename_table.to", id="rename_table_to"),
    pytest.param({"create_index": {"table": "items", "name": "items_price_idx", "columns": ["price", "na'me"]}},
                 "operations[0].create_index.columns[1]", id="index_column"),
    pytest.param({"add_foreign_key": {"table": "items", "name": "fk", "columns": ["price"],
                                      "references": {"table": "accounts", "columns": ["id)"]}}},
                 "operations[0].add_foreign_key.references.columns[0]", id="referenced_column"),
    pytest.param({"create_table": {"table": "t", "columns": [{"name": "a b", "type": "int"}]}},
                 "operations[0].create_table.columns[0].name", id="create_table_column"),
]


@pytest.mark.parametrize("operation, field", BAD_NAMES_IN_OTHER_FIELDS)
def test_bad_names_in_any_field_are_refused_naming_it(tables: Db, migrate: Migrate, schema_dump: Dump,
                                                      operation: Dict[str, Any], field: str) -> None:
    snapshot = Snapshot(tables, schema_dump)
    with pytest.raises(InvalidOption) as refusal:
        migrate("bad_name", [operation], "started")
    assert refusal.value.field == field
    snapshot.assert_unchanged()


REFUSED = [
    pytest.param([{"add_column": {"table": "nosuch", "column": "note", "type": "text"}}],
                 "operations[0].add_column.table", "does not exist", id="unknown_table"),
    pytest.param([{"alter_column": {"table": "items", "column": "nosuch", "type": "bigint"}}],
                 "operations[0].alter_column.column", "has no column 'nosuch'", id="unknown_column"),
    pytest.param([{"drop_column": {"table": "items", "column": "nosuch"}}],
                 "operations[0].drop_column.column", "has no column 'nosuch'", id="drop_unknown_column"),
    pytest.param([{"create_index": {"table": "items", "name": "i", "columns": ["nosuch"]}}],
                 "operations[0].create_index.columns[0]", "has no column 'nosuch'", id="index_unknown_column"),
    pytest.param([{"alter_column": {"table": "accounts", "column": "balance", "type": "bigintt"}}],
                 "operations[0].alter_column.type", "not a type known to the server", id="alter_unknown_type"),
    pytest.param([{"add_column": {"table": "items", "column": "note", "type": "bigintt"}}],
                 "operations[0].add_column.type", "not a type known to the server", id="add_unknown_type"),
    pytest.param([{"alter_column": {"table": "items", "column": "code", "type": "integer"}}],
                 "operations[0].alter_column.type", 'invalid input syntax for type integer: "abc"',
                 id="cast_fails_on_existing_rows"),
    pytest.param([{"add_column": {"table": "items", "column": "note", "type": "text"}},
                  {"alter_column": {"table": "items", "column": "nosuch", "not_null": True}}],
                 "operations[1].alter_column.column", "has no column 'nosuch'", id="second_operation_invalid"),
    pytest.param([{"add_column": {"table": "items", "column": "note", "type": "text", "not_null": True}}],
                 "operations[0].add_column.not_null", "give a default or an up expression",
                 id="not_null_without_value"),
    pytest.param([{"add_column": {"table": "items", "column": "name", "type": "text"}}],
                 "operations[0].add_column.column", "already has a column 'name'", id="column_exists"),
    pytest.param([{"alter_column": {"table": "items", "column": "id", "type": "integer"}}],
                 "operations[0].alter_column.type", "primary key", id="type_of_primary_key"),
    pytest.param([{"create_table": {"table": "items", "columns": [{"name": "id", "type": "int"}]}}],
                 "operations[0].create_table.table", "already exists", id="create_existing_table"),
    pytest.param([{"rename_table": {"table": "items", "to": "accounts"}}],
                 "operations[0].rename_table.to", "already exists", id="rename_onto_existing_table"),
    pytest.param([{"add_column": {"table": "items", "column": "ref", "type": "bigint",
                                  "references": {"table": "accounts", "column": "nosuch"}}}],
                 "operations[0].add_column.references.column", "has no column 'nosuch'", id="unknown_referenced_column"),
]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check_mode"])
@pytest.mark.parametrize("operations, field, problem", REFUSED)
def test_invalid_migrations_are_refused_before_any_change(tables: Db, migrate: Migrate, schema_dump: Dump,
                                                          operations: List[Dict[str, Any]], field: str, problem: str,
                                                          check: bool) -> None:
    tables.execute("UPDATE items SET code = 'abc' WHERE id = 500")
    snapshot = Snapshot(tables, schema_dump)
    with pytest.raises(InvalidOption) as refusal:
        migrate("invalid", operations, "completed", check=check)
    assert refusal.value.field == field
    assert problem in str(refusal.value)
    snapshot.assert_unchanged()
    assert tables.migration_rows() == []


SMUGGLED = [
    pytest.param({"add_column": {"table": "items", "column": "x", "type": "integer", "default": "0; DROP TABLE items"}},
                 "operations[0].add_column.default", id="add_column_default"),
    pytest.param({"add_column": {"table": "items", "column": "x", "type": "integer", "up": "0; DROP TABLE items"}},
                 "operations[0].add_column.up", id="add_column_up"),
    pytest.param({"add_column": {"table": "items", "column": "x", "type": "integer",
                                 "check": "x > 0); DROP TABLE items; SELECT (true"}},
                 "operations[0].add_column.check", id="add_column_check"),
    pytest.param({"alter_column": {"table": "items", "column": "price", "default": "0; DROP TABLE items"}},
                 "operations[0].alter_column.default", id="alter_column_default"),
    pytest.param({"alter_column": {"table": "items", "column": "code", "type": "integer",
                                   "using": "1); DROP TABLE items; SELECT (1"}},
                 "operations[0].alter_column.using", id="alter_column_using"),
    pytest.param({"create_index": {"table": "items", "name": "i", "columns": ["price"],
                                   "where": "true); DROP TABLE items; SELECT (true"}},
                 "operations[0].create_index.where", id="create_index_where"),
    pytest.param({"add_check": {"table": "items", "name": "c", "check": "true); DROP TABLE items; SELECT (true"}},
                 "operations[0].add_check.check", id="add_check"),
    pytest.param({"create_table": {"table": "t", "columns": [{"name": "a", "type": "int",
                                                              "default": "0; DROP TABLE items"}]}},
                 "operations[0].create_table.columns[0].default", id="create_table_default"),
    pytest.param({"create_table": {"table": "t", "columns": [{"name": "a", "type": "int); DROP TABLE items; --"}]}},
                 "operations[0].create_table.columns[0].type", id="create_table_type"),
    pytest.param({"add_column": {"table": "items", "column": "x", "type": "int; DROP TABLE items"}},
                 "operations[0].add_column.type", id="add_column_type"),
]


@pytest.mark.parametrize("operation, field", SMUGGLED)
def test_an_expression_smuggling_a_second_statement_is_refused(tables: Db, migrate: Migrate, schema_dump: Dump,
                                                               operation: Dict[str, Any], field: str) -> None:
    snapshot = Snapshot(tables, schema_dump)
    with pytest.raises(InvalidOption) as refusal:
        migrate("smuggle", [operation], "completed")
    assert refusal.value.field == field
    assert tables.table_exists("items")
    assert tables.value("SELECT count(*) FROM items") == 1000
    snapshot.assert_unchanged()


def test_the_documented_example_adds_a_column_and_indexes_it_in_one_migration(tables: Db, migrate: Migrate) -> None:
    # plugins/modules/schema_change.py EXAMPLES, "Expand only; deploy the new application before completing".
    operations = [
        {"add_column": {"table": "items", "column": "status", "type": "text", "default": "'new'", "not_null": True}},
        {"create_index": {"table": "items", "name": "items_status_idx", "columns": ["status"]}},
    ]
    migrate("status", operations, "completed")
    assert tables.columns("items")["status"] == ("text", True, "'new'::text")
    assert tables.indexes("items")["items_status_idx"] == (
        "CREATE INDEX items_status_idx ON public.items USING btree (status)", True)
