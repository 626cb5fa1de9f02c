# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Prometheus text exposition format (0.0.4): writing families, and reading back files keel wrote.

Label values are escaped (backslash, double quote, newline) and samples are
sorted, so the same families always render to the same bytes. The reader
understands exactly what ``render_families`` writes (it is how a textfile
keeps its counters and last-success times across runs); it is not a general
parser and says so by returning None for anything else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

LabelSet = Tuple[Tuple[str, str], ...]
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


@dataclass
class Family:
    """One metric family: its type (gauge or counter), help text and samples by label set."""

    name: str
    kind: str
    help_text: str
    samples: Dict[LabelSet, float] = field(default_factory=dict)


def label_set(labels: Dict[str, Any]) -> LabelSet:
    return tuple(sorted((key, str(value)) for key, value in labels.items()))


def escape_label_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def unescape_label_value(text: str) -> str:
    return re.sub(r'\\(.)', lambda match: "\n" if match.group(1) == "n" else match.group(1), text)


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def sample_line(name: str, labels: LabelSet, value: float) -> str:
    label_text = ",".join('{0}="{1}"'.format(key, escape_label_value(val)) for key, val in labels)
    return "{0}{1} {2}".format(name, "{" + label_text + "}" if label_text else "", format_value(value))


def render_families(families: List[Family]) -> str:
    """Families sorted by name, samples by labels; HELP and TYPE lines first; ends with a newline."""
    lines: List[str] = []
    for family in sorted(families, key=lambda item: item.name):
        if not family.samples:
            continue
        lines.append("# HELP {0} {1}".format(family.name, escape_help(family.help_text)))
        lines.append("# TYPE {0} {1}".format(family.name, family.kind))
        lines.extend(sample_line(family.name, labels, value) for labels, value in sorted(family.samples.items()))
    return "\n".join(lines) + "\n" if lines else ""


def parse_families(text: str) -> Optional[Dict[str, Family]]:
    """Families of a file ``render_families`` wrote, or None when the text is anything else."""
    families: Dict[str, Family] = {}
    helps: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            name, _sep, help_text = line[7:].partition(" ")
            helps[name] = unescape_label_value(help_text)
            continue
        if line.startswith("# TYPE "):
            name, _sep, kind = line[7:].partition(" ")
            if kind not in ("gauge", "counter"):
                return None
            families[name] = Family(name=name, kind=kind, help_text=helps.get(name, ""))
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in families:
            return None
        labels = _parse_labels(match.group(2) or "")
        if labels is None:
            return None
        try:
            value = float(match.group(3))
        except ValueError:
            return None
        families[match.group(1)].samples[labels] = value
    return families


def _parse_labels(text: str) -> Optional[LabelSet]:
    pairs = []
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None:
            return None
        pairs.append((match.group(1), unescape_label_value(match.group(2))))
        position = match.end()
    return tuple(sorted(pairs))
