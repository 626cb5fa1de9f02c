# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Handing a detached partition to keel's backup before it may be dropped.

The backup engine dumps whole schemas. To back up exactly one table without
changing it, the table is moved (``ALTER TABLE ... SET SCHEMA``, metadata
only, under the lock guard) into a staging schema of its own,
``keel_archive_<oid>``, backed up as that schema with the archive tenant's
store and key, and moved back once the store shows the published backup. A
run killed in between leaves the table in its staging schema with its mark
(see marker.py), and the next run carries on from there.

The backup is an ordinary keel backup of the archive tenant, encrypted with
its key, locked by its retention, restorable with keel.postgres.restore
(the table comes back in schema ``keel_archive_<oid>``).
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, Mapping

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_request import backup_request_from
from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_run import BackupRun
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.errors import StoreFailed
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.marker import ARCHIVED, DetachedTable, write_mark
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, run_in_guarded_transaction

try:
    from psycopg import sql
except ImportError:  # reported by KeelModule before any of this runs
    sql = None

STAGING_PREFIX = "keel_archive_"


def staging_schema(table: DetachedTable) -> str:
    return "{0}{1}".format(STAGING_PREFIX, table.oid)


class PartitionArchiver:
    """Backs up detached partitions for one archive tenant, through BackupRun, and proves each backup is in the store."""

    def __init__(self, params: Mapping[str, Any], database: str, connect_to: Callable[[str], Any],
                 client_tool_connection: Callable[[str, str], Dict[str, Any]], metrics: RunMetrics) -> None:
        archive = params["archive"]
        self.params = params
        self.tenant = archive["tenant"]
        self.database = database
        self.connect_to = connect_to
        self.client_tool_connection = client_tool_connection
        self.metrics = metrics
        self.store, self.keys = open_store_and_keys(params)

    def check(self, now: datetime.datetime) -> None:
        """Tenant, key and store are refused before anything changes (no write)."""
        self._run("keel_archive_check").check_store_and_key(now)

    def archive(self, conn: Any, table: DetachedTable, policy: LockPolicy) -> Dict[str, Any]:
        schema = staging_schema(table)
        name = table.name
        if table.schema != schema:
            _move(conn, table.schema, name, schema, policy, self.metrics, create=True)
        with self.metrics.phase("archive_backup"):
            result = self._run(schema).execute(datetime.datetime.now(datetime.timezone.utc))
        self._confirm(result)
        record = dict(table.record, state=ARCHIVED, tenant=self.tenant, backup_id=result["backup_id"],
                      object=result["object"], manifest=result["manifest"])
        write_mark(conn, schema, name, record, policy, self.metrics)
        home = return_home(conn, DetachedTable(schema, name, table.oid, False, record), policy, self.metrics)
        self.metrics.count("partitions_archived")
        return {"table": home, "tenant": self.tenant, "backup_id": result["backup_id"],
                "object": result["object"], "manifest": result["manifest"], "stored_bytes": result["sizes"]["object"],
                "store": result["store"]}

    def _run(self, schema: str) -> BackupRun:
        archive = self.params["archive"]
        request = backup_request_from({
            "tenants": self.params["tenants"],
            "tenant": self.tenant,
            "schemas": [schema],
            # The partition lives in the database this module is connected to, whatever the tenant's database.
            "db": self.database,
            "table_stats": archive.get("table_stats") or "fingerprints",
            "audit_actor": self.params.get("audit_actor"),
        })
        return BackupRun(request, self.store, self.keys, connect=self.connect_to, metrics=self.metrics,
                         client_bin_dir=archive.get("client_bin_dir"),
                         conn_kwargs=self.client_tool_connection(self.database, "pg_dump"))

    def _confirm(self, result: Dict[str, Any]) -> None:
        """The data object and its manifest must be readable back from the store before the table may go."""
        with self.metrics.phase("archive_confirm"):
            data = self.store.head(result["object"])
            manifest = self.store.head(result["manifest"])
        if data is None or manifest is None or data.size != result["sizes"]["object"]:
            raise StoreFailed("archive {0} of tenant {1!r} is not complete in the store (data {2}, manifest {3}); the detached "
                              "table is kept".format(result["backup_id"], self.tenant, "present" if data else "missing",
                                                     "present" if manifest else "missing"))


def return_home(conn: Any, table: DetachedTable, policy: LockPolicy, metrics: RunMetrics) -> str:
    """Move a table out of its staging schema (if it is in one) back to where it was detached; its name, qualified."""
    if table.schema == table.home or table.schema != staging_schema(table):
        return table.qualified
    _move(conn, table.schema, table.name, table.home, policy, metrics, create=False)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} RESTRICT").format(sql.Identifier(table.schema)))
    return "{0}.{1}".format(table.home, table.name)


def _move(conn: Any, schema: str, name: str, target: str, policy: LockPolicy, metrics: RunMetrics, create: bool) -> None:
    def work(c: Any) -> None:
        if create:
            c.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(sql.Identifier(target)))
        c.execute(sql.SQL("ALTER TABLE {0} SET SCHEMA {1}").format(sql.Identifier(schema, name), sql.Identifier(target)))

    run_in_guarded_transaction(conn, work, policy, metrics, ["{0}.{1}".format(schema, name)],
                               "move {0}.{1} to schema {2}".format(schema, name, target))
