# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record of work done on a scratch database (a restore verification, a migration rehearsal).

Both keep the same bookkeeping: an ``outcome`` that turns from passed to
failed at the first problem and keeps that first ``reason``, every problem's
``message`` joined (a failed drop after a failed check must not hide either),
and the wall time of each stage in ``stages_ms``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, Iterator, Optional

PASSED = "passed"
FAILED = "failed"


def fail_record(record: Dict[str, Any], reason: str, message: str) -> None:
    """Mark the record failed; the first reason stays, every message is kept."""
    if record["outcome"] == PASSED:
        record["outcome"], record["reason"] = FAILED, reason
    add_message(record, message)


def add_message(record: Dict[str, Any], message: str) -> None:
    first: Optional[str] = record.get("message")
    record["message"] = "{0}; {1}".format(first, message) if first else message


@contextlib.contextmanager
def timed_stage(record: Dict[str, Any], name: str, metrics: Any = None) -> Iterator[None]:
    """Time ``name`` into ``record["stages_ms"]``, and as a metrics phase of the same name when ``metrics`` is given."""
    began = time.monotonic()
    try:
        if metrics is None:
            yield
        else:
            with metrics.phase(name):
                yield
    finally:
        record["stages_ms"][name] = ms_since(began)


def ms_since(began: float) -> float:
    return round((time.monotonic() - began) * 1000.0, 3)
