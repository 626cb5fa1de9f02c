# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throwaway database a backup is restored into (restore verification, migration rehearsal).

Its name carries the tenant and a random suffix within PostgreSQL's 63-byte
limit; it is created from template0 on the maintenance database, made ready
for the backup's schemas, and dropped again by whoever created it. Dropping
never raises: the run's record (an outcome, a rehearsal) must still come back,
with the reason the database is left behind. Who owns a scratch database
while it exists is ``scratch_ownership``.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_target import create_database, drop_database, make_room_for_schemas
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.sql_conditions import describe_condition, sql_condition

try:
    import psycopg
except ImportError:  # reported by KeelModule through missing_required_lib
    psycopg = None

MAX_IDENTIFIER = 63
_SUFFIX = 9  # "_" + 8 hex

Connect = Callable[[str], Any]  # database name -> autocommit psycopg connection


def scratch_database_name(prefix: str, tenant: str, token: Optional[str] = None) -> str:
    """``<prefix><tenant>_<8 hex>``, the tenant part shortened to stay within PostgreSQL's 63-byte names."""
    return "{0}{1}_{2}".format(prefix, tenant[:MAX_IDENTIFIER - len(prefix) - _SUFFIX], token or secrets.token_hex(4))


class ScratchDatabase:
    def __init__(self, name: str, connect: Connect, maintenance_db: str) -> None:
        self.name = name
        self.connect = connect
        self.maintenance_db = maintenance_db
        self.created = False

    def create(self) -> None:
        """CREATE DATABASE from template0; a server error is raised as it is, for the caller to classify."""
        maintenance = self.connect(self.maintenance_db)
        try:
            create_database(maintenance, self.name)
        finally:
            maintenance.close()
        self.created = True

    def prepare(self, schemas: Sequence[str]) -> None:
        """Make room for the backup's schemas (a fresh database has ``public``, which a dump may create itself)."""
        fresh = self.connect(self.name)
        try:
            make_room_for_schemas(fresh, schemas)
        finally:
            fresh.close()

    def drop(self) -> Optional[str]:
        """Drop it if this run created it; the problem, as a sentence to record, when that failed. Never raises."""
        if not self.created:
            return None
        try:
            maintenance = self.connect(self.maintenance_db)
            try:
                drop_database(maintenance, self.name)
            finally:
                maintenance.close()
        except (KeelError, psycopg.Error) as exc:
            problem = exc.message if isinstance(exc, KeelError) else describe_condition(sql_condition(exc))
            return "the scratch database {0} could not be dropped ({1}): drop it by hand".format(self.name, problem)
        return None
