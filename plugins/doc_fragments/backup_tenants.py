# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The per-tenant policy and audit options shared by backup, backup_info and backup_retention.
    DOCUMENTATION = r"""
options:
  tenants:
    description:
      - Every tenant's backup policy, normally the C(keel_tenants) inventory variable passed through unchanged.
      - Each entry has C(name) (1-63 lower-case letters, digits, C(-), C(_)), C(database), optional C(schemas)
        (back up only these schemas, for one tenant per schema), C(retention) and optional C(archive).
      - C(retention) has C(days) (required), C(min_copies) (default 1), C(lock_mode) (V(compliance), V(governance),
        or unset for no store lock), C(tier) (a price tier name, default V(hot)) and C(legal_hold) (default false).
      - C(archive) has C(after_days) and C(storage_class); it is used for cost estimates.
      - Any mistake is reported with the path of the field, for example C(tenants[1].retention.days), before anything is done.
    type: list
    elements: dict
    required: true
  audit_actor:
    description:
      - Who is acting, recorded in every audit event, for example the AWX user and job id.
      - Defaults to C(user@host) of the process running the module.
    type: str
"""
