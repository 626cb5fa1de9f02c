# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of restore verification: masking rules, assertions and the request they make up.

Parsed from the module's arguments; every mistake is reported as an
``InvalidOption`` naming the path of the entry at fault (``masking[2].column``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.provenance import EXPECT_STATES
from ansible_collections.keel.postgres.plugins.module_utils.backup.tenants import Tenant
from ansible_collections.keel.postgres.plugins.module_utils.backup.verify_sample import SampleSpec
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.option_shapes import checked_mapping, named_sql_entries, required_text


@dataclass(frozen=True)
class MaskingRule:
    index: int
    schema: Optional[str]
    table: str
    column: str
    expression: str

    @property
    def field(self) -> str:
        return "masking[{0}]".format(self.index)


@dataclass(frozen=True)
class Assertion:
    name: str
    sql: str


@dataclass(frozen=True)
class ExpectMigration:
    """``expect_migration``: every backup verified must hold this keel migration in this state (see backup/provenance.py)."""

    name: str
    state: str = "completed"


@dataclass(frozen=True)
class VerifyRequest:
    tenants: List[Tenant]
    backup_id: Optional[str]  # an id or "latest" (None: latest), without sample
    sample: Optional[SampleSpec]
    assertions: List[Assertion] = field(default_factory=list)
    masking: List[MaskingRule] = field(default_factory=list)
    statement_timeout_ms: int = 60000
    fail_on_failure: bool = True
    actor: Optional[str] = None
    maintenance_db: str = "postgres"
    client_bin_dir: Optional[str] = None
    expect_migration: Optional[ExpectMigration] = None


def parse_masking(value: Any, field_name: str = "masking") -> List[MaskingRule]:
    """``[{table: "schema.table" | "table", column, expression}]``, every mistake named by its path."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidOption(field_name, "must be a list of {table, column, expression} rules")
    rules: List[MaskingRule] = []
    seen: Dict[tuple, int] = {}
    for index, entry in enumerate(value):
        where = "{0}[{1}]".format(field_name, index)
        mapping = checked_mapping(entry, where, {"table", "column", "expression"})
        table = required_text(mapping.get("table"), where + ".table", "a table name, schema.table or table")
        parts = table.split(".")
        if len(parts) > 2 or not all(parts):
            raise InvalidOption(where + ".table", "must be table or schema.table, not {0!r}".format(table))
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        column = required_text(mapping.get("column"), where + ".column", "a column name")
        expression = required_text(mapping.get("expression"), where + ".expression", "an SQL expression over the row, such as md5(email) or '***'")
        key = (schema, name, column)
        if key in seen:
            raise InvalidOption(where + ".column", "{0}.{1} is already masked by {2}[{3}]".format(table, column, field_name, seen[key]))
        seen[key] = index
        rules.append(MaskingRule(index=index, schema=schema, table=name, column=column, expression=expression))
    return rules


def parse_assertions(value: Any, field_name: str = "assertions") -> List[Assertion]:
    """``[{name, sql}]``: names are unique, each sql a query returning one boolean."""
    if value is None:
        return []
    entries = named_sql_entries(value, field_name, "a name for the assertion", "a query returning one row with one boolean")
    return [Assertion(name=entry.name, sql=entry.sql) for entry in entries]


def parse_expect_migration(value: Any, field_name: str = "expect_migration") -> Optional[ExpectMigration]:
    """``{name, state}``; ``state`` is completed (the default), finalized or any-applied."""
    if value is None:
        return None
    mapping = checked_mapping(value, field_name, {"name", "state"})
    name = required_text(mapping.get("name"), field_name + ".name", "the name of a keel migration, as given to keel.postgres.schema_change")
    state = mapping.get("state") or "completed"
    if state not in EXPECT_STATES:
        raise InvalidOption(field_name + ".state", "must be one of {0}, not {1!r}".format(", ".join(EXPECT_STATES), state))
    return ExpectMigration(name=name, state=state)
