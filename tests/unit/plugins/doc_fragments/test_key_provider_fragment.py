from __future__ import annotations

from ansible_collections.keel.postgres.plugins.doc_fragments.key_provider import ModuleDocFragment

REQUIRED = "    required: true\n    suboptions:"
OPTIONAL = "    required: false\n    suboptions:"


def test_the_optional_key_provider_differs_only_in_being_optional():
    assert REQUIRED in ModuleDocFragment.DOCUMENTATION
    assert ModuleDocFragment.OPTIONAL.strip() == ModuleDocFragment.DOCUMENTATION.replace(REQUIRED, OPTIONAL, 1).strip()
