# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tenant names: they become path segments, object keys, KMS aliases and encryption context."""

from __future__ import annotations

import re

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant_name(name: object, field: str = "tenant") -> str:
    """Return ``name`` if it is safe everywhere a tenant name is used, else raise naming ``field``."""
    if not isinstance(name, str) or not _TENANT_NAME.match(name):
        raise InvalidOption(
            field,
            "{0!r} is not a valid tenant name: use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit".format(name),
        )
    return name
