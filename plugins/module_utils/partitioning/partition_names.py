# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names of partitions: ``<table>_p<lower bound on the grid>``, shared by conversion and upkeep so both name alike."""

from __future__ import annotations

import datetime
from typing import Any

from ansible_collections.keel.postgres.plugins.module_utils.partitioning.interval import Interval
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.identifiers import MAX_IDENTIFIER_BYTES


def partition_name(table: str, lower: Any, interval: Interval) -> str:
    if interval.integer:
        suffix = "p" + str(lower).replace("-", "m")
    elif isinstance(lower, datetime.datetime) and (interval.seconds % 86400 or lower.time() != datetime.time(0)):
        suffix = "p" + lower.strftime("%Y%m%d_%H%M%S")
    else:
        suffix = "p" + lower.strftime("%Y%m%d")
    return suffixed(table, suffix)


def suffixed(table: str, suffix: str) -> str:
    """``<table>_<suffix>``, the table's part cut (on a character boundary) so the whole fits an identifier."""
    room = MAX_IDENTIFIER_BYTES - len(suffix) - 1
    return "{0}_{1}".format(table.encode("utf-8")[:room].decode("utf-8", "ignore"), suffix)
