from __future__ import annotations

import os
import stat

from ansible_collections.keel.postgres.plugins.module_utils import client_tools


def test_parses_debian_and_plain_version_strings():
    assert client_tools.parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n") == 150018
    assert client_tools.parse_tool_version("pg_restore (PostgreSQL) 17.2") == 170002
    assert client_tools.parse_tool_version("pg_dump (PostgreSQL) 9.6.24") == 90624
    assert client_tools.parse_tool_version("pg_dump (PostgreSQL) 18beta1") == 180000
    assert client_tools.parse_tool_version("not a version") is None


def test_major_versions_before_and_after_10():
    assert client_tools.major_version(150018) == "15"
    assert client_tools.major_version(90624) == "9.6"
    assert client_tools.display_version(90624) == "9.6.24"


def _fake_tool(directory, name, version_line):
    # A stand-in binary: only its --version output matters to this check, and
    # an older PostgreSQL client cannot be installed on the test machine.
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\necho '{0}'\n".format(version_line))
    os.chmod(path, stat.S_IRWXU)
    return path


def test_older_client_than_server_is_incompatible(tmp_path):
    _fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 13.4")
    report = client_tools.inspect_client_tool("pg_dump", str(tmp_path), 150018)
    assert report["compatible"] is False
    assert "pg_dump 13.4" in report["problem"] and "older than the server (15.18)" in report["problem"]
    assert "PostgreSQL 15 client tools" in report["problem"]


def test_newer_client_serves_older_server(tmp_path):
    _fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 17.1")
    report = client_tools.inspect_client_tool("pg_dump", str(tmp_path), 150018)
    assert report["compatible"] is True
    assert report["problem"] is None


def test_missing_tool_says_where_it_looked(tmp_path):
    report = client_tools.inspect_client_tool("pg_restore", str(tmp_path), 150018)
    assert report["compatible"] is False
    assert report["path"] is None
    assert str(tmp_path) in report["problem"]
