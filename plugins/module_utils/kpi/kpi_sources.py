# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where kpi_check's evidence comes from: the migration catalog and the verification records.

- Rollback durations: ``keel.migrations.rollback_seconds`` and ``revert_seconds`` (written by
  schema_change when a rollback finishes, measured with a monotonic clock);
  a rollback ends by setting the phase to ``rolled_back``, which stamps
  ``updated_at``, so that is when it happened.
- Verification records: JSON objects under
  ``<tenant>/verifications/<backup_id>/<time>-<random>.json`` (``outcome``,
  ``tier``, ``at``), written once by restore_verify. Reading them needs no
  key; with a key provider, a ``passed`` record must also carry an HMAC that
  checks under its backup's record key (backup/verification_record.py), or it
  counts as ``unauthenticated``, a failure: a bucket writer without the
  tenant key cannot lift the KPI with records of its own.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup import layout
from ansible_collections.keel.postgres.plugins.module_utils.backup.verification_record import as_authenticated, read_record
from ansible_collections.keel.postgres.plugins.module_utils.schema_change import catalog

_KEY_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"


def rollback_durations(conn: Any, window_seconds: float) -> List[Dict[str, Any]]:
    """The rollbacks and reverts after completion that finished within the last ``window_seconds`` (server
    clock), oldest first: both are the time from deciding to go back to being back."""
    version = catalog.catalog_version(conn)
    if not version:
        return []
    has_reverts = version >= 2  # the catalog version that added reverts
    seconds = "CASE WHEN phase = 'reverted' THEN revert_seconds ELSE rollback_seconds END" if has_reverts \
        else "rollback_seconds"
    phases = "('rolled_back', 'reverted')" if has_reverts else "('rolled_back')"
    rows = conn.execute(
        "SELECT name, " + seconds + ", updated_at FROM keel.migrations"
        " WHERE phase IN " + phases + " AND " + seconds + " IS NOT NULL"
        " AND updated_at >= now() - make_interval(secs => %s) ORDER BY updated_at, name",
        (float(window_seconds),),
    ).fetchall()
    return [{"name": name, "rollback_seconds": float(value), "rolled_back_at": _iso(at)} for name, value, at in rows]


RecordKeyOf = Callable[[str], Optional[bytes]]  # backup id -> its record MAC key, or None when it cannot be had


def verification_records(store: Any, tenant: str, since: Optional[datetime.datetime] = None,
                         record_key_of: Optional[RecordKeyOf] = None) -> List[Dict[str, Any]]:
    """Every verification record of ``tenant`` (not only the latest per backup), oldest first.

    With ``since``, objects whose key time is older are not read at all. A record that cannot be read or parsed
    is kept as ``outcome: unreadable`` (a failure: it proves nothing), with the key time as ``at``. With
    ``record_key_of``, a ``passed`` record whose MAC does not check becomes ``outcome: unauthenticated``.
    """
    keys: Dict[str, Optional[bytes]] = {}
    records: List[Dict[str, Any]] = []
    for obj in store.list(layout.verifications_prefix(tenant)):
        parts = obj.key.split("/")
        if len(parts) != 4 or not parts[3].endswith(".json"):
            continue
        key_time = _key_time(parts[3])
        if since is not None and key_time is not None and key_time < since:
            continue
        record = read_record(store, obj.key) or {"outcome": "unreadable", "at": _iso(key_time) if key_time else None}
        if record_key_of is not None and record.get("outcome") == "passed":
            if parts[2] not in keys:
                keys[parts[2]] = record_key_of(parts[2])
            record = as_authenticated(record, keys[parts[2]])
        record.setdefault("backup_id", parts[2])
        record.pop("mac", None)
        record["record"] = obj.key
        records.append(record)
    return sorted(records, key=lambda item: (str(item.get("at")), item["record"]))


def _key_time(name: str) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.strptime(name.split("-", 1)[0], _KEY_TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _iso(value: Any) -> Optional[str]:
    return value.isoformat() if isinstance(value, datetime.datetime) else None
