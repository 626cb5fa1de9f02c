# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Adding constraints without a long lock: ``NOT VALID`` first, ``VALIDATE`` after.

``ADD CONSTRAINT ... NOT VALID`` only takes its lock for a moment (it checks
new rows from then on); ``VALIDATE CONSTRAINT`` scans the existing rows under
SHARE UPDATE EXCLUSIVE, which lets reads and writes go on.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    constraint_validated,
    table_identifier,
)

try:
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError:
    pg_errors = sql = None


def add_validated_constraint(ctx: MigrationContext, info: TableInfo, name: str, definition: Any,
                             other_tables: List[str], meaning: Optional[str] = None) -> None:
    tables = [info.qualified, *other_tables]
    if constraint_validated(ctx.conn, info.oid, name) is None:
        statement = sql.SQL("ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID").format(
            table=table_identifier(info), name=sql.Identifier(name), definition=definition)
        ctx.guarded("add constraint {0} on {1}".format(name, info.qualified), tables,
                    lambda conn: conn.execute(statement))
    if not constraint_validated(ctx.conn, info.oid, name):
        validate = sql.SQL("ALTER TABLE {table} VALIDATE CONSTRAINT {name}").format(
            table=table_identifier(info), name=sql.Identifier(name))
        try:
            ctx.guarded("validate constraint {0} on {1}".format(name, info.qualified), tables,
                        lambda conn: conn.execute(validate), long_running=True)
        except Exception as exc:
            if pg_errors is None or not isinstance(exc, pg_errors.IntegrityError):
                raise
            # A NOT VALID constraint still checks every new row: left in place, it would reject
            # writes the old application made before the migration began.
            drop_constraint(ctx, info, name)
            raise KeelError("existing rows of {0} violate {1}: {2}. The constraint was removed again so the "
                            "application keeps writing; fix the data, then run the migration again".format(
                                info.qualified, meaning or name, str(exc).strip().splitlines()[0])) from None


def drop_constraint(ctx: MigrationContext, info: TableInfo, name: str) -> None:
    if constraint_validated(ctx.conn, info.oid, name) is None:
        return
    statement = sql.SQL("ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}").format(
        table=table_identifier(info), name=sql.Identifier(name))
    ctx.guarded("drop constraint {0} on {1}".format(name, info.qualified), [info.qualified],
                lambda conn: conn.execute(statement))
