# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options the table-changing modules share, checked the same way, and their diff output."""

from __future__ import annotations

from typing import Any, Dict, List

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration


def lock_policy_from(params: Dict[str, Any], statement_timeout: float) -> LockPolicy:
    """``lock_timeout`` and ``lock_retries``, refused before anything runs when they defeat the point."""
    lock_timeout = parse_duration(params["lock_timeout"], "lock_timeout")
    if not 0 < lock_timeout <= 60:
        raise InvalidOption("lock_timeout", "must be more than 0 and at most 60 s (short is the point), got {0}".format(
            params["lock_timeout"]))
    if params["lock_retries"] < 0:
        raise InvalidOption("lock_retries", "must not be negative")
    return LockPolicy(lock_timeout=lock_timeout, retries=params["lock_retries"], statement_timeout=statement_timeout)


def check_batch_size(params: Dict[str, Any]) -> int:
    if params["batch_size"] < 1:
        raise InvalidOption("batch_size", "must be at least 1")
    return params["batch_size"]


def table_diff(before: Dict[str, str], after: Dict[str, str]) -> List[Dict[str, str]]:
    """Ansible's diff format: one entry per table definition."""
    return [{"before_header": table, "after_header": table, "before": before.get(table, ""),
             "after": after.get(table, "")} for table in sorted(set(before) | set(after))]
