# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``key_provider`` option every backup module shares, and the provider it opens.

``key_provider`` is one dict: ``type`` picks the provider, the other fields
configure it. Fields of the other type are refused rather than ignored, so a
play that meant KMS never silently writes local key files.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.backup.aws_client import AWS_OPTION_NAMES, aws_auth_spec
from ansible_collections.keel.postgres.plugins.module_utils.backup.key_provider import KeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.file_keys import FileKeyProvider
from ansible_collections.keel.postgres.plugins.module_utils.backup.keys.kms_keys import KmsKeyProvider, check_alias_prefix
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

PROVIDER_TYPES = ("file", "aws_kms")
OPTION = "key_provider"
# Fields that only one type uses. validate_certs and alias_prefix have defaults, so they cannot tell.
_FILE_ONLY = ("directory",)
_KMS_ONLY = tuple(name for name in AWS_OPTION_NAMES if name != "validate_certs")


def key_provider_argument_spec() -> Dict[str, Dict[str, Any]]:
    """Suboptions of the ``key_provider`` dict option (documented by the keel.postgres.key_provider fragment)."""
    spec: Dict[str, Dict[str, Any]] = dict(
        type=dict(type="str", required=True, choices=list(PROVIDER_TYPES)),
        directory=dict(type="path"),
        alias_prefix=dict(type="str", default="keel"),
    )
    spec.update(aws_auth_spec())
    return spec


def key_provider_option(required: bool = True) -> Dict[str, Any]:
    """The whole ``key_provider`` entry of a module's argument_spec.

    no_log=False: the name looks secret to validate-modules, but only the
    credential suboptions are, and those carry no_log themselves.
    """
    return dict(type="dict", required=required, no_log=False, options=key_provider_argument_spec())


def open_key_provider(options: Mapping[str, Any]) -> KeyProvider:
    """The provider ``options`` (the validated ``key_provider`` dict) describe; InvalidOption names ``key_provider.<field>``."""
    provider_type = options.get("type")
    if provider_type == "file":
        _refuse_fields(options, _KMS_ONLY, provider_type)
        if not options.get("directory"):
            raise InvalidOption(_field("directory"), "is required with type file")
        return FileKeyProvider(str(options["directory"]), field=_field("directory"))
    if provider_type == "aws_kms":
        _refuse_fields(options, _FILE_ONLY, provider_type)
        check_alias_prefix(options.get("alias_prefix", "keel"), field=_field("alias_prefix"))
        return KmsKeyProvider(options)
    raise InvalidOption(_field("type"), "must be one of {0}, got {1!r}".format(", ".join(PROVIDER_TYPES), provider_type))


def _field(name: str) -> str:
    return "{0}.{1}".format(OPTION, name)


def _refuse_fields(options: Mapping[str, Any], names: Sequence[str], provider_type: str) -> None:
    for name in names:
        if options.get(name) not in (None, ""):
            raise InvalidOption(_field(name), "does not apply to type {0}".format(provider_type))
