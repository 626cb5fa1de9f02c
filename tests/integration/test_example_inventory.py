"""inventories/example as Ansible reads it: tenants valid for the modules, the vault opening, no secret in the clear."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.harness.collection_path import REPO_ROOT, ensure_collection_importable

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.tenant_key_run import decode_material  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants  # noqa: E402

pytestmark = pytest.mark.integration

INVENTORY_DIR = REPO_ROOT / "inventories" / "example"
HOSTS = INVENTORY_DIR / "hosts.yml"
VAULT_PASSWORD_FILE = INVENTORY_DIR / "vault-password.example"
VAULT_FILE = INVENTORY_DIR / "group_vars" / "all" / "vault.yml"
# Variable names that hold a secret wherever they appear. In an unencrypted file such a variable may
# only refer to another variable ("{{ vault_... }}"), never hold the value itself.
SECRET_NAME = re.compile(r"^\s*-?\s*([A-Za-z0-9_]*(?:password|secret|token|key_material|access_key)[A-Za-z0-9_]*|vault_[A-Za-z0-9_]+)\s*:\s*(.*)$")


def _bin(name: str) -> str:
    """The project's tool next to the interpreter running the tests (the .venv under make)."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def inventory() -> Dict[str, Any]:
    completed = subprocess.run(
        [_bin("ansible-inventory"), "-i", str(HOSTS), "--vault-password-file", str(VAULT_PASSWORD_FILE), "--list"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, check=False, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def hostvars(inventory: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return inventory["_meta"]["hostvars"]


def test_two_primaries_in_their_own_groups(inventory, hostvars):
    assert sorted(inventory["pg_primaries"]["children"]) == ["pg_eu", "pg_us"]
    assert sorted(hostvars) == ["pg-eu-1", "pg-us-1"]
    connections = {host: hostvars[host]["keel_connection"] for host in hostvars}
    assert connections["pg-eu-1"]["login_host"] != connections["pg-us-1"]["login_host"]
    for connection in connections.values():
        # the contract's keys only; a password in keel_connection would be a plain var
        assert set(connection) <= {"login_host", "port", "login_user", "ssl_mode", "ca_cert"}


def test_tenants_parse_and_differ(hostvars):
    for host, variables in hostvars.items():
        tenants = parse_tenants(variables["keel_tenants"])
        assert [t.name for t in tenants] == ["acme", "globex", "initech"], host
        policies = {t.name: t.retention for t in tenants}
        assert len({p.days for p in policies.values()}) == 3
        assert len({p.tier for p in policies.values()}) == 3
        assert {p.lock_mode for p in policies.values()} == {"COMPLIANCE", "GOVERNANCE"}
        assert policies["globex"].legal_hold and not policies["acme"].legal_hold
        by_name = {t.name: t for t in tenants}
        assert by_name["globex"].schemas == ["globex"]
        assert by_name["acme"].archive is not None and by_name["acme"].archive.storage_class == "GLACIER_IR"


def test_price_table_prices_every_tier(hostvars):
    variables = hostvars["pg-eu-1"]
    priced = set(variables["keel_price_table"])
    tiers = {t.retention.tier for t in parse_tenants(variables["keel_tenants"])}
    classes = {t.archive.storage_class for t in parse_tenants(variables["keel_tenants"]) if t.archive}
    assert tiers | classes <= priced  # otherwise the cost report's total is null


def test_vault_opens_to_a_tenant_key_and_a_password(hostvars):
    assert VAULT_FILE.read_text(encoding="utf-8").startswith("$ANSIBLE_VAULT;")
    variables = hostvars["pg-eu-1"]
    material = variables["vault_keel_globex_key_b64"]
    assert len(base64.b64decode(material, validate=True)) == 32
    # exactly what keel.postgres.tenant_key does with key_material
    assert len(decode_material(material, "file", "present")) == 32
    assert variables["keel_tenant_key_material"] == {"globex": "{{ vault_keel_globex_key_b64 }}"}
    assert variables["keel_key_provider"]["type"] == "file"  # key_material is refused with aws_kms
    assert variables["vault_keel_pg_password"]
    assert variables["keel_pg_password"] == "{{ vault_keel_pg_password }}"


def _plain_files() -> List[Path]:
    return [p for p in sorted(INVENTORY_DIR.rglob("*")) if p.is_file() and not p.read_bytes().startswith(b"$ANSIBLE_VAULT;")]


def test_no_secret_in_unencrypted_files(hostvars):
    secrets = {value for name, value in hostvars["pg-eu-1"].items() if name.startswith("vault_")}
    assert secrets, "the vault holds no vault_* variable"
    vault_password = VAULT_PASSWORD_FILE.read_text(encoding="utf-8").strip()
    plain = _plain_files()
    assert VAULT_FILE not in plain
    for path in plain:
        text = path.read_text(encoding="utf-8")
        for secret in secrets:
            assert secret not in text, "{0} holds a vaulted value in the clear".format(path)
        if path != VAULT_PASSWORD_FILE:
            assert vault_password not in text, "{0} repeats the vault password".format(path)
        for number, line in enumerate(text.splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            match = SECRET_NAME.match(line)
            if match and match.group(2).strip():
                value = match.group(2).strip()
                assert re.fullmatch(r"""(["'])\{\{\s*vault_[A-Za-z0-9_]+\s*\}\}\1""", value), (
                    "{0}:{1}: {2} is set to a literal, not to a vault variable".format(path, number, match.group(1)))


def test_vault_password_file_says_it_is_an_example():
    text = VAULT_PASSWORD_FILE.read_text(encoding="utf-8")
    assert "EXAMPLE" in text and "never reuse" in text


def test_directory_as_inventory_adds_no_host():
    """``-i inventories/example`` reads every file there; the password file must not become a host."""
    completed = subprocess.run(
        [_bin("ansible-inventory"), "-i", str(INVENTORY_DIR), "--vault-password-file", str(VAULT_PASSWORD_FILE), "--list"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, check=False, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert sorted(json.loads(completed.stdout)["_meta"]["hostvars"]) == ["pg-eu-1", "pg-us-1"]
