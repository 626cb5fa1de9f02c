# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A run's metrics as a Prometheus textfile for node_exporter's textfile collector.

One file can serve many runs (every backup of every tenant on a host, say):
each run reads the file, replaces its own series (those with its module and
labels) and keeps everyone else's, then renames a new file into place while
holding an exclusive lock on ``<path>.lock``, so two runs finishing together
do not lose each other's update. What a run writes:

- ``keel_last_run_timestamp_seconds``, ``keel_last_run_success`` (1 or 0) and
  ``keel_run_duration_seconds`` for the run;
- ``keel_last_success_timestamp_seconds``: set by a successful run and kept
  unchanged by a failed one, which is what a "backup older than policy"
  alert needs: it keeps ageing while runs fail (a failed run leaves the last
  successful run's other readings in place too);
- ``keel_runs_total{outcome="success"|"failure"}``: a real counter, carried
  over from the previous file;
- ``keel_phase_duration_seconds{phase=...}``: each phase of the last run;
- every counter of the run as ``keel_<module>_<name>_total`` (a counter,
  accumulated over runs; ``_ms`` counters become ``_seconds``), except the
  ones that keep a maximum (longest lock wait), which are gauges;
- every gauge as ``keel_<module>_<name>``, with units converted the same way.

Labels: ``module`` and the run's labels (db, schema, table, migration, tenant,
tier, store). ``job`` is not used: Prometheus sets it on every scraped series.
"""

from __future__ import annotations

import fcntl
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.durable_files import replace_file
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.exposition import Family, LabelSet, label_set, parse_families, render_families
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import LABEL_NAMES

FILE_MODE = 0o644
FIELD = "metrics_textfile"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_RUN_LABEL_KEYS = frozenset((*LABEL_NAMES, "module"))

RUN_FAMILIES = {
    "keel_last_run_timestamp_seconds": ("gauge", "When the last run of this module with these labels ended (Unix time)."),
    "keel_last_run_success": ("gauge", "1 when the last run succeeded, 0 when it failed."),
    "keel_last_success_timestamp_seconds": ("gauge", "When a run of this module with these labels last succeeded (Unix time); "
                                            "a failed run leaves it unchanged."),
    "keel_run_duration_seconds": ("gauge", "Wall time of the last run."),
    "keel_runs_total": ("counter", "Runs of this module with these labels, by outcome."),
    "keel_phase_duration_seconds": ("gauge", "Wall time of each phase of the last run (repetitions added up)."),
}


def metric_name(module: str, name: str) -> Tuple[str, float]:
    """``keel_<module>_<name>`` with ``_ms`` turned into ``_seconds``; the factor to apply to the value."""
    base = _NAME_UNSAFE.sub("_", "keel_{0}_{1}".format(module, name))
    if base.endswith("_ms"):
        return base[:-3] + "_seconds", 0.001
    if "_ms_" in base:
        return base.replace("_ms_", "_seconds_"), 0.001
    return base, 1.0


def run_families(module: str, metrics: Mapping[str, Any], maxima: Tuple[str, ...], succeeded: bool, ended_at: float) -> Dict[str, Family]:
    """The families of one run, before merging with the file (counters hold this run's amounts)."""
    labels = dict(metrics.get("labels") or {}, module=module)
    own = label_set(labels)
    families: Dict[str, Family] = {name: Family(name, kind, text) for name, (kind, text) in RUN_FAMILIES.items()}
    families["keel_last_run_timestamp_seconds"].samples[own] = ended_at
    families["keel_last_run_success"].samples[own] = 1.0 if succeeded else 0.0
    if succeeded:
        families["keel_last_success_timestamp_seconds"].samples[own] = ended_at
    families["keel_run_duration_seconds"].samples[own] = float(metrics.get("duration_ms") or 0.0) / 1000.0
    families["keel_runs_total"].samples[label_set(dict(labels, outcome="success" if succeeded else "failure"))] = 1.0
    for phase, milliseconds in (metrics.get("phases_ms") or {}).items():
        families["keel_phase_duration_seconds"].samples[label_set(dict(labels, phase=phase))] = float(milliseconds) / 1000.0
    for counter, value in (metrics.get("counters") or {}).items():
        name, factor = metric_name(module, counter)
        if counter in maxima:
            _add(families, name, "gauge", "Largest {0} seen in the last run.".format(counter), own, float(value) * factor)
        else:
            _add(families, name + "_total", "counter", "Sum over runs of {0} ({1}).".format(counter, module), own, float(value) * factor)
    for gauge, value in (metrics.get("gauges") or {}).items():
        name, factor = metric_name(module, gauge)
        _add(families, name, "gauge", "{0} in the last run ({1}).".format(gauge, module), own, float(value) * factor)
    for series in metrics.get("series") or []:
        name, factor = metric_name(module, series["name"])
        _add(families, name, "gauge", "{0} in the last run ({1}).".format(series["name"], module),
             label_set(dict(labels, **series["labels"])), float(series["value"]) * factor)
    return families


def merge(previous: Optional[Dict[str, Family]], current: Dict[str, Family], own: LabelSet, succeeded: bool) -> List[Family]:
    """The file's families after this run: counters add up, this run's series replace their old values, and other
    runs' series are kept as they were.

    A successful run drops its labels' series that it did not report (a phase that did not run this time), so the
    file describes the last run, not a union of runs. A failed run only updates what it measured: the readings of
    the last successful run (sizes, throughput, cost, ``keel_last_success_timestamp_seconds``) stay until the next
    success replaces them.
    """
    merged: Dict[str, Family] = {}
    for name, family in (previous or {}).items():
        kept = {labels: value for labels, value in family.samples.items()
                if not succeeded or not _belongs_to_run(labels, own) or _survives(name, family)}
        merged[name] = Family(name, family.kind, family.help_text, kept)
    for name, family in current.items():
        target = merged.setdefault(name, Family(name, family.kind, family.help_text))
        if target.kind != family.kind:
            target = merged[name] = Family(name, family.kind, family.help_text)
        for labels, value in family.samples.items():
            if family.kind == "counter":
                old = (previous or {}).get(name)
                value += old.samples.get(labels, 0.0) if old is not None and old.kind == "counter" else 0.0
            target.samples[labels] = value
    return list(merged.values())


def write_textfile(path: str, module: str, metrics: Mapping[str, Any], maxima: Tuple[str, ...], succeeded: bool, ended_at: float,
                   check_mode: bool = False) -> Dict[str, Any]:
    """Merge this run into the textfile at ``path`` and replace it atomically; ``{path, written, reset}``.

    ``reset`` is true when the old file was not one keel wrote (it is replaced rather than misread). In check mode
    nothing is written.
    """
    target = check_path(path)
    if check_mode:
        return {"path": target, "written": False, "reset": False}
    current = run_families(module, metrics, maxima, succeeded, ended_at)
    own = label_set(dict(metrics.get("labels") or {}, module=module))
    with open(target + ".lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        previous_text = _read(target)
        previous = parse_families(previous_text) if previous_text else {}
        text = render_families(merge(previous, current, own, succeeded))
        replace_file(target, text.encode("utf-8"), FILE_MODE)
    return {"path": target, "written": True, "reset": previous is None}


def check_path(path: str) -> str:
    """The absolute path of a usable textfile location, or ``InvalidOption`` saying what is wrong with it."""
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise InvalidOption(FIELD, "directory {0} does not exist".format(directory))
    if not target.endswith(".prom"):
        raise InvalidOption(FIELD, "{0} must end in .prom: node_exporter's textfile collector reads only those files".format(target))
    if os.path.isdir(target):
        raise InvalidOption(FIELD, "{0} is a directory; give the path of a file".format(target))
    return target


def _add(families: Dict[str, Family], name: str, kind: str, help_text: str, labels: LabelSet, value: float) -> None:
    family = families.setdefault(name, Family(name, kind, help_text))
    family.samples[labels] = family.samples.get(labels, 0.0) + value if kind == "counter" else value


def _belongs_to_run(labels: LabelSet, own: LabelSet) -> bool:
    """A series is this run's when its module and run labels are exactly the run's (a phase or outcome may be added).

    A run without a tenant label therefore never claims the series of runs that had one.
    """
    return tuple(pair for pair in labels if pair[0] in _RUN_LABEL_KEYS) == own


def _survives(name: str, family: Family) -> bool:
    """Counters and the last success time outlive the run that wrote them; everything else describes one run."""
    return family.kind == "counter" or name == "keel_last_success_timestamp_seconds"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError):
        return "\x00"  # unreadable as ours: parse_families returns None and the file is replaced
