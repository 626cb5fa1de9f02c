# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving a shadow write between its states: enabled, paused, disabled, cutover, reverted."""

from __future__ import annotations

import json
from typing import Any, Dict, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, KeelError
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog as migrations_catalog
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import run_batches
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import (
    BackfillSettings,
    MigrationContext,
)
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.table_info import (
    TableInfo,
    describe,
    resolve_table,
    table_identifier,
)
from ansible_collections.keel.postgres.plugins.module_utils.shadow import catalog
from ansible_collections.keel.postgres.plugins.module_utils.shadow import triggers as t
from ansible_collections.keel.postgres.plugins.module_utils.shadow.drift import check_drift
from ansible_collections.keel.postgres.plugins.module_utils.shadow.shadow_metrics import record_status, trigger_cost
from ansible_collections.keel.postgres.plugins.module_utils.shadow.spec import (
    ShadowSpec,
    key_columns,
    source_key_for,
    validate_mapping,
)

try:
    from psycopg import sql
except ImportError:
    sql = None

# Keys resynced per transaction. The batch holds SHARE on the source (writers wait) while it runs, so it
# stays small: the benchmark measured ~1 s application stalls with 1000-key batches on a busy table.
REPLAY_BATCH = 200


class ShadowRequest(NamedTuple):
    spec: ShadowSpec
    state: str
    drift_check: str
    policy: LockPolicy
    backfill: BackfillSettings


class ShadowRun:
    def __init__(self, conn: Any, request: ShadowRequest, metrics: RunMetrics) -> None:
        self.conn = conn
        self.request = request
        self.spec = request.spec
        self.metrics = metrics
        self.source = self._require(self.spec.source, "source")
        self.name = "{0}->{1}".format(self.source.qualified, self._qualified(self.spec.target))
        self.ctx = MigrationContext(conn, "shadow:" + self.name, request.policy, request.backfill, metrics)
        self.changed = False

    # -- names ----------------------------------------------------------------------------

    def _qualified(self, table: TableName) -> str:
        info = resolve_table(self.conn, table)
        if info is not None:
            return info.qualified
        return "{0}.{1}".format(table.schema or self.source.schema, table.name)

    def _require(self, table: TableName, field: str) -> TableInfo:
        info = resolve_table(self.conn, table)
        if info is None:
            raise InvalidOption(field, "table {0} does not exist".format(table))
        return info

    @property
    def trigger_name(self) -> str:
        return self.ctx.helper_name(0, "shadow", self.source.name)

    @property
    def reverse_trigger_name(self) -> str:
        return self.ctx.helper_name(0, "reverse", self.source.name)

    @property
    def old_name(self) -> str:
        return self.ctx.helper_name(0, "precutover", self.source.name)

    # -- entry point ---------------------------------------------------------------------------

    def run(self, check_mode: bool) -> Dict[str, Any]:
        self.metrics.label(db=self.conn.info.dbname, schema=self.source.schema, table=self.source.qualified,
                           migration=self.name)
        record = catalog.load(self.conn, self.name)
        current = record.state if record else catalog.DISABLED
        desired = self.request.state
        if current in (catalog.CUTOVER,) and desired in (catalog.ENABLED, catalog.PAUSED):
            raise KeelError("shadow {0} is cut over; use state reverted to swap back, or disabled to finish".format(
                self.name))
        if desired == catalog.REVERTED and current not in (catalog.CUTOVER, catalog.REVERTED):
            raise KeelError("shadow {0} is {1}: there is no cutover to revert".format(self.name, current))
        if desired == catalog.CUTOVER and current in (catalog.DISABLED,):
            raise KeelError("shadow {0} is not enabled: enable it (and let it catch up) before cutting over".format(
                self.name))
        before = self._definitions()
        target = self._prepare_target(check_mode, needed=desired != catalog.DISABLED and current not in (
            catalog.CUTOVER, catalog.REVERTED))
        if check_mode:
            # A target created only to validate the mapping was rolled back with its transaction.
            return self._result(current, current, desired != current, resolve_table(self.conn, self.spec.target),
                                before, before)
        self._transition(current, desired, target)
        after_state = catalog.load(self.conn, self.name).state if catalog.load(self.conn, self.name) else current
        return self._result(current, after_state, self.changed, self._target_info(), before, self._definitions())

    # -- target and validation ---------------------------------------------------------------------

    def _target_info(self) -> Optional[TableInfo]:
        return resolve_table(self.conn, self.spec.target) if not self._cut_over() else self._named(
            TableName(self.source.schema, self.old_name))

    def _named(self, table: TableName) -> Optional[TableInfo]:
        return resolve_table(self.conn, table)

    def _cut_over(self) -> bool:
        record = catalog.load(self.conn, self.name)
        return record is not None and record.state == catalog.CUTOVER

    def _prepare_target(self, check_mode: bool, needed: bool) -> Optional[TableInfo]:
        """Create the target from ``target_definition`` if asked, validating the mapping in the same
        transaction: a bad mapping rolls the new table back, so nothing is left behind."""
        existing = resolve_table(self.conn, self.spec.target)
        if not needed:
            return existing
        if existing is not None:
            validate_mapping(self.conn, self.spec, self.source, existing)
            self._validate_cutover_mapping(existing)
            return existing
        if not self.spec.target_definition:
            raise InvalidOption("target", "table {0} does not exist; create it or give target_definition".format(
                self.spec.target))
        create = sql.SQL("CREATE TABLE {0} ({1})").format(
            sql.Identifier(self.spec.target.schema or self.source.schema, self.spec.target.name),
            sql.SQL(self.spec.target_definition))
        with self.conn.transaction(force_rollback=check_mode):
            try:
                self.conn.execute(create)
            except Exception as exc:
                raise InvalidOption("target_definition", str(exc).strip().splitlines()[0]) from None
            created = resolve_table(self.conn, self.spec.target)
            validate_mapping(self.conn, self.spec, self.source, created)
            self._validate_cutover_mapping(created)
        if not check_mode:
            self.changed = True
        return created

    def _validate_cutover_mapping(self, target: TableInfo) -> None:
        if self.request.state != catalog.CUTOVER:
            return
        if self.source.schema != target.schema:
            raise InvalidOption("target", "cutover renames the target to the source's name, so both must be in "
                                          "schema {0}".format(self.source.schema))
        if self.source.dependent_views:
            raise InvalidOption("state", "views {0} read {1}; after a cutover by rename they would keep reading the "
                                         "old table".format(", ".join(self.source.dependent_views), self.source.qualified))
        missing = [c for c, col in self.source.columns.items() if col.not_null and col.default is None
                   and c not in self._reverse_mapping(target)]
        if missing:
            raise InvalidOption("reverse_mapping", "cutover keeps the old table in sync from the new one, so it needs "
                                                   "expressions for NOT NULL columns {0}".format(", ".join(missing)))

    def _reverse_mapping(self, target: TableInfo) -> Dict[str, str]:
        """reverse_mapping plus the key columns, which always map back one to one."""
        mapping = dict(self.spec.reverse_mapping)
        for target_column, source_column in zip(target.primary_key, source_key_for(self.spec, target.primary_key)):
            mapping.setdefault(source_column, '"{0}"'.format(target_column))
        return mapping

    # -- transitions ------------------------------------------------------------------------------

    def _transition(self, current: str, desired: str, target: Optional[TableInfo]) -> None:
        catalog.ensure_catalog(self.conn)
        if desired == catalog.DISABLED:
            self._disable(current)
            return
        if desired == catalog.REVERTED:
            if current == catalog.CUTOVER:
                self._revert(target)
            return
        if current in (catalog.DISABLED,) or not t.trigger_exists(self.conn, self.trigger_name, self.source):
            self._enable(target, fresh=current == catalog.DISABLED)
        elif current == catalog.PAUSED and desired != catalog.PAUSED:
            self._resume(target)
        if not self._backfill_done():
            self._backfill(target)  # a first enable, or one a killed run left half done
        if desired == catalog.PAUSED and current != catalog.PAUSED:
            self._pause()
        if desired == catalog.CUTOVER and current != catalog.CUTOVER:
            self._cutover(resolve_table(self.conn, self.spec.target))
        if desired == catalog.ENABLED and current == catalog.REVERTED:
            return

    def _set_state(self, state: str) -> None:
        catalog.save(self.conn, self.name, self.source.qualified, self._qualified(self.spec.target), self.spec.mapping,
                     self.spec.reverse_mapping, state)
        self.changed = True

    def _install(self, target: TableInfo, body: Any) -> None:
        statements = [t.replace_function(self.trigger_name, body), *t.create_trigger_statements(self.trigger_name, self.source)]
        self.ctx.guarded("install shadow trigger on {0}".format(self.source.qualified),
                         [self.source.qualified, target.qualified],
                         lambda conn: [conn.execute(s) for s in statements])

    def _apply_body(self, target: TableInfo) -> Any:
        return t.apply_function_body(self.spec.mapping, target, source_key_for(self.spec, target.primary_key))

    def _enable(self, target: TableInfo, fresh: bool) -> None:
        if fresh:
            migrations_catalog.forget_backfills(self.conn, self.ctx.name)
        self._set_state(catalog.ENABLED)
        self._install(target, self._apply_body(target))

    def _backfill_done(self) -> bool:
        progress = migrations_catalog.backfill_progress(self.conn, self.ctx.name, "backfill")
        return progress is not None and progress.done

    def _backfill(self, target: TableInfo) -> None:
        columns = list(self.spec.mapping)

        def copy(key_range: Any) -> Any:
            return sql.SQL("INSERT INTO {target} ({columns}) OVERRIDING SYSTEM VALUE SELECT {values}"
                           " FROM (SELECT * FROM {source} WHERE {key_range} FOR SHARE) AS src"
                           " ON CONFLICT DO NOTHING").format(
                target=table_identifier(target), columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                values=t.mapped_select(self.spec.mapping, target), source=table_identifier(self.source),
                key_range=key_range)

        run_batches(self.ctx, "backfill", self.source, copy, "source")

    def _pause(self) -> None:
        body = t.log_function_body(self.name, key_columns(self.source))
        self.ctx.guarded("pause shadow writes", [], lambda conn: conn.execute(t.replace_function(self.trigger_name, body)))
        self._set_state(catalog.PAUSED)

    def _resume(self, target: TableInfo) -> None:
        # New writes go straight to the target from here; then every key written while paused is
        # resynced from the source's current row, so the order of the two never matters.
        body = self._apply_body(target)
        self.ctx.guarded("resume shadow writes", [], lambda conn: conn.execute(t.replace_function(self.trigger_name, body)))
        self._replay(target)
        self._set_state(catalog.ENABLED)

    def _replay(self, target: TableInfo) -> None:
        source_key = key_columns(self.source)
        target_key = self._new_keys_for_old(target)  # in source-key order
        key_types = [self.source.columns[c].type for c in source_key]
        keys_sql = sql.SQL("SELECT {0} FROM jsonb_array_elements(%(keys)s::jsonb) AS k").format(
            sql.SQL(", ").join(sql.SQL("(k->>{0})::{1}").format(sql.Literal(i), sql.SQL(kt))
                               for i, kt in enumerate(key_types)))
        while True:
            row = self.conn.execute(
                "SELECT max(id), jsonb_agg(key) FROM (SELECT id, to_jsonb(key) AS key FROM keel.shadow_changes"
                " WHERE shadow = %s ORDER BY id LIMIT %s) AS batch", (self.name, REPLAY_BATCH)).fetchone()
            if row[0] is None:
                return
            last_id, keys = row[0], json.dumps(row[1])

            def work(conn: Any, last_id: int = last_id, keys: str = keys) -> None:
                # SHARE mode holds writers off for this one short batch: a row deleted and re-inserted
                # meanwhile can then never be resynced from a stale read.
                conn.execute(sql.SQL("LOCK TABLE {0} IN SHARE MODE").format(table_identifier(self.source)))
                # NOT EXISTS (an anti-join), not NOT IN: the latter scans the whole target per batch.
                conn.execute(sql.SQL("DELETE FROM {target} AS t WHERE {tkey} IN ({keys})"
                                     " AND NOT EXISTS (SELECT FROM {source} AS s WHERE {match})").format(
                    target=table_identifier(target), tkey=_row(target_key), keys=keys_sql,
                    source=table_identifier(self.source),
                    match=sql.SQL(" AND ").join(sql.SQL("s.{0} = t.{1}").format(sql.Identifier(sk), sql.Identifier(tk))
                                                for sk, tk in zip(source_key, target_key))), {"keys": keys})
                conn.execute(t.upsert_from_source(self.spec.mapping, target, sql.SQL(
                    "(SELECT * FROM {source} WHERE {skey} IN ({keys})) AS src").format(
                    source=table_identifier(self.source), skey=_row(source_key), keys=keys_sql)), {"keys": keys})
                conn.execute("DELETE FROM keel.shadow_changes WHERE shadow = %s AND id <= %s", (self.name, last_id))

            self.ctx.guarded("replay changes made while paused", [self.source.qualified, target.qualified], work)
            self.metrics.count("changes_replayed", len(row[1]))

    def _disable(self, current: str) -> None:
        if current == catalog.DISABLED and catalog.load(self.conn, self.name) is None:
            return
        if current == catalog.CUTOVER:
            new_table = self._require(self.spec.source, "source")
            statements = t.drop_trigger_statements(self.reverse_trigger_name, new_table)
            tables = [new_table.qualified]
        else:
            statements = t.drop_trigger_statements(self.trigger_name, self.source)
            tables = [self.source.qualified]
        self.ctx.guarded("remove shadow trigger", tables, lambda conn: [conn.execute(s) for s in statements])
        self.conn.execute("DELETE FROM keel.shadow_changes WHERE shadow = %s", (self.name,))
        if current != catalog.DISABLED:
            self._set_state(catalog.DISABLED)

    # -- cutover and revert -----------------------------------------------------------------------

    def _cutover(self, target: TableInfo) -> None:
        # Always every row: a sample could let a differing row through the swap.
        drift = check_drift(self.conn, self.spec.mapping, self.source, target, key_columns(self.source), "full",
                            self.request.backfill.batch_size, self._new_keys_for_old(target))
        if drift and drift["drift"]:
            raise KeelError("refusing cutover: the target differs from the source in {0} row(s) ({1} missing, {2} "
                            "extra, {3} different); re-enable to resync, then try again".format(
                                drift["drift"], drift["missing_in_target"], drift["extra_in_target"],
                                drift["different"]))
        source, old = self.source, self.source._replace(name=self.old_name)
        new = target._replace(name=source.name)
        reverse = t.apply_function_body(self._reverse_mapping(target), old, self._new_keys_for_old(target))
        statements = [sql.SQL("LOCK TABLE {0}, {1} IN ACCESS EXCLUSIVE MODE").format(
            table_identifier(source), table_identifier(target))]
        statements += t.drop_trigger_statements(self.trigger_name, source)
        statements.append(sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table_identifier(source),
                                                                          sql.Identifier(self.old_name)))
        statements.append(sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table_identifier(target),
                                                                          sql.Identifier(source.name)))
        statements += self._carry_key_defaults(source, target, new)
        statements.append(t.replace_function(self.reverse_trigger_name, reverse))
        statements += t.create_trigger_statements(self.reverse_trigger_name, new)
        self.ctx.guarded("cut over {0} to {1}".format(source.qualified, target.qualified),
                         [source.qualified, target.qualified], lambda conn: [conn.execute(s) for s in statements])
        self._set_state(catalog.CUTOVER)

    def _new_keys_for_old(self, target: TableInfo) -> List[str]:
        """For each key column of the old table (in its order), the new table's column holding it."""
        by_source = dict(zip(source_key_for(self.spec, target.primary_key), target.primary_key))
        return [by_source[c] for c in self.source.primary_key]

    def _carry_key_defaults(self, source: TableInfo, target: TableInfo, new: TableInfo) -> List[Any]:
        """Inserts through the new table that omit the key keep drawing from the old key's sequence."""
        statements = []
        for target_column, source_column in zip(target.primary_key, source_key_for(self.spec, target.primary_key)):
            if target.columns[target_column].default is not None:
                continue
            sequence = self.conn.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                         (source.qualified, source_column)).fetchone()[0]
            if sequence:
                statements.append(sql.SQL("ALTER TABLE {0} ALTER COLUMN {1} SET DEFAULT nextval({2}::regclass)").format(
                    table_identifier(new), sql.Identifier(target_column), sql.Literal(sequence)))
        return statements

    def _revert(self, target: Optional[TableInfo]) -> None:
        old = self._require(TableName(self.source.schema, self.old_name), "source")
        new = self._require(self.spec.source, "source")  # the target, now under the source's name
        target_name = self.spec.target.name
        forward_target = new._replace(name=target_name)
        source_again = old._replace(name=self.source.name)
        statements = [sql.SQL("LOCK TABLE {0}, {1} IN ACCESS EXCLUSIVE MODE").format(
            table_identifier(new), table_identifier(old))]
        statements += t.drop_trigger_statements(self.reverse_trigger_name, new)
        statements.append(sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table_identifier(new),
                                                                          sql.Identifier(target_name)))
        statements.append(sql.SQL("ALTER TABLE {0} RENAME TO {1}").format(table_identifier(old),
                                                                          sql.Identifier(self.source.name)))
        statements.append(t.replace_function(self.trigger_name, self._apply_body(forward_target)))
        statements += t.create_trigger_statements(self.trigger_name, source_again)
        self.ctx.guarded("revert the cutover of {0}".format(self.source.qualified),
                         [new.qualified, old.qualified], lambda conn: [conn.execute(s) for s in statements])
        self._set_state(catalog.REVERTED)

    # -- status -------------------------------------------------------------------------------------

    def _definitions(self) -> Dict[str, str]:
        names = [self.spec.source, self.spec.target]
        return {str(n): describe(resolve_table(self.conn, n)) for n in names}

    def _result(self, previous: str, state: str, changed: bool, target: Optional[TableInfo],
                before: Dict[str, str], after: Dict[str, str]) -> Dict[str, Any]:
        source = resolve_table(self.conn, self.spec.source)
        status: Dict[str, Any] = {"name": self.name, "previous_state": previous, "state": state, "changed": changed,
                                  "trigger": self._trigger_state(state, source),
                                  "pending_changes": catalog.pending_changes(self.conn, self.name),
                                  "rows": self._row_counts(source, target), "drift": None,
                                  "diff": {"before": before, "after": after}}
        if target is not None and source is not None and state in (catalog.ENABLED, catalog.REVERTED):
            with self.metrics.phase("drift_check"):
                status["drift"] = check_drift(self.conn, self.spec.mapping, source, target, key_columns(source),
                                              self.request.drift_check, self.request.backfill.batch_size,
                                              self._new_keys_for_old(target))
                if status["drift"]:
                    self.metrics.count("rows_checked", status["drift"]["rows_checked"])
        record_status(self.metrics, status)
        status["trigger_cost"] = trigger_cost(self.conn, self.reverse_trigger_name if state == catalog.CUTOVER
                                              else self.trigger_name, self.metrics)
        return status

    def _trigger_state(self, state: str, source: Optional[TableInfo]) -> str:
        if state == catalog.CUTOVER:
            return "reverse"
        if source is None or not t.trigger_exists(self.conn, self.trigger_name, source):
            return "absent"
        return t.function_mode(self.conn, self.trigger_name)

    def _row_counts(self, source: Optional[TableInfo], target: Optional[TableInfo]) -> Dict[str, Optional[int]]:
        def count(info: Optional[TableInfo]) -> Optional[int]:
            if info is None:
                return None
            return self.conn.execute(sql.SQL("SELECT count(*) FROM {0}").format(table_identifier(info))).fetchone()[0]

        return {"source": count(source), "target": count(target)}


def _row(columns: List[str]) -> Any:
    return sql.SQL("({0})").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
