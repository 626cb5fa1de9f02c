# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""keel.postgres.tenant_key_info: the key state of one tenant, or of every tenant in ``tenants``. Read-only."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.keys import open_key_provider
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenant_name import check_tenant_name
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics


def tenant_names(tenant: Optional[str], tenants: Optional[Sequence[Any]]) -> List[str]:
    """``[tenant]`` when one is named, else the ``name`` of every ``tenants`` entry (other fields are not used here)."""
    if tenant is not None:
        return [check_tenant_name(tenant)]
    if not tenants:
        raise InvalidOption("tenants", "name a tenant (tenant) or pass the tenants list (the keel_tenants inventory variable)")
    names: List[str] = []
    for index, entry in enumerate(tenants):
        where = "tenants[{0}]".format(index)
        if not isinstance(entry, Mapping):
            raise InvalidOption(where, "must be a mapping with a name, not {0}".format(type(entry).__name__))
        name = check_tenant_name(entry.get("name"), where + ".name")
        if name in names:
            raise InvalidOption(where + ".name", "tenant {0!r} is listed twice".format(name))
        names.append(name)
    return names


def describe_keys(params: Mapping[str, Any], metrics: Optional[RunMetrics] = None) -> Dict[str, Any]:
    """``keys`` (one ``TenantKeyState.as_dict()`` per tenant, in order) and ``key`` when a single tenant was named."""
    metrics = metrics or RunMetrics()
    names = tenant_names(params.get("tenant"), params.get("tenants"))
    provider = open_key_provider(params["key_provider"])
    with metrics.phase("describe"):
        keys = [provider.describe(name).as_dict() for name in names]
    metrics.count("tenants", len(keys))
    result: Dict[str, Any] = {"changed": False, "tenant_keys": keys}
    if params.get("tenant") is not None:
        result["key"] = keys[0]
    return result
