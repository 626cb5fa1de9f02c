"""keel.postgres.tenant_key through ansible-playbook, with local key files and with AWS KMS.

The KMS tests run against moto_server (tests/harness/kms_server.py): moto is
the one accepted mock in this suite, because AWS KMS itself cannot run here.
Everything else is real: ansible-playbook, the module, the key directory,
and for audit events and re-wrapping the SeaweedFS S3 server, PostgreSQL and
keel.postgres.backup / backup_info (the `world` fixture of test_backup.py).
Wrapping and unwrapping data keys happen in this process through the same
provider classes the backup modules use, to prove what the module did.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from typing import Any, Dict, List, Optional, Tuple

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock
from ansible_collections.keel.postgres.plugins.module_utils.backup.stores import open_store
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, KeyShredded, KeyUnavailable, StoreFailed

from tests.integration.backup.world import BackupWorld, make_locked_bucket

pytestmark = pytest.mark.integration

CONTEXT = {"tenant": "acme", "backup_id": "20261125T020000Z-3f9a1c2b"}
_NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def playbook_for(tasks: List[Dict[str, Any]]) -> str:
    """One task per entry (tenant_key unless it names another module); each reads its options from module_args[i].

    Later tasks run after a failure.
    """
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
    for index, task in enumerate(tasks):
        lines += [
            "    - name: {0}".format(task["name"]),
            "      keel.postgres.{0}: \"{{{{ module_args[{1}] }}}}\"".format(task.get("module", "tenant_key"), index),
            "      ignore_errors: true",
            "      check_mode: {0}".format("true" if task.get("check") else "false"),
            "      diff: {0}".format("true" if task.get("diff") else "false"),
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def tenant_key(run_playbook):
    """Run tasks in one playbook: tenant_key((name, options[, {"check": .., "diff": .., "module": ..}]), ...) -> (run, {name: result})."""

    def run(*tasks: Tuple[Any, ...], env: Optional[Dict[str, str]] = None):
        specs = [dict(task[2] if len(task) > 2 else {}, name=task[0], args=task[1]) for task in tasks]
        outcome = run_playbook(playbook_for(specs), extra_vars={"module_args": [spec["args"] for spec in specs]}, env=env)
        assert outcome.tasks, outcome.output_tail()
        return outcome, {spec["name"]: outcome.task(spec["name"]) for spec in specs}

    return run


@pytest.fixture
def key_dir(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir()
    os.chmod(directory, 0o700)
    return directory


def file_provider(key_dir) -> Dict[str, Any]:
    return {"type": "file", "directory": str(key_dir)}


def options(key_dir, tenant: str = "acme", **extra: Any) -> Dict[str, Any]:
    return dict({"tenant": tenant, "key_provider": file_provider(key_dir)}, **extra)


INFO = {"module": "tenant_key_info"}


def assert_failed(record, error: str, field: Optional[str] = None, audited: bool = True) -> Dict[str, Any]:
    result = record["result"]
    assert record["status"] == "failed", result
    assert result["error"] == error, result
    if field is not None:
        assert result["field"] == field, result
        assert result["msg"].startswith(field + ": "), result
    if audited:
        assert result["audit"]["outcome"] == "failed" and result["audit"]["error"] == error
    else:
        assert "audit" not in result  # tenant_key_info only reads
    return result


def wrap_locally(provider_options: Dict[str, Any], tenant: str = "acme") -> Tuple[Any, bytes, Any]:
    keys = open_key_provider(provider_options)
    data_key = secrets.token_bytes(32)
    return keys, data_key, keys.wrap(tenant, data_key, dict(CONTEXT, tenant=tenant))


# -- local key files ------------------------------------------------------------


def test_create_is_idempotent_and_writes_a_private_key(tenant_key, key_dir):
    run, results = tenant_key(("create", options(key_dir)), ("again", options(key_dir)), ("info", options(key_dir), INFO))
    run.assert_ok()
    created, again, info = results["create"], results["again"], results["info"]
    assert created["status"] == "changed"
    key = created["result"]["key"]
    assert key["exists"] and key["current_key_id"] == "v1" and key["provider"] == "file" and not key["shredded"]
    assert created["result"]["audit"]["action"] == "key_create" and created["result"]["audit"]["outcome"] == "changed"
    assert set(created["result"]["audit"]) >= {"action", "tenant", "outcome", "at"}
    assert again["status"] == "ok" and again["result"]["changed"] is False and again["result"]["audit"]["outcome"] == "unchanged"
    assert again["result"]["key"] == key
    assert info["status"] == "ok" and info["result"]["changed"] is False
    assert info["result"]["key"] == key and info["result"]["tenant_keys"] == [key] and "audit" not in info["result"]
    key_file = key_dir / "acme" / "v1.key"
    assert len(key_file.read_bytes()) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE((key_dir / "acme").stat().st_mode) == 0o700


def test_check_mode_changes_nothing_and_diff_shows_the_key_state(tenant_key, key_dir):
    run, results = tenant_key(("would create", options(key_dir), {"check": True, "diff": True}))
    run.assert_ok()
    would = results["would create"]["result"]
    assert would["changed"] is True and would["audit"]["outcome"] == "check_mode"
    assert would["key"]["exists"] and would["key"]["current_key_id"] == "v1"
    assert would["diff"]["before"]["exists"] is False and would["diff"]["after"]["current_key_id"] == "v1"
    assert os.listdir(key_dir) == []

    run, results = tenant_key(
        ("create", options(key_dir)),
        ("would rotate", options(key_dir, state="rotated"), {"check": True, "diff": True}),
        ("would shred", options(key_dir, state="shredded", confirm_shred="acme"), {"check": True}),
    )
    run.assert_ok()
    rotate = results["would rotate"]["result"]
    assert rotate["changed"] is True and [v["key_id"] for v in rotate["key"]["versions"]] == ["v1", "v2"]
    assert rotate["diff"]["before"]["current_key_id"] == "v1" and rotate["diff"]["after"]["current_key_id"] == "v2"
    shred = results["would shred"]["result"]
    assert shred["changed"] is True and shred["key"]["shredded"] is True
    assert sorted(os.listdir(key_dir / "acme")) == ["v1.key"]


def test_supplied_material_and_material_never_shows(tenant_key, key_dir):
    material = secrets.token_bytes(32)
    encoded = base64.b64encode(material).decode()
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    run, results = tenant_key(
        ("create", options(key_dir, key_material=encoded)),
        ("again", options(key_dir, key_material=encoded)),
        ("different", options(key_dir, key_material=other)),
        ("generated", options(key_dir, tenant="globex")),
        env={"ANSIBLE_VERBOSITY": "3"},  # the same as -vvv: module arguments and results are printed
    )
    assert results["create"]["status"] == "changed" and results["again"]["status"] == "ok"
    assert (key_dir / "acme" / "v1.key").read_bytes() == material
    assert_failed(results["different"], "invalid_option", "key_material")
    assert (key_dir / "acme" / "v1.key").read_bytes() == material

    generated = (key_dir / "globex" / "v1.key").read_bytes()
    everything = run.stdout + run.stderr + json.dumps(run.tasks)
    assert "tenant_key" in run.stdout and "<localhost>" in run.stdout  # really verbose
    assert _NO_LOG_PLACEHOLDER in everything  # the arguments were shown, masked
    for secret in (material, generated, base64.b64decode(other)):
        for form in (base64.b64encode(secret).decode(), secret.hex(), repr(secret)):
            assert form not in everything


def test_rotation_always_changes_and_old_versions_still_unwrap(tenant_key, key_dir):
    run, results = tenant_key(("create", options(key_dir)))
    run.assert_ok()
    keys, data_key, wrapped_v1 = wrap_locally(file_provider(key_dir))
    assert wrapped_v1.key_id == "v1"

    run, results = tenant_key(("rotate", options(key_dir, state="rotated")), ("rotate again", options(key_dir, state="rotated")))
    run.assert_ok()
    assert results["rotate"]["status"] == "changed" and results["rotate again"]["status"] == "changed"
    key = results["rotate again"]["result"]["key"]
    assert key["current_key_id"] == "v3" and [v["current"] for v in key["versions"]] == [False, False, True]
    assert results["rotate"]["result"]["audit"]["key_id"] == "v2"

    assert keys.unwrap("acme", wrapped_v1, CONTEXT) == data_key
    wrapped_v3 = keys.wrap("acme", data_key, CONTEXT)
    assert wrapped_v3.key_id == "v3" and keys.unwrap("acme", wrapped_v3, CONTEXT) == data_key


def test_shred_needs_confirmation_then_makes_backups_unreadable(tenant_key, key_dir):
    run, results = tenant_key(("create", options(key_dir)))
    run.assert_ok()
    keys, data_key, wrapped = wrap_locally(file_provider(key_dir))

    run, results = tenant_key(
        ("unconfirmed", options(key_dir, state="shredded")),
        ("wrong tenant confirmed", options(key_dir, state="shredded", confirm_shred="globex")),
        ("unconfirmed in check mode", options(key_dir, state="shredded"), {"check": True}),
    )
    for name in results:
        result = assert_failed(results[name], "invalid_option", "confirm_shred")
        assert "cannot be undone" in result["msg"]
    assert keys.unwrap("acme", wrapped, CONTEXT) == data_key  # nothing happened

    run, results = tenant_key(
        ("shred", options(key_dir, state="shredded", confirm_shred="acme"), {"diff": True}),
        ("shred again", options(key_dir, state="shredded", confirm_shred="acme")),
        ("recreate", options(key_dir)),
        ("rotate", options(key_dir, state="rotated")),
    )
    shred = results["shred"]
    assert shred["status"] == "changed" and shred["result"]["audit"]["action"] == "key_shred"
    assert shred["result"]["key"]["shredded"] is True and shred["result"]["key"]["exists"] is False
    assert shred["result"]["diff"]["before"]["current_key_id"] == "v1" and shred["result"]["diff"]["after"]["shredded"] is True
    assert results["shred again"]["status"] == "ok" and results["shred again"]["result"]["changed"] is False
    shredded_at = shred["result"]["key"]["shredded_at"]
    for name in ("recreate", "rotate"):
        result = assert_failed(results[name], "key_shredded")
        assert result["msg"] == "tenant acme's key was shredded at {0}: its backups are unreadable by design".format(shredded_at)
    assert sorted(os.listdir(key_dir / "acme")) == ["SHREDDED"]

    with pytest.raises(KeyShredded) as raised:
        keys.unwrap("acme", wrapped, CONTEXT)
    assert raised.value.kind == "key_shredded"


def test_bad_input_is_refused_naming_the_field(tenant_key, key_dir, tmp_path):
    short = base64.b64encode(b"x" * 16).decode()
    _run, results = tenant_key(
        ("bad tenant", options(key_dir, tenant="../Acme")),
        ("short material", options(key_dir, key_material=short)),
        ("not base64", options(key_dir, key_material="not base64!")),
        ("material to rotate", options(key_dir, state="rotated", key_material=base64.b64encode(b"k" * 32).decode())),
        ("unknown key dir", {"tenant": "acme", "key_provider": file_provider(tmp_path / "nowhere")}),
        ("no key dir", {"tenant": "acme", "key_provider": {"type": "file"}}),
        ("kms option on file", {"tenant": "acme", "key_provider": dict(file_provider(key_dir), region="eu-west-1")}),
        ("material with kms", {"tenant": "acme", "key_provider": {"type": "aws_kms", "region": "eu-west-1"},
                               "key_material": base64.b64encode(b"k" * 32).decode()}),
        ("rotate missing", options(key_dir, state="rotated")),
    )
    assert_failed(results["bad tenant"], "invalid_option", "tenant")
    short_result = assert_failed(results["short material"], "invalid_option", "key_material")
    assert "got 16 bytes" in short_result["msg"] and short not in json.dumps(short_result)
    assert_failed(results["not base64"], "invalid_option", "key_material")
    assert_failed(results["material to rotate"], "invalid_option", "key_material")
    unknown = assert_failed(results["unknown key dir"], "invalid_option", "key_provider.directory")
    assert str(tmp_path / "nowhere") in unknown["msg"]
    assert_failed(results["no key dir"], "invalid_option", "key_provider.directory")
    assert_failed(results["kms option on file"], "invalid_option", "key_provider.region")
    assert_failed(results["material with kms"], "invalid_option", "key_material")
    assert "has no key to rotate" in assert_failed(results["rotate missing"], "key_unavailable")["msg"]
    assert os.listdir(key_dir) == []


def test_a_key_directory_others_can_read_is_refused(tenant_key, key_dir):
    run, results = tenant_key(("create", options(key_dir)))
    run.assert_ok()
    os.chmod(key_dir / "acme" / "v1.key", 0o644)
    run, results = tenant_key(("info", options(key_dir), INFO))
    result = assert_failed(results["info"], "key_unavailable", audited=False)
    assert result["msg"].startswith("{0} has mode 0644: group and other must have no access".format(key_dir / "acme" / "v1.key"))


def test_tenant_key_info_reports_one_or_every_tenant_and_state_info_is_gone(tenant_key, key_dir):
    keel_tenants = [{"name": "acme", "database": "app", "retention": {"days": 7}}, {"name": "globex", "database": "app", "retention": {"days": 7}}]
    _run, results = tenant_key(
        ("create", options(key_dir)),
        ("rotate", options(key_dir, state="rotated")),
        ("one", options(key_dir), INFO),
        ("every", {"tenants": keel_tenants, "key_provider": file_provider(key_dir)}, INFO),
        ("every in check mode", {"tenants": keel_tenants, "key_provider": file_provider(key_dir)}, dict(INFO, check=True)),
        ("neither", {"key_provider": file_provider(key_dir)}, INFO),
        ("bad entry", {"tenants": [{"database": "app"}], "key_provider": file_provider(key_dir)}, INFO),
        ("state info", options(key_dir, state="info")),
    )
    one, every, checked = results["one"]["result"], results["every"]["result"], results["every in check mode"]["result"]
    assert results["one"]["status"] == "ok" and one["changed"] is False
    assert one["key"]["current_key_id"] == "v2" and one["tenant_keys"] == [one["key"]] and results["rotate"]["result"]["key"] == one["key"]
    assert results["every"]["status"] == "ok" and "key" not in every
    assert [(k["tenant"], k["exists"], k["current_key_id"]) for k in every["tenant_keys"]] == [("acme", True, "v2"), ("globex", False, None)]
    assert results["every in check mode"]["status"] == "ok" and checked["tenant_keys"] == every["tenant_keys"]
    assert sorted(os.listdir(key_dir)) == ["acme"]  # looking created nothing
    assert results["neither"]["status"] == "failed" and "one of the following is required: tenant, tenants" in results["neither"]["result"]["msg"]
    assert_failed(results["bad entry"], "invalid_option", "tenants[0].name", audited=False)
    refused = results["state info"]["result"]
    assert results["state info"]["status"] == "failed" and "value of state must be one of: present, rotated, shredded" in refused["msg"]


# -- audit events in the store and re-wrapping after rotation (S3, PostgreSQL) ---------------------


def audit_events(s3_client, bucket: str, prefix: str = "pg/audit/") -> Dict[str, Dict[str, Any]]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: json.loads(s3_client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()) for item in listed}


def test_every_key_action_is_appended_to_the_store_as_a_write_once_object(tenant_key, key_dir, s3_server, tmp_path):
    client = s3_server.client()
    bucket = make_locked_bucket(client)
    store = {"type": "s3", "bucket": bucket, "prefix": "pg/", "endpoint_url": s3_server.endpoint_url, "region": "us-east-1",
             "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    actor = {"audit_actor": "awx:alice job 42"}
    run, results = tenant_key(
        ("create", options(key_dir, store=store, **actor)),
        ("again", options(key_dir, store=store, **actor)),
        ("would rotate", options(key_dir, store=store, state="rotated", **actor), {"check": True}),
        ("rotate", options(key_dir, store=store, state="rotated", **actor)),
        ("unconfirmed shred", options(key_dir, store=store, state="shredded", **actor)),
        ("missing bucket", options(key_dir, store=dict(store, bucket="keel-missing-{0}".format(secrets.token_hex(4))), state="rotated")),
        ("rewrap without store", options(key_dir, state="rotated", rewrap=True)),
    )
    run.assert_ok()
    stored = audit_events(client, bucket)
    returned = [results[name]["result"]["audit"] for name in ("create", "again", "rotate", "unconfirmed shred")]
    assert sorted("pg/" + event["audit_object"] for event in returned) == sorted(stored)
    for event in returned:
        key = event["audit_object"]
        assert key.startswith("audit/") and "-{0}-".format(event["action"]) in key
        assert stored["pg/" + key] == {name: value for name, value in event.items() if name != "audit_object"}
        assert event["actor"] == "awx:alice job 42" and event["tenant"] == "acme" and event["provider"] == "file"
    assert [(e["action"], e["outcome"]) for e in returned] == [
        ("key_create", "changed"), ("key_create", "unchanged"), ("key_rotate", "changed"), ("key_shred", "failed")]
    assert returned[2]["key_id"] == "v2" and returned[3]["error"] == "invalid_option"
    assert "audit_object" not in results["would rotate"]["result"]["audit"]  # check mode writes nothing
    # Never key material in the log.
    material = (key_dir / "acme" / "v1.key").read_bytes()
    assert all(base64.b64encode(material).decode() not in json.dumps(event) for event in stored.values())

    # Write-once: an event object cannot be replaced (If-None-Match), so the log cannot be rewritten through keel.
    with pytest.raises(StoreFailed, match="already exists"):
        open_store(store).put_bytes(returned[0]["audit_object"], b"{}", Lock())

    # A store that cannot take the event stops the action: the key was not rotated again.
    assert_failed(results["missing bucket"], "invalid_option", "store.bucket")
    assert "audit_object" not in results["missing bucket"]["result"]["audit"]  # returned only: the store was not usable
    assert_failed(results["rewrap without store"], "invalid_option", "rewrap")
    assert sorted(os.listdir(key_dir / "acme")) == ["v1.key", "v2.key"]


def world_options(world: BackupWorld, tenant: str, **extra: Any) -> Dict[str, Any]:
    return dict({"tenant": tenant, "key_provider": world.key_provider, "store": world.s3_store()}, **extra)


def test_rotation_rewraps_backups_so_a_retired_version_is_not_needed(tenant_key, world):
    world.add_tenant("acme", retention={"days": 1, "lock_mode": "governance"})
    world.add_tenant("globex", schemas=["globex"])  # the control: rotated without re-wrap
    first, second = world.backup("acme"), world.backup("acme")
    control = world.backup("globex")
    assert first["key_id"] == second["key_id"] == control["key_id"] == "v1"
    ids = [first["backup_id"], second["backup_id"]]
    objects_before = world.objects()

    run, results = tenant_key(
        ("would rotate", world_options(world, "acme", state="rotated", rewrap=True), {"check": True}),
        ("rotate", world_options(world, "acme", state="rotated", rewrap=True)),
        ("rewrap again", world_options(world, "acme", rewrap=True)),
        ("rotate control", world_options(world, "globex", state="rotated")),
    )
    run.assert_ok()
    would = results["would rotate"]["result"]
    assert results["would rotate"]["status"] == "changed" and would["rewrapped"] == ids and would["key"]["current_key_id"] == "v2"
    rotated = results["rotate"]["result"]
    assert results["rotate"]["status"] == "changed" and rotated["key"]["current_key_id"] == "v2"
    assert rotated["rewrapped"] == ids and rotated["rewrap_skipped"] == []
    assert rotated["audit"]["action"] == "key_rotate" and rotated["audit"]["rewrapped"] == ids and rotated["audit"]["audit_object"]
    again = results["rewrap again"]
    assert again["status"] == "ok" and again["result"]["changed"] is False
    assert again["result"]["rewrapped"] == [] and again["result"]["rewrap_skipped"] == []
    assert results["rotate control"]["result"]["key"]["current_key_id"] == "v2" and "rewrapped" not in results["rotate control"]["result"]

    # One re-wrap object per backup, locked like the backup's data; nothing that existed was touched.
    objects_after = world.objects()
    for key, item in objects_before.items():
        assert objects_after[key]["ETag"] == item["ETag"] and objects_after[key]["LastModified"] == item["LastModified"]
    client = world.s3_server.client()
    rewraps = sorted(key for key in objects_after if "/keys/" in key)
    assert rewraps == sorted("pg/" + layout.rewrap_key("acme", backup_id, "v2") for backup_id in ids)
    for backup_id in ids:
        data = client.head_object(Bucket=world.bucket, Key="pg/" + layout.data_key("acme", backup_id))
        rewrap = client.head_object(Bucket=world.bucket, Key="pg/" + layout.rewrap_key("acme", backup_id, "v2"))
        assert rewrap["ObjectLockMode"] == data["ObjectLockMode"] == "GOVERNANCE"
        assert rewrap["ObjectLockRetainUntilDate"] == data["ObjectLockRetainUntilDate"]
        document = json.loads(client.get_object(Bucket=world.bucket, Key="pg/" + layout.rewrap_key("acme", backup_id, "v2"))["Body"].read())
        assert document["tenant"] == "acme" and document["backup_id"] == backup_id and document["wrapped_key"]["key_id"] == "v2"
    key_events = [event for event in audit_events(client, world.bucket).values() if event["action"].startswith("key_")]
    assert sorted((e["tenant"], e["action"], e["outcome"]) for e in key_events) == [
        ("acme", "key_create", "unchanged"), ("acme", "key_rotate", "changed"), ("globex", "key_rotate", "changed")]

    # Retire v1 of both tenants, as an operator would once its backups are re-wrapped.
    for tenant in ("acme", "globex"):
        os.chmod(world.key_dir / tenant, 0o700)
        os.unlink(world.key_dir / tenant / "v1.key")
    result, info = world.run("backup_info", read_data=True)
    assert result.rc == 0, info
    reports = {report["tenant"]: report for report in info["tenants"]}
    acme = reports["acme"]["backups"]
    assert [b["backup_id"] for b in acme] == ids
    assert [(b["mac_status"], b["integrity"]) for b in acme] == [("verified", "ok"), ("verified", "ok")]
    assert [b["key_id"] for b in acme] == ["v1", "v1"]  # the manifests still name v1: read through the re-wraps
    [lost] = reports["globex"]["backups"]
    assert lost["backup_id"] == control["backup_id"]
    assert lost["mac_status"] == "key_unavailable" and lost["integrity_error"] == "key_unavailable" and "v1" in lost["integrity"]

    # Too late for the control: its data key cannot be unwrapped any more, so it cannot be re-wrapped.
    run, results = tenant_key(("rewrap control", world_options(world, "globex", rewrap=True)))
    run.assert_ok()
    late = results["rewrap control"]["result"]
    assert late["changed"] is False and late["rewrapped"] == []
    [skipped] = late["rewrap_skipped"]
    assert skipped["backup_id"] == control["backup_id"] and skipped["reason"].startswith("manifest not authenticated (key_unavailable)")


# -- AWS KMS (moto) ---------------------------------------------------------------


@pytest.fixture
def kms_provider(kms_server):
    """key_provider options with an alias prefix of this test's own: moto keeps keys for the whole session."""
    return kms_server.key_provider_options(alias_prefix="keel-test/{0}".format(secrets.token_hex(4)))


def kms_options(provider: Dict[str, Any], tenant: str = "acme", **extra: Any) -> Dict[str, Any]:
    return dict({"tenant": tenant, "key_provider": provider}, **extra)


def test_kms_lifecycle(tenant_key, kms_server, kms_provider):
    kms = kms_server.client()
    prefix = kms_provider["alias_prefix"]
    run, results = tenant_key(
        ("would create", kms_options(kms_provider), {"check": True}),
        ("create", kms_options(kms_provider)),
        ("again", kms_options(kms_provider)),
        ("other tenant", kms_options(kms_provider, tenant="globex")),
        env={"ANSIBLE_VERBOSITY": "3"},
    )
    run.assert_ok()
    assert results["would create"]["status"] == "changed"
    assert results["would create"]["result"]["key"]["current_key_id"] == "alias/{0}/acme/v1".format(prefix)
    created = results["create"]["result"]["key"]
    assert results["create"]["status"] == "changed" and created["current_key_id"].startswith("arn:aws:kms:")
    assert results["again"]["status"] == "ok" and results["again"]["result"]["key"] == created
    assert kms_provider["secret_key"] not in run.stdout + run.stderr + json.dumps(run.tasks)

    v1 = kms.describe_key(KeyId="alias/{0}/acme/v1".format(prefix))["KeyMetadata"]
    assert v1["Arn"] == created["current_key_id"]
    assert kms.describe_key(KeyId="alias/{0}/acme/current".format(prefix))["KeyMetadata"]["Arn"] == v1["Arn"]
    tags = {tag["TagKey"]: tag["TagValue"] for tag in kms.list_resource_tags(KeyId=v1["KeyId"])["Tags"]}
    assert tags == {"keel:tenant": "acme", "keel:version": "1"}

    keys, data_key, wrapped_v1 = wrap_locally(kms_provider)
    assert wrapped_v1.provider == "aws_kms" and wrapped_v1.key_id == v1["Arn"]
    assert keys.unwrap("acme", wrapped_v1, CONTEXT) == data_key
    with pytest.raises(IntegrityFailed):
        keys.unwrap("acme", wrapped_v1, dict(CONTEXT, backup_id="another-backup"))
    with pytest.raises(IntegrityFailed, match="not one of tenant globex's key versions"):
        keys.unwrap("globex", wrapped_v1, dict(CONTEXT, tenant="globex"))

    keys_before = len(kms.list_keys()["Keys"])
    run, results = tenant_key(
        ("would rotate", kms_options(kms_provider, state="rotated"), {"check": True}),
        ("rotate", kms_options(kms_provider, state="rotated"), {"diff": True}),
    )
    run.assert_ok()
    assert results["would rotate"]["status"] == "changed"
    rotated = results["rotate"]["result"]
    assert results["rotate"]["status"] == "changed" and len(kms.list_keys()["Keys"]) == keys_before + 1
    v2 = kms.describe_key(KeyId="alias/{0}/acme/v2".format(prefix))["KeyMetadata"]
    assert rotated["key"]["current_key_id"] == v2["Arn"] and [v["key_id"] for v in rotated["key"]["versions"]] == [v1["Arn"], v2["Arn"]]
    assert rotated["diff"]["before"]["current_key_id"] == v1["Arn"] and rotated["diff"]["after"]["current_key_id"] == v2["Arn"]
    assert keys.unwrap("acme", wrapped_v1, CONTEXT) == data_key  # the old version still unwraps
    wrapped_v2 = keys.wrap("acme", data_key, CONTEXT)
    assert wrapped_v2.key_id == v2["Arn"] and keys.unwrap("acme", wrapped_v2, CONTEXT) == data_key

    run, results = tenant_key(
        ("unconfirmed", kms_options(kms_provider, state="shredded")),
        ("shred", kms_options(kms_provider, state="shredded", confirm_shred="acme")),
        ("shred again", kms_options(kms_provider, state="shredded", confirm_shred="acme")),
        ("recreate", kms_options(kms_provider)),
        ("info", kms_options(kms_provider), INFO),
    )
    assert_failed(results["unconfirmed"], "invalid_option", "confirm_shred")
    shred = results["shred"]["result"]
    assert results["shred"]["status"] == "changed" and shred["key"]["shredded"] is True and shred["key"]["shredded_at"]
    assert results["shred again"]["status"] == "ok" and results["shred again"]["result"]["changed"] is False
    assert_failed(results["recreate"], "key_shredded")
    assert results["info"]["result"]["key"]["shredded"] is True
    for version in (v1, v2):
        assert kms.describe_key(KeyId=version["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"

    for wrapped in (wrapped_v1, wrapped_v2):
        with pytest.raises(KeyShredded, match="tenant acme's key was shredded at {0}".format(shred["key"]["shredded_at"])):
            keys.unwrap("acme", wrapped, CONTEXT)
    with pytest.raises(KeyShredded):
        keys.wrap("acme", data_key, CONTEXT)
    # The other tenant under the same prefix is untouched.
    assert open_key_provider(kms_provider).describe("globex").exists


def test_kms_key_deleted_after_shredding_reads_as_shredded(kms_server, kms_provider):
    """After the pending window AWS deletes the key; a backup naming it then gets a clear KeyShredded."""
    keys = open_key_provider(kms_provider)
    keys.create("acme")
    data_key = secrets.token_bytes(32)
    wrapped = keys.wrap("acme", data_key, CONTEXT)
    missing = type(wrapped)(provider="aws_kms", key_id=wrapped.key_id.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000", blob=wrapped.blob)
    with pytest.raises(KeyShredded, match="no longer exists"):
        keys.unwrap("acme", missing, CONTEXT)


def test_kms_errors_name_the_operation_and_never_the_secret(tenant_key, kms_server, kms_provider):
    unreachable = dict(kms_provider, endpoint_url="http://127.0.0.1:9")
    run, results = tenant_key(
        ("unreachable", kms_options(unreachable), INFO),
        ("bad prefix", kms_options(dict(kms_provider, alias_prefix="aws/keel"))),
        ("file option on kms", kms_options(dict(kms_provider, directory="/etc/keel/keys"))),
    )
    result = assert_failed(results["unreachable"], "key_unavailable", audited=False)
    assert result["msg"].startswith("AWS KMS describe_key failed: ")
    assert kms_provider["secret_key"] not in run.stdout + run.stderr + json.dumps(run.tasks)
    assert_failed(results["bad prefix"], "invalid_option", "key_provider.alias_prefix")
    assert_failed(results["file option on kms"], "invalid_option", "key_provider.directory")


def test_kms_lost_current_alias_is_repaired_by_present(tenant_key, kms_server, kms_provider):
    """A run interrupted between creating a version and pointing `current` at it leaves no current key."""
    keys = open_key_provider(kms_provider)
    created = keys.create("acme")
    kms_server.client().delete_alias(AliasName="alias/{0}/acme/current".format(kms_provider["alias_prefix"]))
    assert keys.describe("acme").current is None

    run, results = tenant_key(
        ("would repair", kms_options(kms_provider), {"check": True}),
        ("repair", kms_options(kms_provider)),
    )
    run.assert_ok()
    assert results["would repair"]["status"] == "changed" and results["would repair"]["result"]["key"] == created.as_dict()
    assert results["repair"]["status"] == "changed" and results["repair"]["result"]["key"] == created.as_dict()


def test_kms_a_key_disabled_by_hand_is_an_outage_not_a_shred(kms_server, kms_provider):
    keys = open_key_provider(kms_provider)
    keys.create("acme")
    keys.rotate("acme")
    data_key = secrets.token_bytes(32)
    wrapped = keys.wrap("acme", data_key, CONTEXT)
    kms = kms_server.client()
    # By key id, not ARN: moto 5 fails DisableKey given an ARN (HTTP 500), which AWS accepts.
    kms.disable_key(KeyId=kms.describe_key(KeyId=wrapped.key_id)["KeyMetadata"]["KeyId"])
    assert keys.describe("acme").shredded is False
    with pytest.raises(KeyUnavailable, match="is Disabled; enable it"):
        keys.unwrap("acme", wrapped, CONTEXT)
    with pytest.raises(KeyUnavailable, match="is Disabled"):
        keys.wrap("acme", data_key, CONTEXT)
