# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``store`` option of the backup modules, and the store it opens.

``store_argument_spec()`` gives the suboptions; ``open_store()`` checks the
ones argument_spec cannot (which fields belong to which type, sizes, names)
and returns an ``S3Store`` or a ``FileStore``. Nothing is contacted here:
``check_ready`` does that, once the engine knows which lock it will ask for.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Dict, Mapping

from ansible_collections.keel.postgres.plugins.module_utils.backup.aws_client import AWS_OPTION_NAMES, aws_auth_spec
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import LOCK_MODES, Lock, ObjectStore, StoredObject
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption, ObjectLocked, StoreFailed
from ansible_collections.keel.postgres.plugins.module_utils.units import format_bytes, parse_size

STORE_TYPES = ("s3", "file")
DEFAULT_PART_SIZE = "8MiB"
# S3 refuses parts below 5 MiB (except the last) and above 5 GiB.
MIN_PART_SIZE = 5 * 1024**2
MAX_PART_SIZE = 5 * 1024**3
# The S3 bucket naming rules (3-63 lower-case letters, digits, '.' and '-').
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FILE_ONLY_OPTIONS = ("path",)
_S3_ONLY_OPTIONS = ("bucket", "storage_class", *AWS_OPTION_NAMES)
# Options with a default, which are present whatever the type: only a non-default value is a mistake.
_DEFAULTS = {"prefix": "", "part_size": DEFAULT_PART_SIZE, "validate_certs": True}


def store_argument_spec() -> Dict[str, Dict[str, Any]]:
    """Suboptions of the modules' ``store`` dict option (documented in doc_fragments/backup_store.py)."""
    spec: Dict[str, Dict[str, Any]] = dict(
        type=dict(type="str", required=True, choices=list(STORE_TYPES)),
        path=dict(type="path"),
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        # raw: a size string ("16MiB") or a number of bytes, without str() conversion warnings.
        part_size=dict(type="raw", default=DEFAULT_PART_SIZE),
        storage_class=dict(type="str"),
    )
    spec.update(aws_auth_spec())
    return spec


def open_store(options: Mapping[str, Any]) -> ObjectStore:
    """The store described by the ``store`` option; ``InvalidOption("store.<name>")`` for a wrong value."""
    store_type = options.get("type")
    if store_type not in STORE_TYPES:
        raise InvalidOption("store.type", "must be one of {0}, got {1!r}".format(", ".join(STORE_TYPES), store_type))
    if store_type == "file":
        return _open_file_store(options)
    return _open_s3_store(options)


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative '/'-separated path, else ``StoreFailed``.

    Keys come from ``backup.layout``, so a bad one is a bug; it is still
    refused, because in a file store '..' or an absolute path would escape the
    directory, and a segment starting with '.' could collide with the store's
    own hidden files (lock records, partial uploads).
    """
    problem = _key_problem(key)
    if problem:
        raise StoreFailed("object key {0!r} is not allowed: {1}".format(key, problem))
    return key


def check_lock(lock: Lock) -> Lock:
    """Refuse a lock no store could apply (an unknown mode, a mode without a date)."""
    if lock.mode is None:
        return lock
    if lock.mode not in LOCK_MODES:
        raise StoreFailed("lock mode {0!r} is not one of {1}".format(lock.mode, ", ".join(LOCK_MODES)))
    if lock.retain_until is None or lock.retain_until.tzinfo is None:
        raise StoreFailed("lock mode {0} needs a timezone-aware retain-until date".format(lock.mode))
    return lock


def refuse_if_locked(stored: StoredObject, location: str, bypass_governance: bool) -> None:
    """``ObjectLocked`` unless ``stored`` may be deleted now (GOVERNANCE early only with the bypass)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    if stored.lock_lapsed(now):
        return
    if not stored.legal_hold and stored.lock_mode == "GOVERNANCE" and bypass_governance:
        return
    raise ObjectLocked("{0} cannot be deleted: {1}".format(location, describe_lock(stored)))


def describe_lock(stored: StoredObject) -> str:
    if stored.legal_hold:
        return "it is under a legal hold"
    until = stored.retain_until.isoformat() if stored.retain_until else "an unknown date"
    if stored.lock_mode == "GOVERNANCE":
        return "it is locked in GOVERNANCE mode until {0} (bypass_governance deletes it earlier)".format(until)
    return "it is locked in {0} mode until {1}".format(stored.lock_mode or "an unknown", until)


def _key_problem(key: str) -> str:
    if not isinstance(key, str) or not key:
        return "it is empty"
    if key.startswith("/"):
        return "it is absolute"
    if "\x00" in key or "\\" in key:
        return "it contains a NUL or a backslash"
    for segment in key.split("/"):
        if not segment:
            return "it has an empty path segment"
        if segment in (".", ".."):
            return "it has a '.' or '..' path segment"
        if segment.startswith("."):
            return "a path segment starts with '.'"
    return ""


def _open_file_store(options: Mapping[str, Any]) -> ObjectStore:
    from ansible_collections.keel.postgres.plugins.module_utils.backup.stores.file_store import FileStore

    _refuse_options_of_other_type(options, (*_S3_ONLY_OPTIONS, "prefix", "part_size"), "file")
    path = options.get("path")
    if not path:
        raise InvalidOption("store.path", "required when store.type is file")
    return FileStore(path)


def _open_s3_store(options: Mapping[str, Any]) -> ObjectStore:
    from ansible_collections.keel.postgres.plugins.module_utils.backup.aws_client import BOTO3_IMPORT_ERROR, aws_client
    from ansible_collections.keel.postgres.plugins.module_utils.backup.stores.s3_store import S3Store

    _refuse_options_of_other_type(options, _FILE_ONLY_OPTIONS, "s3")
    bucket = _checked_bucket(options.get("bucket"))
    prefix = _normalized_prefix(options.get("prefix"))
    part_size = _checked_part_size(options.get("part_size", DEFAULT_PART_SIZE))
    if BOTO3_IMPORT_ERROR is not None:
        raise StoreFailed("store.type s3 needs boto3 on the host running the module (pip install boto3)", cause=BOTO3_IMPORT_ERROR)
    client = aws_client("s3", options)
    return S3Store(client, bucket, prefix=prefix, part_size=part_size, storage_class=options.get("storage_class") or None)


def _refuse_options_of_other_type(options: Mapping[str, Any], names: tuple, store_type: str) -> None:
    # A bucket given to a file store (or a path to an S3 one) means the task is not doing what its author thinks.
    for name in names:
        value = options.get(name)
        if value is not None and value != _DEFAULTS.get(name):
            raise InvalidOption("store.{0}".format(name), "does not apply to store.type {0}".format(store_type))


def _checked_bucket(bucket: Any) -> str:
    if not bucket:
        raise InvalidOption("store.bucket", "required when store.type is s3")
    if not isinstance(bucket, str) or not _BUCKET_NAME.match(bucket):
        raise InvalidOption("store.bucket", "{0!r} is not a valid bucket name: use 3-63 lower-case letters, digits, '.' or '-'".format(bucket))
    return bucket


def _normalized_prefix(prefix: Any) -> str:
    """'' or a clean path ending in '/', so keys are always ``prefix + key``."""
    text = str(prefix or "").strip("/")
    if not text:
        return ""
    problem = _key_problem(text)
    if problem:
        raise InvalidOption("store.prefix", "{0!r} is not allowed: {1}".format(prefix, problem))
    return text + "/"


def _checked_part_size(value: Any) -> int:
    size = parse_size(value, "store.part_size")
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise InvalidOption(
            "store.part_size",
            "must be between {0} and {1} (S3 multipart limits), got {2}".format(format_bytes(MIN_PART_SIZE), format_bytes(MAX_PART_SIZE), format_bytes(size)),
        )
    return size
