"""Tenant policies, backup options and the pg_dump invocation: refused with the field named, secrets kept off argv."""

from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_request import backup_request_from
from ansible_collections.keel.postgres.plugins.module_utils.backup.dump_pipeline import pg_dump_invocation
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import WrappedKey
from ansible_collections.keel.postgres.plugins.module_utils.backup.manifest import open_manifest, seal_manifest
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants
from ansible_collections.keel.postgres.plugins.module_utils.errors import IntegrityFailed, InvalidOption

GOOD = {"name": "acme", "database": "acme_prod", "retention": {"days": 35, "min_copies": 7, "lock_mode": "compliance", "tier": "hot"},
        "archive": {"after_days": 30, "storage_class": "GLACIER_IR"}}


@pytest.mark.parametrize(
    "tenants, field",
    [
        ([], "tenants"),
        (["acme"], "tenants[0]"),
        ([dict(GOOD, name="Acme Corp")], "tenants[0].name"),
        ([dict(GOOD, database="")], "tenants[0].database"),
        ([dict(GOOD, retention={"days": 0})], "tenants[0].retention.days"),
        ([dict(GOOD, retention={"days": 3, "lock_mode": "strict"})], "tenants[0].retention.lock_mode"),
        ([dict(GOOD, retention={"days": 3, "legal_hold": "yes"})], "tenants[0].retention.legal_hold"),
        ([dict(GOOD, retention={"days": 3, "keep": 1})], "tenants[0].retention.keep"),
        ([dict(GOOD, archive={"after_days": 40, "storage_class": "GLACIER"})], "tenants[0].archive.after_days"),
        ([GOOD, dict(GOOD)], "tenants[1].name"),
        ([dict(GOOD, schemas="acme")], "tenants[0].schemas"),
    ],
)
def test_policy_mistakes_name_their_field(tenants, field):
    with pytest.raises(InvalidOption) as refused:
        parse_tenants(tenants)
    assert refused.value.field == field


def test_policy_from_the_issue_parses():
    globex = {"name": "globex", "database": "saas", "schemas": ["globex"], "retention": {"days": 365, "lock_mode": "governance", "legal_hold": True}}
    acme, parsed_globex = parse_tenants([GOOD, globex])
    assert acme.retention.lock_mode == "COMPLIANCE" and acme.archive.storage_class == "GLACIER_IR"
    assert parsed_globex.schemas == ["globex"] and parsed_globex.retention.legal_hold is True


@pytest.mark.parametrize(
    "options, field",
    [
        ({"tenant": "initech"}, "tenant"),
        ({"chunk_size": "1KiB"}, "chunk_size"),
        ({"compression_level": 22}, "compression_level"),
        ({"compression_threads": -1}, "compression_threads"),
        ({"table_stats": "all"}, "table_stats"),
        ({"skip_if_newer_than": "soon"}, "skip_if_newer_than"),
    ],
)
def test_backup_options_are_checked(options, field):
    params = {"tenant": "acme", "tenants": [GOOD], "chunk_size": "4MiB", "compression_level": 3, "compression_threads": 2, "table_stats": "fingerprints"}
    params.update(options)
    with pytest.raises(InvalidOption) as refused:
        backup_request_from(params)
    assert refused.value.field == field


def test_pg_dump_gets_the_password_only_through_its_environment():
    kwargs = {"host": "db1", "port": 5433, "user": "backup", "password": "s3cret!", "dbname": "acme", "sslmode": "require",
              "keepalives_idle": "30"}
    argv, env = pg_dump_invocation("/usr/bin/pg_dump", kwargs, ["Tenant*One"], "00000003-0000001B-1")
    assert not any("s3cret" in arg for arg in argv)
    assert env["PGPASSWORD"] == "s3cret!" and env["PGHOST"] == "db1" and env["PGPORT"] == "5433"
    assert "--compress=0" in argv and "--format=custom" in argv
    assert "--snapshot=00000003-0000001B-1" in argv
    assert '--schema="Tenant*One"' in argv, "schema names are quoted so pattern characters mean themselves"
    assert any(arg.startswith("--dbname=") and "keepalives_idle='30'" in arg for arg in argv)


def test_manifest_mac_detects_edits_and_wrong_keys():
    wrapped = WrappedKey("file", "v1", b"blob")
    document = {"tenant": "acme", "backup_id": "20261125T000000Z-00000000", "wrapped_key": wrapped.as_dict(), "sizes": {"raw": 10}}
    mac_key = b"k" * 32
    raw = seal_manifest(document, mac_key)
    opened, data_key = open_manifest(raw, "m", lambda w: b"d" * 32, lambda key: mac_key)
    assert opened["sizes"] == {"raw": 10} and data_key == b"d" * 32

    edited = raw.replace(b'"raw":10', b'"raw":11')
    with pytest.raises(IntegrityFailed, match="fails its MAC check"):
        open_manifest(edited, "m", lambda w: b"d" * 32, lambda key: mac_key)
    with pytest.raises(IntegrityFailed, match="fails its MAC check"):
        open_manifest(raw, "m", lambda w: b"d" * 32, lambda key: b"x" * 32)
    with pytest.raises(IntegrityFailed, match="expected 'globex'"):
        open_manifest(raw, "m", lambda w: b"d" * 32, lambda key: mac_key, expect={"tenant": "globex"})


def test_s3_part_size_doubles_every_thousand_parts_up_to_the_s3_limit():
    from ansible_collections.keel.postgres.plugins.module_utils.backup.stores.s3_store import MAX_PART_BYTES, MAX_PARTS, part_size_for

    mib = 1024 * 1024
    assert [part_size_for(n, 8 * mib) for n in (1, 1000, 1001, 2001, 9999)] == [8 * mib, 8 * mib, 16 * mib, 32 * mib, 4096 * mib]
    total = sum(part_size_for(n, 8 * mib) for n in range(1, MAX_PARTS + 1))
    assert total > 7.5 * 1024**4, "the default reaches about 7.8 TiB within the part limit"
    assert part_size_for(MAX_PARTS, 64 * mib) == MAX_PART_BYTES
