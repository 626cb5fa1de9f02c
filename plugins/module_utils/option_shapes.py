# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks for free-form option entries (lists of dicts in inventory vars), each naming the field's path.

Ansible's argument_spec checks the top level; entries such as
``tenants[1].retention`` or ``masking[0]`` are checked here, so a typo is
reported where it is (``tenants[1].retention.dayz``) rather than ignored.
"""

from __future__ import annotations

from typing import Any, Mapping

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
