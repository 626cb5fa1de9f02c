# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The store option of the backup modules (module_utils/backup/stores).
    DOCUMENTATION = r"""
options:
  store:
    description:
      - Where backups, manifests and audit events are written. Every object is written once and never overwritten;
        writing a key that exists already fails.
      - Options of the other store type are refused, so a play meant for S3 never writes to a local directory.
    type: dict
    required: true
    suboptions:
      type:
        description:
          - V(s3) writes to an S3 bucket (AWS or an S3-compatible server). Objects are uploaded in parts, and the Object Lock
            mode, retain-until date and legal hold are set on the upload itself, so an object never exists unlocked.
            A lock needs a bucket created with Object Lock enabled; it is checked before anything is written.
          - V(file) writes to a directory on the host running the module (a local disk, NFS or another mounted volume).
            Objects are published read-only (mode C(0444)) with a hard link, which cannot replace an existing file.
            A directory cannot enforce retention by itself; lock facts are kept in a read-only record next to each object
            and honoured by keel.postgres, but someone with write access to the directory can still remove files.
        type: str
        required: true
        choices: [ s3, file ]
      path:
        description:
          - For V(file), the directory of the store. It must exist already and be writable by the user running the module.
          - Keys become subdirectories, created with mode C(0700).
        type: path
      bucket:
        description:
          - For V(s3), the bucket name. It must exist already; for a tenant whose C(retention) has a C(lock_mode) or a
            C(legal_hold) it must have Object Lock enabled (which also turns on versioning).
        type: str
      prefix:
        description:
          - For V(s3), a key prefix under which all objects go, for example V(keel/production). A trailing C(/) is added.
        type: str
        default: ""
      part_size:
        description:
          - For V(s3), the size of the first parts of a multipart upload, as a number of bytes or with a unit (V(8MiB), V(64MB)).
          - Between V(5MiB) and V(5GiB). The part size doubles after every 1000 parts, so an upload never runs into S3's
            limit of 10000 parts (backups up to about 7.8 TiB with the default) while small backups keep small parts.
          - Memory used by an upload is about three parts.
        type: raw
        default: 8MiB
      storage_class:
        description:
          - For V(s3), the storage class of new objects, for example V(STANDARD_IA). The bucket's default when unset.
        type: str
      endpoint_url:
        description:
          - For V(s3), the S3 endpoint, for example V(https://s3.example.internal:9000) for an S3-compatible server
            or a VPC endpoint. The AWS endpoint of O(store.region) when unset.
        type: str
      region:
        description:
          - For V(s3), the region. When unset, boto3's own configuration (E(AWS_REGION), E(AWS_DEFAULT_REGION),
            the profile) decides.
        type: str
      access_key:
        description:
          - For V(s3), the access key id. When unset, boto3's credential chain is used (E(AWS_ACCESS_KEY_ID) and
            E(AWS_SECRET_ACCESS_KEY), the shared configuration, an instance or task role), which keeps secrets out of task arguments.
        type: str
        aliases: [ aws_access_key_id ]
      secret_key:
        description:
          - For V(s3), the secret access key belonging to O(store.access_key); E(AWS_SECRET_ACCESS_KEY) when unset.
            Never logged or returned.
        type: str
        aliases: [ aws_secret_access_key ]
      session_token:
        description:
          - For V(s3), the session token of temporary credentials; E(AWS_SESSION_TOKEN) when unset. Never logged or returned.
        type: str
      profile:
        description:
          - For V(s3), a named profile of the shared AWS configuration on the host running the module; E(AWS_PROFILE) when unset.
        type: str
      validate_certs:
        description:
          - For V(s3), whether to verify the endpoint's TLS certificate.
        type: bool
        default: true
requirements:
  - boto3 on the host that runs the module, for O(store.type=s3)
notes:
  - The S3 principal needs C(s3:ListBucket), C(s3:GetBucketObjectLockConfiguration), C(s3:PutObject), C(s3:GetObject),
    C(s3:PutObjectRetention) and C(s3:PutObjectLegalHold) (when locks are asked), C(s3:GetObjectRetention) and
    C(s3:GetObjectLegalHold) (to report locks), C(s3:ListBucketMultipartUploads) and C(s3:AbortMultipartUpload); pruning
    also needs C(s3:ListBucketVersions), C(s3:DeleteObject) and C(s3:DeleteObjectVersion), and C(s3:BypassGovernanceRetention)
    to delete GOVERNANCE-locked objects early.
  - Integrity is checked by the server on every write (C(Content-MD5) and a SHA-256 checksum per part), and writes carry
    C(If-None-Match) so two runs writing the same key cannot overwrite each other.
"""
