# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who owns a restore verification's scratch database, and clearing the ones nobody owns.

A verification drops its scratch database whatever happens to the check, but a
run that is killed (SIGKILL, a lost host, an AWX job cancelled hard) cannot.
So a run holds a session advisory lock named after its scratch database from
before it creates the database until after it drops it. The lock belongs to
the run's connection: when the run dies, the server releases it. The next run
drops every ``keel_verify_*`` database whose lock it can take; one whose lock
it cannot take belongs to a verification in progress, on this host or another.
"""

from __future__ import annotations

from typing import Any, List, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.restore_target import drop_database

# The first half of every two-key advisory lock taken here, so keel's locks never meet an application's.
LOCK_NAMESPACE = "keel.postgres/restore_verify"
_LOCK_KEYS = "hashtext(%s), hashtext(%s)"


def hold_scratch(conn: Any, name: str) -> None:
    """Mark ``name`` as owned by ``conn``'s session until it unlocks or closes (blocks while another run holds it)."""
    conn.execute("SELECT pg_advisory_lock({0})".format(_LOCK_KEYS), (LOCK_NAMESPACE, name))


def orphaned_scratch_databases(conn: Any, prefix: str) -> List[str]:
    """The databases named ``<prefix>...`` that no run owns. Their locks stay taken by ``conn`` (see ``release``)."""
    pattern = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
    names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname", (pattern,)).fetchall()]
    return [name for name in names
            if conn.execute("SELECT pg_try_advisory_lock({0})".format(_LOCK_KEYS), (LOCK_NAMESPACE, name)).fetchone()[0]]


def release(conn: Any, names: Sequence[str]) -> None:
    for name in names:
        conn.execute("SELECT pg_advisory_unlock({0})".format(_LOCK_KEYS), (LOCK_NAMESPACE, name))


def drop_orphaned_scratch_databases(conn: Any, prefix: str) -> List[str]:
    """Drop what ``orphaned_scratch_databases`` finds (holding each one's lock meanwhile); the names dropped."""
    orphans = orphaned_scratch_databases(conn, prefix)
    try:
        for name in orphans:
            drop_database(conn, name)
    finally:
        release(conn, orphans)
    return orphans
