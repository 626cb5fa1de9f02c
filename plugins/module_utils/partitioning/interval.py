# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The width of one partition, and the grid of bounds it draws on the key.

Months are calendar months (a monthly partition of February is 28 days), so
they are kept apart from fixed durations. Integer keys step by a whole number.
When ``interval`` is not given it is read from the existing partitions, and
only accepted when every partition has the same width: guessing between two
widths would premake partitions of a shape nobody chose.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_set import Partition, PartitionSet
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration

_MONTHS = re.compile(r"^\s*(?P<n>\d+)?\s*(?P<unit>months?|mons?|monthly|years?|yearly)\s*$", re.IGNORECASE)
_WEEKS = re.compile(r"^\s*(?P<n>\d+)?\s*(?P<unit>weeks?|weekly|w)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Interval:
    months: int = 0
    seconds: float = 0.0
    integer: int = 0

    def add(self, value: Any, steps: int = 1) -> Any:
        if self.integer:
            return value + self.integer * steps
        if self.months:
            return _add_months(value, self.months * steps)
        return value + datetime.timedelta(seconds=self.seconds * steps)

    def describe(self) -> str:
        if self.integer:
            return str(self.integer)
        if self.months:
            return "{0} month{1}".format(self.months, "" if self.months == 1 else "s")
        return "{0:g}s".format(self.seconds)


def parse_interval(value: Any, time_key: bool) -> Interval:
    """The ``interval`` option: a whole number for an integer key; months, years, weeks or a duration for a time key."""
    if not time_key:
        if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value).strip()) < 1:
            raise InvalidOption("interval", "the partition key is an integer: expected a positive whole number, got {0!r}".format(value))
        return Interval(integer=int(str(value).strip()))
    text = str(value)
    months = _MONTHS.match(text)
    if months:
        count = int(months.group("n") or 1)
        return Interval(months=count * (12 if months.group("unit").lower().startswith("year") else 1))
    weeks = _WEEKS.match(text)
    if weeks:
        return Interval(seconds=int(weeks.group("n") or 1) * 7 * 86400.0)
    seconds = parse_duration(value, "interval")
    if seconds < 60:
        raise InvalidOption("interval", "partitions narrower than a minute ({0!r}) are not supported".format(value))
    return Interval(seconds=seconds)


def infer_interval(partitions: List[Partition], time_key: bool) -> Optional[Interval]:
    """The one width every bounded partition shares, or None when there are none or they differ."""
    bounded = [p for p in partitions if p.lower is not None and p.upper is not None]
    if not bounded:
        return None
    if not time_key:
        widths = {p.upper - p.lower for p in bounded}
        return Interval(integer=widths.pop()) if len(widths) == 1 else None
    months = {_whole_months(p.lower, p.upper) for p in bounded}
    if len(months) == 1 and None not in months:
        return Interval(months=months.pop())
    widths = {_as_datetime(p.upper) - _as_datetime(p.lower) for p in bounded}
    return Interval(seconds=widths.pop().total_seconds()) if len(widths) == 1 else None


def interval_for(parent: PartitionSet, given: Any) -> Interval:
    if given is not None and str(given).strip() != "":
        return parse_interval(given, parent.is_time_key)
    inferred = infer_interval(parent.ranged, parent.is_time_key)
    if inferred is None:
        why = "it has no bounded partition yet" if not [p for p in parent.ranged if p.lower is not None and p.upper is not None] \
            else "its partitions do not all have the same width"
        raise InvalidOption("interval", "cannot infer the partition width of {0}: {1}; set interval (for example "
                                        "'1 month', '1d' or, for an integer key, 100000)".format(parent.qualified, why))
    return inferred


def align_down(value: Any, interval: Interval) -> Any:
    """The grid point at or below ``value`` when there is no partition to anchor the grid on."""
    if interval.integer:
        return value - (value % interval.integer)
    if interval.months:
        start = value.replace(day=1)
        start = start.replace(month=((start.month - 1) // interval.months) * interval.months + 1) if interval.months < 12 else start.replace(month=1)
        return _midnight(start)
    moment = _as_datetime(value)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    steps = (moment - epoch).total_seconds() // interval.seconds
    aligned = epoch + datetime.timedelta(seconds=steps * interval.seconds)
    return aligned.date() if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime) else aligned


def _whole_months(lower: Any, upper: Any) -> Optional[int]:
    if lower.day != 1 or upper.day != 1 or _time_part(lower) or _time_part(upper):
        return None
    count = (upper.year - lower.year) * 12 + upper.month - lower.month
    return count if count > 0 else None


def _add_months(value: Any, months: int) -> Any:
    index = value.month - 1 + months
    year, month = value.year + index // 12, index % 12 + 1
    return value.replace(year=year, month=month, day=1)


def _midnight(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value


def _time_part(value: Any) -> bool:
    return isinstance(value, datetime.datetime) and (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0)


def _as_datetime(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime(value.year, value.month, value.day)
