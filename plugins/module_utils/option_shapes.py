# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks for free-form option entries (lists of dicts in inventory vars), each naming the field's path.

Ansible's argument_spec checks the top level; entries such as
``tenants[1].retention`` or ``masking[0]`` are checked here, so a typo is
reported where it is (``tenants[1].retention.dayz``) rather than ignored.
"""

from __future__ import annotations

from typing import Any, List, Mapping, NamedTuple, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption


def checked_mapping(entry: Any, where: str, allowed: set) -> Mapping[str, Any]:
    """``entry`` if it is a mapping whose keys are all in ``allowed``; else InvalidOption naming the first stray key."""
    expected = ", ".join(sorted(allowed))
    if not isinstance(entry, Mapping):
        raise InvalidOption(where, "must be a mapping with {0}, not {1}".format(expected, type(entry).__name__))
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise InvalidOption("{0}.{1}".format(where, unknown[0]), "unknown key; expected one of {0}".format(expected))
    return entry


def required_text(value: Any, where: str, expected: str) -> str:
    """``value`` stripped, if it is a non-empty string; else InvalidOption saying what was ``expected``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidOption(where, "is required: " + expected)
    return value.strip()


class NamedSql(NamedTuple):
    where: str  # the entry's path, such as queries[2]
    name: str
    sql: str


class NamedEntry(NamedTuple):
    where: str  # the entry's path, e.g. "verify_reads[2]"
    name: str
    mapping: Mapping[str, Any]


def named_entries(value: Any, field_name: str, keys: Tuple[str, ...], name_purpose: str) -> List[NamedEntry]:
    """A list of mappings with only ``keys`` (listed in the error in this order) and a ``name`` no other entry has."""
    if not isinstance(value, list):
        raise InvalidOption(field_name, "must be a list of {{{0}}} entries".format(", ".join(keys)))
    entries: List[NamedEntry] = []
    names: dict = {}
    for index, entry in enumerate(value):
        where = "{0}[{1}]".format(field_name, index)
        mapping = checked_mapping(entry, where, set(keys))
        name = required_text(mapping.get("name"), where + ".name", name_purpose)
        if name in names:
            raise InvalidOption(where + ".name", "{0!r} is already the name of {1}[{2}]".format(name, field_name, names[name]))
        names[name] = index
        entries.append(NamedEntry(where, name, mapping))
    return entries


def named_sql_entries(value: Any, field_name: str, name_purpose: str, sql_purpose: str) -> List[NamedSql]:
    """A list of ``{name, sql}`` entries with unique names (query_latency's queries, restore_verify's assertions)."""
    return [NamedSql(entry.where, entry.name, required_text(entry.mapping.get("sql"), entry.where + ".sql", sql_purpose))
            for entry in named_entries(value, field_name, ("name", "sql"), name_purpose)]
