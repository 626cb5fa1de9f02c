"""The collection as users get it: built tarball, installed copy, module run from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.harness.collection_path import REPO_ROOT

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _run(argv, env=None, cwd=None):
    completed = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False)
    if completed.returncode != 0:
        raise AssertionError("{0} failed ({1}):\n{2}\n{3}".format(argv[0], completed.returncode, completed.stdout[-3000:], completed.stderr[-3000:]))
    return completed.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    _run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO_ROOT), "--output-path", str(out)])
    (built,) = out.glob("keel-postgres-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory):
    target = tmp_path_factory.mktemp("installed")
    # --force: another keel.postgres 0.1.0 elsewhere on the default paths (e.g. one ansible-lint
    # installed) would otherwise make ansible-galaxy skip this install as already done.
    _run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", str(tarball), "-p", str(target)])
    return target


def _only_installed_copy(installed):
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(installed),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    return env


def test_tarball_holds_the_collection_and_no_local_state(tarball):
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    manifest = json.loads(_member_text(tarball, "MANIFEST.json"))
    assert manifest["collection_info"]["version"] == "0.1.0"
    assert manifest["collection_info"]["license"] == ["GPL-3.0-or-later"]
    assert "plugins/modules/preflight.py" in names
    assert "plugins/module_utils/pg.py" in names
    assert "roles/preflight/meta/argument_specs.yml" in names
    leaked = [
        name
        for name in names
        if name.split("/")[0] in {".build", ".venv", ".sandbox", ".git", ".ansible"} or "/__pycache__/" in "/" + name or name.startswith("tests/output")
    ]
    assert leaked == []


def _member_text(tarball, member):
    with tarfile.open(tarball) as archive:
        return archive.extractfile(member).read().decode()


def test_module_runs_from_the_installed_copy(installed, pg_cluster, pg_db):
    env = _only_installed_copy(installed)
    args = json.dumps({"login_host": pg_cluster.host, "port": pg_cluster.port, "db": pg_db})
    output = _run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-o",
            "-e",
            "ansible_python_interpreter={0}".format(sys.executable),
            "-m",
            "keel.postgres.preflight",
            "-a",
            args,
        ],
        env=env,
    )
    host, separator, payload = output.partition(" => ")
    assert separator, output
    assert host.strip() == "localhost | SUCCESS"
    result = json.loads(payload)
    assert result["passed"] is True and result["changed"] is False
    assert result["server"]["database"] == pg_db


def test_ansible_doc_renders_module_and_role_from_the_installed_copy(installed):
    env = _only_installed_copy(installed)
    module_doc = _run([str(BIN / "ansible-doc"), "keel.postgres.preflight"], env=env)
    assert str(installed) in module_doc  # the documented file is the installed one
    for text in ("fail_on", "max_transaction_age", "login_password", "connect_params", "RETURN VALUES"):
        assert text in module_doc
    role_doc = _run([str(BIN / "ansible-doc"), "-t", "role", "keel.postgres.preflight"], env=env)
    assert "preflight_fail_on" in role_doc
