"""keel.postgres.tenant_key through ansible-playbook, with local key files and with AWS KMS.

The KMS tests run against moto_server (tests/harness/kms_server.py): moto is
the one accepted mock in this suite, because AWS KMS itself cannot run here.
Everything else is real: ansible-playbook, the module, the key directory.
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
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, KeyShredded, KeyUnavailable

pytestmark = pytest.mark.integration

CONTEXT = {"tenant": "acme", "backup_id": "20261125T020000Z-3f9a1c2b"}
_NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def playbook_for(tasks: List[Dict[str, Any]]) -> str:
    """One tenant_key task per entry; each reads its options from module_args[i] and later tasks run after a failure."""
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
    for index, task in enumerate(tasks):
        lines += [
            "    - name: {0}".format(task["name"]),
            "      keel.postgres.tenant_key: \"{{{{ module_args[{0}] }}}}\"".format(index),
            "      ignore_errors: true",
            "      check_mode: {0}".format("true" if task.get("check") else "false"),
            "      diff: {0}".format("true" if task.get("diff") else "false"),
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def tenant_key(run_playbook):
    """Run tenant_key tasks in one playbook: tenant_key((name, options[, {"check": .., "diff": ..}]), ...) -> (run, {name: result})."""

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


def assert_failed(record, error: str, field: Optional[str] = None) -> Dict[str, Any]:
    result = record["result"]
    assert record["status"] == "failed", result
    assert result["error"] == error, result
    if field is not None:
        assert result["field"] == field, result
        assert result["msg"].startswith(field + ": "), result
    assert result["audit"]["outcome"] == "failed" and result["audit"]["error"] == error
    return result


def wrap_locally(provider_options: Dict[str, Any], tenant: str = "acme") -> Tuple[Any, bytes, Any]:
    keys = open_key_provider(provider_options)
    data_key = secrets.token_bytes(32)
    return keys, data_key, keys.wrap(tenant, data_key, dict(CONTEXT, tenant=tenant))


# -- local key files ------------------------------------------------------------


def test_create_is_idempotent_and_writes_a_private_key(tenant_key, key_dir):
    run, results = tenant_key(("create", options(key_dir)), ("again", options(key_dir)), ("info", options(key_dir, state="info")))
    run.assert_ok()
    created, again, info = results["create"], results["again"], results["info"]
    assert created["status"] == "changed"
    key = created["result"]["key"]
    assert key["exists"] and key["current_key_id"] == "v1" and key["provider"] == "file" and not key["shredded"]
    assert created["result"]["audit"]["action"] == "key_create" and created["result"]["audit"]["outcome"] == "changed"
    assert set(created["result"]["audit"]) >= {"action", "tenant", "outcome", "at"}
    assert again["status"] == "ok" and again["result"]["changed"] is False and again["result"]["audit"]["outcome"] == "unchanged"
    assert again["result"]["key"] == key
    assert info["status"] == "ok" and info["result"]["key"] == key and info["result"]["audit"]["action"] == "key_info"
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
    run, results = tenant_key(("info", options(key_dir, state="info")))
    result = assert_failed(results["info"], "key_unavailable")
    assert result["msg"].startswith("{0} has mode 0644: group and other must have no access".format(key_dir / "acme" / "v1.key"))


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
        ("info", kms_options(kms_provider, state="info")),
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
        ("unreachable", kms_options(unreachable, state="info")),
        ("bad prefix", kms_options(dict(kms_provider, alias_prefix="aws/keel"))),
        ("file option on kms", kms_options(dict(kms_provider, directory="/etc/keel/keys"))),
    )
    result = assert_failed(results["unreachable"], "key_unavailable")
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
