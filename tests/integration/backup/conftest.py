"""Fixtures of the backup integration tests."""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from tests.harness.kms_server import KmsServer
from tests.integration.backup.world import MARKER, TENANT_SQL, BackupWorld, new_world


@pytest.fixture(scope="session")
def kms_server() -> Iterator[KmsServer]:
    """An AWS KMS API (moto_server, the one accepted mock) on 127.0.0.1 for the whole session.

    moto keeps keys in memory for the server's lifetime: tests isolate
    themselves with their own tenant names or key_provider.alias_prefix.
    """
    server = KmsServer()
    # Teardown normally stops it; atexit covers an interpreter exit that skips teardown,
    # and the parent-death signal covers SIGKILL. (The janitor knows only PostgreSQL and S3
    # servers, and an in-memory moto leaves nothing on disk worth its cleanup.)
    atexit.register(server.remove)
    try:
        server.start()
        yield server
    finally:
        server.remove()
        atexit.unregister(server.remove)


@pytest.fixture
def world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook) -> BackupWorld:
    """The tenants' database (TENANT_SQL: customers and orders with a marker row, schema globex), key files, a locked bucket.

    Test modules that need tenants registered override it: ``def world(world): world.add_tenant(...)``.
    """
    return new_world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook, TENANT_SQL.format(marker=MARKER))
