from __future__ import annotations

import json

from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import derive_manifest_mac_key, derive_record_mac_key
from ansible_collections.keel.postgres.plugins.module_utils.backup.verification_record import as_authenticated, record_is_authentic, seal_record

DATA_KEY = bytes(range(32))
RECORD = {"tenant": "acme", "backup_id": "20260101T000000Z-abcdef01", "outcome": "passed", "tier": "hot", "at": "2026-01-01T00:00:00+00:00"}


def test_a_sealed_record_reads_back_authentic_under_its_backups_key():
    stored = json.loads(seal_record(RECORD, derive_record_mac_key(DATA_KEY)))
    assert stored["mac"]["algorithm"] == "HMAC-SHA256"
    assert record_is_authentic(stored, derive_record_mac_key(DATA_KEY))


def test_the_record_key_is_its_own_key():
    assert derive_record_mac_key(DATA_KEY) != derive_manifest_mac_key(DATA_KEY)
    assert derive_record_mac_key(DATA_KEY) != DATA_KEY


def test_an_edited_forged_or_foreign_record_is_not_authentic():
    key = derive_record_mac_key(DATA_KEY)
    stored = json.loads(seal_record(dict(RECORD, outcome="failed"), key))
    assert not record_is_authentic(dict(stored, outcome="passed"), key), "an edited outcome"
    assert not record_is_authentic(RECORD, key), "no MAC at all"
    assert not record_is_authentic(dict(RECORD, mac={"algorithm": "HMAC-SHA256", "value": "00" * 32}), key), "a made-up MAC"
    assert not record_is_authentic(json.loads(seal_record(RECORD, derive_record_mac_key(bytes(32)))), key), "another backup's key"


def test_without_a_key_the_record_has_no_mac():
    assert "mac" not in json.loads(seal_record(dict(RECORD, outcome="failed"), None))


def test_a_pass_that_cannot_be_proven_becomes_an_unauthenticated_failure():
    key = derive_record_mac_key(DATA_KEY)
    sealed = json.loads(seal_record(RECORD, key))
    assert as_authenticated(sealed, key)["outcome"] == "passed"
    forged = as_authenticated(RECORD, key)
    assert forged["outcome"] == "unauthenticated" and "does not check" in forged["reason"] and forged["tier"] == "hot"
    assert as_authenticated(sealed, None)["reason"] == "its backup's key cannot be read"
    failed = dict(RECORD, outcome="failed")
    assert as_authenticated(failed, key) == failed, "a failure needs no proof"
