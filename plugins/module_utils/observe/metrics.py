# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``metrics`` every module returns, collected in one place.

Modules never build their metrics dict by hand: they time phases and count
things on a ``RunMetrics`` that ``KeelModule`` attaches to every result, so
all modules report durations and counters with the same names and units.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator, Union

Number = Union[int, float]


class RunMetrics:
    """Wall-clock phases (milliseconds) and counters of one module run."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._phases_ms: Dict[str, float] = {}
        self._counters: Dict[str, Number] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a named phase; repeated phases add up."""
        began = time.monotonic()
        try:
            yield
        finally:
            elapsed_ms = (time.monotonic() - began) * 1000.0
            self._phases_ms[name] = self._phases_ms.get(name, 0.0) + elapsed_ms

    def count(self, name: str, amount: Number = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    def maximum(self, name: str, value: Number) -> None:
        """Keep the largest value seen (longest lock wait, peak lag)."""
        if value > self._counters.get(name, value - 1):
            self._counters[name] = value

    def as_dict(self) -> Dict[str, object]:
        return {
            "duration_ms": round((time.monotonic() - self._started) * 1000.0, 3),
            "phases_ms": {name: round(value, 3) for name, value in self._phases_ms.items()},
            "counters": dict(self._counters),
        }
