# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shadow writes in the ``keel`` catalog: one row per source/target pair, and the pause log."""

from __future__ import annotations

import json
from typing import Any, Dict, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog as migrations_catalog

ENABLED, PAUSED, DISABLED, CUTOVER, REVERTED = "enabled", "paused", "disabled", "cutover", "reverted"
STATES = (ENABLED, PAUSED, DISABLED, CUTOVER, REVERTED)

_DDL = """
CREATE TABLE IF NOT EXISTS keel.shadow_writes (
    name text PRIMARY KEY,
    source text NOT NULL,
    target text NOT NULL,
    mapping jsonb NOT NULL,
    reverse_mapping jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    cutover_at timestamptz,
    reverted_at timestamptz
);
CREATE TABLE IF NOT EXISTS keel.shadow_changes (
    id bigserial PRIMARY KEY,
    shadow text NOT NULL,
    key text[] NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS shadow_changes_by_shadow ON keel.shadow_changes (shadow, id);
"""


class ShadowRecord(NamedTuple):
    name: str
    source: str
    target: str
    mapping: Dict[str, str]
    reverse_mapping: Dict[str, str]
    state: str


def ensure_catalog(conn: Any) -> None:
    migrations_catalog.ensure_catalog(conn)
    if conn.execute("SELECT to_regclass('keel.shadow_changes') IS NULL").fetchone()[0]:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x6B65656C,))
            conn.execute(_DDL)


def load(conn: Any, name: str) -> Optional[ShadowRecord]:
    if conn.execute("SELECT to_regclass('keel.shadow_writes') IS NULL").fetchone()[0]:
        return None
    row = conn.execute("SELECT name, source, target, mapping, reverse_mapping, state FROM keel.shadow_writes"
                       " WHERE name = %s", (name,)).fetchone()
    return None if row is None else ShadowRecord(*row)


def save(conn: Any, name: str, source: str, target: str, mapping: Dict[str, str], reverse_mapping: Dict[str, str],
         state: str) -> None:
    conn.execute(
        "INSERT INTO keel.shadow_writes (name, source, target, mapping, reverse_mapping, state)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET mapping = EXCLUDED.mapping,"
        " reverse_mapping = EXCLUDED.reverse_mapping, state = EXCLUDED.state, updated_at = now()",
        (name, source, target, json.dumps(mapping), json.dumps(reverse_mapping), state))


def set_state(conn: Any, name: str, state: str) -> None:
    stamp = {CUTOVER: ", cutover_at = now()", REVERTED: ", reverted_at = now()"}.get(state, "")
    conn.execute("UPDATE keel.shadow_writes SET state = %s, updated_at = now(){0} WHERE name = %s".format(stamp),
                 (state, name))


def pending_changes(conn: Any, name: str) -> int:
    if conn.execute("SELECT to_regclass('keel.shadow_changes') IS NULL").fetchone()[0]:
        return 0
    return conn.execute("SELECT count(*) FROM keel.shadow_changes WHERE shadow = %s", (name,)).fetchone()[0]
