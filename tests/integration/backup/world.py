"""A tenant world for backup tests: a database with known rows, tenant keys, a locked bucket, module runners.

Everything here is real: the PostgreSQL cluster, the SeaweedFS S3 server and
the key files. Tests of backup, backup_info, backup_retention (and later
restore) build on it so each test states only what it varies.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.collection_path import ensure_collection_importable

ensure_collection_importable()

from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider  # noqa: E402

MODULE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: module under test
      keel.postgres.{module}: "{{{{ module_args }}}}"
"""

# Rows whose text must never be found in a stored object.
MARKER = "keel-plaintext-marker-7c1d"

TENANT_SQL = """
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, created timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers, amount numeric(10,2), note text);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.test', '2026-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 2000) g;
INSERT INTO customers VALUES (0, '{marker}', '{marker}@example.test', '2026-01-01');
INSERT INTO orders (customer_id, amount, note) SELECT g % 2000 + 1, g * 0.37, md5(g::text) FROM generate_series(1, 20000) g;
CREATE SCHEMA globex;
CREATE TABLE globex.invoices (id int PRIMARY KEY, total float8, paid boolean);
INSERT INTO globex.invoices SELECT g, g / 3.0, g % 2 = 0 FROM generate_series(1, 500) g;
"""


def make_locked_bucket(s3_client: Any, name: str | None = None, object_lock: bool = True) -> str:
    bucket = name or f"keel-test-{secrets.token_hex(5)}"
    s3_client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
    return bucket


@dataclass
class BackupWorld:
    """One test's tenants, store and keys, and a runner for the backup-family modules."""

    pg_cluster: Any
    database: str
    s3_server: Any
    key_dir: Path
    bucket: str
    run_playbook: Any
    tenants: list[dict[str, Any]] = field(default_factory=list)

    @property
    def connection(self) -> dict[str, Any]:
        return {"login_host": self.pg_cluster.host, "port": self.pg_cluster.port, "login_user": self.pg_cluster.user}

    def s3_store(self, **extra: Any) -> dict[str, Any]:
        options = {
            "type": "s3",
            "bucket": self.bucket,
            "prefix": "pg/",
            "endpoint_url": self.s3_server.endpoint_url,
            "region": "us-east-1",
            "access_key": self.s3_server.access_key,
            "secret_key": self.s3_server.secret_key,
        }
        options.update(extra)
        return options

    @property
    def key_provider(self) -> dict[str, Any]:
        return {"type": "file", "directory": str(self.key_dir)}

    def keys(self) -> FileKeyProvider:
        return FileKeyProvider(str(self.key_dir))

    def add_tenant(self, name: str, with_key: bool = True, **policy: Any) -> dict[str, Any]:
        retention = {"days": 1}
        retention.update(policy.pop("retention", {}))
        tenant = {"name": name, "database": self.database, "retention": retention}
        tenant.update(policy)
        self.tenants.append(tenant)
        if with_key:
            self.keys().create(name)
        return tenant

    def module_args(self, store: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"tenants": self.tenants, "store": store or self.s3_store(), "key_provider": self.key_provider}
        args.update(options)
        return args

    def run(self, module: str, check: bool = False, env: dict[str, str] | None = None, **options: Any) -> tuple[Any, dict[str, Any]]:
        """Run keel.postgres.<module>; returns (playbook result, module result)."""
        args = self.module_args(**options)
        if module == "backup":
            args = {**self.connection, **args}
        result = self.run_playbook(MODULE_PLAYBOOK.format(module=module), extra_vars={"module_args": args}, check=check, env=env)
        return result, result.task("module under test")["result"]

    def backup(self, tenant: str, **options: Any) -> dict[str, Any]:
        result, task = self.run("backup", tenant=tenant, **options)
        assert result.rc == 0, task
        return task

    def run_in_background(self, module: str, **options: Any) -> tuple[threading.Thread, dict[str, Any]]:
        """Start a module run on a thread; the dict gets `result` and `task` when it ends."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            outcome["result"], outcome["task"] = self.run(module, **options)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread, outcome

    def objects(self, prefix: str = "pg/") -> dict[str, dict[str, Any]]:
        """Every current object under ``prefix`` (key -> list_objects_v2 entry)."""
        client = self.s3_server.client()
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"]: item for item in listed.get("Contents", [])}


def new_world(pg_cluster: Any, pg_db: str, s3_server: Any, tmp_path: Any, run_playbook: Any, schema_sql: str) -> BackupWorld:
    """A database loaded with ``schema_sql``, a private (0700) key directory and a fresh bucket with Object Lock."""
    pg_cluster.execute(schema_sql, dbname=pg_db)
    key_dir = tmp_path / "world-keys"
    key_dir.mkdir(mode=0o700)
    return BackupWorld(pg_cluster, pg_db, s3_server, key_dir, make_locked_bucket(s3_server.client()), run_playbook)
