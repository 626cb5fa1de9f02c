# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CHECK that keeps a completed type change revertible.

After completion the old column is kept, filled from the new one. A value
the old type cannot hold (a bigint beyond int's range, a string longer than
the old varchar) would make that write fail deep inside the sync trigger with
a bare "integer out of range". A CHECK on the new column refuses it first,
with the constraint's name in the error, and its validation proves before
completion that every existing value can go back.
"""

from __future__ import annotations

import re
from typing import Optional

_INTEGER_RANGES = {
    "smallint": (-32768, 32767),
    "integer": (-2147483648, 2147483647),
    "bigint": (-9223372036854775808, 9223372036854775807),
}
_WIDER_THAN = {"smallint": ("integer", "bigint", "numeric"), "integer": ("bigint", "numeric"),
               "bigint": ("numeric",)}


def reverse_guard(old_type: str, new_type: str) -> Optional[str]:
    """The CHECK expression over ``{column}`` (to be formatted), or None when nothing simple applies."""
    if old_type in _INTEGER_RANGES and (new_type in _WIDER_THAN[old_type] or new_type.startswith("numeric")):
        low, high = _INTEGER_RANGES[old_type]
        return "{{column}} BETWEEN {0} AND {1}".format(low, high)
    length = re.fullmatch(r"(?:character varying|character|varchar|char)\((\d+)\)", old_type)
    if length and (new_type == "text" or re.fullmatch(r"character varying(\(\d+\))?", new_type)):
        return "char_length({{column}}) <= {0}".format(length.group(1))
    return None
