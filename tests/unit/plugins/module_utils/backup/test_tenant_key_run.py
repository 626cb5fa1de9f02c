"""The tenant_key engine (keys.tenant_key_run, keys.rewrap, keys.key_info) on real key files and a real file store.

Backups here are synthetic but genuine where it matters: each manifest is
sealed with a MAC keyed by a fresh data key wrapped by the tenant key, as
backup_run does, so the catalog authenticates them exactly as real ones.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
from typing import Any, Dict, Optional

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.catalog import key_context, list_backups, unwrap_with_rewraps
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.key_info import describe_keys, tenant_names
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.rewrap import Rewrapper
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.tenant_key_run import decode_material, run_tenant_key
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import seal_manifest
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores.file_store import FileStore
from ansible_collections.keel.postgres.plugins.module_utils.backup.stream_format import derive_manifest_mac_key
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError, KeyUnavailable, StoreFailed

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


@pytest.fixture
def key_dir(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return directory


@pytest.fixture
def store_dir(tmp_path):
    directory = tmp_path / "store"
    directory.mkdir()
    return directory


@pytest.fixture
def keys(key_dir):
    return FileKeyProvider(str(key_dir))


@pytest.fixture
def store(store_dir):
    return FileStore(str(store_dir))


def params(key_dir, store_dir=None, **extra: Any) -> Dict[str, Any]:
    """tenant_key's options as AnsibleModule hands them over (defaults filled in)."""
    options: Dict[str, Any] = {
        "tenant": "acme",
        "state": "present",
        "key_provider": {"type": "file", "directory": str(key_dir)},
        "key_material": None,
        "confirm_shred": None,
        "store": {"type": "file", "path": str(store_dir)} if store_dir else None,
        "rewrap": False,
        "audit_actor": "tester@unit",
    }
    options.update(extra)
    return options


def make_backup(store, keys, tenant: str = "acme", lock: Optional[Lock] = None, at: Optional[datetime.datetime] = None,
                mac_key: Optional[bytes] = None) -> Dict[str, Any]:
    """A published backup as backup_run leaves it: data object, then a MAC'd manifest naming the wrapped data key."""
    when = at or NOW
    backup_id = layout.new_backup_id(when)
    data_key = secrets.token_bytes(32)
    wrapped = keys.wrap(tenant, data_key, key_context(tenant, backup_id))
    lock = lock or Lock()
    store.put_bytes(layout.data_key(tenant, backup_id), b"sealed stream " + secrets.token_bytes(16), lock)
    document = {"backup_id": backup_id, "tenant": tenant, "created_at": when.isoformat(), "wrapped_key": wrapped.as_dict()}
    store.put_bytes(layout.manifest_key(tenant, backup_id), seal_manifest(document, mac_key or derive_manifest_mac_key(data_key)), lock)
    return {"backup_id": backup_id, "data_key": data_key, "wrapped": wrapped}


def audit_objects(store_dir):
    root = store_dir / "audit"
    if not root.exists():
        return []
    found = []
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith("."):
            continue  # the file store's lock records
        found.append((str(path.relative_to(store_dir)), json.loads(path.read_text())))
    return found


def retire(key_dir, version: str, tenant: str = "acme") -> None:
    os.unlink(key_dir / tenant / "{0}.key".format(version))


# -- the request --------------------------------------------------------------------


def test_material_is_decoded_and_checked_without_echoing_it():
    material = secrets.token_bytes(32)
    assert decode_material(base64.b64encode(material).decode(), "file", "present") == material
    assert decode_material(None, "aws_kms", "rotated") is None
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(InvalidOption, match="got 16 bytes") as raised:
        decode_material(short, "file", "present")
    assert short not in raised.value.message
    for provider, state in (("aws_kms", "present"), ("file", "rotated")):
        with pytest.raises(InvalidOption) as raised:
            decode_material(base64.b64encode(material).decode(), provider, state)
        assert raised.value.field == "key_material"


@pytest.mark.parametrize("with_store, extra, words", [
    (False, {"rewrap": True}, "needs store"),
    (True, {"rewrap": True, "state": "shredded", "confirm_shred": "acme"}, "only used with state present"),
])
def test_rewrap_is_refused_without_a_store_or_with_shredding(key_dir, store_dir, with_store, extra, words):
    with pytest.raises(InvalidOption, match=words) as raised:
        run_tenant_key(params(key_dir, store_dir if with_store else None, **extra), check_mode=False, diff=False)
    assert raised.value.field == "rewrap"
    audit = raised.value.details["audit"]
    assert audit["outcome"] == "failed" and audit["error"] == "invalid_option"
    assert bool(audit.get("audit_object")) is with_store
    assert os.listdir(key_dir) == []


def test_refused_shred_is_audited_in_the_store_and_nothing_is_shredded(key_dir, store_dir, keys):
    keys.create("acme")
    with pytest.raises(InvalidOption) as raised:
        run_tenant_key(params(key_dir, store_dir, state="shredded", confirm_shred="globex"), check_mode=False, diff=False)
    audit = raised.value.details["audit"]
    assert audit["action"] == "key_shred" and audit["outcome"] == "failed" and audit["error"] == "invalid_option"
    [(key, stored)] = audit_objects(store_dir)
    assert key == audit["audit_object"] and key.startswith("audit/") and "-key_shred-" in key
    assert stored == {name: value for name, value in audit.items() if name != "audit_object"}
    assert keys.describe("acme").exists


def test_unreachable_store_stops_the_key_action(key_dir, tmp_path):
    with pytest.raises(InvalidOption) as raised:
        run_tenant_key(params(key_dir, tmp_path / "missing-store", state="present"), check_mode=False, diff=False)
    assert raised.value.field == "store.path"
    assert os.listdir(key_dir) == []  # no key was created: its audit event could not have been written


def test_every_action_appends_one_write_once_event_and_check_mode_writes_none(key_dir, store_dir):
    created = run_tenant_key(params(key_dir, store_dir), check_mode=False, diff=False)
    again = run_tenant_key(params(key_dir, store_dir), check_mode=False, diff=False)
    would = run_tenant_key(params(key_dir, store_dir, state="rotated"), check_mode=True, diff=True)
    rotated = run_tenant_key(params(key_dir, store_dir, state="rotated"), check_mode=False, diff=False)
    assert created["changed"] and not again["changed"] and would["changed"] and rotated["changed"]
    assert would["audit"]["outcome"] == "check_mode" and "audit_object" not in would["audit"]
    assert would["diff"]["after"]["current_key_id"] == "v2" and would["key"]["versions"][-1]["key_id"] == "v2"
    stored = audit_objects(store_dir)
    assert [event["action"] + "/" + event["outcome"] for _key, event in stored] == ["key_create/changed", "key_create/unchanged", "key_rotate/changed"]
    assert [key for key, _event in stored] == [created["audit"]["audit_object"], again["audit"]["audit_object"], rotated["audit"]["audit_object"]]
    assert stored[2][1]["key_id"] == "v2" and stored[2][1]["actor"] == "tester@unit" and stored[2][1]["provider"] == "file"
    for key, _event in stored:
        assert oct(os.stat(store_dir / key).st_mode & 0o777) == oct(0o444)  # published read-only, never rewritten


def test_rotation_rewraps_every_backup_with_the_backups_lock_and_old_versions_can_retire(key_dir, store_dir, keys, store):
    keys.create("acme")
    locked_until = NOW + datetime.timedelta(days=3)
    locked = make_backup(store, keys, lock=Lock(mode="COMPLIANCE", retain_until=locked_until), at=NOW - datetime.timedelta(minutes=2))
    unlocked = make_backup(store, keys, at=NOW - datetime.timedelta(minutes=1))
    manifests_before = {b["backup_id"]: (store_dir / layout.manifest_key("acme", b["backup_id"])).read_bytes() for b in (locked, unlocked)}

    result = run_tenant_key(params(key_dir, store_dir, state="rotated", rewrap=True), check_mode=False, diff=False)
    assert result["changed"] and result["key"]["current_key_id"] == "v2"
    assert result["rewrapped"] == [locked["backup_id"], unlocked["backup_id"]] and result["rewrap_skipped"] == []
    assert result["audit"]["rewrapped"] == result["rewrapped"] and result["audit"]["rewrap_skipped"] == 0

    for backup in (locked, unlocked):
        key = layout.rewrap_key("acme", backup["backup_id"], "v2")
        document = json.loads(store.get_bytes(key))
        assert set(document) == {"tenant", "backup_id", "wrapped_key", "at"}
        assert document["tenant"] == "acme" and document["backup_id"] == backup["backup_id"]
        wrapped = WrappedKey.from_dict(document["wrapped_key"])
        assert wrapped.key_id == "v2" and keys.unwrap("acme", wrapped, key_context("acme", backup["backup_id"])) == backup["data_key"]
        assert backup["data_key"] not in store.get_bytes(key)
        # Manifests (and data) untouched.
        assert (store_dir / layout.manifest_key("acme", backup["backup_id"])).read_bytes() == manifests_before[backup["backup_id"]]
    locked_rewrap = store.head(layout.rewrap_key("acme", locked["backup_id"], "v2"))
    assert locked_rewrap.lock_mode == "COMPLIANCE" and locked_rewrap.retain_until == store.head(layout.data_key("acme", locked["backup_id"])).retain_until
    assert store.head(layout.rewrap_key("acme", unlocked["backup_id"], "v2")).lock_mode is None

    # v1 retired: the catalog reads both backups through their re-wraps.
    retire(key_dir, "v1")
    entries = list_backups(store, "acme", keys)
    assert [entry.mac_status for entry in entries] == ["verified", "verified"]
    for backup in (locked, unlocked):
        unwrap = unwrap_with_rewraps(store, keys, "acme", backup["backup_id"])
        assert unwrap(backup["wrapped"]) == backup["data_key"]

    again = run_tenant_key(params(key_dir, store_dir, rewrap=True), check_mode=False, diff=False)
    assert again["changed"] is False and again["rewrapped"] == [] and again["rewrap_skipped"] == []
    assert again["audit"]["outcome"] == "unchanged"


def test_check_mode_lists_what_would_be_rewrapped_and_writes_nothing(key_dir, store_dir, keys, store):
    keys.create("acme")
    backups = [make_backup(store, keys, at=NOW - datetime.timedelta(minutes=n)) for n in (2, 1)]
    files_before = sorted(str(path) for path in store_dir.rglob("*"))
    result = run_tenant_key(params(key_dir, store_dir, state="rotated", rewrap=True), check_mode=True, diff=False)
    assert result["changed"] and result["rewrapped"] == [b["backup_id"] for b in backups]
    assert result["audit"]["outcome"] == "check_mode" and "audit_object" not in result["audit"]
    assert sorted(str(path) for path in store_dir.rglob("*")) == files_before
    assert sorted(os.listdir(key_dir / "acme")) == ["v1.key"]

    # present + rewrap with nothing rotated: every backup is already wrapped by the current version.
    present = run_tenant_key(params(key_dir, store_dir, rewrap=True), check_mode=True, diff=False)
    assert present["changed"] is False and present["rewrapped"] == []


def test_backups_that_do_not_authenticate_are_skipped_with_a_reason(key_dir, store_dir, keys, store):
    keys.create("acme")
    good = make_backup(store, keys, at=NOW - datetime.timedelta(minutes=3))
    forged = make_backup(store, keys, at=NOW - datetime.timedelta(minutes=2), mac_key=secrets.token_bytes(32))
    # An orphan (data without manifest) is no backup: neither re-wrapped nor reported.
    store.put_bytes(layout.data_key("acme", layout.new_backup_id(NOW)), b"orphan", Lock())

    result = run_tenant_key(params(key_dir, store_dir, state="rotated", rewrap=True), check_mode=False, diff=False)
    assert result["rewrapped"] == [good["backup_id"]]
    [skipped] = result["rewrap_skipped"]
    assert skipped["backup_id"] == forged["backup_id"] and skipped["reason"].startswith("manifest not authenticated (failed)")
    assert store.head(layout.rewrap_key("acme", forged["backup_id"], "v2")) is None

    # A backup whose wrapping version is gone and was never re-wrapped cannot be re-wrapped either.
    keys.rotate("acme")  # v3
    lost = make_backup(store, keys, tenant="acme", at=NOW - datetime.timedelta(minutes=1))
    keys.rotate("acme")  # v4
    retire(key_dir, "v3")
    result = run_tenant_key(params(key_dir, store_dir, rewrap=True), check_mode=False, diff=False)
    reasons = {item["backup_id"]: item["reason"] for item in result["rewrap_skipped"]}
    assert reasons[lost["backup_id"]].startswith("manifest not authenticated (key_unavailable)") and "v3" in reasons[lost["backup_id"]]
    assert result["rewrapped"] == [good["backup_id"]]  # v2 re-wrap exists, v4 does not yet


class _FailingRewrapStore(FileStore):
    """Refuses to write re-wrap objects, as an S3 bucket would whose policy forbids the keys/ prefix."""

    def put_bytes(self, key, data, lock):
        if "/keys/" in key:
            raise StoreFailed("AccessDenied writing {0}".format(key), cause="AccessDenied")
        return super().put_bytes(key, data, lock)


def test_a_failed_rewrap_fails_the_run_but_reports_the_rotation(key_dir, store_dir, keys, store):
    keys.create("acme")
    backup = make_backup(store, keys)
    failing = _FailingRewrapStore(str(store_dir))
    rewrapper = Rewrapper(failing, keys, "acme")
    keys.rotate("acme")
    report = rewrapper.run("v2")
    assert report.rewrapped == [] and [f.backup_id for f in report.failures] == [backup["backup_id"]]
    assert report.skipped_report()[0]["reason"].startswith("re-wrap failed (store_failed): AccessDenied")

    import ansible_collections.keel.postgres.plugins.module_utils.backup.keys.tenant_key_run as engine

    original = engine.open_store
    engine.open_store = lambda options: failing
    try:
        with pytest.raises(KeelError) as raised:
            run_tenant_key(params(key_dir, store_dir, state="rotated", rewrap=True), check_mode=False, diff=False)
    finally:
        engine.open_store = original
    error = raised.value
    assert error.kind == "store_failed" and "run again with state present and rewrap" in error.message
    assert error.details["key"]["current_key_id"] == "v3"  # the rotation happened and is reported
    assert error.details["rewrap_skipped"][0]["backup_id"] == backup["backup_id"]
    assert error.details["audit"]["outcome"] == "failed" and error.details["audit"]["key_id"] == "v3"
    assert error.details["audit"]["audit_object"]  # the audit event itself was written


def test_rewrap_uses_the_version_that_actually_wrapped(key_dir, store_dir, keys, store):
    """A rotation between the decision and the wrap names the object by the version that wrapped, not the stale one."""
    keys.create("acme")
    backup = make_backup(store, keys)
    keys.rotate("acme")
    keys.rotate("acme")  # v3 is current, but the caller still believes v2 is
    report = Rewrapper(store, keys, "acme").run("v2")
    assert report.rewrapped == [backup["backup_id"]]
    assert store.head(layout.rewrap_key("acme", backup["backup_id"], "v3")) is not None
    assert store.head(layout.rewrap_key("acme", backup["backup_id"], "v2")) is None
    report = Rewrapper(store, keys, "acme").run("v3")
    assert report.rewrapped == [] and report.current == 1
    report = Rewrapper(store, keys, "acme").run("v1")  # the manifest's own version: nothing to do
    assert report.rewrapped == [] and report.current == 1


def test_rewrap_for_a_tenant_without_key_fails_cleanly(key_dir, store_dir):
    with pytest.raises(KeyUnavailable, match="has no key to rotate"):
        run_tenant_key(params(key_dir, store_dir, state="rotated", rewrap=True), check_mode=False, diff=False)
    [(_key, event)] = audit_objects(store_dir)
    assert event["outcome"] == "failed" and event["error"] == "key_unavailable"


# -- tenant_key_info ------------------------------------------------------------------


def test_key_info_reports_one_tenant_or_every_listed_tenant(key_dir, keys):
    keys.create("acme")
    keys.rotate("acme")
    provider = {"type": "file", "directory": str(key_dir)}
    one = describe_keys({"tenant": "acme", "tenants": None, "key_provider": provider})
    assert one["changed"] is False and one["key"]["current_key_id"] == "v2" and one["tenant_keys"] == [one["key"]]
    listed = describe_keys({"tenant": None, "tenants": [{"name": "acme", "database": "app"}, {"name": "globex"}], "key_provider": provider})
    assert "key" not in listed and [k["tenant"] for k in listed["tenant_keys"]] == ["acme", "globex"]
    assert listed["tenant_keys"][1]["exists"] is False and listed["tenant_keys"][1]["current_key_id"] is None
    assert os.listdir(key_dir) == ["acme"]  # nothing created for globex


@pytest.mark.parametrize("tenant, tenants, field", [
    ("Acme", None, "tenant"),
    (None, [], "tenants"),
    (None, ["acme"], "tenants[0]"),
    (None, [{"name": "acme"}, {"database": "x"}], "tenants[1].name"),
    (None, [{"name": "acme"}, {"name": "acme"}], "tenants[1].name"),
])
def test_key_info_names_the_wrong_field(tenant, tenants, field):
    with pytest.raises(InvalidOption) as raised:
        tenant_names(tenant, tenants)
    assert raised.value.field == field
