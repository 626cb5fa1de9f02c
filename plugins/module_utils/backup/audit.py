# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit log: one write-once JSON object per backup, retention or key action.

Who did what, to which tenant, when, and how it ended. Events carry ids,
sizes and outcomes, never key material, credentials or row data. Each event
is its own object (``audit/<yyyy>/<mm>/<dd>/...``), so appending never rewrites
an existing object and the log inherits the store's write-once guarantee.
"""

from __future__ import annotations

import datetime
import getpass
import json
import socket
from typing import Any, Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.layout import audit_key
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import Lock, ObjectStore
from ansible_collections.keel.postgres.plugins.module_utils.errors import KeelError


def default_actor() -> str:
    """``user@host`` of the process running the module, when the play names no actor."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return "{0}@{1}".format(user, socket.gethostname())


def audit_event(action: str, outcome: str, actor: Optional[str], tenant: Optional[str] = None,
                at: Optional[datetime.datetime] = None, **facts: Any) -> Dict[str, Any]:
    when = at or datetime.datetime.now(datetime.timezone.utc)
    event: Dict[str, Any] = {
        "at": when.isoformat(),
        "action": action,
        "outcome": outcome,
        "actor": actor or default_actor(),
        "tenant": tenant,
    }
    event.update({key: value for key, value in facts.items() if value is not None})
    return event


def append_audit_event(store: ObjectStore, event: Dict[str, Any], lock: Lock) -> Dict[str, Any]:
    """Write ``event`` as one JSON line; return it with where it went (or why it could not)."""
    at = datetime.datetime.fromisoformat(event["at"])
    key = audit_key(event["action"], at)
    line = json.dumps(event, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
    try:
        store.put_bytes(key, line, lock)
    except KeelError as exc:
        # The action itself already happened (or failed for its own reason): report, don't mask it.
        return dict(event, audit_object=None, audit_error=exc.message)
    return dict(event, audit_object=key)
