# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Version schemas: one immutable schema of views per migration, so clients never see a result shape change."""

from __future__ import annotations

from typing import Any, List


def repoint_views(conn: Any, from_oid: int, to_table: str) -> List[str]:
    """Placeholder until version schemas land: no keel views exist yet."""
    return []
