from __future__ import annotations

import datetime
import json

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import parse_manifest, provenance_of, seal_manifest, verify_manifest
from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import (
    canonical_description,
    expected_migration_problem,
    fingerprint_of,
    migration_entry,
    precedes_start,
    state_matches,
)
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_options import ExpectMigration, parse_expect_migration
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption

MAC_KEY = bytes(range(32))
STARTED = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.timezone.utc)


def provenance(*migrations):
    return {"schema_fingerprint": "ab" * 32, "migrations": [{"name": name, "state": state} for name, state in migrations]}


def test_the_description_is_sorted_so_row_order_does_not_change_the_fingerprint():
    rows = [("public", "b", "r", "id", 1, "bigint", True, None, "", ""), ("public", "a", "r", "id", 1, "integer", True, None, "", "")]
    forward = canonical_description({"columns": rows, "indexes": []})
    backward = canonical_description({"columns": list(reversed(rows)), "indexes": []})
    assert forward == backward
    assert forward["columns"][0][1] == "a"
    assert fingerprint_of(forward) == fingerprint_of(backward)


def test_any_schema_difference_changes_the_fingerprint():
    base = canonical_description({"columns": [("public", "a", "r", "id", 1, "integer", True, None, "", "")]})
    nullable = canonical_description({"columns": [("public", "a", "r", "id", 1, "integer", False, None, "", "")]})
    default = canonical_description({"columns": [("public", "a", "r", "id", 1, "integer", True, "0", "", "")]})
    assert len({fingerprint_of(base), fingerprint_of(nullable), fingerprint_of(default)}) == 3
    assert len(fingerprint_of(base)) == 64


def test_a_catalog_row_becomes_a_manifest_entry_with_iso_times_and_its_schema():
    entry = migration_entry({"name": "add_vip", "phase": "completed", "tables": ["shop.customers"], "created_at": STARTED,
                             "updated_at": STARTED, "completed_at": STARTED, "finalized_at": None})
    assert entry == {"name": "add_vip", "state": "completed", "schema": "shop", "tables": ["shop.customers"],
                     "version_schema": None, "started_at": STARTED.isoformat(), "updated_at": STARTED.isoformat(),
                     "completed_at": STARTED.isoformat(), "finalized_at": None}
    old_catalog = migration_entry({"name": "m", "phase": "started", "created_at": STARTED, "updated_at": STARTED})
    assert old_catalog["completed_at"] is None and old_catalog["schema"] is None, "a version 1 catalog has no completed_at"


@pytest.mark.parametrize("state, expected, matches", [
    ("completed", "completed", True),
    ("finalized", "completed", True),
    ("started", "completed", False),
    ("completed", "finalized", False),
    ("finalized", "finalized", True),
    ("started", "any-applied", True),
    ("reverting", "any-applied", True),
    ("rolled_back", "any-applied", False),
    ("reverted", "any-applied", False),
    ("starting", "any-applied", False),
    (None, "any-applied", False),
])
def test_expected_states(state, expected, matches):
    assert state_matches(state, expected) is matches


def test_expected_migration_problems_name_what_is_missing():
    assert expected_migration_problem(provenance(("add_vip", "completed")), "add_vip", "completed") is None
    assert "records no provenance" in expected_migration_problem(None, "add_vip", "completed")
    assert expected_migration_problem(provenance(("b", "completed"), ("a", "started")), "x", "completed") == \
        "lists no migration 'x' in its provenance (migrations at dump time: a, b)"
    assert expected_migration_problem(provenance(), "x", "completed").endswith("(migrations at dump time: none)")
    assert expected_migration_problem(provenance(("m", "started")), "m", "completed") == \
        "holds migration 'm' in state 'started', which is not completed"


def test_a_backup_precedes_a_migration_it_does_not_list_or_lists_as_undone():
    assert precedes_start(provenance(), "m")
    assert precedes_start(provenance(("m", "rolled_back")), "m")
    assert precedes_start(provenance(("m", "reverted")), "m")
    assert not precedes_start(provenance(("m", "starting")), "m")
    assert not precedes_start(provenance(("m", "completed")), "m")
    assert not precedes_start(None, "m"), "without provenance nothing is proven"


def test_an_old_manifest_without_provenance_reads_as_null():
    sealed = seal_manifest({"backup_id": "b", "tenant": "t"}, MAC_KEY)
    document = parse_manifest(sealed, "m")
    verify_manifest(document, MAC_KEY, "m")
    assert provenance_of(document) is None
    assert provenance_of(None) is None


def test_the_manifest_mac_covers_the_provenance():
    sealed = seal_manifest({"backup_id": "b", "tenant": "t", "provenance": provenance(("m", "completed"))}, MAC_KEY)
    document = parse_manifest(sealed, "m")
    verify_manifest(document, MAC_KEY, "m")
    assert provenance_of(document)["migrations"] == [{"name": "m", "state": "completed"}]
    edited = json.loads(sealed)
    edited["provenance"]["migrations"][0]["state"] = "finalized"
    with pytest.raises(IntegrityFailed, match="fails its MAC check"):
        verify_manifest(edited, MAC_KEY, "m")
    edited = json.loads(sealed)
    edited["provenance"]["schema_fingerprint"] = "00" * 32
    with pytest.raises(IntegrityFailed):
        verify_manifest(edited, MAC_KEY, "m")


def test_expect_migration_option_shapes():
    assert parse_expect_migration(None) is None
    assert parse_expect_migration({"name": " add_vip "}) == ExpectMigration(name="add_vip", state="completed")
    assert parse_expect_migration({"name": "m", "state": "any-applied"}).state == "any-applied"
    with pytest.raises(InvalidOption, match=r"^expect_migration\.name: is required"):
        parse_expect_migration({"state": "completed"})
    with pytest.raises(InvalidOption, match=r"^expect_migration\.state: must be one of"):
        parse_expect_migration({"name": "m", "state": "done"})
    with pytest.raises(InvalidOption, match=r"^expect_migration\.version: unknown key"):
        parse_expect_migration({"name": "m", "version": 2})
