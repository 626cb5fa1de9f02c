"""Clients with prepared statements through every migration phase: version schemas keep them working.

Matrix (issue 11 section 1): operation x phase x mode (autocommit, explicit
transaction) x query shape (SELECT *, explicit columns). Per operation two
lifecycles run, start -> complete -> revert and start -> rollback, each with a
fleet of 12 persistent clients, {v_old, v_new, base} x mode x shape:

- v_old reads the version schema of the previous migration (``app_v1``, from a
  shape-neutral create_index migration run and finalized first),
- v_new reads the migration's own version schema ``app_<migration>``, which
  exists from ``start``, so these clients prepare right after start,
- base reads the table in ``app`` directly: the control that shows the failure
  the version schemas prevent, so the guard cannot pass by accident.

Version clients put only their version schema on search_path. With
``<version>, app`` a dropped version schema silently falls back to the base
table (measured: see test_harness_dropped_version_falls_back_to_base), and the
"schema is gone after revert" check below could not see the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Dict, List, NamedTuple, Tuple

import pytest

from tests.harness.prepared_clients import EXPLICIT, STAR, ClientFleet, ClientSpec, PreparedClient

SCHEMA = "app"
TABLE = "app.orders"
FIRST = "v1"  # the shape-neutral migration whose version schema the v_old clients read
ROWS = 100
NOT_SUPPORTED = "0A000"  # cached plan must not change result type
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"

Cell = Tuple[str, str, str]  # (mode, shape, phase) of a base-table client


class Case(NamedTuple):
    name: str  # the migration's name: its version schema is app_<name>
    operation: Dict[str, Any]
    v_new_explicit: str  # the explicit column list in the new version's shape
    base_expected: Dict[Cell, str]  # base-table cells and the SQLSTATE they must show
    revertible: bool = True  # otherwise its third phase is finalize, which drops the old version instead


def version_schema(migration: str) -> str:
    """The contract's naming: tables in schema S, migration M -> version schema S_M."""
    return "{0}_{1}".format(SCHEMA, migration)


def every_mode(shape: str, phase: str, sqlstate: str) -> Dict[Cell, str]:
    return {(mode, shape, phase): sqlstate for mode in ("autocommit", "transaction")}


# Base-table expectations are only the cells whose outcome follows from measured PostgreSQL 15 behaviour
# (docs/client_guide.md section 1 and the harness tests below), whatever helper columns the engine uses.
CASES = [
    Case("type_change", {"alter_column": {"table": TABLE, "column": "amount", "type": "bigint"}}, EXPLICIT, {
        # start adds the new-type column: SELECT * changes shape, the explicit list does not.
        **every_mode("star", "started", NOT_SUPPORTED),
        # the swap at complete changes amount's type under every prepared base statement; autocommit never recovers.
        ("autocommit", "star", "completed"): NOT_SUPPORTED,
        ("autocommit", "explicit", "completed"): NOT_SUPPORTED,
        ("transaction", "explicit", "completed"): NOT_SUPPORTED,
    }),
    Case("add_column", {"add_column": {"table": TABLE, "column": "channel", "type": "text"}},
         "SELECT id, amount, note, channel FROM orders WHERE id = %s",
         every_mode("star", "started", NOT_SUPPORTED)),
    Case("rename_column", {"rename_column": {"table": TABLE, "from": "note", "to": "remark"}},
         "SELECT id, amount, remark FROM orders WHERE id = %s",
         # the physical rename happens at complete: a new column name is a new result type.
         {**every_mode("star", "completed", NOT_SUPPORTED), **every_mode("explicit", "completed", UNDEFINED_COLUMN)}),
    # A swap to a table of the same row shape is safe for base clients too: these two guard the version views
    # (repointed in the swap transaction) and the row count they return.
    # A rewrite has nothing to revert (same shape): its third phase is finalize.
    Case("rewrite_table", {"rewrite_table": {"table": TABLE}}, EXPLICIT, {}, revertible=False),
    Case("partition_attach", {"partition_table": {"table": TABLE, "method": "attach", "strategy": "range",
                                                  "key": "id", "interval": 1000}}, EXPLICIT, {}),
]

LIFECYCLES = {"revert": ("started", "completed", "reverted"), "rollback": ("started", "rolled_back")}
FINALIZE = ("started", "completed", "finalized")
# After these phases a version schema no longer exists: the migration's own, or (finalized) the one before it.
GONE_AFTER = {"reverted": "v_new", "rolled_back": "v_new", "finalized": "v_old"}


def phases_of(case: Case, lifecycle: str) -> Tuple[str, ...]:
    return FINALIZE if lifecycle == "revert" and not case.revertible else LIFECYCLES[lifecycle]


def create_orders(db: Any) -> None:
    db.execute("CREATE SCHEMA {0}; CREATE TABLE {1} (id bigint PRIMARY KEY, amount integer NOT NULL DEFAULT 7,"
               " note text); INSERT INTO {1} SELECT g, g, 'note ' || g FROM generate_series(1, {2}) g".format(
                   SCHEMA, TABLE, ROWS))


def establish_first_version(migrate: Callable[..., Dict[str, Any]]) -> None:
    operations = [{"create_index": {"table": TABLE, "name": "orders_note_idx", "columns": ["note"]}}]
    migrate(FIRST, operations, "completed")
    migrate(FIRST, operations, "finalized")


def fleet_for(db: Any, case: Case) -> ClientFleet:
    return ClientFleet(
        db.cluster.dsn(db.dbname),
        search_paths={"v_old": [version_schema(FIRST)], "v_new": [version_schema(case.name)], "base": [SCHEMA]},
        statements={"v_new": {"star": STAR, "explicit": case.v_new_explicit}})


def version_client_failures(fleet: ClientFleet) -> List[str]:
    """Every version-client cell that did not return the one row, except v_new once its schema is gone."""
    failures = []
    for (role, mode, shape, phase), states in fleet.errors().items():
        if role == "base" or GONE_AFTER.get(phase) == role:
            continue
        failures.append("{0} {1} {2} after {3}: {4}".format(role, mode, shape, phase, states))
    for client in fleet.clients:
        for phase, probes in client.log.items():
            if client.spec.role != "base" and GONE_AFTER.get(phase) != client.spec.role:
                failures.extend("{0} after {1}: {2} rows, expected 1".format(client.spec.key, phase, probe.rows)
                                for probe in probes if probe.sqlstate is None and probe.rows != 1)
    return failures


@pytest.mark.parametrize("lifecycle", sorted(LIFECYCLES))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_version_clients_never_see_a_changed_result_type(db: Any, migrate: Callable[..., Dict[str, Any]], case: Case,
                                                         lifecycle: str) -> None:
    create_orders(db)
    establish_first_version(migrate)
    with fleet_for(db, case) as fleet:
        fleet.prepare(roles=["v_old", "base"])  # prepared before the change, as a running application's pool is
        fleet.probe("before", roles=["v_old", "base"])
        assert fleet.errors() == {}, fleet.report()

        for phase in phases_of(case, lifecycle):
            migrate(case.name, [case.operation], phase)
            if phase == "started":
                fleet.prepare(roles=["v_new"])  # its version schema exists from start on
            fleet.probe(phase)
        report = fleet.report()

        # Version clients: zero 0A000, in fact no error at all, and the row is there.
        assert version_client_failures(fleet) == [], report
        # A dropped version schema is loud: its clients cannot read anything else.
        gone = phases_of(case, lifecycle)[-1]
        for mode in ("autocommit", "transaction"):
            for shape in ("star", "explicit"):
                assert fleet.outcome(GONE_AFTER[gone], mode, shape, gone).sqlstate == UNDEFINED_TABLE, report
        # Base-table controls fail where PostgreSQL says they must.
        for (mode, shape, phase), sqlstate in case.base_expected.items():
            if phase in phases_of(case, lifecycle):
                assert fleet.outcome("base", mode, shape, phase).sqlstate == sqlstate, \
                    "base {0} {1} after {2}\n{3}".format(mode, shape, phase, report)


# -- harness self-tests: plain PostgreSQL, no engine ------------------------------------------------------------------


def test_harness_add_column_breaks_select_star_but_not_a_view(db: Any) -> None:
    """A prepared SELECT * on the table fails with 0A000 after ADD COLUMN; the same through a view does not."""
    create_orders(db)
    db.execute("CREATE SCHEMA app_hand; CREATE VIEW app_hand.orders AS SELECT id, amount, note FROM app.orders")
    with ClientFleet(db.cluster.dsn(db.dbname), search_paths={"base": [SCHEMA], "view": ["app_hand"]}) as fleet:
        fleet.prepare()
        assert set(fleet.probe("before").values()) == {None}, fleet.report()
        db.execute("ALTER TABLE app.orders ADD COLUMN channel text")
        fleet.probe("added")
        fleet.probe("added")  # a retry: autocommit stays broken, a rolled-back transaction re-prepares
        report = fleet.report()
        assert fleet.errors() == {
            ("base", "autocommit", "star", "added"): [NOT_SUPPORTED, NOT_SUPPORTED],
            ("base", "transaction", "star", "added"): [NOT_SUPPORTED],
        }, report
        assert fleet.outcome("base", "transaction", "star", "added").rows == 1, report


def test_harness_dropped_version_falls_back_to_base(db: Any) -> None:
    """With search_path "<version>, app", dropping the version schema sends the statement to the base table."""
    create_orders(db)
    db.execute("CREATE SCHEMA app_hand; CREATE VIEW app_hand.orders AS SELECT id, amount, note FROM app.orders")
    paths = {"with_base": ["app_hand", SCHEMA], "alone": ["app_hand"]}
    with ClientFleet(db.cluster.dsn(db.dbname), search_paths=paths) as fleet:
        fleet.prepare()
        db.execute("DROP SCHEMA app_hand CASCADE")
        outcomes = fleet.probe("dropped")
        assert outcomes == {(role, mode, shape): None if role == "with_base" else UNDEFINED_TABLE
                            for (role, mode, shape) in outcomes}, fleet.report()


def test_harness_checks_the_statement_is_prepared(db: Any) -> None:
    """assert_prepared() fails once the session's prepared statements are gone (DEALLOCATE ALL)."""
    create_orders(db)
    spec = ClientSpec("base", (SCHEMA,), "autocommit", "star", STAR)
    client = PreparedClient(spec, db.cluster.dsn(db.dbname), (1,))
    try:
        client.prepare()
        client.execute("DEALLOCATE ALL")
        with pytest.raises(AssertionError, match="is not prepared"):
            client.assert_prepared()
    finally:
        client.close()
