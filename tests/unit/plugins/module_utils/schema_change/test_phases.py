from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import (
    MigrationBusy,
    check_conflicts,
    phases_to_run,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations import parse_operations


@pytest.mark.parametrize(
    ("recorded", "desired", "phases"),
    [
        (None, "started", ["start"]),
        (None, "completed", ["start", "complete"]),
        (None, "rolled_back", []),
        (catalog.STARTING, "started", ["start"]),
        (catalog.STARTING, "completed", ["start", "complete"]),
        (catalog.STARTING, "rolled_back", ["rollback"]),
        (catalog.STARTED, "started", []),
        (catalog.STARTED, "completed", ["complete"]),
        (catalog.STARTED, "rolled_back", ["rollback"]),
        (catalog.COMPLETING, "completed", ["complete"]),
        (catalog.COMPLETED, "completed", []),
        (catalog.COMPLETED, "started", []),
        (catalog.ROLLING_BACK, "rolled_back", ["rollback"]),
        (catalog.ROLLED_BACK, "rolled_back", []),
        (catalog.ROLLED_BACK, "started", ["start"]),
        (None, "finalized", ["start", "complete", "finalize"]),
        (catalog.STARTED, "finalized", ["complete", "finalize"]),
        (catalog.COMPLETED, "finalized", ["finalize"]),
        (catalog.FINALIZING, "finalized", ["finalize"]),
        (catalog.FINALIZED, "finalized", []),
        (catalog.FINALIZED, "completed", []),
        (catalog.COMPLETED, "reverted", ["revert"]),
        (catalog.REVERTING, "reverted", ["revert"]),
        (catalog.REVERTED, "reverted", []),
        (catalog.REVERTED, "completed", ["start", "complete"]),
    ],
)
def test_phases_from_recorded_to_desired(recorded, desired, phases):
    assert phases_to_run(recorded, desired) == phases


@pytest.mark.parametrize(
    ("recorded", "desired", "text"),
    [
        (catalog.COMPLETED, "rolled_back", "undo it with state: reverted"),
        (catalog.FINALIZED, "rolled_back", "cannot be rolled back"),
        (catalog.FINALIZED, "reverted", "cannot be reverted"),
        (catalog.REVERTING, "completed", "finish it with state: reverted"),
        (catalog.FINALIZING, "reverted", "finish it with state: finalized"),
        (catalog.COMPLETING, "reverted", "finish it with state: completed"),
        (catalog.COMPLETING, "rolled_back", "finish it with state: completed"),
        (catalog.ROLLING_BACK, "completed", "finish it with state: rolled_back"),
        (catalog.ROLLING_BACK, "started", "finish it with state: rolled_back"),
    ],
)
def test_impossible_transitions_say_what_to_do(recorded, desired, text):
    with pytest.raises(MigrationBusy, match=text):
        phases_to_run(recorded, desired)


@pytest.mark.parametrize("recorded", [None, catalog.STARTED, catalog.ROLLED_BACK])
def test_reverted_needs_a_completed_migration(recorded):
    with pytest.raises(InvalidOption, match=r"^state: reverted applies to a completed migration"):
        phases_to_run(recorded, "reverted")


def test_two_operations_on_one_column_conflict():
    operations = parse_operations([
        {"alter_column": {"table": "orders", "column": "amount", "type": "bigint"}},
        {"drop_column": {"table": "orders", "column": "note"}},
        {"rename_column": {"table": "orders", "from": "amount", "to": "total"}},
    ])
    with pytest.raises(InvalidOption, match=r"^operations\[2\]: conflicts with operations\[0\]: both change orders.amount"):
        check_conflicts(operations)


def test_operation_on_a_table_another_one_renames_conflicts():
    operations = parse_operations([
        {"rename_table": {"table": "orders", "to": "purchases"}},
        {"add_column": {"table": "orders", "column": "x", "type": "int"}},
    ])
    with pytest.raises(InvalidOption, match="renames table orders"):
        check_conflicts(operations)


def test_independent_operations_do_not_conflict():
    check_conflicts(parse_operations([
        {"add_column": {"table": "orders", "column": "x", "type": "int"}},
        {"create_index": {"table": "orders", "name": "orders_x", "columns": ["x"]}},
        {"add_check": {"table": "customers", "name": "email_lower", "check": "email = lower(email)"}},
    ]))
