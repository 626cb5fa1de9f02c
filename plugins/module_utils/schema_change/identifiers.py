# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names of tables, columns, indexes and constraints in a migration.

Migrations are data typed into playbooks, so names are held to the plain
PostgreSQL identifier alphabet (ASCII letters, digits, ``_``, ``$``; not
starting with a digit; at most 63 bytes). A quote, semicolon, space or
non-ASCII letter is almost always a typo or an injection attempt, and is
refused with the field's name before anything is read or changed. Every name
still reaches SQL only through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

MAX_IDENTIFIER_BYTES = 63
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def regclass_text(schema: Optional[str], name: str) -> str:
    """The name as ``to_regclass`` / ``::regclass`` text: each part in double quotes (doubled inside), so upper
    case means itself and nothing in a name is parsed as SQL."""
    quoted = '"{0}"'.format(name.replace('"', '""'))
    return '"{0}".{1}'.format(schema.replace('"', '""'), quoted) if schema else quoted


class TableName(NamedTuple):
    schema: Optional[str]
    name: str

    def __str__(self) -> str:
        return "{0}.{1}".format(self.schema, self.name) if self.schema else self.name


def check_identifier(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidOption(field, "expected a name, got {0!r}".format(value))
    if len(value.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise InvalidOption(field, "{0!r} is longer than PostgreSQL's {1} bytes".format(value, MAX_IDENTIFIER_BYTES))
    if not _PLAIN.fullmatch(value):
        raise InvalidOption(field, "{0!r} is not a plain identifier (ASCII letters, digits, _ and $, "
                                   "not starting with a digit; no quotes, spaces, semicolons or dots)".format(value))
    return value


def parse_table_name(value: object, field: str) -> TableName:
    """``orders`` or ``shop.orders``; each part a plain identifier."""
    if not isinstance(value, str):
        raise InvalidOption(field, "expected a table name, got {0!r}".format(value))
    parts = value.split(".")
    if len(parts) == 1:
        return TableName(None, check_identifier(parts[0], field))
    if len(parts) == 2:
        return TableName(check_identifier(parts[0], field), check_identifier(parts[1], field))
    raise InvalidOption(field, "{0!r} has more than one dot; use schema.table".format(value))
