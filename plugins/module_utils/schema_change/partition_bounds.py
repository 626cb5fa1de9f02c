# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where partition_table draws its partition bounds, and what it names the partitions.

The grid and the names are partition_maintenance's (``<table>_pYYYYMMDD``,
``<table>_p<id>``), so upkeep continues exactly where the conversion stopped.
Bounds travel between phases as text and reach SQL as a literal cast to the
key's own type.
"""

from __future__ import annotations

import datetime
from typing import Any, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.interval import (
    Interval,
    align_down,
    parse_interval,
)
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_names import partition_name, suffixed

try:
    from psycopg import sql
except ImportError:
    sql = None

TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
INTEGER_TYPES = ("smallint", "integer", "bigint")
# Rows written while the swap waits for its lock, and clock skew between application hosts, must still
# land in the first partition: its bound lies this far beyond the end of the revert window.
CUTOFF_MARGIN = datetime.timedelta(hours=1)
# With no revert window (kept until finalized on request), p0 still covers a day of writes.
DEFAULT_COVER = datetime.timedelta(days=1)
MAX_PARTITIONS = 1000


class Bound(NamedTuple):
    name: str
    lower: Any  # None: MINVALUE
    upper: Any


def is_time_type(type_name: str) -> bool:
    return type_name in TIME_TYPES


def key_interval(value: Any, type_name: str, field: str) -> Interval:
    """The ``interval`` option for a key of ``type_name``: a whole number for integers, a width for times."""
    if type_name not in TIME_TYPES + INTEGER_TYPES:
        raise InvalidOption(field, "range partitioning needs a time ({0}) or integer ({1}) key, the key is {2}".format(
            ", ".join(TIME_TYPES), ", ".join(INTEGER_TYPES), type_name))
    if value is None:
        raise InvalidOption(field, "range partitioning needs an interval (for example '1 month', '1 day' or, for an "
                                   "integer key, 1000000)")
    try:
        interval = parse_interval(value, is_time_type(type_name))
    except InvalidOption as exc:
        raise InvalidOption(field, str(exc).split(": ", 1)[-1]) from None
    if type_name == "date" and interval.seconds and interval.seconds % 86400:
        raise InvalidOption(field, "the key is a date: the interval must be whole days, got {0}".format(
            interval.describe()))
    return interval


def first_upper(interval: Interval, covers: Any) -> Any:
    """The first grid point strictly above ``covers``: the upper bound of a partition that holds it."""
    return interval.add(align_down(covers, interval))


def time_cover(now: datetime.datetime, revert_window: Optional[float]) -> datetime.datetime:
    """The moment every write of the revert window precedes (plus the cutoff margin)."""
    window = DEFAULT_COVER if revert_window is None else datetime.timedelta(seconds=revert_window)
    return now + window + CUTOFF_MARGIN


def following(table: str, start: Any, interval: Interval, count: int) -> List[Bound]:
    """``count`` partitions on the grid from ``start`` on."""
    bounds, lower = [], start
    for _step in range(count):
        upper = interval.add(lower)
        bounds.append(Bound(partition_name(table, lower, interval), lower, upper))
        lower = upper
    return bounds


def covering(table: str, low: Any, high: Any, interval: Interval, premake: int) -> List[Bound]:
    """Partitions from the one holding ``low`` through the one holding ``high``, then ``premake`` more."""
    start, stop = align_down(low, interval), first_upper(interval, high)
    bounds, lower = [], start
    while lower < stop:
        upper = interval.add(lower)
        bounds.append(Bound(partition_name(table, lower, interval), lower, upper))
        lower = upper
        if len(bounds) > MAX_PARTITIONS:
            raise InvalidOption("interval", "more than {0} partitions would cover the rows of {1} ({2} to {3}); "
                                            "choose a wider interval".format(MAX_PARTITIONS, table, low, high))
    return bounds + following(table, stop, interval, premake)


def first_partition_name(table: str) -> str:
    return suffixed(table, "p0")


def list_partition_name(table: str, position: int) -> str:
    return suffixed(table, "l{0}".format(position))


def to_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def literal(value: Any, type_name: str) -> Any:
    """A bound as SQL: MINVALUE for None, else a literal cast to the key's type."""
    if value is None:
        return sql.SQL("MINVALUE")
    return sql.SQL("{0}::{1}").format(sql.Literal(to_text(value)), sql.SQL(type_name))


def from_text(conn: Any, text: Optional[str], type_name: str) -> Any:
    """Back to the Python value the server would return for the key's type."""
    if text is None:
        return None
    return conn.execute(sql.SQL("SELECT {0}").format(literal(text, type_name))).fetchone()[0]
