# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The key_provider option of tenant_key and the backup modules (module_utils/backup/keys).
    DOCUMENTATION = r"""
options:
  key_provider:
    description:
      - Where tenant keys (key-encryption keys) live. Each backup's data key is wrapped by its tenant's current key version;
        the key itself is never stored with the backups.
      - Options of the other provider type are refused, so a play meant for KMS never writes local key files.
    type: dict
    required: true
    suboptions:
      type:
        description:
          - V(file) keeps each version as a 32-byte file C(<directory>/<tenant>/v<N>.key) on the host running the module
            and wraps with AES-256-GCM.
          - V(aws_kms) uses one AWS KMS symmetric key per version, found through the aliases
            C(alias/<alias_prefix>/<tenant>/v<N>) and C(alias/<alias_prefix>/<tenant>/current); key material never leaves KMS.
        type: str
        required: true
        choices: [ file, aws_kms ]
      directory:
        description:
          - For V(file), the directory holding one subdirectory per tenant. It must exist already and be accessible to
            its owner only (mode C(0700)); key directories and files that group or other may access are refused.
          - Back it up separately from the backups (for example into a vault); losing it makes every backup unreadable.
        type: path
      alias_prefix:
        description:
          - For V(aws_kms), the first part of every alias name, so several deployments can share one account.
          - Letters, digits, C(_), C(-) and C(/); it may not start with C(aws).
        type: str
        default: keel
      endpoint_url:
        description:
          - For V(aws_kms), the KMS endpoint, for example a VPC endpoint. The AWS default for O(key_provider.region) when unset.
        type: str
      region:
        description:
          - For V(aws_kms), the AWS region. When unset, boto3's own configuration (E(AWS_REGION), E(AWS_DEFAULT_REGION),
            the profile) decides.
        type: str
      access_key:
        description:
          - For V(aws_kms), the access key id. When unset, boto3's credential chain is used (environment, shared
            configuration, instance or task role), which keeps secrets out of task arguments.
        type: str
        aliases: [ aws_access_key_id ]
      secret_key:
        description:
          - For V(aws_kms), the secret access key belonging to O(key_provider.access_key). Never logged or returned.
        type: str
        aliases: [ aws_secret_access_key ]
      session_token:
        description:
          - For V(aws_kms), the session token of temporary credentials.
        type: str
      profile:
        description:
          - For V(aws_kms), a named profile of the shared AWS configuration on the host running the module.
        type: str
      validate_certs:
        description:
          - For V(aws_kms), whether to verify the endpoint's TLS certificate.
        type: bool
        default: true
requirements:
  - cryptography on the host that runs the module, for O(key_provider.type=file)
  - boto3 on the host that runs the module, for O(key_provider.type=aws_kms)
notes:
  - The AWS KMS principal needs C(kms:CreateKey), C(kms:CreateAlias), C(kms:UpdateAlias), C(kms:DescribeKey),
    C(kms:ListAliases), C(kms:ListResourceTags), C(kms:TagResource), C(kms:Encrypt), C(kms:Decrypt), and for shredding
    C(kms:DisableKey) and C(kms:ScheduleKeyDeletion). A backup run needs only C(kms:DescribeKey), C(kms:ListAliases)
    and C(kms:Encrypt) or C(kms:Decrypt).
"""

    # The same option where a module can do without it (kpi_check, which only authenticates verification records).
    # A literal copy because ansible-test reads fragments without running them; a unit test keeps the two identical
    # but for the required flag.
    OPTIONAL = r"""
options:
  key_provider:
    description:
      - Where tenant keys (key-encryption keys) live. Each backup's data key is wrapped by its tenant's current key version;
        the key itself is never stored with the backups.
      - Options of the other provider type are refused, so a play meant for KMS never writes local key files.
    type: dict
    required: false
    suboptions:
      type:
        description:
          - V(file) keeps each version as a 32-byte file C(<directory>/<tenant>/v<N>.key) on the host running the module
            and wraps with AES-256-GCM.
          - V(aws_kms) uses one AWS KMS symmetric key per version, found through the aliases
            C(alias/<alias_prefix>/<tenant>/v<N>) and C(alias/<alias_prefix>/<tenant>/current); key material never leaves KMS.
        type: str
        required: true
        choices: [ file, aws_kms ]
      directory:
        description:
          - For V(file), the directory holding one subdirectory per tenant. It must exist already and be accessible to
            its owner only (mode C(0700)); key directories and files that group or other may access are refused.
          - Back it up separately from the backups (for example into a vault); losing it makes every backup unreadable.
        type: path
      alias_prefix:
        description:
          - For V(aws_kms), the first part of every alias name, so several deployments can share one account.
          - Letters, digits, C(_), C(-) and C(/); it may not start with C(aws).
        type: str
        default: keel
      endpoint_url:
        description:
          - For V(aws_kms), the KMS endpoint, for example a VPC endpoint. The AWS default for O(key_provider.region) when unset.
        type: str
      region:
        description:
          - For V(aws_kms), the AWS region. When unset, boto3's own configuration (E(AWS_REGION), E(AWS_DEFAULT_REGION),
            the profile) decides.
        type: str
      access_key:
        description:
          - For V(aws_kms), the access key id. When unset, boto3's credential chain is used (environment, shared
            configuration, instance or task role), which keeps secrets out of task arguments.
        type: str
        aliases: [ aws_access_key_id ]
      secret_key:
        description:
          - For V(aws_kms), the secret access key belonging to O(key_provider.access_key). Never logged or returned.
        type: str
        aliases: [ aws_secret_access_key ]
      session_token:
        description:
          - For V(aws_kms), the session token of temporary credentials.
        type: str
      profile:
        description:
          - For V(aws_kms), a named profile of the shared AWS configuration on the host running the module.
        type: str
      validate_certs:
        description:
          - For V(aws_kms), whether to verify the endpoint's TLS certificate.
        type: bool
        default: true
requirements:
  - cryptography on the host that runs the module, for O(key_provider.type=file)
  - boto3 on the host that runs the module, for O(key_provider.type=aws_kms)
notes:
  - The AWS KMS principal needs C(kms:CreateKey), C(kms:CreateAlias), C(kms:UpdateAlias), C(kms:DescribeKey),
    C(kms:ListAliases), C(kms:ListResourceTags), C(kms:TagResource), C(kms:Encrypt), C(kms:Decrypt), and for shredding
    C(kms:DisableKey) and C(kms:ScheduleKeyDeletion). A backup run needs only C(kms:DescribeKey), C(kms:ListAliases)
    and C(kms:Encrypt) or C(kms:Decrypt).
"""
