# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durations and sizes as users write them in playbooks.

Parsed on the controller side of the module, before connecting, so a typo in
``lock_timeout`` or ``max_replication_lag`` fails with the field's name before
anything is read or changed. Units follow PostgreSQL's own spelling
(``500ms``, ``30s``, ``5min``, ``1h``, ``2d``; ``kB``/``MB``/``GB`` are powers
of 1024 as in postgresql.conf).
"""

from __future__ import annotations

import re
from typing import Union

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

Number = Union[int, float]

_SECONDS_PER_UNIT = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}

_BYTES_PER_UNIT = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
}

_QUANTITY = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)\s*$")


def parse_duration(value: Union[str, Number], field: str) -> float:
    """Return seconds for ``value``; a bare number means seconds."""
    number, unit = _split_quantity(value, field, "a duration such as 500ms, 30s, 5min, 1h or 2d")
    if not unit:
        return number
    factor = _SECONDS_PER_UNIT.get(unit.lower())
    if factor is None:
        raise InvalidOption(field, "unknown time unit {0!r} in {1!r}; use one of us, ms, s, min, h, d".format(unit, value))
    return number * factor


def parse_size(value: Union[str, Number], field: str) -> int:
    """Return bytes for ``value``; a bare number means bytes."""
    number, unit = _split_quantity(value, field, "a size such as 512kB, 16MB or 1GB")
    factor = _BYTES_PER_UNIT.get(unit.lower() or "b")
    if factor is None:
        raise InvalidOption(field, "unknown size unit {0!r} in {1!r}; use one of B, kB, MB, GB, TB".format(unit, value))
    return int(number * factor)


def format_seconds(seconds: float) -> str:
    """Render a duration for messages: milliseconds below one second, else seconds."""
    if seconds < 1:
        return "{0:.0f} ms".format(seconds * 1000)
    return "{0:.1f} s".format(seconds)


def format_bytes(size: int) -> str:
    """Render a byte count with a binary unit for messages."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return "{0:.0f} {1}".format(value, unit) if unit == "B" else "{0:.1f} {1}".format(value, unit)
        value /= 1024
    return "{0:.1f} TB".format(value)


def _split_quantity(value: Union[str, Number], field: str, expected: str) -> tuple:
    if isinstance(value, bool):
        raise InvalidOption(field, "expected {0}, got a boolean".format(expected))
    if isinstance(value, (int, float)):
        if value < 0:
            raise InvalidOption(field, "must not be negative, got {0}".format(value))
        return float(value), ""
    match = _QUANTITY.match(str(value))
    if match is None:
        raise InvalidOption(field, "expected {0}, got {1!r}".format(expected, value))
    return float(match.group("number")), match.group("unit")
