"""FileKeyProvider on a real temporary directory: layout, modes, wrapping, rotation, shredding."""

from __future__ import annotations

import json
import os
import secrets
import stat

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import DATA_KEY_BYTES, WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider, canonical_aad, write_new_file
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption, KeyShredded, KeyUnavailable

CONTEXT = {"tenant": "acme", "backup_id": "20261125T020000Z-3f9a1c2b"}


@pytest.fixture
def key_dir(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return directory


@pytest.fixture
def keys(key_dir):
    return FileKeyProvider(str(key_dir))


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_create_writes_a_private_32_byte_key_and_is_idempotent(keys, key_dir):
    assert keys.describe("acme").exists is False
    state = keys.create("acme")
    key_file = key_dir / "acme" / "v1.key"
    assert state.exists and state.current.key_id == "v1" and state.current.created_at.endswith("Z")
    assert len(key_file.read_bytes()) == DATA_KEY_BYTES
    assert mode_of(key_file) == 0o600 and mode_of(key_dir / "acme") == 0o700
    material = key_file.read_bytes()
    assert keys.create("acme").as_dict() == state.as_dict()
    assert key_file.read_bytes() == material
    # No temp files are left beside the key.
    assert sorted(os.listdir(key_dir / "acme")) == ["v1.key"]


def test_supplied_material_becomes_v1_and_a_different_one_is_refused(keys, key_dir):
    material = secrets.token_bytes(DATA_KEY_BYTES)
    keys.create("acme", material)
    assert (key_dir / "acme" / "v1.key").read_bytes() == material
    keys.create("acme", material)  # same material again: fine, nothing changes
    with pytest.raises(InvalidOption) as raised:
        keys.create("acme", secrets.token_bytes(DATA_KEY_BYTES))
    assert raised.value.field == "key_material" and "never replaced" in raised.value.message
    with pytest.raises(InvalidOption, match="must be 32 bytes, got 16"):
        keys.create("other", b"x" * 16)


def test_wrap_unwrap_round_trip_binds_tenant_and_context(keys):
    keys.create("acme")
    keys.create("globex")
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    wrapped = keys.wrap("acme", data_key, CONTEXT)
    assert wrapped.provider == "file" and wrapped.key_id == "v1" and len(wrapped.blob) == 12 + 32 + 16
    assert keys.unwrap("acme", wrapped, CONTEXT) == data_key
    # Survives serialisation into a manifest.
    assert keys.unwrap("acme", WrappedKey.from_dict(wrapped.as_dict()), CONTEXT) == data_key

    with pytest.raises(IntegrityFailed, match="does not unwrap with tenant globex's key v1: wrong tenant or altered backup"):
        keys.unwrap("globex", wrapped, {"tenant": "globex", "backup_id": CONTEXT["backup_id"]})
    with pytest.raises(IntegrityFailed, match="tenant acme's key v1"):
        keys.unwrap("acme", wrapped, dict(CONTEXT, backup_id="another-backup"))
    altered = WrappedKey(provider="file", key_id="v1", blob=wrapped.blob[:-1] + bytes([wrapped.blob[-1] ^ 1]))
    with pytest.raises(IntegrityFailed):
        keys.unwrap("acme", altered, CONTEXT)
    with pytest.raises(IntegrityFailed):
        keys.unwrap("acme", WrappedKey(provider="file", key_id="v1", blob=wrapped.blob[:20]), CONTEXT)


def test_two_wraps_of_one_key_differ(keys):
    keys.create("acme")
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    first, second = keys.wrap("acme", data_key, CONTEXT), keys.wrap("acme", data_key, CONTEXT)
    assert first.blob[:12] != second.blob[:12] and first.blob != second.blob


def test_aad_is_canonical_and_a_contradicting_context_is_a_bug(keys):
    assert canonical_aad("acme", "v1", {"backup_id": "b", "tenant": "acme"}) == b'{"backup_id":"b","key_id":"v1","tenant":"acme"}'
    keys.create("acme")
    with pytest.raises(ValueError, match="tenant"):
        keys.wrap("acme", secrets.token_bytes(DATA_KEY_BYTES), {"tenant": "globex"})


def test_rotation_keeps_old_versions_unwrapping(keys, key_dir):
    keys.create("acme")
    old_key = secrets.token_bytes(DATA_KEY_BYTES)
    old = keys.wrap("acme", old_key, CONTEXT)
    state = keys.rotate("acme")
    assert [v.key_id for v in state.versions] == ["v1", "v2"]
    assert state.current.key_id == "v2" and not state.versions[0].current
    assert mode_of(key_dir / "acme" / "v2.key") == 0o600
    new = keys.wrap("acme", old_key, CONTEXT)
    assert new.key_id == "v2"
    assert keys.unwrap("acme", old, CONTEXT) == old_key
    assert keys.unwrap("acme", new, CONTEXT) == old_key
    assert keys.rotate("acme").current.key_id == "v3"


def test_rotate_without_a_key_is_refused(keys):
    with pytest.raises(KeyUnavailable, match="tenant acme has no key"):
        keys.rotate("acme")
    with pytest.raises(KeyUnavailable, match="tenant acme has no key"):
        keys.wrap("acme", secrets.token_bytes(DATA_KEY_BYTES), CONTEXT)


def test_shred_destroys_every_version_and_leaves_a_tombstone(keys, key_dir):
    keys.create("acme")
    keys.rotate("acme")
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    wrapped = keys.wrap("acme", data_key, CONTEXT)

    state = keys.shred("acme")
    assert state.shredded and not state.exists and state.versions == [] and state.shredded_at.endswith("Z")
    assert sorted(os.listdir(key_dir / "acme")) == ["SHREDDED"]
    tombstone = json.loads((key_dir / "acme" / "SHREDDED").read_text())
    assert tombstone == {"shredded_at": state.shredded_at, "versions": ["v1", "v2"]}
    assert mode_of(key_dir / "acme" / "SHREDDED") == 0o600

    expected = "tenant acme's key was shredded at {0}: its backups are unreadable by design".format(state.shredded_at)
    with pytest.raises(KeyShredded) as unwrap_error:
        keys.unwrap("acme", wrapped, CONTEXT)
    assert unwrap_error.value.message == expected
    with pytest.raises(KeyShredded):
        keys.wrap("acme", data_key, CONTEXT)
    with pytest.raises(KeyShredded):
        keys.rotate("acme")
    # A shredded tenant must never silently get a fresh key.
    with pytest.raises(KeyShredded):
        keys.create("acme")
    with pytest.raises(KeyShredded):
        keys.create("acme", secrets.token_bytes(DATA_KEY_BYTES))
    assert keys.shred("acme").as_dict() == state.as_dict()  # shredding again is a no-op


def test_shred_overwrites_before_unlinking(keys, key_dir, monkeypatch):
    keys.create("acme")
    key_file = key_dir / "acme" / "v1.key"
    original = key_file.read_bytes()
    seen = {}
    real_unlink = os.unlink

    def spy_unlink(path, *args, **kwargs):
        if str(path) == str(key_file):
            seen["bytes"] = key_file.read_bytes()
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", spy_unlink)
    keys.shred("acme")
    assert len(seen["bytes"]) == DATA_KEY_BYTES and seen["bytes"] != original


def test_an_interrupted_shred_is_finished_by_the_next_one(keys, key_dir):
    keys.create("acme")
    keys.rotate("acme")
    # A crash after the tombstone but before the files were destroyed.
    write_new_file(str(key_dir / "acme" / "SHREDDED"), b'{"shredded_at": "2026-11-25T02:00:00Z", "versions": ["v1", "v2"]}')
    state = keys.describe("acme")
    assert state.shredded and [v.key_id for v in state.versions] == ["v1", "v2"]
    assert not any(v.current for v in state.versions)
    after = keys.shred("acme")
    assert after.versions == [] and after.shredded_at == "2026-11-25T02:00:00Z"
    assert sorted(os.listdir(key_dir / "acme")) == ["SHREDDED"]


def test_shredding_a_tenant_without_a_key_changes_nothing(keys, key_dir):
    state = keys.shred("nobody")
    assert not state.exists and not state.shredded
    assert not (key_dir / "nobody").exists()


@pytest.mark.parametrize("relative, mode", [(".", 0o750), ("acme", 0o755), ("acme/v1.key", 0o640), ("acme/v1.key", 0o604)])
def test_keys_readable_by_group_or_other_are_refused(keys, key_dir, relative, mode):
    keys.create("acme")
    wrapped = keys.wrap("acme", secrets.token_bytes(DATA_KEY_BYTES), CONTEXT)
    path = key_dir / relative
    os.chmod(path, mode)
    with pytest.raises(KeyUnavailable) as raised:
        keys.unwrap("acme", wrapped, CONTEXT)
    assert raised.value.message.startswith(os.path.normpath(str(path)) + " has mode ")
    assert "mode {0:04o}".format(mode) in raised.value.message


def test_a_symlinked_key_file_is_refused(keys, key_dir, tmp_path):
    keys.create("acme")
    wrapped = keys.wrap("acme", secrets.token_bytes(DATA_KEY_BYTES), CONTEXT)
    elsewhere = tmp_path / "elsewhere.key"
    os.rename(key_dir / "acme" / "v1.key", elsewhere)
    os.symlink(elsewhere, key_dir / "acme" / "v1.key")
    with pytest.raises(KeyUnavailable, match="symbolic link"):
        keys.unwrap("acme", wrapped, CONTEXT)


def test_a_damaged_key_file_is_reported(keys, key_dir):
    keys.create("acme")
    wrapped = keys.wrap("acme", secrets.token_bytes(DATA_KEY_BYTES), CONTEXT)
    (key_dir / "acme" / "v1.key").write_bytes(b"short")
    with pytest.raises(KeyUnavailable, match="holds 5 bytes"):
        keys.unwrap("acme", wrapped, CONTEXT)


def test_a_wrapped_key_naming_a_missing_or_foreign_version(keys):
    keys.create("acme")
    wrapped = keys.wrap("acme", secrets.token_bytes(DATA_KEY_BYTES), CONTEXT)
    with pytest.raises(KeyUnavailable, match="no key v7"):
        keys.unwrap("acme", WrappedKey(provider="file", key_id="v7", blob=wrapped.blob), CONTEXT)
    with pytest.raises(IntegrityFailed, match="no file key version"):
        keys.unwrap("acme", WrappedKey(provider="file", key_id="../v1", blob=wrapped.blob), CONTEXT)
    with pytest.raises(KeyUnavailable, match="'aws_kms' key provider"):
        keys.unwrap("acme", WrappedKey(provider="aws_kms", key_id="v1", blob=wrapped.blob), CONTEXT)


def test_write_new_file_never_replaces(tmp_path):
    target = tmp_path / "v1.key"
    write_new_file(str(target), b"first")
    with pytest.raises(FileExistsError):
        write_new_file(str(target), b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["v1.key"]


def test_bad_tenant_names_are_refused_before_any_path_is_built(keys, key_dir):
    for name in ("../etc", "Acme", "", "a/b"):
        with pytest.raises(InvalidOption) as raised:
            keys.create(name)
        assert raised.value.field == "tenant"
    assert os.listdir(key_dir) == []


def test_open_key_provider_names_the_field(key_dir, tmp_path):
    assert isinstance(open_key_provider({"type": "file", "directory": str(key_dir)}), FileKeyProvider)
    cases = [
        ({"type": "file"}, "key_provider.directory"),
        ({"type": "file", "directory": str(tmp_path / "missing")}, "key_provider.directory"),
        ({"type": "file", "directory": "relative/keys"}, "key_provider.directory"),
        ({"type": "file", "directory": str(key_dir), "region": "eu-west-1"}, "key_provider.region"),
        ({"type": "aws_kms", "directory": str(key_dir)}, "key_provider.directory"),
        ({"type": "aws_kms", "alias_prefix": "aws/keel", "region": "eu-west-1"}, "key_provider.alias_prefix"),
        ({"type": "aws_kms", "alias_prefix": "keel prod", "region": "eu-west-1"}, "key_provider.alias_prefix"),
        ({"type": "vault"}, "key_provider.type"),
    ]
    for options, field in cases:
        with pytest.raises(InvalidOption) as raised:
            open_key_provider(options)
        assert raised.value.field == field, options
        assert raised.value.message.startswith(field + ": ")
