# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A migration's version schema through its life: published at start, older ones retired at finalize,
its own dropped on rollback or revert."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import version_schema as vs
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.old_readers import wait_for_old_readers
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.phases import MigrationBusy


class MigrationVersions:
    def __init__(self, migration: str, base_schema: str, schema: Optional[str]) -> None:
        self.migration = migration
        self.base_schema = base_schema
        self.schema = schema  # None: this migration publishes no version schema

    def refuse_concurrent(self, conn: Any) -> None:
        """Versions of one base schema form a line: a second unfinished migration would fork it."""
        if self.schema is None:
            return
        for record in catalog.list_migrations(conn):
            if (record.name != self.migration and record.version_schema and record.base_schema == self.base_schema
                    and record.phase in catalog.IN_FLIGHT):
                until = record.revertible_until()
                raise MigrationBusy(
                    "migration {0} ({1}) publishes version schemas of schema {2} and is not finished; finalize it "
                    "(state: finalized){3}, revert or roll it back before starting {4}".format(
                        record.name, record.phase, self.base_schema,
                        "" if until is None else ", or wait until its revert window ends at {0}".format(
                            until.isoformat()), self.migration))

    def publish(self, ctx: MigrationContext, shape_views: Any, tables: List[str]) -> Optional[str]:
        if self.schema is None or vs.schema_exists(ctx.conn, self.schema):
            return None
        shapes = shape_views(vs.current_shapes(ctx.conn, self.base_schema))

        def work(conn: Any) -> None:
            for statement in vs.publish_statements(conn, self.schema, self.migration, self.base_schema, shapes):
                conn.execute(statement)
            vs.record_published(conn, self.schema, self.migration, self.base_schema, shapes)

        ctx.guarded("publish version schema {0}".format(self.schema), tables, work)
        return self.schema

    def drop_own(self, ctx: MigrationContext, tables: List[str]) -> None:
        if self.schema is not None:
            self._drop(ctx, self.schema, tables)

    def older(self, conn: Any) -> List[str]:
        names = [v["name"] for v in vs.published_versions(conn, self.base_schema)]
        if self.schema in names:
            return names[:names.index(self.schema)]
        return names

    def previous(self, conn: Any) -> Optional[str]:
        older = self.older(conn)
        return older[-1] if older else None

    def read_paths(self, conn: Any) -> Tuple[List[str], List[str]]:
        """search_path of the old and the new version, for dual reads."""
        previous = self.previous(conn)
        old = [previous, self.base_schema] if previous else [self.base_schema]
        return old, [self.schema, self.base_schema] if self.schema else [self.base_schema]

    def retire_older(self, ctx: MigrationContext, tables: List[str], wait_timeout: Optional[float]) -> dict:
        """Drop the versions before this one: the old shape they read is about to go."""
        older = self.older(ctx.conn)
        waited = wait_for_old_readers(ctx.conn, older, wait_timeout) if older and wait_timeout is not None else {}
        for schema in older:
            self._drop(ctx, schema, tables)
        return dict(waited, retired=older)

    def _drop(self, ctx: MigrationContext, schema: str, tables: Sequence[str]) -> None:
        def work(conn: Any) -> None:
            for statement in vs.drop_statements(schema):
                conn.execute(statement)
            vs.record_dropped(conn, schema)

        # DROP SCHEMA takes ACCESS EXCLUSIVE on each view: readers of that version queue behind it.
        ctx.guarded("drop version schema {0}".format(schema), list(tables), work)
