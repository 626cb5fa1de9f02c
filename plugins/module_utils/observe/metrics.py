# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``metrics`` every module returns, collected in one place.

Modules never build their metrics dict by hand: they time phases, count
things and set gauges on a ``RunMetrics`` that ``KeelModule`` attaches to
every result. The same record feeds the OpenTelemetry spans (``tracing``)
and the Prometheus textfile (``textfile``), so all three always agree.

Phases nest: a phase opened inside another is its child, and becomes a child
span. A phase repeated under the same parent (one per batch, one per tenant)
is one entry that adds up, so a million-row backfill is one span with a
repetition count, not ten thousand spans. Counters add up in the run and in
the innermost open phase, which is how a phase's span carries its rows and
bytes.

Names carry their unit: ``_bytes``, ``_ms``, ``_seconds``; a name without a
unit is a count (rows, batches, requests). Labels name what the run worked on
(db, table, migration, tenant, tier), never a secret or a row value.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

Number = Union[int, float]
LABEL_NAMES = ("db", "schema", "table", "migration", "tenant", "tier", "store")


@dataclass
class PhaseRecord:
    """One phase (or the sum of its repetitions under one parent): wall-clock bounds for its span, busy time, counts."""

    name: str
    parent: Optional[int]
    started_ns: int
    ended_ns: int = 0
    busy_ms: float = 0.0
    repetitions: int = 0
    counters: Dict[str, Number] = field(default_factory=dict)
    attributes: Dict[str, Any] = field(default_factory=dict)
    failed: bool = False


class RunMetrics:
    """Phases, counters, gauges and labels of one module run."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self.started_ns = time.time_ns()
        self._phases_ms: Dict[str, float] = {}
        self._counters: Dict[str, Number] = {}
        self._gauges: Dict[str, Number] = {}
        self._series: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Number] = {}
        self._labels: Dict[str, str] = {}
        self._maxima: set = set()
        self.records: List[PhaseRecord] = []
        self._open: List[int] = []
        self._by_key: Dict[Tuple[Optional[int], str], int] = {}

    # -- phases ---------------------------------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str, **attributes: Any) -> Iterator[None]:
        """Time a named phase; repeated phases (under the same parent) add up. ``attributes`` go on its span."""
        index = self._enter(name, attributes)
        began = time.monotonic()
        try:
            yield
        except BaseException:
            self.records[index].failed = True
            raise
        finally:
            elapsed_ms = (time.monotonic() - began) * 1000.0
            self._phases_ms[name] = self._phases_ms.get(name, 0.0) + elapsed_ms
            record = self.records[index]
            record.busy_ms += elapsed_ms
            record.ended_ns = time.time_ns()
            self._open.pop()

    def _enter(self, name: str, attributes: Dict[str, Any]) -> int:
        parent = self._open[-1] if self._open else None
        key = (parent, name)
        index = self._by_key.get(key)
        if index is None:
            index = len(self.records)
            self.records.append(PhaseRecord(name=name, parent=parent, started_ns=time.time_ns()))
            self._by_key[key] = index
        record = self.records[index]
        record.repetitions += 1
        record.attributes.update(_plain(attributes))
        self._open.append(index)
        return index

    # -- values ---------------------------------------------------------------------------------------------------

    def count(self, name: str, amount: Number = 1) -> None:
        """Add to a counter of the run and of the innermost open phase."""
        self._record(name, amount, is_maximum=False)

    def maximum(self, name: str, value: Number) -> None:
        """Keep the largest value seen (longest lock wait, peak lag)."""
        self._maxima.add(name)
        self._record(name, value, is_maximum=True)

    def _record(self, name: str, value: Number, is_maximum: bool) -> None:
        """Combine ``value`` into the run's counter and the innermost open phase's, as a sum or as a maximum."""
        targets = [self._counters] + ([self.records[self._open[-1]].counters] if self._open else [])
        for counters in targets:
            counters[name] = _combine(is_maximum, counters.get(name), value)

    def gauge(self, name: str, value: Number, labels: Optional[Dict[str, str]] = None) -> None:
        """Set a value that is a reading, not a sum (table size before, monthly cost); ``labels`` split it into series."""
        if labels:
            self._series[(name, tuple(sorted((key, str(val)) for key, val in labels.items())))] = value
        else:
            self._gauges[name] = value

    def label(self, **labels: Optional[str]) -> None:
        """Name what the run works on (``db``, ``table``, ``migration``, ``tenant``, ``tier``, ``store``); None is ignored."""
        for key, value in labels.items():
            if key not in LABEL_NAMES:
                raise ValueError("unknown metrics label {0!r}; use one of {1}".format(key, ", ".join(LABEL_NAMES)))
            if value is not None and value != "":
                self._labels[key] = str(value)

    # -- reading --------------------------------------------------------------------------------------------------

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self._labels)

    @property
    def maxima(self) -> Tuple[str, ...]:
        """Names of the counters that keep a maximum rather than a sum."""
        return tuple(sorted(self._maxima))

    @property
    def counters(self) -> Dict[str, Number]:
        return dict(self._counters)

    def duration_ms(self) -> float:
        return (time.monotonic() - self._started) * 1000.0

    def phases_ms(self) -> Dict[str, float]:
        return dict(self._phases_ms)

    def phase_counters(self, name: str) -> Dict[str, Number]:
        """Counters of every repetition of phase ``name``, wherever it ran."""
        total: Dict[str, Number] = {}
        for record in self.records:
            if record.name == name:
                for key, value in record.counters.items():
                    total[key] = _combine(key in self._maxima, total.get(key), value)
        return total

    def series(self) -> List[Dict[str, Any]]:
        return [{"name": name, "labels": dict(labels), "value": value} for (name, labels), value in sorted(self._series.items())]

    def as_dict(self) -> Dict[str, object]:
        return {
            "duration_ms": round(self.duration_ms(), 3),
            "phases_ms": {name: round(value, 3) for name, value in self._phases_ms.items()},
            "phases": self._phase_details(),
            "counters": dict(self._counters),
            "gauges": dict(self._gauges),
            "series": self.series(),
            "labels": dict(self._labels),
        }

    def _phase_details(self) -> Dict[str, Dict[str, Any]]:
        """Per phase name: total wall time, repetitions, counters, and the rows or bytes per second it achieved."""
        details: Dict[str, Dict[str, Any]] = {}
        for record in self.records:
            entry = details.setdefault(record.name, {"duration_ms": 0.0, "repetitions": 0, "counters": {}})
            entry["duration_ms"] = round(entry["duration_ms"] + record.busy_ms, 3)
            entry["repetitions"] += record.repetitions
            for key, value in record.counters.items():
                entry["counters"][key] = _combine(key in self._maxima, entry["counters"].get(key), value)
        for entry in details.values():
            seconds = entry["duration_ms"] / 1000.0
            rates = {key + "_per_second": round(value / seconds, 1) for key, value in entry["counters"].items()
                     if seconds > 0 and (key.startswith("rows") or key.endswith("_rows") or key.endswith("_bytes"))}
            if rates:
                entry["rates"] = rates
        return details


def _combine(is_maximum: bool, before: Optional[Number], value: Number) -> Number:
    if before is None:
        return value
    return max(before, value) if is_maximum else before + value


def _plain(attributes: Dict[str, Any]) -> Dict[str, Any]:
    """Span attributes are strings, numbers and booleans; anything else is dropped rather than stringified by accident."""
    return {key: value for key, value in attributes.items() if isinstance(value, (str, int, float, bool)) and value is not None}
