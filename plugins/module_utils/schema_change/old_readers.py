# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who still reads an old version schema, as far as PostgreSQL can tell.

PostgreSQL 15 cannot show another session's ``search_path``. Two signals are
exact where they exist: a lock on one of the old version's views (held only
while a statement or transaction runs) and an ``application_name`` that
declares the version (``shop-api keel:public_2026_11_x``, set in the DSN).
An idle pooled connection that declares nothing is invisible; the docs say so.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError

DECLARATION = "keel:"


class OldReadersRemain(KeelError):
    kind = "old_readers"

    def __init__(self, message: str, readers: Dict[str, List[Dict[str, Any]]]) -> None:
        super().__init__(message)
        self.details = {"old_readers": readers}


def old_readers(conn: Any, schemas: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """``active``: sessions holding locks on views of ``schemas``; ``declared``: sessions naming one of them."""
    if not schemas:
        return {"active": [], "declared": []}
    active = conn.execute(
        "SELECT DISTINCT a.pid, n.nspname, a.application_name, a.state, a.usename"
        " FROM pg_locks l JOIN pg_class v ON v.oid = l.relation JOIN pg_namespace n ON n.oid = v.relnamespace"
        " JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'relation' AND v.relkind = 'v' AND n.nspname = ANY(%s) AND l.pid <> pg_backend_pid()"
        " ORDER BY 1, 2",
        (list(schemas),),
    ).fetchall()
    declared = conn.execute(
        "SELECT a.pid, s.schema, a.application_name, a.state, a.usename"
        " FROM pg_stat_activity a CROSS JOIN unnest(%s::text[]) AS s(schema)"
        " WHERE a.pid <> pg_backend_pid() AND %s || s.schema = ANY(string_to_array(a.application_name, ' '))"
        " ORDER BY 1, 2",
        (list(schemas), DECLARATION),
    ).fetchall()
    return {"active": [_session(row) for row in active], "declared": [_session(row) for row in declared]}


def _session(row: tuple) -> Dict[str, Any]:
    return {"pid": row[0], "version_schema": row[1], "application_name": row[2], "state": row[3], "user": row[4]}


def wait_for_old_readers(conn: Any, schemas: Sequence[str], timeout: float, poll: float = 0.5) -> Dict[str, Any]:
    """Wait until no session visibly reads ``schemas``; raise naming them when ``timeout`` passes first."""
    began = time.monotonic()
    while True:
        readers = old_readers(conn, schemas)
        if not readers["active"] and not readers["declared"]:
            return {"waited_seconds": round(time.monotonic() - began, 3), "old_readers": readers}
        if time.monotonic() - began >= timeout:
            who = "; ".join("pid {0} ({1}) on {2}".format(r["pid"], r["application_name"] or "?", r["version_schema"])
                            for r in readers["active"] + readers["declared"])
            raise OldReadersRemain("sessions still read old version schema(s) {0} after {1:.0f} s: {2}; nothing was "
                                   "dropped, the migration stays completed (move them to the new version and run "
                                   "again)".format(", ".join(schemas), timeout, who), readers)
        time.sleep(poll)
