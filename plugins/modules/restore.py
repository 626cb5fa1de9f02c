#!/usr/bin/python
# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: restore
short_description: Restore a tenant's encrypted backup into a database
version_added: 0.1.0
description:
  - Restores one backup made by M(keel.postgres.backup) (an id, or V(latest)) into O(target_db).
  - The manifest is authenticated with the tenant's key first; the stream is then read, authenticated chunk by chunk,
    decompressed and fed to C(pg_restore) without a plaintext file on disk.
  - With O(jobs=1) C(pg_restore) runs in a single transaction and is stopped before it commits if any chunk fails
    authentication or the stream is cut short, so a damaged backup leaves the target as it was.
  - With O(jobs) above 1, C(pg_restore -j) needs a seekable archive. The authenticated dump is then written to a file in a
    private temporary directory (mode 0700, file 0600) that is removed whatever happens, and C(pg_restore) starts only
    once the whole stream has been authenticated. Use one job where no plaintext may touch disk.
  - Refuses a target that already holds objects the backup would collide with, unless O(clean).
  - A target database created by this run is dropped again if the restore fails.
  - Every run appends an audit event to the store and returns it.
author:
  - keel.postgres maintainers (@keel-postgres)
extends_documentation_fragment:
  - keel.postgres.connection
  - keel.postgres.backup_tenants
  - keel.postgres.backup_store
  - keel.postgres.key_provider
  - keel.postgres.observability
attributes:
  check_mode:
    support: full
    description: Authenticates the manifest, checks the target and reports the plan; restores nothing.
  diff_mode:
    support: none
    description: The result reports what was replaced.
options:
  tenant:
    description: The tenant whose backup is restored; must be one of O(tenants).
    type: str
    required: true
  backup_id:
    description: The backup to restore, or V(latest) for the newest backup whose manifest authenticates.
    type: str
    default: latest
  target_db:
    description:
      - The database to restore into. The connection options reach the server; O(db) is only the database connected to
        for checking and creating the target (default V(postgres)).
    type: str
    required: true
  create:
    description: Create O(target_db) (from C(template0)) when it does not exist.
    type: bool
    default: false
  clean:
    description:
      - Restore into a target that already holds objects of the backup, dropping each one first (C(pg_restore --clean --if-exists)).
        Objects that the backup does not contain are left alone.
    type: bool
    default: false
  jobs:
    description: Parallel C(pg_restore) jobs; above 1 a private temporary file is used (see the description).
    type: int
    default: 1
  no_owner:
    description: Do not restore ownership and privileges (C(--no-owner --no-privileges)), for a server without the original roles.
    type: bool
    default: false
  temp_dir:
    description: Where the private temporary directory goes when O(jobs) is above 1. Defaults to the system's temporary directory.
    type: path
  client_bin_dir:
    description: Directory of C(pg_restore). Defaults to the newest one found on PATH or in the usual per-version directories.
    type: path
notes:
  - The password reaches C(pg_restore) through its environment, never its command line.
seealso:
  - module: keel.postgres.backup
  - module: keel.postgres.restore_verify
"""

EXAMPLES = r"""
- name: Disaster recovery - restore acme's newest backup into a fresh database
  keel.postgres.restore:
    tenant: acme
    tenants: "{{ keel_tenants }}"
    target_db: acme_restored
    create: true
    store: {type: s3, bucket: acme-backups, region: eu-west-1}
    key_provider: {type: aws_kms, region: eu-west-1}

- name: Put one schema-per-tenant back over its damaged copy
  keel.postgres.restore:
    tenant: globex
    tenants: "{{ keel_tenants }}"
    backup_id: 20261124T020000Z-3f9a1c2b
    target_db: saas
    clean: true
    store: {type: file, path: /srv/backups}
    key_provider: {type: file, directory: /etc/keel/keys}
"""

RETURN = r"""
backup_id:
  description: The backup restored.
  returned: always
  type: str
target_db:
  description: The database restored into.
  returned: always
  type: str
created:
  description: Whether this run created O(target_db).
  returned: success
  type: bool
replaced:
  description: Objects that existed in the target and were replaced (O(clean)); at most 20 are named.
  returned: success
  type: list
  elements: str
dump_bytes:
  description: Bytes of the decrypted, decompressed dump fed to pg_restore.
  returned: success
  type: int
stored_bytes:
  description: Bytes read from the store.
  returned: success
  type: int
spooled_to_private_file:
  description: Whether a private temporary file was used (O(jobs) above 1).
  returned: success
  type: bool
duration_s:
  description: Wall time of the restore itself.
  returned: success
  type: float
stages_ms:
  description: C(restore), and C(spool) when a temporary file was used.
  returned: success
  type: dict
plan:
  description: In check mode, what would be restored and replaced.
  returned: check mode
  type: dict
audit:
  description: The audit event written for this run (no secrets).
  returned: when a restore was attempted
  type: dict
metrics:
  description:
    - Wall time per phase in milliseconds and byte counters.
    - The same figures go to O(metrics_textfile) and, as spans, to O(otlp_endpoint); docs/observability.md lists
      them.
  returned: always
  type: dict
  contains:
    duration_ms:
      description: Wall time of the run in milliseconds.
      type: float
      returned: always
    phases_ms:
      description: Wall time per phase in milliseconds, repetitions added up.
      type: dict
      returned: always
    phases:
      description:
        - Per phase, C(duration_ms), C(repetitions), the C(counters) counted while it ran and C(rates)
          (C(<counter>_per_second) for counters of rows and bytes).
      type: dict
      returned: always
    counters:
      description:
        - Counts and sums of the run. Names carry their unit (C(_bytes), C(_ms), C(_seconds)); a name without one is a
          count. Counters named C(longest_*), C(peak_*) or C(max_*) keep the largest value seen.
      type: dict
      returned: always
    gauges:
      description: Readings of the run, such as sizes before and after, throughput or cost.
      type: dict
      returned: always
    series:
      description: Readings split by labels, each with C(name), C(labels) and C(value) (per tenant and tier, say).
      type: list
      elements: dict
      returned: always
    labels:
      description:
        - What the run worked on (C(db), C(schema), C(table), C(migration), C(tenant), C(tier), C(store)); the same
          labels go on the Prometheus series and the spans.
      type: dict
      returned: always
    exported:
      description:
        - Where the metrics went, C(textfile) (the path written, or null), C(trace_id) (32 hex digits, or null) and
          C(spans) (how many spans were sent).
      type: dict
      returned: always
"""

import datetime

from ansible_collections.keel.postgres.plugins.module_utils.backup.backup_selection import check_backup_id
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import record_store_requests
from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_pipeline import RestoreOptions
from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_run import RestoreRequest, RestoreRun
from ansible_collections.keel.postgres.plugins.module_utils.backup.shared_options import backup_family_spec, backup_library_errors, open_store_and_keys
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import parse_tenants, select_tenant
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.keel_module import KeelModule


def argument_spec():
    spec = backup_family_spec()
    spec.update(
        tenant=dict(type="str", required=True),
        backup_id=dict(type="str", default="latest"),
        target_db=dict(type="str", required=True),
        create=dict(type="bool", default=False),
        clean=dict(type="bool", default=False),
        jobs=dict(type="int", default=1),
        no_owner=dict(type="bool", default=False),
        temp_dir=dict(type="path"),
        client_bin_dir=dict(type="path"),
    )
    return spec


def request_from(params):
    if not 1 <= params["jobs"] <= 64:
        raise InvalidOption("jobs", "must be between 1 and 64, not {0}".format(params["jobs"]))
    if not params["target_db"]:
        raise InvalidOption("target_db", "must name a database")
    return RestoreRequest(
        tenant=select_tenant(parse_tenants(params["tenants"]), params["tenant"]),
        backup_id=check_backup_id(params["backup_id"]),
        target_db=params["target_db"],
        create=params["create"],
        options=RestoreOptions(jobs=params["jobs"], clean=params["clean"], no_owner=params["no_owner"], temp_dir=params.get("temp_dir")),
        actor=params.get("audit_actor"),
        maintenance_db=params.get("db") or "postgres",
        client_bin_dir=params.get("client_bin_dir"),
    )


def restore(module):
    request = request_from(module.params)
    store, keys = open_store_and_keys(module.params)
    run = RestoreRun(
        request, store, keys,
        connect=module.connect_to,
        conn_kwargs=lambda database: module.client_tool_connection(database, "pg_restore"),
        metrics=module.metrics,
    )
    module.metrics.label(store=store.kind, tenant=request.tenant.name, db=request.target_db, tier=request.tenant.retention.tier)
    try:
        if module.check_mode:
            plan = run.plan()
            return {"changed": True, "tenant": request.tenant.name, "backup_id": plan["backup_id"], "target_db": request.target_db, "plan": plan}
        return run.execute(datetime.datetime.now(datetime.timezone.utc))
    finally:
        record_store_requests(store, module.metrics)


def main():
    module = KeelModule("restore", argument_spec(), supports_check_mode=True)
    module.require_libraries(backup_library_errors())
    module.run(restore)


if __name__ == "__main__":
    main()
