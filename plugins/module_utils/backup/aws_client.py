# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""boto3 clients for the S3 store and the KMS key provider, from one shape of options.

Credentials left unset fall through to boto3's own chain (environment,
shared config, instance or task role), so secrets can stay out of task
arguments. Given ones are handed to boto3 in memory only.
"""

from __future__ import annotations

import traceback
from typing import Any, Dict, Mapping, Optional

try:
    import boto3
    from botocore.config import Config
except ImportError:
    boto3 = None
    Config = None
    BOTO3_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    BOTO3_IMPORT_ERROR = None

# Option names shared by `store` (type s3) and `key_provider` (type aws_kms).
AWS_OPTION_NAMES = ("endpoint_url", "region", "access_key", "secret_key", "session_token", "profile", "validate_certs")


def aws_auth_spec() -> Dict[str, Dict[str, Any]]:
    """argument_spec suboptions for reaching an AWS-compatible endpoint."""
    return dict(
        endpoint_url=dict(type="str"),
        region=dict(type="str"),
        access_key=dict(type="str", no_log=True, aliases=["aws_access_key_id"]),
        secret_key=dict(type="str", no_log=True, aliases=["aws_secret_access_key"]),
        session_token=dict(type="str", no_log=True),
        profile=dict(type="str"),
        validate_certs=dict(type="bool", default=True),
    )


def aws_client(service: str, options: Mapping[str, Any], **config: Any) -> Any:
    """A boto3 client for ``service`` ("s3", "kms") configured from ``options``."""
    if boto3 is None:
        raise RuntimeError("boto3 is required for {0}".format(service))
    session = boto3.session.Session(
        aws_access_key_id=options.get("access_key") or None,
        aws_secret_access_key=options.get("secret_key") or None,
        aws_session_token=options.get("session_token") or None,
        profile_name=options.get("profile") or None,
        region_name=options.get("region") or None,
    )
    client_config = Config(retries={"max_attempts": 3, "mode": "standard"}, **config)
    return session.client(
        service,
        endpoint_url=options.get("endpoint_url") or None,
        verify=bool(options.get("validate_certs", True)),
        config=client_config,
    )
