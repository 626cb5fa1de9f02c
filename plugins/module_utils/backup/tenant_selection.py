# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tenants a listing or retention run covers: one named tenant, or all of them."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant, parse_tenants, select_tenant


def selected_tenants(params: Mapping[str, Any]) -> Tuple[List[Tenant], Dict[str, int]]:
    """The tenants to act on, and each tenant's index in ``tenants`` (for error field paths)."""
    tenants = parse_tenants(params.get("tenants"))
    positions = {tenant.name: index for index, tenant in enumerate(tenants)}
    if params.get("tenant"):
        return [select_tenant(tenants, params["tenant"])], positions
    return tenants, positions
