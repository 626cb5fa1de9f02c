# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""raw_sql: the user's own statements, run under the lock guard, flagged when they look dangerous."""

from __future__ import annotations

import re
from typing import List, Optional, Set

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import plan as p
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import MigrationContext
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import TableName, parse_table_name
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.operations.base import Operation, Target

try:
    from psycopg import sql
except ImportError:
    sql = None

# Statements that take ACCESS EXCLUSIVE for as long as they scan or rewrite the table.
_LONG_EXCLUSIVE = [
    (re.compile(r"\bALTER\s+TABLE\b.*\bALTER\s+(COLUMN\s+)?\w+\s+(SET\s+DATA\s+)?TYPE\b", re.I | re.S),
     "ALTER COLUMN TYPE rewrites the table"),
    (re.compile(r"\bSET\s+NOT\s+NULL\b", re.I), "SET NOT NULL scans the table"),
    (re.compile(r"\bADD\s+(CONSTRAINT\s+\w+\s+)?(CHECK|FOREIGN\s+KEY)\b(?!.*\bNOT\s+VALID\b)", re.I | re.S),
     "a constraint without NOT VALID scans the table"),
    (re.compile(r"\bCREATE\s+(UNIQUE\s+)?INDEX\b(?!\s+CONCURRENTLY)", re.I), "CREATE INDEX without CONCURRENTLY blocks writes"),
    (re.compile(r"\b(VACUUM\s+FULL|CLUSTER)\b", re.I), "VACUUM FULL/CLUSTER rewrite the table"),
    (re.compile(r"\bREINDEX\b(?!.*\bCONCURRENTLY\b)", re.I | re.S), "REINDEX without CONCURRENTLY blocks writes"),
    (re.compile(r"\bLOCK\s+TABLE\b", re.I), "explicit LOCK TABLE"),
]
LARGE_TABLE_ROWS = 100000


def dangerous_reasons(statement: str) -> List[str]:
    return [reason for pattern, reason in _LONG_EXCLUSIVE if pattern.search(statement)]


class RawSql(Operation):
    kind = "raw_sql"
    reverts_by_rollback = True
    required = ("up",)
    optional = ("down", "tables")

    def parse(self) -> None:
        self.up = self.text_option("up")
        self.down = self.text_option("down")
        tables = self.spec.get("tables") or []
        if not isinstance(tables, list):
            raise InvalidOption(self.sub("tables"), "expected a list of table names")
        self.touched = [parse_table_name(t, "{0}[{1}]".format(self.sub("tables"), i)) for i, t in enumerate(tables)]

    def describe(self) -> str:
        return "raw_sql #{0}".format(self.index)

    def targets(self) -> Set[Target]:
        return {(str(t), "raw_sql") for t in self.touched}

    def tables(self) -> List[TableName]:
        return self.touched

    def _largest_rows(self, ctx: MigrationContext) -> Optional[int]:
        rows = [info.rows_estimate or 0 for info in (ctx.maybe_table(t) for t in self.touched) if info]
        return max(rows) if rows else None

    def plan(self, ctx: MigrationContext, phase: str) -> List[p.PlanStep]:
        statement = self.up if phase == "start" else self.down if phase == "rollback" else None
        if not statement:
            return []
        reasons = dangerous_reasons(statement)
        rows = self._largest_rows(ctx)
        warning = None
        if reasons:
            size = "a large table ({0} rows)".format(rows) if (rows or 0) >= LARGE_TABLE_ROWS else "the table"
            warning = "unsafe: {0}; it holds ACCESS EXCLUSIVE on {1} while it runs".format("; ".join(reasons), size)
        return [p.step(phase, self.describe(), statement.strip()[:200],
                       p.ACCESS_EXCLUSIVE if reasons else "depends on the statement",
                       held="scan" if reasons else "brief", scans=bool(reasons), rows=rows, warning=warning)]

    def _run(self, ctx: MigrationContext, statement: str, what: str) -> None:
        tables = [str(t) for t in self.touched]
        ctx.guarded("{0} {1}".format(what, self.describe()), tables, lambda conn: conn.execute(sql.SQL(statement)))

    def start(self, ctx: MigrationContext) -> None:
        state = ctx.load_state(self.state_key)
        if state.get("up_done"):
            return
        self._run(ctx, self.up, "run up of")
        ctx.save_state(self.state_key, {"up_done": True})

    def revertible(self) -> bool:
        return self.down is not None

    def rollback(self, ctx: MigrationContext) -> None:
        state = ctx.load_state(self.state_key)
        if state.get("up_done") and self.down:
            self._run(ctx, self.down, "run down of")
            ctx.save_state(self.state_key, {"up_done": False})
